"""The scoring phase of a run: the artifact scored by trusted code in a sandbox without data, then verified.

Two workers, one after the other, each in a fresh folder run_dir/score/ (the same path, made just before it
starts) holding a pristine copy of the trainer as it was before training (so a trainer that edits its own
file changes nothing), the artifact and the worker script; no data files at all. The first scores every
validation target (sandbox/scoring/score.py; stream mode: sandbox/scoring/stream.py). The second, started only once the first
has exited, re-scores a secret sample of positions without their continuations (sandbox/scoring/verify.py; stream
mode: a replay). Nothing tells either which one it is, and they never run at the same time.

What the scoring phase may spend is bounded like training: loading (worker start to ready) and predicting
(per token; stream mode's adapt excluded) against the baseline's own times plus a margin (Budget's
allowances); past them the result is `over_time`. After scoring succeeded, any failure of the verification
is the candidate's: "verification failed", a `violation`.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import stat
import sys
import time
from pathlib import Path

import numpy as np

from agentgolf.baseline.shards import ShardError
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.classify import classify_phase
from agentgolf.sandbox.isolation.process import SandboxedProcess
from agentgolf.sandbox.phase import PhaseSpec
from agentgolf.sandbox.result import SandboxResult, Status
from agentgolf.sandbox.run_setup import ARTIFACT_NAME, INSIDE_SCORE, LOG_TAIL_CHARS, TRAINER_NAME, RunSetup
from agentgolf.sandbox.scoring import stream as stream_mode
from agentgolf.sandbox.scoring.bpb import ByteTable, ByteTableError, load_byte_sidecar, stream_bytes
from agentgolf.sandbox.scoring.layout import Layout
from agentgolf.sandbox.scoring.score import (
    BATCH_TOKENS_CPU,
    BATCH_TOKENS_GPU,
    ScoreOutcome,
    Session,
    count_stream_bytes,
    drive,
    load_val_tokens,
    open_layout,
    score_rows,
    scored,
)
from agentgolf.sandbox.scoring.verify import cross_check, sample_positions

WORKER_SOURCE = Path(__file__).with_name("score_worker.py")
WORKER_NAME = "score_worker.py"
COPY_CHUNK = 1 << 20
SCORE_LOG, VERIFY_LOG = "score.log", "verify.log"
MACHINE_FAULTS = (Status.infra_error,)


def score_artifact(run: RunSetup, train: SandboxResult) -> SandboxResult:
    """Score the artifact of a successful training phase; returns `train`, completed with the score."""
    b, result = run.budget, train
    try:
        val = load_val_tokens([Path(f) for f in run.data.val_files])
        table = ByteTable.from_model(Path(run.data.tokenizer), run.data.vocab_size)
        sidecar = load_byte_sidecar([Path(f) for f in run.data.val_files])  # CaseOps: bytes per token
        n_bytes = count_stream_bytes(table, val) if sidecar is None else stream_bytes(table, val, sidecar)
    except (ShardError, ByteTableError) as e:
        result.status, result.reason = Status.infra_error, f"cannot read the validation data: {e}"
        return result
    batch = BATCH_TOKENS_GPU if run.gpus else BATCH_TOKENS_CPU
    rng = np.random.default_rng(secrets.randbits(64))
    layouts: list[Layout] = []

    def score(session: Session) -> ScoreOutcome:
        layout = open_layout(session, val, batch)
        layouts.append(layout)
        keep = sample_positions(layout, b.verify, rng)
        walk = stream_mode.score_chunks if layout.mode.mode == "stream" else score_rows
        nll_sum, reported = walk(session, layout, val, keep, rng)
        session.send("bye")
        return scored(nll_sum, n_bytes, layout, session, reported=reported)

    try:
        scorer = _worker(run, SCORE_LOG, b.score_seconds)
    except OSError as e:
        result.status, result.reason = Status.crash, f"the artifact could not be read ({type(e).__name__})"
        return result
    # once every answer is in, the worker is stopped, not waited for (a torch process takes a while to exit)
    outcome, phase = drive(scorer, run.data.vocab_size, score, run.on_start, stop_when_done=True)
    result.score_seconds = phase.wall_seconds
    if _failed(result, outcome, phase, scorer, "scoring", b.score_seconds):
        return result
    result.val_tokens, result.val_bytes = outcome.val_tokens, outcome.val_bytes
    result.val_bpb, result.val_loss = outcome.val_bpb, outcome.val_loss
    result.load_seconds, result.predict_seconds = outcome.load_seconds, outcome.predict_seconds
    result.eval_mode = (
        outcome.mode.model_dump(exclude_none=True) if outcome.mode else None
    )  # fp32: no autocast
    layout = layouts[0]
    check = stream_mode.replay if layout.mode.mode == "stream" else cross_check
    found = []

    def verify(session: Session) -> ScoreOutcome:
        checked_outcome, verification = check(session, layout, val, outcome, b.verify, rng)
        found.append(verification)
        return checked_outcome

    t0 = time.monotonic()
    try:
        verifier = _worker(run, VERIFY_LOG, 2 * b.score_seconds)  # a fresh folder at the same path
    except OSError as e:
        result.status, result.reason = Status.infra_error, f"harness I/O error before verification: {e}"
        result.val_bpb = result.val_loss = None
        return result
    verified, phase = drive(verifier, run.data.vocab_size, verify, run.on_start, stop_when_done=True)
    result.verify_seconds = time.monotonic() - t0
    if _failed(result, verified, phase, verifier, "verification", 2 * b.score_seconds):
        if result.status not in MACHINE_FAULTS and not result.reason.startswith("unverifiable"):
            result.status, result.reason = Status.violation, f"verification failed: {result.reason}"
        result.val_bpb = result.val_loss = None  # a score that could not be verified is no score
        return result
    result.verification = found[0].model_dump()
    return _over_scoring_time(_mismatch(result, outcome.val_bpb, b), b)


def _over_scoring_time(result: SandboxResult, b: Budget) -> SandboxResult:
    """Loading or predicting longer than the baseline did, plus the margin, is `over_time`: scored and
    shown, never promoted (a load_model that trains, or eval compute the rules do not allow)."""
    if result.status is not Status.ok:
        return result
    load, predict = result.load_seconds or 0.0, result.predict_seconds or 0.0
    allowed = b.predict_allowed_seconds(result.val_tokens or 0)
    if b.load_allowance_seconds is not None and load > b.load_allowance_seconds:
        result.status = Status.over_time
        result.reason = (
            f"loading the model took {load:.1f} s: more than the {b.load_allowance_seconds:.1f} s allowed "
            "(the baseline's own load time plus its margin)"
        )
    elif allowed is not None and predict > allowed:
        result.status = Status.over_time
        result.reason = (
            f"scoring took {predict:.1f} s of predictions: more than the {allowed:.1f} s allowed for "
            f"{result.val_tokens:,} tokens (the baseline's own time per token plus its margin)"
        )
    return result


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


def _worker(run: RunSetup, log_name: str, wall: float) -> SandboxedProcess:
    """A scoring worker in a fresh read-only folder, always at run_dir/score: the pristine trainer, the
    artifact and the worker script, written just now, so neither path nor file times tell it which it is."""
    folder = run.score_dir
    shutil.rmtree(folder, ignore_errors=True)
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
