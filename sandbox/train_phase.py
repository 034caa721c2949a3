"""The training phase of a run: train the candidate in a sandbox, then measure the artifact it left.

The trainer runs from a copy in run_dir/train/ (its cwd, its only writable host folder), with the training
shards and the tokenizer read-only, never the validation shards. Harness-owned env (DATA_PATH,
ARTIFACT_PATH, MAX_WALLCLOCK_SECONDS, TRAIN_CLOCK, ...) overrides the user's; nothing else of the host
environment passes. In self-reported mode the validation shards are visible too, and the score is parsed
from the log.

A CPU run with a thread count (RunSetup.cpu_threads) trains on the CPU clock (sandbox/cpu.py): TRAIN_CLOCK=cpu
and MAX_CPU_SECONDS = train_seconds x threads tell the trainer, and the phase is killed once its tree has used
(train_seconds + train_grace_seconds) x threads CPU seconds, or by a wall-clock kill behind it
(Budget.cpu_wall_factor times the usual one: load stretches its wall time).
"""

from __future__ import annotations

import math
import os
import stat
import sys
from pathlib import Path

from agentgolf.sandbox.classify import classify_phase
from agentgolf.sandbox.isolation.logs import LogCapture
from agentgolf.sandbox.isolation.process import SandboxedProcess
from agentgolf.sandbox.metrics import (
    SelfReport,
    parse_init_hash,
    parse_self_report,
    parse_step_ms,
    parse_steps,
)
from agentgolf.sandbox.phase import PhaseOutcome, PhaseSpec
from agentgolf.sandbox.result import SandboxResult, Status
from agentgolf.sandbox.run_setup import (
    ARTIFACT_NAME,
    INSIDE_SHARDS,
    INSIDE_TOKENIZERS,
    INSIDE_TRAIN,
    LOG_TAIL_CHARS,
    TRAIN_LOG,
    TRAINER_NAME,
    RunSetup,
)


def train_candidate(run: RunSetup) -> SandboxResult:
    """Run the trainer in its sandbox; the result says how it ended and what its artifact measures."""
    b = run.budget
    cuda = (
        run.cuda_problem()
    )  # a GPU slot whose sandbox cannot start CUDA: the machine's fault, not the idea's
    if cuda:
        return SandboxResult(status=Status.infra_error, reason=cuda)
    data_path, binds = _shard_binds(run)
    tokenizer = Path(run.data.tokenizer).absolute()
    inside_tok = run.inside(tokenizer, INSIDE_TOKENIZERS / tokenizer.name)
    if run.mode == "bwrap":
        binds.append((tokenizer, inside_tok))
    cwd = run.inside(run.train_dir, INSIDE_TRAIN)
    threads = run.cpu_threads()
    harness = {
        "DATA_PATH": str(data_path),
        "TOKENIZER_PATH": str(inside_tok),
        "VOCAB_SIZE": str(run.data.vocab_size),
        "SEED": str(run.seed),
        "ARTIFACT_PATH": str(cwd / ARTIFACT_NAME),
        "MAX_WALLCLOCK_SECONDS": f"{b.train_seconds:g}",
        "CUDA_VISIBLE_DEVICES": run.cuda_visible(run.gpus or []),
        "TRAIN_CLOCK": "cpu" if threads else "wall",
    }
    if threads:
        harness["MAX_CPU_SECONDS"] = f"{b.cpu_seconds(b.train_seconds, threads):g}"
    env = {**run.base_env(run.home()), **run.cache_env(), **run.user_env, **harness}
    if run.gpus:
        argv = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={len(run.gpus)}",
            TRAINER_NAME,
        ]
    else:
        argv = [sys.executable, TRAINER_NAME]
    cache_ro, cache_rw = run.cache_binds()  # the compile cache: a template copied in, or the trusted build
    spec = PhaseSpec(
        argv=run.cache_argv(argv),
        cwd=cwd,
        env=env,
        ro_binds=binds + cache_ro,
        rw_binds=([(run.train_dir, INSIDE_TRAIN)] if run.mode == "bwrap" else []) + cache_rw,
        gpus=run.gpus or [],
        limits=run.limits(
            b.wall_kill_seconds(cpu_clock=bool(threads)),
            cpu=b.cpu_seconds(b.train_kill_seconds, threads) if threads else None,
        ),
        log_path=run.run_dir / TRAIN_LOG,
        log_bytes=b.log_bytes,
        hidden=run.hidden(),
        disk_paths=run.writable([run.train_dir]),
    )
    proc = SandboxedProcess(spec, run.mode, notes=run.limit_notes)
    phase = proc.run(run.on_start)
    return _after_training(run, phase, proc.capture)


def _shard_binds(run: RunSetup) -> tuple[Path, list[tuple[Path, Path]]]:
    """DATA_PATH as the trainer sees it and the binds behind it: train shards, plus val if self-reported."""
    files = list(run.data.train_files) + (list(run.data.val_files) if run.self_reported else [])
    if run.mode == "bwrap":
        return INSIDE_SHARDS, [(Path(f).absolute(), INSIDE_SHARDS / Path(f).name) for f in files]
    view = run.run_dir / "data"  # no isolation: a folder of links with the same content
    view.mkdir()
    for f in files:
        (view / Path(f).name).symlink_to(Path(f).absolute())
    return view, []


def _after_training(run: RunSetup, phase: PhaseOutcome, capture: LogCapture) -> SandboxResult:
    b = run.budget
    text = capture.text()
    result = SandboxResult(
        status=Status.ok,
        train_seconds=phase.wall_seconds,
        train_clock="cpu" if phase.cpu_limit_seconds is not None else "wall",
        train_cpu_seconds=phase.cpu_seconds,
        train_threads=run.cpu_threads(),
        steps=parse_steps(text),
        step_ms=parse_step_ms(text),
        init_hash=parse_init_hash(text),
        log_tail=capture.tail(LOG_TAIL_CHARS),
    )
    report = parse_self_report(text, run.patterns)
    if report is not None:
        result.self_val_bpb = report.val_bpb
    failed = classify_phase(
        phase,
        text,
        name="training",
        limit_seconds=b.wall_kill_seconds(cpu_clock=phase.cpu_limit_seconds is not None),
        max_processes=b.max_processes,
    )
    if failed:
        result.status, result.reason = failed
        return result
    run.reclaim()
    artifact, problem = _artifact_size(run)
    if problem:
        result.status, result.reason = Status.crash, problem
        return result
    result.model_bytes = artifact
    result.artifact_bytes = len(run.source) + artifact
    if result.artifact_bytes > b.size_bytes:
        result.status = Status.over_size
        result.reason = (
            f"artifact is {result.artifact_bytes:,} bytes (code {len(run.source):,} + model "
            f"{artifact:,}), over the {b.size_bytes:,} byte limit"
        )
        return result
    if run.self_reported:
        return _self_reported_result(result, report)
    return result


def _artifact_size(run: RunSetup) -> tuple[int, str | None]:
    """Size of the artifact the trainer left, which must be a plain file (no link, no fifo)."""
    try:
        st = os.lstat(run.artifact_path())
    except FileNotFoundError:
        return 0, f"training wrote no artifact at ARTIFACT_PATH ({ARTIFACT_NAME})"
    except OSError as e:  # whatever the candidate did to its own folder is its own failure
        return 0, f"the artifact could not be read ({type(e).__name__})"
    if not stat.S_ISREG(st.st_mode):
        return 0, "the artifact is not a regular file (a link, folder or device)"
    return st.st_size, None


def _self_reported_result(result: SandboxResult, report: SelfReport | None) -> SandboxResult:
    if report is None:
        result.status, result.reason = Status.crash, "self-reported mode: no score line found in the log"
    elif not math.isfinite(report.val_bpb):
        result.status, result.reason = (
            Status.nan,
            f"the trainer reported a non-finite score: {report.line}",
        )
    else:
        result.val_bpb, result.val_loss = report.val_bpb, report.val_loss
        result.reason = "score parsed from the trainer's own log (not re-scored by the harness)"
    return result
