"""The trainer's CUDA code path taken on a CPU (EMULATE_CUDA=1), and its attention backend check (issue 14)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from tests.test_trainer import EXACT_RE, TRAINER, base_env, import_trainer

EMULATED_ENV = {  # 2 x 64; 8 micro-steps of 5 windows; 48 val windows, so the last val batch is padded
    "PRESET": "cpu",
    "NUM_LAYERS": "2",
    "MODEL_DIM": "64",
    "NUM_HEADS": "2",
    "NUM_KV_HEADS": "1",
    "TRAIN_SEQ_LEN": "64",
    "TRAIN_BATCH_TOKENS": "2560",
    "ITERATIONS": "4",
    "WARMDOWN_ITERS": "2",
    "WARMUP_STEPS": "2",
    "VAL_LOSS_EVERY": "2",
    "TRAIN_LOG_EVERY": "1",
    "EMULATE_CUDA": "1",
    "TORCH_LOGS": "recompiles",
}
RECOMPILE_RE = re.compile(r"Recompiling function (\w+)")


@pytest.mark.slow
def test_cuda_path_emulated_on_cpu_compiles_once_and_trains(tiny_dataset, tmp_path):
    """fullgraph compile (a graph break is an error), bf16 autocast, bf16 stream and Newton-Schulz, 8 micro-steps;
    validation reuses the training graph, padded tail included: only Newton-Schulz meets new (static) shapes."""
    cache = tmp_path / "cache"
    env = {
        **base_env(),
        **EMULATED_ENV,
        "DATA_PATH": str(tiny_dataset.dataset_dir),
        "TOKENIZER_PATH": str(tiny_dataset.tokenizer),
        "VOCAB_SIZE": str(tiny_dataset.vocab_size),
        "ARTIFACT_PATH": str(tmp_path / "m.ptz"),
        "COMPILE_CACHE_DIR": str(cache),
    }
    proc = subprocess.run(
        [sys.executable, str(TRAINER)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "world_size:1 grad_accum_steps:8" in out
    assert re.search(
        r"^cuda_path:emulated on cpu compile:fullgraph autocast:bf16 residual_stream:bf16 newton_schulz:bf16 "
        r"val_batch_seqs:5$",
        out,
        re.M,
    )
    assert "warmup_step:2/2" in out
    assert not re.search(r"^step:0/", out, re.M), "no validation at step 0"
    assert re.search(r"^step:2/4 val_loss:\S+ val_bpb:\S+ ", out, re.M)
    assert out.rstrip().splitlines()[-1].startswith("final_int8_zlib_roundtrip_exact ")
    assert 0 < float(EXACT_RE.search(out).group(2)) < 8
    recompiled = RECOMPILE_RE.findall(proc.stderr)
    assert set(recompiled) <= {"newton_schulz5"}, proc.stderr[-3000:]  # never the model, in train or eval
    assert len(recompiled) == 2  # three wide shapes: 64x64, 32x64 and 64x128 (the transposed MLP input)
    assert any((cache / "inductor").rglob("*")), "COMPILE_CACHE_DIR holds Inductor's cache"
    model = import_trainer().load_model(str(tmp_path / "m.ptz"))
    logits = model.forward_logits(torch.zeros(1, model.seq_len, dtype=torch.long))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def tiny_config(trainer, model_dim: int, num_heads: int):
    return trainer.ModelConfig(
        vocab_size=64, num_layers=1, model_dim=model_dim, num_heads=num_heads, num_kv_heads=1, mlp_mult=2,
        tie_embeddings=True, tied_embed_init_std=0.005, rope_base=10000.0, logit_softcap=30.0,
        qk_gain_init=1.5, seq_len=32,
    )  # fmt: skip


@pytest.fixture
def sdp_flags():
    names = ("flash", "mem_efficient", "math", "cudnn")
    saved = {n: getattr(torch.backends.cuda, f"{n}_sdp_enabled")() for n in names}
    yield
    for n, on in saved.items():
        getattr(torch.backends.cuda, f"enable_{n}_sdp")(on)


def test_attention_falls_back_and_says_why_when_flash_cannot_take_the_config(monkeypatch, sdp_flags):
    trainer = import_trainer()
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    logged = []
    trainer.configure_attention(tiny_config(trainer, 1024, 2), cpu, logged.append)
    assert "head_dim 512 > 256" in logged[0] and "compute capability 7.5 < 8.0" in logged[0], logged
    assert torch.backends.cuda.math_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    logged.clear()
    trainer.configure_attention(tiny_config(trainer, 128, 2), cpu, logged.append)  # the probe passes
    assert logged == ["attention: flash (head_dim 64, heads 2, kv heads 1)"]
    assert torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.math_sdp_enabled()

    def no_kernel(*args, **kwargs):
        raise RuntimeError("warnings...\nNo available kernel. Aborting execution.")

    monkeypatch.setattr(trainer.F, "scaled_dot_product_attention", no_kernel)
    logged.clear()
    trainer.configure_attention(tiny_config(trainer, 128, 2), cpu, logged.append)
    assert "No available kernel" in logged[0] and "using PyTorch's other kernels" in logged[0]
    assert torch.backends.cuda.math_sdp_enabled()
