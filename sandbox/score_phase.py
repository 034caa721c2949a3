"""The scoring phase of a run: the artifact scored by trusted code in a sandbox without data, then verified.

Two workers, each in its own folder under run_dir/ with a pristine copy of the trainer as it was before
training (so a trainer that edits its own file changes nothing), the artifact and the worker script; no
data files at all. The first scores every validation window (sandbox/score.py). The second re-scores a
random sample of positions without their continuations (sandbox/verify.py): it starts with the first, in
its own sandbox (its own namespaces, no writable path, nothing shared), so that its start-up overlaps the
scoring, and is sent its requests only once the first has exited.
"""

from __future__ import annotations

import math
import os
import shutil
import stat
import sys
import time
from pathlib import Path

import numpy as np

from agentgolf.baseline.shards import ShardError
from agentgolf.sandbox.bpb import ByteTable, ByteTableError
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.classify import classify_phase
from agentgolf.sandbox.layout import Layout
from agentgolf.sandbox.phase import PhaseSpec
from agentgolf.sandbox.process import SandboxedProcess
from agentgolf.sandbox.result import SandboxResult, Status
from agentgolf.sandbox.run_setup import ARTIFACT_NAME, INSIDE_SCORE, LOG_TAIL_CHARS, TRAINER_NAME, RunSetup
from agentgolf.sandbox.score import (
    BATCH_TOKENS_CPU,
    BATCH_TOKENS_GPU,
    ScoreOutcome,
    drive,
    load_val_tokens,
    score_stream,
)
from agentgolf.sandbox.verify import cross_check, sample_positions

WORKER_SOURCE = Path(__file__).with_name("score_worker.py")
WORKER_NAME = "score_worker.py"
COPY_CHUNK = 1 << 20
SCORE_LOG, VERIFY_LOG = "score.log", "verify.log"


def score_artifact(run: RunSetup, train: SandboxResult) -> SandboxResult:
    """Score the artifact of a successful training phase; returns `train`, completed with the score."""
    b, result = run.budget, train
    try:
        val = load_val_tokens([Path(f) for f in run.data.val_files])
        table = ByteTable.from_model(Path(run.data.tokenizer), run.data.vocab_size)
    except (ShardError, ByteTableError) as e:
        result.status, result.reason = Status.infra_error, f"cannot read the validation data: {e}"
        return result
    try:
        scorer = _worker(run, run.score_dir, SCORE_LOG, b.score_seconds)
        verifier = _worker(run, run.run_dir / "verify", VERIFY_LOG, 2 * b.score_seconds)  # waits, then checks
    except OSError as e:
        result.status, result.reason = Status.crash, f"the artifact could not be read ({type(e).__name__})"
        return result
    batch = BATCH_TOKENS_GPU if run.gpus else BATCH_TOKENS_CPU
    layout: list[Layout] = []

    def checked(rows: Layout) -> set[int]:
        layout.append(rows)
        return set(sample_positions(rows, b.verify))

    # The verifier starts now, in its own sandbox, so that its start-up overlaps the scoring; it is sent
    # nothing until the scoring worker has exited.
    pid = verifier.start()
    if run.on_start:
        run.on_start(pid)
    v = b.verify
    outcome, phase = drive(
        scorer,
        lambda s: score_stream(s, val, table, batch, checked, v.stream_probe_fraction, v.tolerance_nats),
        run.on_start,
    )
    result.score_seconds = phase.wall_seconds
    if _failed(result, outcome, phase, scorer, "scoring", b.score_seconds):
        verifier.abort()
        verifier.wait()
        return result
    result.val_tokens, result.val_bytes = outcome.val_tokens, outcome.val_bytes
    result.val_bpb, result.val_loss = outcome.val_bpb, outcome.val_loss
    result.eval_mode = outcome.mode.model_dump() if outcome.mode else None
    if outcome.mode is not None and outcome.mode.mode == "stream":  # checked inside the stream instead
        verifier.abort()
        verifier.wait()
        result.verification = {"positions": 0, "in_stream_probes": outcome.probes, "fresh_process": False}
        return _mismatch(result, outcome.val_bpb, b)
    stream = val[: layout[0].positions + 1].astype(np.int64)
    found = []

    def verify(session) -> ScoreOutcome:
        checked_outcome, verification = cross_check(session, stream, layout[0], outcome, b.verify)
        found.append(verification)
        return checked_outcome

    t0 = time.monotonic()
    verified, phase = drive(verifier, verify, stop_when_done=True)
    result.verify_seconds = time.monotonic() - t0
    if _failed(result, verified, phase, verifier, "verification", 2 * b.score_seconds):
        result.val_bpb = result.val_loss = None  # a score that could not be verified is no score
        return result
    result.verification = found[0].model_dump()
    return _mismatch(result, outcome.val_bpb, b)


def _mismatch(result: SandboxResult, measured: float, b: Budget) -> SandboxResult:
    """A trainer that printed a better score than the harness measured is flagged, whatever the cause."""
    claimed = result.self_val_bpb
    if claimed is not None and math.isfinite(claimed) and claimed < measured - b.metric_tolerance_bpb:
        result.status = Status.metric_mismatch
        result.reason = (
            f"the trainer printed val_bpb {claimed:.6f} but the harness measured "
            f"{measured:.6f} (tolerance {b.metric_tolerance_bpb})"
        )
    return result


def _failed(
    result: SandboxResult,
    outcome: ScoreOutcome | None,
    phase,
    proc: SandboxedProcess,
    name: str,
    limit: float,
) -> bool:
    """Record why a worker's phase failed, in the harness's own words; False if it ended `ok`."""
    failed = classify_phase(
        phase,
        proc.capture.text(),
        name=name,
        limit_seconds=limit,
        max_processes=proc.spec.limits.max_processes,
        quote_log=False,
    )
    if failed and (outcome is None or failed[0] in (Status.timeout, Status.infra_error)):
        result.status, result.reason = failed
    elif outcome is None:
        result.status, result.reason = Status.crash, f"the {name} worker exited before finishing"
    elif outcome.status is not Status.ok:
        result.status, result.reason = outcome.status, outcome.reason
    else:
        return False
    result.log_tail = proc.capture.tail(LOG_TAIL_CHARS)
    return True


def _worker(run: RunSetup, folder: Path, log_name: str, wall: float) -> SandboxedProcess:
    """A scoring worker in its own read-only folder: the pristine trainer, the artifact, the worker script."""
    folder.mkdir()
    (folder / TRAINER_NAME).write_bytes(run.source)  # pristine: as measured before training
    shutil.copyfile(WORKER_SOURCE, folder / WORKER_NAME)
    _copy_artifact(run, folder / ARTIFACT_NAME)
    device = "cuda:0" if run.gpus else "cpu"
    env = {
        **run.base_env(run.home()),
        **run.user_env,
        "CUDA_VISIBLE_DEVICES": run.cuda_visible(run.gpus[:1] if run.gpus else []),
    }
    argv = [sys.executable, "-I", "-B", WORKER_NAME, "--trainer", TRAINER_NAME]
    spec = PhaseSpec(
        argv=[*argv, "--artifact", ARTIFACT_NAME, "--device", device],
        cwd=run.inside(folder, INSIDE_SCORE),
        env=env,
        ro_binds=[(folder, INSIDE_SCORE)] if run.mode == "bwrap" else [],
        gpus=run.gpus[:1] if run.gpus else [],
        limits=run.limits(wall),
        log_path=run.run_dir / log_name,
        log_bytes=run.budget.log_bytes,
        protocol=True,
        hidden=run.hidden(),
        disk_paths=run.writable([] if run.mode == "bwrap" else [folder]),  # read-only inside bwrap
    )
    return SandboxedProcess(spec, run.mode, notes=run.limit_notes)


def _copy_artifact(run: RunSetup, dest: Path) -> None:
    """Copy without following links; the candidate's processes are all dead by now."""
    fd = os.open(run.artifact_path(), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as src, open(dest, "wb") as out:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise OSError("artifact changed type")
        shutil.copyfileobj(src, out, COPY_CHUNK)
