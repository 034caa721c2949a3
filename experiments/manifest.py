"""Provenance: everything that decides an experiment's number, stored with it and hashed, so that a
replay can name what drifted."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from agentgolf.baseline.dataset import file_sha256
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.result import DataSpec

# Keys that differ between any two runs by design; a replay does not call them drift.
VOLATILE = {
    "hostname",
    "created_at",
    "manifest_sha256",
    "prompt_sha256",
    "proposer_session",  # how the proposer made the change (API mode, turns): not a setting of the run
    "verification",  # a fresh random sample each time
    "timing",  # what the run measured of itself (Lab.record): never the same twice
    "clock",  # the training clock and the CPU seconds the run used: measured, never the same twice
    "slurm_job_id",
    "slurm_node",
    "slurm_queue_wait_s",
    "slurm_gpus",
    "tokens",  # what proposing it cost: not what decides its number
    "usd",
}


def data_fingerprint(data: DataSpec, cache_path: Path) -> dict[str, str]:
    try:
        cache = json.loads(cache_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        cache = {}
    shards = hashlib.sha256()
    for split, files in (("train", data.train_files), ("val", data.val_files)):
        for path in files:
            shards.update(f"{split}:{path.name}:{file_sha256(path, cache)}\n".encode())
    out = {"tokenizer_sha256": file_sha256(data.tokenizer, cache), "shards_sha256": shards.hexdigest()}
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(cache))
    return out


def library_versions() -> dict[str, str]:
    import numpy
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "numpy": numpy.__version__,
    }


def build_manifest(
    *,
    commit: str,
    parent_commit: str,
    trainer_source: bytes,
    data: DataSpec,
    data_hashes: dict[str, str],
    seed: int,
    env: dict[str, str],
    budget: Budget,
    gpus: list[int] | None,
    proposer: str,
    **extra: Any,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "commit": commit,
        "parent_commit": parent_commit,
        "trainer_sha256": hashlib.sha256(trainer_source).hexdigest(),
        "code_bytes": len(trainer_source),
        "vocab_size": data.vocab_size,
        "train_shards": len(data.train_files),
        "val_shards": len(data.val_files),
        **data_hashes,
        "seed": seed,
        "env": dict(sorted(env.items())),
        "budget": budget.model_dump(),
        "gpus": gpus or [],
        "gpu_model": gpu_model(gpus),
        "proposer": proposer,
        "hostname": platform.node(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "cpu_count": os.cpu_count(),
        **library_versions(),
        **extra,
    }
    manifest["manifest_sha256"] = manifest_hash(manifest)
    return manifest


def gpu_model(gpus: list[int] | None) -> str:
    if not gpus:
        return ""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "unavailable"


def manifest_hash(manifest: dict[str, Any]) -> str:
    stable = {k: v for k, v in manifest.items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()


def drift(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Names of the settings that differ between two manifests, e.g. ['torch: 2.11.0 -> 2.13.0']."""
    out = []
    for key in sorted(set(recorded) | set(now)):
        if key in VOLATILE:
            continue
        a, b = recorded.get(key), now.get(key)
        if a != b:
            out.append(f"{key}: {_short(a)} -> {_short(b)}")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
