"""Bubblewrap: choosing the isolation mode, and the bwrap command line that builds a phase's sandbox.

"bwrap": bubblewrap gives the process its own user, PID, network, IPC and UTS namespaces, a root made of
read-only system binds plus exactly the host paths the caller names, and no network. Killing the outer
bwrap kills the namespace's init and with it every process inside. "none": the same limits and the same
kill (sandbox/isolation/process.py), but no filesystem or network isolation.

Scratch space inside is RAM: /tmp and /dev/shm are each a tmpfs capped at the phase's disk_bytes (the kernel
refuses writes past it; the watcher in sandbox/isolation/process.py caps their sum with the run folder), and their
pages are charged to the phase's memory cgroup. The rest of /dev is read-only.

GPUs: only the slot's own /dev/nvidiaN nodes are bound in, with the control and UVM nodes every CUDA
process needs (`gpu_device_nodes`); another GPU's node does not exist inside, and the candidate can create
none (no capabilities, a read-only /dev). Without bubblewrap every node is visible and only
CUDA_VISIBLE_DEVICES, which the candidate can change, keeps it on its slot: the result says so. What CUDA,
its driver and Triton read from the environment (CUDA_ENV_KEYS) passes into GPU phases where the harness has it
set, and a folder those variables name outside the paths already bound is bound read-only (`cuda_paths`).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

from agentgolf.baseline.shards import atomic_file
from agentgolf.errors import AgentgolfError
from agentgolf.sandbox.isolation.limits import Limits
from agentgolf.sandbox.phase import PhaseSpec

ISOLATION_ENV = "AGENTGOLF_ISOLATION"  # "bwrap" (default when available) or "none"
BWRAP_CANDIDATES = ("/usr/bin/bwrap", "/usr/local/bin/bwrap")

SANDBOX_HOME = "/tmp"  # HOME inside the sandbox: a private tmpfs
SANDBOX_HOSTNAME = "sandbox"
HOSTS_TEXT = f"127.0.0.1 localhost {SANDBOX_HOSTNAME}\n::1 localhost ip6-localhost {SANDBOX_HOSTNAME}\n"
SYSTEM_RO_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
# Readable by uid 0 inside the sandbox because host root owns them; hidden behind /dev/null or an empty dir.
SECRET_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers")
SECRET_DIRS = ("/etc/ssh", "/etc/ssl/private", "/etc/sudoers.d")
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"
BWRAP_PROBE_SECONDS = 10
TMPFS_MOUNTS = ("/tmp", "/dev/shm")  # RAM-backed scratch inside the sandbox, each capped at disk_bytes

DEVICE_ROOT = Path("/dev")  # where the host's device nodes are; tests point it at fake nodes
# Nodes every CUDA process opens whatever its GPU: the control device, unified memory, modeset, and the
# capability folder (MIG and IMEX channels). Bound where present.
GPU_CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset", "nvidia-caps")
NVIDIA_SMI_SECONDS = 30
# What CUDA, its driver and Triton read from the environment. --clearenv drops them, so a GPU phase is given
# those the harness has set: where libcuda is found through LD_LIBRARY_PATH (a driver under /usr/local/nvidia),
# torch sees no GPU without it and Triton cannot find libcuda.
CUDA_ENV_KEYS = (
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "CUDA_PATH",
    "TRITON_LIBCUDA_PATH",
    "TRITON_PTXAS_PATH",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
)
# Those whose value names host paths (LD_LIBRARY_PATH a list of them; TRITON_PTXAS_PATH a file): bound read-only
# where the sandbox would not show them otherwise.
CUDA_PATH_KEYS = ("LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "TRITON_LIBCUDA_PATH", "TRITON_PTXAS_PATH")
MOUNTED_INSIDE = ("/proc", "/dev", "/sys")  # the sandbox's own mounts: never bound over


class IsolationError(AgentgolfError, RuntimeError):
    """Isolation was requested but cannot be provided (for example bwrap is not installed)."""


# --------------------------------------------------------------------------------------------------
# Choosing the mode


def find_bwrap() -> str | None:
    found = shutil.which("bwrap")
    if found:
        return found
    return next((p for p in BWRAP_CANDIDATES if os.access(p, os.X_OK)), None)


def resolve_isolation(requested: str | None = None) -> tuple[str, str]:
    """Return (mode, warning). An explicit request wins over AGENTGOLF_ISOLATION; bwrap is the default.

    Asking for "bwrap" where it is missing is an error; not asking falls back to "none" with a warning.
    """
    wanted = (requested or os.environ.get(ISOLATION_ENV) or "").strip().lower()
    if wanted not in ("", "bwrap", "none"):
        raise IsolationError(f"unknown isolation mode {wanted!r}: use 'bwrap' or 'none'")
    if wanted == "none":
        return (
            "none",
            "NO ISOLATION (requested): budgets are enforced, but the trainer can read any host file, "
            "including the validation data, and use the network",
        )
    bwrap = find_bwrap()
    problem = bwrap_works(bwrap) if bwrap else "bubblewrap is not installed (apt install bubblewrap)"
    if not problem:
        return "bwrap", ""
    if wanted == "bwrap":
        raise IsolationError(f"isolation 'bwrap' requested but unusable: {problem}")
    return (
        "none",
        f"NO ISOLATION ({problem}): budgets are enforced, but the trainer can read any host file, "
        "including the validation data, and use the network",
    )


# --------------------------------------------------------------------------------------------------
# The command line


def python_ro_paths() -> list[Path]:
    """Where this interpreter and its packages live, so the sandbox can run the same Python and torch."""
    import site
    import sysconfig

    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates += [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    candidates += list(site.getsitepackages())
    user_site = site.getusersitepackages()
    if isinstance(user_site, str) and os.path.isdir(user_site):
        candidates.append(user_site)
    candidates.append(os.path.dirname(os.path.realpath(sys.executable)))
    return _outermost([Path(c) for c in candidates if c and os.path.isdir(c)])


def _outermost(paths: list[Path]) -> list[Path]:
    """Drop paths nested inside others so each tree is bound once, parents before children."""
    resolved = sorted({p.absolute() for p in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for p in resolved:
        if not any(p == k or k in p.parents for k in kept):
            kept.append(p)
    return kept


def bwrap_command(spec: PhaseSpec, bwrap: str) -> list[str]:
    """The bubblewrap argv for a phase: nothing of the host but read-only system paths and the named binds."""
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"]
    if spec.network:
        cmd += ["--share-net"]
    cmd += ["--cap-drop", "ALL", "--hostname", SANDBOX_HOSTNAME, "--clearenv"]
    for path in SYSTEM_RO_PATHS:
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    # /tmp first: a RAM-backed, size-capped scratch; binds below may land inside it (a venv under /tmp).
    scratch = str(spec.limits.disk_bytes or spec.limits.max_file_bytes)
    cmd += ["--size", scratch, "--tmpfs", "/tmp"]
    for path in python_ro_paths():
        cmd += ["--ro-bind", str(path), str(path)]
    for path in SECRET_FILES:
        if os.path.isfile(path):
            cmd += ["--ro-bind", "/dev/null", path]
    for path in SECRET_DIRS:
        if os.path.isdir(path):
            cmd += ["--tmpfs", path, "--remount-ro", path]
    for path in masks(spec.hidden):  # a workspace under /opt or inside the venv must not show through
        cmd += ["--tmpfs", str(path), "--remount-ro", str(path)]
    cmd += ["--ro-bind", str(hosts_file()), "/etc/hosts"]  # torchrun resolves its own hostname
    cmd += ["--proc", "/proc"]
    cmd += ["--dev", "/dev"]  # a minimal /dev (null, zero, random, tty): no host disks
    cmd += ["--size", scratch, "--tmpfs", "/dev/shm"]  # its own capped tmpfs, not /dev's
    if spec.gpus:  # only the slot's NVIDIA device nodes, and sysfs (read-only) for NVML and NCCL's topology
        for host, inside in gpu_device_nodes(spec.gpus):
            cmd += ["--dev-bind", str(host), str(inside)]
        cmd += ["--ro-bind", "/sys", "/sys"]
        for path in cuda_paths(spec.env, spec.hidden):  # the driver's and CUDA's folders, read-only
            cmd += ["--ro-bind", str(path), str(path)]
    cmd += ["--remount-ro", "/dev"]  # nothing new in /dev: no device node made, no file outside the caps
    for host, inside in spec.ro_binds:
        cmd += ["--ro-bind", str(host), str(inside)]
    for host, inside in spec.rw_binds:
        cmd += ["--bind", str(host), str(inside)]
    for key, value in spec.env.items():
        cmd += ["--setenv", key, value]
    cmd += ["--chdir", str(spec.cwd), "--"]
    return cmd


def masks(hidden: list[Path]) -> list[Path]:
    """The hidden paths that a system or interpreter bind would expose, outermost first (to cover with tmpfs)."""
    bound = [Path(p).resolve() for p in SYSTEM_RO_PATHS if os.path.isdir(p)] + python_ro_paths()
    exposed = [p for p in {Path(h).resolve() for h in hidden} if any(p == b or b in p.parents for b in bound)]
    return [p for p in _outermost(exposed) if p.is_dir()]


def cuda_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The CUDA_ENV_KEYS set (non-empty) in `environ` (default: the harness's own environment)."""
    source = os.environ if environ is None else environ
    return {key: source[key] for key in CUDA_ENV_KEYS if source.get(key)}


def cuda_paths(env: dict[str, str], hidden: list[Path]) -> list[Path]:
    """The host paths the CUDA_PATH_KEYS in a GPU phase's `env` name that the sandbox would not show: those
    outside the system and interpreter binds, outermost first. Skipped: relative or missing paths, the
    sandbox's own mounts, and any path that is, holds or lies inside a hidden one (the data, the run folders),
    so that a variable naming "/" or the workspace shows nothing it must not."""
    listed = [part for key in CUDA_PATH_KEYS for part in env.get(key, "").split(os.pathsep)]
    shown = [Path(p) for p in (*SYSTEM_RO_PATHS, *MOUNTED_INSIDE)] + python_ro_paths()
    secret = [Path(h).resolve() for h in hidden]
    wanted = []
    for part in listed:
        if not part or not os.path.isabs(part) or not os.path.exists(part):
            continue
        path, real = Path(os.path.normpath(part)), Path(part).resolve()  # bwrap binds what a link points to
        if any(path == b or b in path.parents for b in shown):
            continue  # the same path inside already: a system or interpreter bind, or the sandbox's own mount
        if len(real.parts) < 2 or any(real == s or s in real.parents or real in s.parents for s in secret):
            continue
        wanted.append(path)
    return _outermost(wanted)


_HOSTS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def hosts_file() -> Path:
    """An /etc/hosts for the sandbox (loopback only, with its hostname), written once per harness process.

    lru_cache does not serialize first calls, and two slots' first sandboxes start together: the lock keeps
    this process's threads apart, and a temp file of each writer's own keeps other harness processes apart."""
    with _HOSTS_LOCK:
        path = Path(tempfile.gettempdir()) / f"agentgolf-sandbox-hosts-{os.getuid()}"
        if not path.is_file() or path.read_text() != HOSTS_TEXT:
            with atomic_file(path) as f:
                f.write(HOSTS_TEXT.encode())
        return path


class GpuDevice(NamedTuple):
    index: int  # as the slot names it (nvidia-smi's numbering on this machine, or in this SLURM job)
    minor: int  # its device node: /dev/nvidia<minor>
    uuid: str | None  # "GPU-..." where nvidia-smi reported it


def parse_gpu_table(text: str) -> dict[int, GpuDevice]:
    """`nvidia-smi --query-gpu=index,minor_number,uuid --format=csv,noheader` as {index: GpuDevice}. A minor
    number nvidia-smi does not know ("[N/A]") is taken to equal the index."""
    table = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        index = int(parts[0])
        minor = int(parts[1]) if parts[1].isdigit() else index
        table[index] = GpuDevice(index, minor, parts[2] if parts[2].startswith(("GPU-", "MIG-")) else None)
    return table


@functools.lru_cache(maxsize=1)
def nvidia_smi_gpus() -> dict[int, GpuDevice]:
    """This machine's GPUs as nvidia-smi numbers them, once per process; {} where nvidia-smi is missing or
    fails. Inside a SLURM job with constrained devices it lists the job's GPUs only, from index 0, each with
    its real minor number, which is what a slot's index then means."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        done = subprocess.run(
            [exe, "--query-gpu=index,minor_number,uuid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_gpu_table(done.stdout) if done.returncode == 0 else {}


def slot_devices(gpus: list[int]) -> list[GpuDevice]:
    """The slot's GPUs with their device nodes; without nvidia-smi, node N is taken to be GPU N."""
    table = nvidia_smi_gpus()
    return [table.get(g, GpuDevice(g, g, None)) for g in gpus]


def gpu_device_nodes(gpus: list[int], root: Path | None = None) -> list[tuple[Path, Path]]:
    """(host node, node inside) for a phase on `gpus`: each slot GPU's /dev/nvidia<minor>, plus the control
    and UVM nodes where present (GPU_CONTROL_NODES). A slot GPU's node is listed even where it is missing,
    so that bwrap refuses to start (an infra_error) rather than the candidate running without its GPU.
    `root` (default DEVICE_ROOT) is where the host's nodes are looked up; inside they are always /dev/...."""
    root = DEVICE_ROOT if root is None else Path(root)
    inside = Path("/dev")
    names = [f"nvidia{d.minor}" for d in slot_devices(gpus)]
    names += [n for n in GPU_CONTROL_NODES if os.path.lexists(root / n)]
    return [(root / n, inside / n) for n in dict.fromkeys(names)]


def cuda_visible_devices(gpus: list[int]) -> str:
    """CUDA_VISIBLE_DEVICES for a phase on `gpus`: their UUIDs where nvidia-smi gave them, else their indices.

    Why UUIDs: the CUDA driver lists the GPUs it can open. In the sandbox only the slot's nodes exist, so it
    may well number them from 0 (as it does in a container given some of a machine's GPUs), and then the
    host's index 3 would name no GPU at all. A UUID names the same GPU either way, and in either order of
    enumeration (CUDA's FASTEST_FIRST or PCI_BUS_ID). Without nvidia-smi the slot's indices are kept, which
    is right where the driver numbers GPUs by their minor numbers, whether or not their nodes are bound.
    Either way the isolation comes from the nodes: a candidate that changes the variable still cannot open
    another GPU (`gpu_device_nodes`). A machine with 2+ GPUs is needed to see which numbering holds
    (tests/test_isolation.py::test_a_candidate_cannot_use_another_slots_gpu)."""
    devices = slot_devices(gpus)
    if devices and all(d.uuid for d in devices):
        return ",".join(d.uuid for d in devices if d.uuid)
    return ",".join(str(g) for g in gpus)


@functools.lru_cache(maxsize=1)
def bwrap_works(bwrap: str) -> str:
    """Try a throwaway sandbox once per process; returns "" if it works, else bwrap's complaint.

    Catches machines where bubblewrap is installed but user namespaces are disabled or restricted.
    """
    spec = PhaseSpec(
        argv=["/bin/true"],
        cwd=Path("/"),
        env={},
        limits=Limits(wall_seconds=1, max_file_bytes=2**20, max_processes=1),
        log_path=Path(os.devnull),
        log_bytes=1,
    )
    try:
        done = subprocess.run(
            bwrap_command(spec, bwrap) + ["/bin/true"],
            capture_output=True,
            text=True,
            timeout=BWRAP_PROBE_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit code {done.returncode}")
