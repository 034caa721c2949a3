"""`agentgolf check FILE`: does a trainer keep the trainer contract? Its source read, then one short sandboxed run.

The run is the `agentgolf sandbox` path (agent/judge/allowance.py for the budget, sandbox/runner.py to train) with
one difference that makes the comparison exact: its training phase sees the validation shards, as in
self-reported mode, so the trainer can print its own score of the weights it leaves; the harness then scores
that same artifact in its data-less workers and verifies it (sandbox/scoring/score_phase.py). Nothing of a check is
recorded in a ledger, so the shown validation data cannot flatter any result. The gap between the two scores
says whether the trainer's `load_model`/`forward_logits` port computes what its own evaluation does.

Where the trainer cannot run here (no workspace data, or a CUDA trainer on a CPU machine), the check says so
and stands on its static points (agent/trainer/contract.py).
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from agentgolf.agent.trainer.contract import Point, read_source, static_points
from agentgolf.challenge import SIZE_LIMIT_BYTES
from agentgolf.errors import AgentgolfError, first_line
from agentgolf.sandbox.result import SandboxResult, Status

if TYPE_CHECKING:
    from agentgolf.agent.workspace import Workspace
    from agentgolf.sandbox.budget import Budget

CHECK_SECONDS = 20.0  # the short training a check gives a trainer unless told otherwise
NEEDS_CUDA = re.compile(r"cuda|nccl|nvidia|flash_attn|no gpu", re.IGNORECASE)
NO_ARTIFACT = ("training wrote no artifact", "the artifact")  # sandbox/train_phase.py's words
TRAINING_FAULTS = (Status.crash, Status.oom, Status.timeout, Status.nan, Status.violation, Status.infra_error)


class CheckReport(BaseModel):
    """What `check` found: every point, and the run's numbers when it ran."""

    trainer: str
    points: list[Point]
    ran: bool = False
    result: dict | None = None

    @property
    def missed(self) -> list[Point]:
        return [p for p in self.points if p.state == "missed"]

    def summary(self) -> str:
        counts = {s: sum(p.state == s for p in self.points) for s in ("met", "warn", "unchecked")}
        tail = f"{counts['met']} met, {counts['warn']} warning(s), {counts['unchecked']} not checked here"
        if self.missed:
            names = ", ".join(dict.fromkeys(p.name for p in self.missed))
            return f"check: FAILED: {len(self.missed)} point(s) missed ({names}); {tail}"
        return f"check: passed ({tail})"


def check_trainer(
    trainer: Path,
    ws: Workspace | None,
    *,
    run: bool = True,
    seconds: float | None = None,
    say: Callable[[str], None] = print,
    siblings: set[str] = frozenset(),
) -> CheckReport:
    """The static points, then (when `run` and a workspace with data allow it) the dynamic ones."""
    if not trainer.is_file():
        raise AgentgolfError(f"trainer file {trainer} does not exist")
    size = ws.config.budget.size_bytes if ws else SIZE_LIMIT_BYTES
    report = CheckReport(trainer=str(trainer), points=static_points(read_source(trainer), size, siblings))
    why_not = _cannot_run(report, ws, run)
    if why_not:
        report.points.append(Point(name="run", state="unchecked", detail=why_not))
        return report
    budget = ws.budget(train_seconds=seconds or min(CHECK_SECONDS, ws.config.budget.train_seconds))
    result, allowed = run_check(trainer, ws, budget, say)
    report.ran, report.result = True, result.model_dump(mode="json")
    report.points += dynamic_points(result, budget, allowed, cpu_only=not ws.config.gpus)
    return report


def _cannot_run(report: CheckReport, ws: Workspace | None, run: bool) -> str:
    """Why the trainer is not run here ('' when it is)."""
    if not run:
        return (
            "--static: the points only a run can tell (runs, size, time, scoring, score gap) were not checked"
        )
    if ws is None:
        return "not inside an agentgolf workspace with data: static checks only"
    if any(p.name in ("parses", "import") and p.state == "missed" for p in report.points):
        return "not run: the source cannot be imported safely"
    try:
        ws.data_spec()
    except AgentgolfError as exc:
        return f"no data to run on here ({first_line(exc)}): static checks only"
    return ""


def run_check(
    trainer: Path, ws: Workspace, budget: Budget, say: Callable[[str], None]
) -> tuple[SandboxResult, float]:
    """One training with the validation shards shown (the trainer prints its own score), then the harness's
    verified scoring of the same artifact. Returns the result and the training time allowed."""
    from agentgolf.agent.judge.allowance import resolve
    from agentgolf.sandbox.run_setup import RunSetup
    from agentgolf.sandbox.runner import HARNESS_ENV_KEYS, run_sandboxed
    from agentgolf.sandbox.scoring.score_phase import score_artifact

    allowance = resolve(ws, budget, measure=False, say=say)  # the trainer under check is its own yardstick
    b = allowance.budget
    say(f"check: training {trainer.name} for {b.train_seconds:g} s, then scoring its artifact")
    (ws.state / "check").mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=ws.state / "check"))
    env, seed, gpus = dict(ws.config.trainer_env), ws.config.seed, ws.config.gpus
    data, source = ws.data_spec(), trainer.read_bytes()
    trained = run_sandboxed(trainer, run_dir, data, b, env=env, seed=seed, gpus=gpus, self_reported=True)
    if trained.model_bytes is None:  # no artifact: nothing to score
        return trained, b.train_allowed_seconds
    own = {k: v for k, v in env.items() if k not in HARNESS_ENV_KEYS}
    setup = RunSetup(
        source,
        run_dir,
        data,
        b.for_gpus(gpus is not None),
        own,
        seed,
        gpus,
        False,
        [],
        None,
        trained.isolation,
    )
    if trained.status in (Status.crash, Status.nan):  # it printed no (finite) score: the harness scores it
        trained.status, trained.reason = Status.ok, ""
    trained.val_bpb = trained.val_loss = None
    trained.trust = "harness"
    result = score_artifact(setup, trained)
    (run_dir / "check.json").write_text(result.model_dump_json(indent=2) + "\n")
    return result, b.train_allowed_seconds


def dynamic_points(result: SandboxResult, budget: Budget, allowed: float, *, cpu_only: bool) -> list[Point]:
    """The points only a run can tell, from its result."""
    reason = first_line(result.reason or "-")
    no_artifact = result.status is Status.crash and reason.startswith(NO_ARTIFACT)  # it ran, and left none
    trained = result.model_bytes is not None or no_artifact or result.status not in TRAINING_FAULTS
    if not trained:
        if cpu_only and NEEDS_CUDA.search(f"{result.reason}\n{result.log_tail}"):
            why = f"the trainer seems to need CUDA and this workspace has no GPUs ({result.status.value}: {reason})"
            return [Point(name="run", state="unchecked", detail=why)]
        return [Point(name="runs", state="missed", detail=f"training ended {result.status.value}: {reason}")]
    steps = f", {result.steps} steps" if result.steps else ""
    points = [Point(name="runs", state="met", detail=f"trained {result.train_seconds or 0:.1f} s{steps}")]
    if result.model_bytes is None:
        return [*points, Point(name="artifact", state="missed", detail=reason)]
    total, cap = result.artifact_bytes or 0, budget.size_bytes
    points.append(
        Point(
            name="size",
            state="met" if total <= cap else "missed",
            detail=f"code {result.code_bytes:,} + model {result.model_bytes:,} = {total:,} bytes of {cap:,} "
            f"({100 * total / cap:.2f}%)",
        )
    )
    took = result.train_clock_seconds or 0.0
    points.append(
        Point(
            name="time",
            state="met" if took <= allowed else "missed",
            detail=f"training phase {took:.1f} s on the {result.train_clock} clock (its own evaluation included), "
            f"{allowed:g} s allowed for train_seconds {budget.train_seconds:g}",
        )
    )
    return points + _scoring_points(result, budget)


def _scoring_points(result: SandboxResult, budget: Budget) -> list[Point]:
    reason = first_line(result.reason or "-")
    if result.val_bpb is None:
        return [
            Point(
                name="scoring",
                state="missed",
                detail=f"the harness could not score it: {result.status.value}: {reason}",
            )
        ]
    mode = result.eval_mode or {}
    shown = ", ".join(f"{k} {v}" for k, v in mode.items() if k != "mode")
    m = (result.verification or {}).get("positions")
    points = [
        Point(name="loads", state="met", detail="load_model's model answered the scoring worker" + (f" ({result.load_seconds:.1f} s)" if result.load_seconds else "")),
        Point(name="evaluated", state="met", detail=f"scored as {mode.get('mode', 'windows')} ({shown})"),
        Point(
            name="scoring",
            state="met" if result.status is not Status.violation else "missed",
            detail=f"harness val_bpb {result.val_bpb:.6f} over {result.val_tokens:,} targets, verified"
            + (f" at {m} positions" if m else "")
            + ("" if result.status is Status.ok else f"; {result.status.value}: {reason}"),
        ),
    ]  # fmt: skip
    own, tol = result.self_val_bpb, budget.metric_tolerance_bpb
    if own is None:
        points.append(
            Point(name="own score", state="warn", detail="the trainer printed no val_bpb: no gap to show")
        )
        return points
    gap = own - result.val_bpb
    state = "met" if abs(gap) <= tol else ("missed" if gap < 0 else "warn")
    points.append(
        Point(
            name="score gap",
            state=state,
            detail=f"the trainer printed {own:.6f}, the harness measured {result.val_bpb:.6f}: gap {gap:+.6f} "
            f"(tolerance {tol:g})"
            + ("" if state == "met" else ": its own evaluation disagrees with its port"),
        )
    )
    return points
