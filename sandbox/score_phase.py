"""The scoring phase of a run: the trained artifact scored by trusted code, in a fresh sandbox without data.

The worker runs in run_dir/score/, which holds a pristine copy of the trainer as it was before training (so
a trainer that edits its own file changes nothing), the artifact, and the worker; no data files at all. The
parent streams validation windows to it and computes val_bpb itself (sandbox/score.py).
"""

from __future__ import annotations

import math
import os
import shutil
import stat
import sys
from pathlib import Path

from agentgolf.baseline.shards import ShardError
from agentgolf.sandbox.bpb import ByteTable, ByteTableError
from agentgolf.sandbox.classify import classify_phase
from agentgolf.sandbox.phase import PhaseSpec
from agentgolf.sandbox.process import SandboxedProcess
from agentgolf.sandbox.result import SandboxResult, Status
from agentgolf.sandbox.run_setup import (
    ARTIFACT_NAME,
    INSIDE_SCORE,
    LOG_TAIL_CHARS,
    SCORE_LOG,
    TRAINER_NAME,
    RunSetup,
)
from agentgolf.sandbox.score import BATCH_TOKENS_CPU, BATCH_TOKENS_GPU, load_val_tokens, run_scoring

WORKER_SOURCE = Path(__file__).with_name("score_worker.py")
WORKER_NAME = "score_worker.py"
COPY_CHUNK = 1 << 20


def score_artifact(run: RunSetup, train: SandboxResult) -> SandboxResult:
    """Score the artifact of a successful training phase; returns `train`, completed with the score."""
    b = run.budget
    result = train
    try:
        val = load_val_tokens([Path(f) for f in run.data.val_files])
        table = ByteTable.from_model(Path(run.data.tokenizer), run.data.vocab_size)
    except (ShardError, ByteTableError) as e:
        result.status, result.reason = Status.infra_error, f"cannot read the validation data: {e}"
        return result
    run.score_dir.mkdir()
    (run.score_dir / TRAINER_NAME).write_bytes(run.source)  # pristine: as measured before training
    shutil.copyfile(WORKER_SOURCE, run.score_dir / WORKER_NAME)
    try:
        _copy_artifact(run, run.score_dir / ARTIFACT_NAME)
    except OSError as e:
        result.status, result.reason = Status.crash, f"the artifact could not be read: {e.strerror or e}"
        return result
    device = "cuda:0" if run.gpus else "cpu"
    cwd = run.inside(run.score_dir, INSIDE_SCORE)
    env = {
        **run.base_env(run.home()),
        **run.user_env,
        "CUDA_VISIBLE_DEVICES": str(run.gpus[0]) if run.gpus else "",
    }
    spec = PhaseSpec(
        argv=[
            sys.executable,
            "-I",
            "-B",
            WORKER_NAME,
            "--trainer",
            TRAINER_NAME,
            "--artifact",
            ARTIFACT_NAME,
            "--device",
            device,
        ],
        cwd=cwd,
        env=env,
        ro_binds=[(run.score_dir, INSIDE_SCORE)] if run.mode == "bwrap" else [],
        gpu=bool(run.gpus),
        limits=run.limits(b.score_seconds),
        log_path=run.run_dir / SCORE_LOG,
        log_bytes=b.log_bytes,
        protocol=True,
    )
    proc = SandboxedProcess(spec, run.mode)
    outcome, phase = run_scoring(
        proc,
        val,
        table,
        run.data.vocab_size,
        batch_tokens=BATCH_TOKENS_GPU if run.gpus else BATCH_TOKENS_CPU,
        on_start=run.on_start,
    )
    result.score_seconds = phase.wall_seconds
    text = proc.capture.text()
    failed = classify_phase(
        phase, text, name="scoring", limit_seconds=b.score_seconds, max_processes=b.max_processes
    )
    if failed and (outcome is None or failed[0] in (Status.timeout, Status.infra_error)):
        result.status, result.reason = failed
        result.log_tail = proc.capture.tail(LOG_TAIL_CHARS)
        return result
    if outcome is None:
        result.status, result.reason = Status.crash, "scoring worker exited before finishing"
        result.log_tail = proc.capture.tail(LOG_TAIL_CHARS)
        return result
    result.val_tokens, result.val_bytes = outcome.val_tokens, outcome.val_bytes
    if outcome.status is not Status.ok:
        result.status, result.reason = outcome.status, outcome.reason
        result.log_tail = proc.capture.tail(LOG_TAIL_CHARS)
        return result
    result.val_bpb, result.val_loss = outcome.val_bpb, outcome.val_loss
    claimed = result.self_val_bpb
    if claimed is not None and math.isfinite(claimed) and claimed < outcome.val_bpb - b.metric_tolerance_bpb:
        result.status = Status.metric_mismatch
        result.reason = (
            f"the trainer printed val_bpb {claimed:.6f} but the harness measured "
            f"{outcome.val_bpb:.6f} (tolerance {b.metric_tolerance_bpb})"
        )
    return result


def _copy_artifact(run: RunSetup, dest: Path) -> None:
    """Copy without following links; the candidate's processes are all dead by now."""
    fd = os.open(run.artifact_path(), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as src, open(dest, "wb") as out:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise OSError("artifact changed type")
        shutil.copyfileobj(src, out, COPY_CHUNK)
