"""A run's lifecycle: start one, resume one after any crash, replay an experiment, cancel what is in flight.

Every experiment gets its ledger row before it trains, so a crash of the loop leaves a visible row that
`agentgolf run --resume` re-runs in place: nothing lost, nothing twice. The scheduling itself lives in
`scheduler.py`, one experiment's lifecycle in `lab.py`, and where it runs in `executor.py`.
"""

from __future__ import annotations

import statistics
import time

from pydantic import BaseModel
from rich.console import Console

from agentgolf.agent import acceptance
from agentgolf.agent.executor import cancel
from agentgolf.agent.lab import Lab
from agentgolf.agent.live import LiveView
from agentgolf.agent.processes import kill_leftovers
from agentgolf.agent.proposers import playbook
from agentgolf.agent.proposers.registry import make_proposer
from agentgolf.agent.scheduler import RunCaps, Scheduler
from agentgolf.agent.workspace import Workspace
from agentgolf.errors import AgentgolfError
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import Experiment, Ledger, Run
from agentgolf.experiments.manifest import drift
from agentgolf.experiments.status import Kind, RowStatus
from agentgolf.sandbox.budget import Budget


class RunSummary(BaseModel):
    run_id: str
    experiments: int
    best_id: int | None
    best_bpb: float | None
    stop_reason: str


class Replay(BaseModel):
    original: Experiment
    copies: list[Experiment]
    drift: list[str]  # settings that differ between the original's manifest and the first copy's
    verdict: str = ""  # does the same seed reproduce the original's val_bpb? (acceptance.reproduction)
    spread: str = ""  # mean and std over the seeds, when there are several


class RunOptions(BaseModel):
    """What `agentgolf run` may override for one run; None keeps the workspace's setting."""

    budget: int
    max_gpu_hours: float | None = None
    max_usd: float | None = None
    resume: str | None = None
    gpus_per_experiment: int | None = None
    executor: str | None = None
    partition: str | None = None
    max_concurrent: int | None = None
    time_budget: float | None = None
    size_budget: int | None = None
    proposer: str | None = None
    model: str | None = None
    base_url: str | None = None
    agent_cmd: str | None = None


def start_run(ws: Workspace, options: RunOptions, console: Console) -> RunSummary:
    """Apply the command line's overrides to a copy of the workspace's settings, then run."""
    cfg = ws.config
    llm = cfg.llm.model_copy(update=_given(model=options.model, base_url=options.base_url))
    command = cfg.command.model_copy(update=_given(cmd=options.agent_cmd))
    executor = options.executor or cfg.executor
    per_experiment = options.gpus_per_experiment
    slurm_changes = _given(partition=options.partition, max_concurrent=options.max_concurrent or None)
    if executor == "slurm" and per_experiment:  # SLURM: GPUs per job, not a split of local GPUs
        slurm_changes["gpus_per_experiment"], per_experiment = per_experiment, None
    ws.config = cfg.model_copy(
        update={
            "llm": llm,
            "command": command,
            "executor": executor,
            "slurm": cfg.slurm.model_copy(update=slurm_changes),
        }
    )
    proposer = options.proposer or ("command" if options.agent_cmd else cfg.proposer)
    caps = RunCaps(experiments=options.budget, gpu_hours=options.max_gpu_hours, usd=options.max_usd)
    loop = Loop(ws, ws.ledger(), ws.budget(options.time_budget, options.size_budget), console=console)
    return loop.run(caps, proposer, resume=options.resume, gpus_per_experiment=per_experiment)


def replay_experiment(ws: Workspace, exp_id: int, seeds: int, console: Console) -> Replay:
    """Re-run an experiment under the budget it ran under (from its manifest), not today's."""
    ledger = ws.ledger()
    recorded = ledger.get(exp_id).manifest.get("budget")
    budget = Budget.model_validate(recorded) if recorded else ws.config.budget
    return Loop(ws, ledger, budget, console=console).replay(exp_id, seeds)


def _given(**values: object) -> dict[str, object]:
    return {k: v for k, v in values.items() if v is not None}


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


class Loop:
    """One workspace's runs: start, resume, replay."""

    def __init__(self, ws: Workspace, ledger: Ledger, budget: Budget, console: Console | None = None):
        self.lab = Lab(ws, ledger, budget)
        self.ws, self.ledger = ws, ledger
        self.console = console or Console(stderr=True)
        self.view = LiveView(self.console)

    def run(
        self,
        caps: RunCaps,
        proposer: str = playbook.NAME,
        *,
        resume: str | None = None,
        gpus_per_experiment: int | None = None,
    ) -> RunSummary:
        if caps.experiments < 1:
            raise AgentgolfError("--budget must be at least 1 (the first experiment is the baseline)")
        slots = self.lab.executor.slots(self.ws.config.gpus, gpus_per_experiment)
        propose = make_proposer(proposer, self.ws)
        run = self._resume(resume) if resume else self._start(caps, proposer)
        self.console.print(
            f"[bold]run {run.id}[/] on {run.base_commit[:10]}: {caps.experiments} experiment(s), "
            f"proposer {proposer}, {len(slots)} slot(s)"
        )
        scheduler = Scheduler(self.lab, self.view, run, caps, (proposer, propose), slots)
        try:
            with self.view:
                stop = scheduler.drive()
        except KeyboardInterrupt:
            scheduler.abandon("interrupted by the user")
            self.ledger.update_run(run.id, status="interrupted", stop_reason="interrupted by the user")
            raise
        except BaseException as exc:
            scheduler.abandon(f"the loop stopped: {exc}")
            self.ledger.update_run(run.id, status="stopped", stop_reason=str(exc))
            raise
        self.ledger.update_run(run.id, status="finished", stop_reason=stop)
        best = scheduler.best
        self.console.print(f"run {run.id} stopped: {stop}")
        return RunSummary(
            run_id=run.id,
            experiments=scheduler.charged(),
            best_id=best.id if best else None,
            best_bpb=best.val_bpb if best else None,
            stop_reason=stop,
        )

    def _start(self, caps: RunCaps, proposer: str) -> Run:
        base = wt.head_commit(self.lab.repo)
        self.lab.trainer_source(base)  # fail early if the trainer is not committed
        run_id = new_run_id()
        while self.ledger.find_run(run_id) is not None:
            time.sleep(1)
            run_id = new_run_id()
        run = Run(
            id=run_id,
            created_at=time.time(),
            base_commit=base,
            settings={**caps.model_dump(), "proposer": proposer},
        )
        self.ledger.add_run(run)
        return run

    def _resume(self, run_id: str) -> Run:
        run = self.ledger.get_run(latest_run_id(self.ledger) if run_id == "latest" else run_id)
        executor = self.lab.executor
        for exp in self.ledger.experiments(run_id=run.id, status=RowStatus.running):
            run_dir = self.ws.run_dir(exp.id)
            if executor.in_flight(run_dir):
                self.console.print(
                    f"#{exp.id} {exp.title}: its SLURM job is still queued or running; re-attaching"
                )
                continue
            killed = kill_leftovers(run_dir)
            note = f" (killed {killed} leftover process(es))" if killed else ""
            if exp.commit_sha:
                self.console.print(
                    f"#{exp.id} {exp.title} was in flight when the loop died: running it again{note}"
                )
                self.ledger.update(exp.id, reason="re-run after the loop was interrupted")
            else:
                self.ledger.update(
                    exp.id,
                    status=RowStatus.interrupted,
                    reason="the loop died before it was committed",
                    finished_at=time.time(),
                )
        self.ledger.update_run(run.id, status="running", stop_reason="")
        return run

    def replay(self, exp_id: int, seeds: int = 1) -> Replay:
        original = self.ledger.get(exp_id)
        if not original.commit_sha:
            raise AgentgolfError(f"experiment {exp_id} has no commit to replay (status {original.status})")
        if seeds < 1:
            raise AgentgolfError("--seeds must be at least 1")
        base_seed = self.lab.seed_of(original)
        copies = []
        for k in range(seeds):
            copy = self.lab.remeasure(original, Kind.replay, base_seed + k)
            copies.append(self.lab.execute(copy))
        replay = Replay(original=original, copies=copies, drift=drift(original.manifest, copies[0].manifest))
        cfg, first = self.ws.config.acceptance, copies[0]
        if original.val_bpb is not None and first.val_bpb is not None:
            rows = self.ledger.experiments(run_id=original.run_id) if original.run_id else []
            noise = acceptance.noise_floor(rows)
            replay.verdict = acceptance.reproduction(original.val_bpb, first.val_bpb, noise, cfg)
        scored = [c.val_bpb for c in copies if c.val_bpb is not None]
        if len(scored) >= 2:
            replay.spread = f"over {len(scored)} seeds: mean {statistics.fmean(scored):.6f}, std {statistics.stdev(scored):.6f}"
        return replay


def pick_experiment(ws: Workspace, exp_id: int, onto: str | None) -> tuple[int, str, str]:
    """The kept chain under an experiment (its run's base commit to it), as clean commits on `onto`.
    Returns (commits picked, branch, new head)."""
    ledger = ws.ledger()
    e = ledger.get(exp_id)
    if not e.commit_sha or e.run_id is None:
        raise AgentgolfError(f"experiment {e.id} has no commit to pick (status {e.status})")
    repo = wt.open_repo(ws.root)
    commits = wt.chain(repo, ledger.get_run(e.run_id).base_commit, e.commit_sha)
    branch, head = wt.pick(repo, commits, onto)
    return len(commits), branch, head


def latest_run_id(ledger: Ledger) -> str:
    runs = ledger.runs()
    if not runs:
        raise AgentgolfError("there is no run to resume")
    return runs[-1].id


def cancel_run(ws: Workspace, ledger: Ledger, run_id: str) -> list[int]:
    """Cancel a run's experiments in flight (SLURM jobs and local phases) and mark them; returns their ids."""
    cancelled = []
    for exp in ledger.experiments(run_id=run_id, status=RowStatus.running):
        cancel(ws.run_dir(exp.id))
        ledger.update(
            exp.id, status=RowStatus.interrupted, reason="cancelled by the user", finished_at=time.time()
        )
        cancelled.append(exp.id)
    if cancelled or ledger.get_run(run_id).status == "running":  # a finished run stays finished
        ledger.update_run(run_id, status="cancelled", stop_reason="cancelled by the user")
    return cancelled
