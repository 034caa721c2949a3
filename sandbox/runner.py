"""Run one candidate trainer under budgets it cannot touch and score its artifact in trusted code.

Two phases, each a separate sandboxed process tree:

- train (sandbox/train_phase.py): a copy of the trainer in run_dir/train/ (its cwd, its only writable host
  folder), the training shards and the tokenizer read-only, never the validation shards. Harness-owned env
  (DATA_PATH, ARTIFACT_PATH, MAX_WALLCLOCK_SECONDS, ...) overrides the user's; nothing else of the host
  environment passes.
- score (sandbox/scoring/score_phase.py): a fresh process in run_dir/score/ holding a pristine copy of the trainer
  as it was before training (so a trainer that edits its own file changes nothing), the artifact, and the
  worker; no data files at all. The parent streams validation windows to it and computes val_bpb itself
  (sandbox/scoring/score.py).

Self-reported mode (for a trainer that cannot be re-scored, like the unmodified official script) is a
single phase with the validation shards visible, scored by parsing the log, under the same budgets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from agentgolf.errors import AgentgolfError
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.isolation.bwrap import IsolationError, resolve_isolation
from agentgolf.sandbox.isolation.compile_cache import CacheUse
from agentgolf.sandbox.isolation.process import MARKER_ENV
from agentgolf.sandbox.metrics import compile_patterns
from agentgolf.sandbox.result import DataSpec, SandboxResult, Status
from agentgolf.sandbox.run_setup import RunSetup
from agentgolf.sandbox.scoring.score_phase import score_artifact
from agentgolf.sandbox.train_phase import train_candidate

log = logging.getLogger(__name__)

RESULT_NAME = "result.json"

HARNESS_ENV_KEYS = frozenset(
    {
        "DATA_PATH",
        "TOKENIZER_PATH",
        "VOCAB_SIZE",
        "SEED",
        "ARTIFACT_PATH",
        "MAX_WALLCLOCK_SECONDS",
        "CUDA_VISIBLE_DEVICES",
        "TRAIN_CLOCK",
        "MAX_CPU_SECONDS",
        MARKER_ENV,
    }
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SandboxInputError(AgentgolfError, ValueError):
    """The caller asked for something the sandbox cannot run (bad path, bad env, bad pattern)."""


class TrainerNotFoundError(SandboxInputError):
    """The trainer file does not exist or is not a regular file."""


def run_sandboxed(
    trainer: Path,
    run_dir: Path,
    data: DataSpec,
    budget: Budget,
    *,
    env: dict[str, str] | None = None,
    seed: int = 1337,
    gpus: list[int] | None = None,
    self_reported: bool = False,
    metric_patterns: list[str] | None = None,
    on_start: Callable[[int], None] | None = None,
    isolation: str | None = None,
    compile_cache: CacheUse | None = None,
) -> SandboxResult:
    """Train `trainer` in a sandbox, score its artifact, write run_dir/result.json and return the result.

    `isolation` ("bwrap" or "none") overrides $AGENTGOLF_ISOLATION; by default bwrap is used when installed
    and the run is labelled isolation="none", loudly, when it is not. `compile_cache`: the training phase's
    (sandbox/isolation/compile_cache.py; used only with bubblewrap). Bad input raises SandboxInputError;
    everything that goes wrong while running becomes a status in the result.
    """
    trainer, run_dir = Path(trainer), Path(run_dir)
    if not trainer.is_file():
        raise TrainerNotFoundError(f"trainer file not found: {trainer}")
    source = trainer.read_bytes()
    try:
        patterns = compile_patterns(metric_patterns)
        mode, warning = resolve_isolation(isolation)
    except (ValueError, IsolationError) as e:
        raise SandboxInputError(str(e)) from None
    user_env = _user_env(env)
    if gpus is not None and (not gpus or any(not isinstance(g, int) or g < 0 for g in gpus)):
        raise SandboxInputError(f"gpus must be a non-empty list of device indices, got {gpus!r}")
    if warning:
        log.warning("sandbox: %s", warning)
    budget = budget.for_gpus(gpus is not None)  # an unset grace: the GPU one or the CPU one

    t0 = time.monotonic()
    run = RunSetup(
        source,
        run_dir,
        data,
        budget,
        user_env,
        seed,
        gpus,
        self_reported,
        patterns,
        on_start,
        mode,
        compile_cache,
    )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        result = _execute(run)
    except OSError as e:  # the harness's own disk or files, not the candidate
        result = SandboxResult(status=Status.infra_error, reason=f"harness I/O error: {e}")
    result.isolation = mode
    result.limits_not_enforced = list(run.limit_notes)
    if run.limit_notes:
        log.warning("sandbox: NOT enforced here: %s", "; ".join(run.limit_notes))
        unenforced = "NOT enforced here: " + "; ".join(run.limit_notes)
        warning = f"{warning}; {unenforced}" if warning else unenforced
    result.trust = "self_reported" if self_reported else "harness"
    result.code_bytes = len(source)
    result.trainer_sha256 = hashlib.sha256(source).hexdigest()  # the file that ran (lab.py checks its commit)
    result.run_dir = run_dir
    result.wall_seconds = time.monotonic() - t0
    if warning:
        result.reason = f"{result.reason} [{warning}]".strip()
    _write_result(run_dir, result)
    return result


def _user_env(env: dict[str, str] | None) -> dict[str, str]:
    """The trainer's own settings; names the harness owns are dropped (and said so), never overridden."""
    clean: dict[str, str] = {}
    for key, value in (env or {}).items():
        if not isinstance(key, str) or not ENV_NAME.match(key):
            raise SandboxInputError(f"invalid environment variable name {key!r}")
        if not isinstance(value, str) or "\0" in value:
            raise SandboxInputError(f"environment variable {key} must be a string without NUL bytes")
        if key in HARNESS_ENV_KEYS:
            log.warning("sandbox: ignoring %s from the trainer env: the harness sets it", key)
            continue
        clean[key] = value
    return clean


def _write_result(run_dir: Path, result: SandboxResult) -> None:
    try:
        tmp = run_dir / f".{RESULT_NAME}.tmp"
        tmp.write_text(json.dumps(result.model_dump(mode="json"), indent=2) + "\n")
        os.replace(tmp, run_dir / RESULT_NAME)
    except OSError as e:
        log.error("sandbox: could not write %s: %s", run_dir / RESULT_NAME, e)


def _execute(run: RunSetup) -> SandboxResult:
    """The phases in order: check the data, lay out the folders, train, then (unless it failed) score."""
    problem = run.missing_data()
    if problem:
        return SandboxResult(status=Status.infra_error, reason=problem)
    run.prepare()
    train = train_candidate(run)
    if train.status is not Status.ok or run.self_reported:
        return train
    result = score_artifact(run, train)
    b = run.budget
    allowed = b.train_allowed_seconds
    if result.status is Status.ok and (result.train_clock_seconds or 0.0) > allowed:
        result.status = Status.over_time
        overhead = allowed - b.train_seconds
        more = f"more than train_seconds {b.train_seconds:g} s plus its {overhead:g} s overhead allowance"
        threads = result.train_threads
        if result.train_clock == "cpu" and threads and result.train_cpu_seconds is not None:
            result.reason = (
                f"training used {result.train_cpu_seconds:.1f} CPU-seconds on {threads} thread(s) (the CPU "
                f"clock; {result.train_seconds:.1f} s wall): {more}, x {threads} thread(s) = "
                f"{b.cpu_seconds(allowed, threads):g} CPU-seconds"
            )
        else:
            result.reason = f"training took {result.train_seconds:.1f} s: {more}"
    return result
