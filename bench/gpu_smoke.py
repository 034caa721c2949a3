"""The GPU check's sandbox smoke: run by the harness as if it were the trainer (bench/gpu_harness.py smoke calls
run_sandboxed with gpus=[0], so it starts through torchrun inside bubblewrap, with the stripped environment of
a real training phase). It prints one `SMOKE <step> OK|FAIL ...` line per step and never a traceback, and trains
nothing: the run then ends `crash` (no artifact), which is expected.

Steps: what the process sees (env, /dev, rlimits, cgroup), then CUDA, a bf16 matmul, Triton's libcuda lookup,
a torch.compile, flash SDPA with GQA forward and backward, the scorer's fp32 GQA SDPA, a pinned copy, and a
one-rank process group over torchrun's store. Standard library and torch only: it imports nothing of agentgolf.

SMOKE_CPU_STANDIN=1 (the dry run on a CPU) runs the device steps on the CPU instead of failing them all, so
that their code runs somewhere before a GPU is spent on them (the compile with the aot_eager backend); `cuda`
still reports what CUDA said.
"""

import os
import resource
import shutil
import sys
import time

SHOWN_ENV = (
    "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "TRITON_LIBCUDA_PATH",
    "TRITON_PTXAS_PATH", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "NVIDIA_VISIBLE_DEVICES",
    "HOME", "TMPDIR", "PATH", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
)  # fmt: skip


def say(*parts) -> None:
    print("SMOKE", *parts, flush=True)


def step(name: str, fn) -> bool:
    start = time.perf_counter()
    try:
        value = fn()
    except BaseException as e:  # noqa: BLE001 - one line per step, whatever broke
        if isinstance(e, KeyboardInterrupt):
            raise
        lines = [x for x in str(e).strip().splitlines() if x.strip()]
        say(
            name,
            "FAIL",
            type(e).__name__,
            (lines[-1] if lines else "")[:300],
            f"{time.perf_counter() - start:.1f}s",
        )
        return False
    say(name, "OK", value, f"{time.perf_counter() - start:.1f}s")
    return True


def main() -> int:
    say("env", {k: os.environ[k] for k in SHOWN_ENV if k in os.environ})
    say("python", sys.version.split()[0], "cpus", os.cpu_count(), "gcc", shutil.which("gcc"))
    say(
        "rlimit_as",
        resource.getrlimit(resource.RLIMIT_AS),
        "nproc",
        resource.getrlimit(resource.RLIMIT_NPROC),
    )
    say("dev", sorted(n for n in os.listdir("/dev") if n.startswith("nvidia")))
    try:
        with open("/proc/self/cgroup") as f:
            say("cgroup", f.read().split())
    except OSError as e:
        say("cgroup", "unreadable", e)
    import torch

    say("torch", torch.__version__, "cuda build", torch.version.cuda)
    ok = step("cuda", lambda: _cuda(torch))
    standin = not ok and os.environ.get("SMOKE_CPU_STANDIN") == "1"
    device = "cpu" if standin else "cuda"
    if standin:
        say("device", "cpu (SMOKE_CPU_STANDIN=1: the device steps run on the CPU)")
    step("matmul_bf16", lambda: _matmul(torch, device))
    step("triton_libcuda", _triton_libcuda)
    step("compile", lambda: _compile(torch, device))
    step("flash_gqa_fwd_bwd", lambda: _flash_gqa(torch, device))
    step("fp32_gqa_sdpa", lambda: _fp32_gqa(torch, device))
    step("pinned_copy", lambda: _pinned(torch, device))
    step("process_group", lambda: _process_group(torch, device))
    say("done")
    return 0


def _cuda(torch):
    if not torch.cuda.is_available():
        raise RuntimeError(f"torch.cuda.is_available() is False (device_count {torch.cuda.device_count()})")
    torch.cuda.init()
    props = torch.cuda.get_device_properties(0)
    return f"{torch.cuda.device_count()} device(s), {props.name}, {props.total_memory >> 20} MiB"


def _matmul(torch, device):
    a = torch.ones(2048, 2048, device=device, dtype=torch.bfloat16)
    value = float((a @ a)[0, 0])
    if value != 2048.0:
        raise ValueError(f"bf16 matmul gave {value}, not 2048")
    return value


def _triton_libcuda():
    from triton.backends.nvidia.driver import libcuda_dirs

    return libcuda_dirs()


def _compile(torch, device):
    # on the CPU stand-in, Dynamo and AOT tracing without C++ codegen: Inductor's CPU path is not the GPU's
    # (Triton), and a cold C++ compile on a loaded 2-core machine can take minutes
    backend = "inductor" if device == "cuda" else "aot_eager"
    fn = torch.compile(lambda x: torch.relu(x).square().sum(), fullgraph=True, backend=backend)
    return float(fn(torch.arange(-8.0, 4096.0, device=device)))


def _flash_gqa(torch, device):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(2, 8, 256, 64, device=device, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(2, 4, 256, 64, device=device, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(2, 4, 256, 64, device=device, dtype=torch.bfloat16, requires_grad=True)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).float().sum().backward()
    return f"grads {tuple(q.grad.shape)} {tuple(k.grad.shape)}"


def _fp32_gqa(torch, device):
    import torch.nn.functional as F

    q = torch.randn(2, 8, 256, 64, device=device)
    k, v = torch.randn(2, 4, 256, 64, device=device), torch.randn(2, 4, 256, 64, device=device)
    return tuple(F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).shape)


def _pinned(torch, device):
    host = torch.arange(1 << 20)
    if device != "cuda":
        return int(host.sum())  # nothing to pin without CUDA
    moved = host.pin_memory().to(device, non_blocking=True)
    torch.cuda.synchronize()
    return int(moved.sum())


def _process_group(torch, device):
    import torch.distributed as dist

    if "MASTER_ADDR" not in os.environ:
        raise RuntimeError("no MASTER_ADDR: not started by torchrun")
    backend = "nccl" if device == "cuda" else "gloo"
    kwargs = {"device_id": torch.device("cuda", 0)} if backend == "nccl" else {}
    dist.init_process_group(backend, **kwargs)
    try:
        x = torch.ones(1, device=device)
        dist.all_reduce(x)
        dist.barrier()
        return f"{backend}, world {dist.get_world_size()}, all_reduce {float(x)}"
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
