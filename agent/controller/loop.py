"""A run's lifecycle: start one, resume one after any crash, replay an experiment, cancel what is in flight.

Every experiment gets its ledger row before it trains, so a crash of the loop leaves a visible row that
`agentgolf run --resume` re-runs in place: nothing lost, nothing twice. The scheduling itself lives in
`scheduler.py`, one experiment's lifecycle in `lab.py`, and where it runs in `executor.py`.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from agentgolf.agent.controller.executor import cancel
from agentgolf.agent.controller.lab import Lab
from agentgolf.agent.controller.live import LiveView
from agentgolf.agent.controller.processes import (
    kill_leftovers,
    lock_owner,
    run_lock,
    stop_owner,
    workspace_lock,
)
from agentgolf.agent.controller.proposer_guard import guarded
from agentgolf.agent.controller.scheduler import RunCaps, Scheduler
from agentgolf.agent.judge import acceptance, deltas
from agentgolf.agent.judge.screening import lane
from agentgolf.agent.proposers.registry import make_proposer
from agentgolf.agent.proposers.search import proposer as search
from agentgolf.agent.report.summary import Utilization, slot_utilization
from agentgolf.agent.workspace import Workspace
from agentgolf.errors import AgentgolfError
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import Experiment, Ledger, Run
from agentgolf.experiments.manifest import drift
from agentgolf.experiments.status import Kind, RowStatus
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.classify import ERROR_LINE
from agentgolf.sandbox.result import Status


class RunSummary(BaseModel):
    run_id: str
    experiments: int
    best_id: int | None
    best_bpb: float | None  # the mean of the best's runs (deltas.py)
    stop_reason: str
    best_runs: int = 0  # how many runs that mean rests on
    utilization: Utilization | None = None  # how busy the slots were (report/summary.slot_utilization)
    failed: bool = False  # stopped by a failure (the proposer, the baseline), not the budget or a cap


class Replay(BaseModel):
    original: Experiment
    copies: list[Experiment]
    drift: list[str]  # settings that differ between the original's manifest and the first copy's
    verdict: str = ""  # does the same seed reproduce the original's val_bpb? (acceptance.reproduction)
    spread: str = ""  # mean and std over the seeds, when there are several
    again: list[str] = []  # the original failed: did each copy fail the same way? (failed_again)


def replay_experiment(ws: Workspace, exp_id: int, seeds: int, console: Console) -> Replay:
    """Re-run an experiment under the budget it ran under (from its manifest), not today's. It holds the
    workspace's lock as a loop does: a replay beside a live loop would share the machine and move both scores."""
    with workspace_lock(ws.state / "locks"):
        ledger = ws.ledger()
        recorded = ledger.get(exp_id).manifest.get("budget")
        budget = Budget.model_validate(recorded) if recorded else ws.config.budget
        return Loop(ws, ledger, budget, console=console).replay(exp_id, seeds)


CTRL_C = "interrupted by the user (Ctrl-C); --resume trains it again"
# The stops that are the user's own limits (scheduler._stop_reason's words): `agentgolf run` exits 0.
CLEAN_STOPS = ("budget spent", "GPU-hour cap reached", "LLM dollar cap reached")
EXHAUSTED = "proposer has nothing new to try"  # a proposer's natural end: clean too


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
        proposer: str = search.NAME,
        *,
        resume: str | None = None,
        gpus_per_experiment: int | None = None,
        note: str = "",
    ) -> RunSummary:
        if caps.experiments < 1:
            raise AgentgolfError("--budget must be at least 1 (the first experiment is the baseline)")
        slots = self.lab.executor.slots(self.ws.config.gpus, gpus_per_experiment)
        propose = guarded(make_proposer(proposer, self.ws), self.ws.config.fail_fast.same_proposer_failures)
        run_id = (latest_run_id(self.ledger) if resume == "latest" else resume) if resume else None
        run = self.ledger.get_run(run_id) if run_id else self._start(caps, proposer)
        tracked = self.lab.tracking.on(run.id, self.view.log)  # dashboards, closed however the run ends
        with run_lock(self.lock_path(run.id), run.id), _cancellable(), tracked:
            if note:
                self.view.log(note)
            if run_id:
                self._resume(run)
            self.view.log(  # a run's lines wrap at the terminal's width (LiveView.log), never past it
                f"[bold]run {run.id}[/] on {run.base_commit[:10]}: {caps.experiments} experiment(s), "
                f"proposer {proposer}, {len(slots)} slot(s)"
            )
            scheduler = Scheduler(self.lab, self.view, run, caps, (proposer, propose), slots)
            try:
                with self.view:
                    stop = scheduler.drive()
            except Cancelled:
                self._cancelled(scheduler, run)
                raise
            except KeyboardInterrupt:
                in_flight = [exp for exp, _, _ in scheduler.running.values()]
                scheduler.abandon("interrupted by the user")
                for exp in in_flight:  # as `cancel` marks them; --resume trains them again in place
                    self.ledger.update(
                        exp.id, status=RowStatus.interrupted, reason=CTRL_C, finished_at=time.time()
                    )
                self.ledger.update_run(run.id, status="interrupted", stop_reason="interrupted by the user")
                raise
            except BaseException as exc:
                scheduler.abandon(f"the loop stopped: {exc}")
                self.ledger.update_run(run.id, status="stopped", stop_reason=str(exc))
                raise
            self.ledger.update_run(run.id, status="finished", stop_reason=stop)
        best = scheduler.best
        self.view.log(f"run {run.id} stopped: {escape(stop)}")
        busy = slot_utilization(scheduler.rows(), len(slots))
        if busy is not None:
            self.view.log(busy.line())
        score = deltas.score_of(scheduler.rows(), best) if best else None  # its mean, not its first run
        return RunSummary(
            run_id=run.id,
            experiments=scheduler.charged(),
            best_id=best.id if best else None,
            best_bpb=score.bpb if score else None,
            best_runs=score.runs if score else 0,
            stop_reason=stop,
            utilization=busy,
            failed=bool(scheduler.fatal) or not (stop.startswith(CLEAN_STOPS) or stop.endswith(EXHAUSTED)),
        )

    def lock_path(self, run_id: str) -> Path:
        return self.ws.state / "locks" / f"{run_id}.lock"

    def _cancelled(self, scheduler: Scheduler, run: Run) -> None:
        """`agentgolf cancel` asked this loop to stop: what is in flight is stopped wherever it runs, and said so."""
        in_flight = [exp for exp, _, _ in scheduler.running.values()]
        scheduler.abandon("cancelled by the user")
        for exp in in_flight:
            cancel(self.ws.run_dir(exp.id))
            self.ledger.update(
                exp.id, status=RowStatus.interrupted, reason="cancelled by the user", finished_at=time.time()
            )
        self.ledger.update_run(run.id, status="cancelled", stop_reason="cancelled by the user")

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
            settings={
                **caps.model_dump(),
                "proposer": proposer,
                "track": list(self.ws.config.track.backends),
            },
        )
        self.ledger.add_run(run)
        return run

    def _resume(self, run: Run) -> None:
        """Before a resumed run goes on: what a dead loop left in flight is re-attached, re-run or marked."""
        executor = self.lab.executor
        for exp in self.ledger.experiments(run_id=run.id, status=RowStatus.interrupted):
            if exp.reason == CTRL_C and exp.commit_sha:  # stopped by Ctrl-C, not cancelled: trained again
                self.ledger.update(exp.id, status=RowStatus.running, finished_at=None)
        for exp in self.ledger.experiments(run_id=run.id, status=RowStatus.running):
            run_dir = self.ws.run_dir(exp.id)
            if executor.in_flight(run_dir):
                self.view.log(
                    f"#{exp.id} {escape(exp.title)}: its SLURM job is still queued or running; re-attaching"
                )
                continue
            killed = kill_leftovers(run_dir)
            note = f" (killed {killed} leftover process(es))" if killed else ""
            if exp.commit_sha:
                self.view.log(
                    f"#{exp.id} {escape(exp.title)} was in flight when the loop died: running it again{note}"
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

    def replay(self, exp_id: int, seeds: int = 1) -> Replay:
        original = self.ledger.get(exp_id)
        if not original.commit_sha:
            raise AgentgolfError(f"experiment {exp_id} has no commit to replay (status {original.status})")
        if seeds < 1:
            raise AgentgolfError("--seeds must be at least 1")
        base_seed = self.lab.seed_of(original)
        # The settings it ran under, not today's: its trainer_env and its GPUs (world size, accumulation).
        recorded = original.manifest
        self.ws.config = self.ws.config.model_copy(
            update={
                "trainer_env": recorded.get("env", self.ws.config.trainer_env),
                "gpus": recorded.get("gpus") or None,
            }
            if "env" in recorded
            else {}
        )
        # Its own run, so that a live loop of the original's run never sees (or re-launches) its rows.
        run = Run(
            id=f"{new_run_id()}-replay-{exp_id}-{os.getpid()}",
            created_at=time.time(),
            base_commit=original.commit_sha,
            settings={"replay_of": exp_id, "seeds": seeds},
        )
        self.ledger.add_run(run)
        copies = []
        for k in range(seeds):
            copy = self.lab.remeasure(original, Kind.replay, base_seed + k, run_id=run.id)
            copies.append(self.lab.execute(copy, self.ws.config.gpus))
        self.ledger.update_run(run.id, status="finished", stop_reason="replayed")
        replay = Replay(original=original, copies=copies, drift=drift(original.manifest, copies[0].manifest))
        cfg, first = self.ws.config.acceptance, copies[0]
        if original.val_bpb is not None and first.val_bpb is not None:
            rows = self.ledger.experiments(run_id=original.run_id) if original.run_id else []
            replay.verdict = replay_verdict(original, first, rows, cfg)
        replay.again = [f"#{c.id} {said}" for c in copies if (said := failed_again(original, c))]
        scored = [c.val_bpb for c in copies if c.val_bpb is not None]
        if len(scored) >= 2:
            replay.spread = f"over {len(scored)} seeds: mean {statistics.fmean(scored):.6f}, std {statistics.stdev(scored):.6f}"
        return replay


def not_bit_exact(original: Experiment, again: Experiment) -> str:
    """Why two runs of the same commit, seed and settings may differ ("" where they must not).

    On GPU, compiled kernels and collective reductions are not bit-reproducible. On CPU a run is, unless the
    wall clock ended its training: then its step count (and a time-based schedule) follow the machine's speed.
    """
    gpus = original.manifest.get("gpus") or []
    if gpus:
        return f"it ran on {len(gpus)} GPU(s), where compiled runs are not bit-reproducible"
    cap = (original.manifest.get("budget") or {}).get("train_seconds")
    if cap and any(e.train_seconds is not None and e.train_seconds >= cap for e in (original, again)):
        return f"the {cap:g} s wall clock ended its training, so its steps depend on the machine's speed"
    return ""


def replay_verdict(original: Experiment, again: Experiment, rows: list[Experiment], cfg) -> str:
    """Does a same-seed replay reproduce the original's val_bpb? On CPU (training not cut by the clock) only
    an equal score does; where runs are not bit-reproducible (GPU), the gap is weighed against the seed noise
    the original's run measured on the original's rung (`acceptance.noise_floor` over `screening.lane`: its
    baseline seeds and re-measurements there), and it reproduces within `replay_noise_k` of it."""
    gap = again.val_bpb - original.val_bpb
    if gap == 0:
        return "reproduced exactly"
    why = not_bit_exact(original, again)
    # Only the original's rung: a screen's short runs are far noisier than the full budget's.
    noise = acceptance.noise_floor(lane(rows, original.rung), cfg.known_sigma_bpb)
    if noise.source == "known":
        sigma = f"sigma {noise.sigma:.4f}, known_sigma_bpb"
    else:
        rung = f" on rung {original.rung}" if original.rung else ""
        sigma = f"sigma {noise.sigma:.4f} from {noise.runs} runs of its run{rung}" if noise.sigma else ""
    z = abs(gap) / noise.sigma if noise.sigma else None
    if not why:
        context = f"; {z:.1f} sigma ({sigma})" if z is not None else ""
        return (
            f"DOES NOT REPRODUCE: {gap:+.6f} bpb, where a CPU run with the same seed and settings gives the "
            f"same score{context}"
        )
    if z is None:
        return (
            f"cannot tell: {gap:+.6f} bpb, and its run measured no seed noise to weigh that against ({why})"
        )
    if z <= cfg.replay_noise_k:
        return f"reproduced within noise: {gap:+.6f} bpb, within {z:.1f} sigma of the recorded score ({sigma}; {why})"
    return (
        f"DOES NOT REPRODUCE: {gap:+.6f} bpb, {z:.1f} sigma from the recorded score, more than "
        f"replay_noise_k {cfg.replay_noise_k:g} ({sigma}; {why})"
    )


FAILED = frozenset(RowStatus(s.value) for s in Status if s is not Status.ok)  # the sandbox's failure verdicts
SHORT_REASON_CHARS = 160  # of a failure's error line, as a replay quotes it
NORMALISED = (  # what changes between two runs failing alike: addresses, paths, hashes, numbers
    (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
    (re.compile(r"(?:[\w.~-]*/)+[\w.-]+"), "<path>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"), "<hex>"),  # a hash
    (re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"), "N"),
)


def error_line(e: Experiment) -> str:
    """A failed row's most telling words: the last exception line of its log tail (`RuntimeError: ...`),
    else its reason (a timeout, an over-size artifact: the harness's own words)."""
    found = ERROR_LINE.findall(e.log_tail)
    return found[-1].strip() if found else e.reason


def same_failure(a: Experiment, b: Experiment) -> bool:
    """Did two rows fail the same way? The same status, and the same error line once the numbers, addresses,
    hashes and paths that differ between two runs of one bug are replaced by placeholders."""

    def signature(e: Experiment) -> str:
        text = error_line(e)
        for pattern, placeholder in NORMALISED:
            text = pattern.sub(placeholder, text)
        return " ".join(text.split())

    return a.status == b.status and signature(a) == signature(b)


def failed_again(original: Experiment, again: Experiment) -> str:
    """What a replay of a failed row did, in one phrase ("" where the original did not fail): the same
    failure again, another one, or a score. A row with no score "crashed"; one scored but failed "failed"."""
    if original.status not in FAILED:
        return ""

    def said(e: Experiment) -> str:
        line = error_line(e)
        cut = line if len(line) <= SHORT_REASON_CHARS else line[: SHORT_REASON_CHARS - 1] + "…"
        return f"{e.status}: {cut}" if cut else str(e.status)

    verb, did = ("crashed", "crash") if original.val_bpb is None else ("failed", "fail")
    if again.status not in FAILED and again.val_bpb is not None:
        bpb = f"val_bpb {again.val_bpb:.4f}"
        return f"did not {did} this time: {bpb} (the original {verb}: {said(original)})"
    if same_failure(original, again):
        return f"{verb} again the same way ({said(again)})"
    return f"failed again, differently: {said(original)} -> {said(again)}"


def latest_run_id(ledger: Ledger) -> str:
    run = ledger.latest_run()
    if run is None:
        raise AgentgolfError("there is no run to resume")
    return run.id


def cancel_run(ws: Workspace, ledger: Ledger, run_id: str, timeout: float = 60.0) -> list[int]:
    """Cancel a run's experiments in flight and mark them; returns their ids. A live loop is asked to stop
    (it cancels and marks its own); whatever is left (SLURM jobs, a dead loop's phases) is cancelled here."""
    was_live = lock_owner(ws.state / "locks" / f"{run_id}.lock") is not None
    before = {e.id for e in ledger.experiments(run_id=run_id, status=RowStatus.running)}
    if not stop_owner(ws.state / "locks" / f"{run_id}.lock", timeout):
        raise AgentgolfError(f"the loop of run {run_id} did not stop within {timeout:g} s; try again")
    for exp in ledger.experiments(run_id=run_id, status=RowStatus.running):
        cancel(ws.run_dir(exp.id))
        ledger.update(
            exp.id, status=RowStatus.interrupted, reason="cancelled by the user", finished_at=time.time()
        )
    if was_live or before or ledger.get_run(run_id).status == "running":  # a finished run stays finished
        ledger.update_run(run_id, status="cancelled", stop_reason="cancelled by the user")
    return sorted(before)


class Cancelled(AgentgolfError):
    """`agentgolf cancel` sent this loop SIGTERM."""


@contextmanager
def _cancellable() -> Iterator[None]:
    """SIGTERM (from `agentgolf cancel`) raises Cancelled in the loop's thread, so it stops cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        raise Cancelled("the run was cancelled (agentgolf cancel); its rows in flight are marked interrupted")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
