"""Run one candidate trainer under budgets it cannot touch and score its artifact in trusted code.

Two phases, each a separate sandboxed process tree:

- train: a copy of the trainer in run_dir/train/ (its cwd, its only writable host folder), the training
  shards and the tokenizer read-only, never the validation shards. Harness-owned env (DATA_PATH, ARTIFACT_PATH,
  MAX_WALLCLOCK_SECONDS, ...) overrides the user's; nothing else of the host environment passes.
- score: a fresh process in run_dir/score/ holding a pristine copy of the trainer as it was before training
  (so a trainer that edits its own file changes nothing), the artifact, and the worker; no data files at
  all. The parent streams validation windows to it and computes val_bpb itself (sandbox/score.py).

Self-reported mode (for a trainer that cannot be re-scored, like the unmodified official script) is a
single phase with the validation shards visible, scored by parsing the log, under the same budgets.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agentgolf.baseline.shards import ShardError
from agentgolf.sandbox.bpb import ByteTable, ByteTableError
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.classify import classify_phase
from agentgolf.sandbox.isolation import (
    MARKER_ENV,
    MINIMAL_PATH,
    SANDBOX_HOME,
    IsolationError,
    Limits,
    LogCapture,
    PhaseOutcome,
    PhaseSpec,
    SandboxedProcess,
    process_limit_enforced,
    resolve_isolation,
)
from agentgolf.sandbox.metrics import SelfReport, compile_patterns, parse_self_report, parse_steps
from agentgolf.sandbox.result import DataSpec, SandboxResult, Status
from agentgolf.sandbox.score import BATCH_TOKENS_CPU, BATCH_TOKENS_GPU, load_val_tokens, run_scoring

log = logging.getLogger(__name__)

TRAINER_NAME = "train_gpt.py"
ARTIFACT_NAME = "final_model.int8.ptz"
WORKER_SOURCE = Path(__file__).with_name("score_worker.py")
WORKER_NAME = "score_worker.py"
RESULT_NAME = "result.json"
TRAIN_LOG, SCORE_LOG = "train.log", "score.log"

INSIDE_TRAIN = Path("/sandbox/train")
INSIDE_SCORE = Path("/sandbox/score")
INSIDE_SHARDS = Path("/data/shards")
INSIDE_TOKENIZERS = Path("/data/tokenizers")

HARNESS_ENV_KEYS = frozenset(
    {
        "DATA_PATH",
        "TOKENIZER_PATH",
        "VOCAB_SIZE",
        "SEED",
        "ARTIFACT_PATH",
        "MAX_WALLCLOCK_SECONDS",
        "CUDA_VISIBLE_DEVICES",
        MARKER_ENV,
    }
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LOG_TAIL_CHARS = 4000
COPY_CHUNK = 1 << 20


class SandboxInputError(ValueError):
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
) -> SandboxResult:
    """Train `trainer` in a sandbox, score its artifact, write run_dir/result.json and return the result.

    `isolation` ("bwrap" or "none") overrides $AGENTGOLF_ISOLATION; by default bwrap is used when installed
    and the run is labelled isolation="none", loudly, when it is not. Bad input raises SandboxInputError;
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
    if not process_limit_enforced():
        note = "process limit NOT enforced: running as root without a writable pids cgroup"
        warning = f"{warning}; {note}" if warning else note
    if warning:
        log.warning("sandbox: %s", warning)

    t0 = time.monotonic()
    run = _Run(source, run_dir, data, budget, user_env, seed, gpus, self_reported, patterns, on_start, mode)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        result = run.execute()
    except OSError as e:  # the harness's own disk or files, not the candidate
        result = SandboxResult(status=Status.infra_error, reason=f"harness I/O error: {e}")
    result.isolation = mode
    result.trust = "self_reported" if self_reported else "harness"
    result.code_bytes = len(source)
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


class _Run:
    """One experiment's folders, environment and phases."""

    def __init__(
        self, source, run_dir, data, budget, user_env, seed, gpus, self_reported, patterns, on_start, mode
    ):
        self.source: bytes = source
        self.run_dir: Path = run_dir.absolute()
        self.data: DataSpec = data
        self.budget: Budget = budget
        self.user_env: dict[str, str] = user_env
        self.seed: int = seed
        self.gpus: list[int] | None = gpus
        self.self_reported: bool = self_reported
        self.patterns = patterns
        self.on_start = on_start
        self.mode: str = mode
        self.train_dir = self.run_dir / "train"
        self.score_dir = self.run_dir / "score"

    # ---------------------------------------------------------------- layout

    def _inside(self, host: Path, inside: Path) -> Path:
        """Where a host path appears to the candidate: its bind target, or itself without isolation."""
        return inside if self.mode == "bwrap" else host

    def _base_env(self, home: Path) -> dict[str, str]:
        venv_bin = Path(sys.executable).parent
        return {
            "PATH": f"{venv_bin}:{MINIMAL_PATH}",
            "HOME": str(home),
            "TMPDIR": SANDBOX_HOME if self.mode == "bwrap" else str(home),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def _prepare(self) -> None:
        for sub in ("train", "score", "data", "home"):
            shutil.rmtree(self.run_dir / sub, ignore_errors=True)
        self.train_dir.mkdir()
        (self.train_dir / TRAINER_NAME).write_bytes(self.source)
        if self.mode == "none":
            (self.run_dir / "home").mkdir()

    def _missing_data(self) -> str | None:
        d = self.data
        if not d.train_files:
            return "the data spec lists no training shards"
        if not d.val_files:
            return "the data spec lists no validation shards"
        for path in [*d.train_files, *d.val_files, d.tokenizer]:
            if not Path(path).is_file():
                return f"missing data file on the host: {path}"
        names = [Path(p).name for p in [*d.train_files, *d.val_files]]
        if len(set(names)) != len(names):
            return "two data shards share a file name"
        return None

    def _shard_binds(self) -> tuple[Path, list[tuple[Path, Path]]]:
        """DATA_PATH as the trainer sees it and the binds behind it: train shards, plus val if self-reported."""
        files = list(self.data.train_files) + (list(self.data.val_files) if self.self_reported else [])
        if self.mode == "bwrap":
            return INSIDE_SHARDS, [(Path(f).absolute(), INSIDE_SHARDS / Path(f).name) for f in files]
        view = self.run_dir / "data"  # no isolation: a folder of links with the same content
        view.mkdir()
        for f in files:
            (view / Path(f).name).symlink_to(Path(f).absolute())
        return view, []

    # ---------------------------------------------------------------- phases

    def execute(self) -> SandboxResult:
        problem = self._missing_data()
        if problem:
            return SandboxResult(status=Status.infra_error, reason=problem)
        self._prepare()
        train = self._train()
        if train.status is not Status.ok or self.self_reported:
            return train
        return self._score(train)

    def _train(self) -> SandboxResult:
        b = self.budget
        data_path, binds = self._shard_binds()
        tokenizer = Path(self.data.tokenizer).absolute()
        inside_tok = self._inside(tokenizer, INSIDE_TOKENIZERS / tokenizer.name)
        if self.mode == "bwrap":
            binds.append((tokenizer, inside_tok))
        cwd = self._inside(self.train_dir, INSIDE_TRAIN)
        harness = {
            "DATA_PATH": str(data_path),
            "TOKENIZER_PATH": str(inside_tok),
            "VOCAB_SIZE": str(self.data.vocab_size),
            "SEED": str(self.seed),
            "ARTIFACT_PATH": str(cwd / ARTIFACT_NAME),
            "MAX_WALLCLOCK_SECONDS": f"{b.train_seconds:g}",
            "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in self.gpus) if self.gpus else "",
        }
        home = Path(SANDBOX_HOME) if self.mode == "bwrap" else self.run_dir / "home"
        env = {**self._base_env(home), **self.user_env, **harness}
        if self.gpus:
            argv = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={len(self.gpus)}",
                TRAINER_NAME,
            ]
        else:
            argv = [sys.executable, TRAINER_NAME]
        spec = PhaseSpec(
            argv=argv,
            cwd=cwd,
            env=env,
            ro_binds=binds,
            rw_binds=[(self.train_dir, INSIDE_TRAIN)] if self.mode == "bwrap" else [],
            gpu=bool(self.gpus),
            limits=self._limits(b.train_kill_seconds),
            log_path=self.run_dir / TRAIN_LOG,
            log_bytes=b.log_bytes,
        )
        proc = SandboxedProcess(spec, self.mode)
        phase = proc.run(self.on_start)
        return self._after_training(phase, proc.capture)

    def _limits(self, wall: float) -> Limits:
        b = self.budget
        return Limits(
            wall_seconds=wall,
            max_file_bytes=b.max_file_bytes,
            memory_bytes=None if self.gpus else b.memory_bytes,
            max_processes=b.max_processes,
        )

    def _after_training(self, phase: PhaseOutcome, capture: LogCapture) -> SandboxResult:
        b = self.budget
        text = capture.text()
        result = SandboxResult(
            status=Status.ok,
            train_seconds=phase.wall_seconds,
            steps=parse_steps(text),
            log_tail=capture.tail(LOG_TAIL_CHARS),
        )
        report = parse_self_report(text, self.patterns)
        if report is not None:
            result.self_val_bpb = report.val_bpb
        failed = classify_phase(
            phase, text, name="training", limit_seconds=b.train_kill_seconds, max_processes=b.max_processes
        )
        if failed:
            result.status, result.reason = failed
            return result
        artifact, problem = self._artifact_size()
        if problem:
            result.status, result.reason = Status.crash, problem
            return result
        result.model_bytes = artifact
        result.artifact_bytes = len(self.source) + artifact
        if result.artifact_bytes > b.size_bytes:
            result.status = Status.over_size
            result.reason = (
                f"artifact is {result.artifact_bytes:,} bytes (code {len(self.source):,} + model "
                f"{artifact:,}), over the {b.size_bytes:,} byte limit"
            )
            return result
        if self.self_reported:
            return self._self_reported_result(result, report)
        return result

    def _artifact_path(self) -> Path:
        return self.train_dir / ARTIFACT_NAME

    def _artifact_size(self) -> tuple[int, str | None]:
        """Size of the artifact the trainer left, which must be a plain file (no link, no fifo)."""
        try:
            st = os.lstat(self._artifact_path())
        except FileNotFoundError:
            return 0, f"training wrote no artifact at ARTIFACT_PATH ({ARTIFACT_NAME})"
        if not stat.S_ISREG(st.st_mode):
            return 0, "the artifact is not a regular file (a link, folder or device)"
        return st.st_size, None

    def _self_reported_result(self, result: SandboxResult, report: SelfReport | None) -> SandboxResult:
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

    def _copy_artifact(self, dest: Path) -> None:
        """Copy without following links; the candidate's processes are all dead by now."""
        fd = os.open(self._artifact_path(), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as src, open(dest, "wb") as out:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                raise OSError("artifact changed type")
            shutil.copyfileobj(src, out, COPY_CHUNK)

    def _score(self, train: SandboxResult) -> SandboxResult:
        b = self.budget
        result = train
        try:
            val = load_val_tokens([Path(f) for f in self.data.val_files])
            table = ByteTable.from_model(Path(self.data.tokenizer), self.data.vocab_size)
        except (ShardError, ByteTableError) as e:
            result.status, result.reason = Status.infra_error, f"cannot read the validation data: {e}"
            return result
        self.score_dir.mkdir()
        (self.score_dir / TRAINER_NAME).write_bytes(self.source)  # pristine: as measured before training
        shutil.copyfile(WORKER_SOURCE, self.score_dir / WORKER_NAME)
        try:
            self._copy_artifact(self.score_dir / ARTIFACT_NAME)
        except OSError as e:
            result.status, result.reason = Status.crash, f"the artifact could not be read: {e.strerror or e}"
            return result
        device = "cuda:0" if self.gpus else "cpu"
        cwd = self._inside(self.score_dir, INSIDE_SCORE)
        home = Path(SANDBOX_HOME) if self.mode == "bwrap" else self.run_dir / "home"
        env = {
            **self._base_env(home),
            **self.user_env,
            "CUDA_VISIBLE_DEVICES": str(self.gpus[0]) if self.gpus else "",
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
            ro_binds=[(self.score_dir, INSIDE_SCORE)] if self.mode == "bwrap" else [],
            gpu=bool(self.gpus),
            limits=self._limits(b.score_seconds),
            log_path=self.run_dir / SCORE_LOG,
            log_bytes=b.log_bytes,
            protocol=True,
        )
        proc = SandboxedProcess(spec, self.mode)
        outcome, phase = run_scoring(
            proc,
            val,
            table,
            self.data.vocab_size,
            batch_tokens=BATCH_TOKENS_GPU if self.gpus else BATCH_TOKENS_CPU,
            on_start=self.on_start,
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
        if (
            claimed is not None
            and math.isfinite(claimed)
            and claimed < outcome.val_bpb - b.metric_tolerance_bpb
        ):
            result.status = Status.metric_mismatch
            result.reason = (
                f"the trainer printed val_bpb {claimed:.6f} but the harness measured "
                f"{outcome.val_bpb:.6f} (tolerance {b.metric_tolerance_bpb})"
            )
        return result


IMPORT_CHECK = (
    "import importlib.util, sys; s = importlib.util.spec_from_file_location('candidate', sys.argv[1]); "
    "m = importlib.util.module_from_spec(s); sys.modules['candidate'] = m; s.loader.exec_module(m); "
    "assert callable(getattr(m, 'load_model', None)), 'load_model(artifact_path, device) is missing'"
)
IMPORT_CHECK_SECONDS = 120.0


def check_import(
    trainer: Path, work_dir: Path, budget: Budget, *, isolation: str | None = None
) -> str | None:
    """Import a candidate trainer in the sandbox (no data in view): None if it imports, else the error line.

    This runs the candidate's module-level code, so it gets the same isolation and limits as training.
    """
    mode, _ = resolve_isolation(isolation)
    work_dir = Path(work_dir).absolute()
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    (work_dir / TRAINER_NAME).write_bytes(Path(trainer).read_bytes())
    inside = INSIDE_TRAIN if mode == "bwrap" else work_dir
    home = Path(SANDBOX_HOME) if mode == "bwrap" else work_dir
    env = {"PATH": f"{Path(sys.executable).parent}:{MINIMAL_PATH}", "HOME": str(home), "LANG": "C.UTF-8"}
    env |= {"PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(home)}
    spec = PhaseSpec(
        argv=[sys.executable, "-c", IMPORT_CHECK, TRAINER_NAME],
        cwd=inside,
        env=env,
        ro_binds=[(work_dir, INSIDE_TRAIN)] if mode == "bwrap" else [],
        limits=Limits(
            wall_seconds=min(IMPORT_CHECK_SECONDS, budget.train_kill_seconds),
            max_file_bytes=budget.max_file_bytes,
            memory_bytes=budget.memory_bytes,
            max_processes=budget.max_processes,
        ),
        log_path=work_dir / "import.log",
        log_bytes=budget.log_bytes,
    )
    outcome = SandboxedProcess(spec, mode).run()
    if outcome.timed_out:
        return f"importing {TRAINER_NAME} took over {spec.limits.wall_seconds:.0f} s"
    if outcome.returncode == 0:
        return None
    lines = [
        line for line in (work_dir / "import.log").read_text(errors="replace").splitlines() if line.strip()
    ]
    lines = [line for line in lines if not line.startswith("[agentgolf]")]
    return f"{TRAINER_NAME} fails to import: {lines[-1] if lines else f'exit code {outcome.returncode}'}"
