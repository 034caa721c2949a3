"""How far past train_seconds a training phase may run, and why: in a run, per rung; in `agentgolf sandbox`.

A run sets each rung's allowances (the overhead of start-up, compile and export; the scoring worker's load
and predict times) from what that rung's baseline runs measured, plus the margins (`measured`, `judged`).
Those baseline runs, the baseline and its calibration seeds, are judged against the kill limits only: they
are the yardstick, so no default allowance may fail them before they have measured (a cold compile on a GPU
takes far longer than the default 60 s). The allowance follows the measurement up as well as down, never
past the grace.

A standalone sandbox run has no baseline row, so without the rest of this module a trainer that ignores its
clock could train through the whole default allowance and still be `ok`. So the same rule applies there: the
workspace's trainer at HEAD is measured once, and its timing is cached per trainer commit, machine and the
budget figures that change it, in `.agentgolf/allowance.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from pydantic import BaseModel, ValidationError

from agentgolf.challenge import TRAINER_FILE
from agentgolf.errors import AgentgolfError, first_line
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind, RowStatus
from agentgolf.sandbox.budget import Budget, Timing
from agentgolf.sandbox.result import SandboxResult, Status

if TYPE_CHECKING:
    from agentgolf.agent.controller.lab import Lab
    from agentgolf.agent.workspace import Workspace, WorkspaceConfig

CACHE_FILE = "allowance.json"


class Entry(BaseModel):
    """One baseline measurement, with what it was measured under (the key, spelled out for a reader)."""

    commit: str
    machine: str
    train_seconds: float
    gpus: list[int] | None
    env: dict[str, str]
    timing: Timing
    run_dir: str
    measured_at: float


class Cache(BaseModel):
    entries: dict[str, Entry] = {}


class Allowance(NamedTuple):
    budget: Budget  # the budget the candidate runs under
    origin: str  # where its training allowance came from, said in the output

    def line(self) -> str:
        b = self.budget
        over = b.train_allowed_seconds - b.train_seconds
        scoring = ""
        if b.load_allowance_seconds is not None:
            scoring = f"; the scoring worker may take {seconds(b.load_allowance_seconds)} s to load"
        return (
            f"allowance: the training phase may take {seconds(b.train_allowed_seconds)} s "
            f"(train_seconds {seconds(b.train_seconds)} + {seconds(over)} s overhead): {self.origin}{scoring}"
        )


def uses_gpus(config: WorkspaceConfig) -> bool:
    """Do the workspace's experiments train on GPUs (local ones, or a SLURM job's)? Their grace is the GPU one."""
    return bool(config.gpus) or (config.executor == "slurm" and config.slurm.gpus_per_experiment > 0)


# -- a run's allowances, per rung, from its baseline runs --


def measures_baseline(exp: Experiment) -> bool:
    """A run of the unmodified trainer that measures the allowances: the run's baseline and its calibration
    seeds, on any rung. A new best's first screened run is a calibration of a changed commit: judged as usual."""
    if exp.kind == Kind.baseline:
        return True
    return exp.kind == Kind.calibration and bool(exp.commit_sha) and exp.commit_sha == exp.parent_commit


def row_timing(exp: Experiment) -> Timing:
    """What a row measured of itself (Lab.record keeps it in the manifest; an older row has only its
    training phase)."""
    try:
        timing = Timing.model_validate(exp.manifest.get("timing") or {})
    except ValidationError:
        timing = Timing()
    if timing.train_phase_seconds is None:
        timing.train_phase_seconds = exp.train_seconds
    return timing


class Measured(NamedTuple):
    """What one rung's latest baseline run measured, its training phase counted past that rung's
    train_seconds (its overhead: start-up, compile, export); and how many baseline runs the rung has had."""

    runs: int
    timing: Timing


def measured(rows: Sequence[Experiment], train_seconds: Callable[[Experiment], float]) -> dict[str, Measured]:
    """Per rung ("" is the full budget), what its latest baseline run that ended `ok` measured. The latest,
    not the slowest: the baseline builds the compile cache cold, and its seeds then start warm, as every
    candidate does, so the allowance tightens to a warm start (a cold compile's minute in every candidate's
    allowance would be training time to buy)."""
    by_rung: dict[str, list[Experiment]] = {}
    for e in sorted(rows, key=lambda e: (e.finished_at or 0.0, e.id)):
        if measures_baseline(e) and e.status == RowStatus.ok:
            by_rung.setdefault(e.rung, []).append(e)
    found = {}
    for rung, runs in by_rung.items():
        timing = row_timing(runs[-1])
        if timing.train_phase_seconds is not None:
            timing.train_phase_seconds -= train_seconds(runs[-1])
        found[rung] = Measured(len(runs), timing)
    return found


def judged(budget: Budget, exp: Experiment, found: dict[str, Measured]) -> Budget:
    """The budget `exp` runs under, from its rung's `budget`: a baseline run is judged against the kill
    limits only; any other row against what its rung's baseline runs measured, plus the margins (before the
    rung's first has come in, the full budget's; before any, the configured defaults)."""
    if measures_baseline(exp):
        return budget.limits_only()
    on_rung = found.get(exp.rung) or found.get("")
    if on_rung is None:
        return budget
    timing, overhead = on_rung.timing, on_rung.timing.train_phase_seconds
    if overhead is not None:
        timing = timing.model_copy(update={"train_phase_seconds": budget.train_seconds + overhead})
    return budget.with_measured(timing)


def update(lab: Lab, rows: Sequence[Experiment], exp: Experiment) -> str:
    """Set the run's allowances (`lab.measured`) from its rows, once `exp` has been recorded; when `exp` is a
    baseline run that measured, the line saying what its rung's candidates may now take, else ""."""
    runs = [lab.ledger.get(e.id) for e in rows if measures_baseline(e) and e.status == RowStatus.ok]
    lab.measured = measured(runs, lambda e: lab.budget_for(e).train_seconds)  # whole rows: their manifests
    if not measures_baseline(exp) or exp.status != RowStatus.ok or exp.rung not in lab.measured:
        return ""
    n = lab.measured[exp.rung].runs
    b = lab.budget_for(exp.model_copy(update={"kind": Kind.proposal}))  # what a candidate on its rung gets
    where = f"on rung {exp.rung}" if exp.rung else "at the full budget"
    return Allowance(b, f"the latest of {n} baseline run(s) {where}, plus the margin").line()


def seconds(value: float) -> str:
    return f"{round(value, 1):g}"


def machine() -> str:
    """Host, GPU models (or "cpu") and core count: a timing measured on one machine says nothing of another."""
    gpus = "cpu"
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            query = [exe, "--query-gpu=name", "--format=csv,noheader"]
            names = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout
            gpus = ",".join(n.strip() for n in names.splitlines() if n.strip()) or "cpu"
        except (OSError, subprocess.SubprocessError):
            gpus = "gpu (nvidia-smi failed)"
    return f"{socket.gethostname()} / {gpus} / {os.cpu_count()} cores"


def resolve(
    ws: Workspace,
    budget: Budget,
    *,
    overhead: float | None = None,
    measure: bool = True,
    say: Callable[[str], None] = print,
) -> Allowance:
    """The budget a standalone candidate runs under: a stated overhead, the default (measure=False), or the
    baseline's measured timing, cached or measured now (one sandboxed run of the trainer at HEAD)."""
    budget = budget.for_gpus(bool(ws.config.gpus))
    default = seconds(budget.train_allowed_seconds - budget.train_seconds)
    unbounded = f"training past train_seconds is only bounded by the default allowance of {default} s"
    if overhead is not None:
        if overhead < 0:
            raise AgentgolfError(f"--overhead must be at least 0 seconds, got {seconds(overhead)}")
        stated = budget.model_copy(update={"train_overhead_seconds": overhead})
        return Allowance(stated, f"stated (--overhead {seconds(overhead)})")
    if not measure:
        return Allowance(budget, f"not measured (--no-measure): {unbounded}")
    timing, how = baseline_timing(ws, budget, say)
    if timing is None:
        return Allowance(budget, f"{how}: {unbounded}")
    phase = timing.train_phase_seconds
    if phase is None or phase <= budget.train_seconds:  # stopped before its clock: no overhead measured
        took = "no training phase" if phase is None else f"a training phase of {phase:.1f} s"
        return Allowance(budget.with_measured(timing), f"{how}: {took}, none past train_seconds; {unbounded}")
    margin = seconds(budget.overhead_margin_seconds)
    return Allowance(budget.with_measured(timing), f"{how} (training phase {phase:.1f} s, plus {margin} s)")


def baseline_timing(ws: Workspace, budget: Budget, say: Callable[[str], None]) -> tuple[Timing | None, str]:
    """The baseline's timing from the cache, else measured now and cached; None if its run failed. With it,
    a phrase saying where the timing came from."""
    commit, source = baseline_at_head(ws)
    fields = {"commit": commit, "machine": machine(), "train_seconds": budget.train_seconds}
    fields |= {"gpus": ws.config.gpus, "env": dict(ws.config.trainer_env)}
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    path = ws.state / CACHE_FILE
    cache = load_cache(path, say)
    where = f"the baseline ({ws.config.trainer} at commit {commit[:10]}) on this machine"
    if key in cache.entries:
        return cache.entries[key].timing, f"measured on {where}, cached in {path}"
    say("measuring the baseline's overhead once for this commit and machine (cached)")
    result = run_baseline(ws, commit, source, budget)
    if result.status is not Status.ok:
        why = f"{result.status.value}: {first_line(result.reason or '-')}"
        return None, f"{where} ended {why}, so nothing was measured (not cached)"
    timing = Timing.of(result)
    cache.entries[key] = Entry(**fields, timing=timing, run_dir=str(result.run_dir), measured_at=time.time())
    try:
        save_cache(path, cache)
    except OSError as exc:
        say(f"warning: could not write the allowance cache {path} ({first_line(exc)})")
        return timing, f"measured just now on {where} (not cached)"
    return timing, f"measured just now on {where}, cached in {path}"


def baseline_at_head(ws: Workspace) -> tuple[str, bytes]:
    """The commit at HEAD of the workspace's repository and its trainer as committed (not the working copy)."""
    import git

    from agentgolf.experiments.worktree import open_repo

    repo = open_repo(ws.root)
    try:
        commit = repo.head.commit.hexsha
        source = repo.git.show(f"{commit}:{ws.config.trainer}", stdout_as_string=False)
    except (ValueError, git.GitCommandError) as exc:
        raise AgentgolfError(
            f"no committed {ws.config.trainer} at HEAD of {ws.root} to measure the overhead on: "
            "pass --overhead SECONDS or --no-measure"
        ) from exc
    return commit, source


def run_baseline(ws: Workspace, commit: str, source: bytes, budget: Budget) -> SandboxResult:
    """One sandboxed run of the committed trainer, as the candidate will run: same env, seed, GPUs, budget,
    save the allowances it is there to measure."""
    from agentgolf.sandbox.runner import run_sandboxed

    run_dir = ws.state / "sandbox" / f"baseline-{commit[:10]}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / TRAINER_FILE).write_bytes(source)
    env, seed, gpus = dict(ws.config.trainer_env), ws.config.seed, ws.config.gpus
    limits = budget.limits_only()  # the yardstick itself: judged against the kill limits only
    return run_sandboxed(
        run_dir / TRAINER_FILE, run_dir, ws.data_spec(), limits, env=env, seed=seed, gpus=gpus
    )


def load_cache(path, say: Callable[[str], None]) -> Cache:
    """A missing cache is empty; a corrupt one is ignored with a warning (and rewritten), never fatal."""
    try:
        return Cache.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return Cache()
    except (OSError, ValidationError, ValueError) as exc:
        say(f"warning: allowance cache {path} is unreadable ({first_line(exc)}): ignored, measuring again")
        return Cache()


def save_cache(path, cache: Cache) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(cache.model_dump_json(indent=2) + "\n")
    tmp.replace(path)
