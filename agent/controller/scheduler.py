"""The scheduler of one run: what to train next, on which slot, and what each result means for the run.

One thread (the caller's) owns the ledger and the git refs; sandboxes run in a pool with one worker per
slot, and the next proposals are prepared in the pipeline's pool while experiments train (one per slot
that will want one: `pipeline.py`), so the hardware does not wait for the LLM. A win decided after the
best moved on is carried onto the new best and re-tested (`retest.py`). With a fidelity ladder, new
proposals are screened on the cheaper rung first and only what earns it runs at the full budget
(`screening.py`). Everything the scheduler knows
is re-read from the ledger, so `--resume` needs no other state. `state()` is its public view: the live
display reads that, and the run folders it names (live.py: `progress`), and nothing else.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from pydantic import BaseModel, Field
from rich.markup import escape

from agentgolf.agent.controller.executor import Slot
from agentgolf.agent.controller.lab import Lab
from agentgolf.agent.controller.live import InFlight, LiveView, Pace, pace
from agentgolf.agent.controller.pipeline import Pipeline
from agentgolf.agent.judge import acceptance, paired, rounds, screening
from agentgolf.agent.judge.verdicts import Verdicts
from agentgolf.agent.proposers.prepare import Prepared
from agentgolf.agent.proposers.proposal import Proposer
from agentgolf.agent.results import morning
from agentgolf.errors import AgentgolfError
from agentgolf.experiments.ledger import Experiment, Run
from agentgolf.experiments.status import CHARGED_KINDS, NOISE_KINDS, Kind, RowStatus, charged
from agentgolf.sandbox.result import SandboxResult, Status


class SchedulerConfig(BaseModel):
    """How the scheduler treats the machine's failures and how often it looks at its slots."""

    infra_retries: int = Field(
        2, ge=0, description="an infra error (the machine, not the idea) is retried this often, uncharged"
    )
    poll_seconds: float = Field(0.5, gt=0, description="how often finished slots and proposals are checked")
    max_pending_proposals: int = Field(
        4,
        ge=1,
        description="proposals prepared at once, one per slot that will want one: concurrent LLM calls",
    )
    carry_forward: int = Field(
        3, ge=0, description="how often one win is rebased onto a newer best and re-tested (0: never)"
    )
    morning_rounds: int = Field(
        3,
        ge=0,
        description="when a run ends, fresh paired rounds of its best against the baseline (the morning "
        "number; GPU hours, not --budget; 0: none)",
    )


class RunCaps(BaseModel):
    """When a run stops: whichever comes first."""

    experiments: int
    gpu_hours: float | None = None
    usd: float | None = None


class SchedulerState(BaseModel):
    """What a run is doing right now: the public face of the scheduler."""

    run_id: str
    caps: RunCaps
    charged: int  # experiments counted against caps.experiments
    best_id: int | None
    best_bpb: float | None
    running: list[InFlight]
    gpu_hours: float
    usd: float
    slots: int = 1
    pace: Pace | None = None  # from its finished rows: the live panel's ETA (live.py)


class Scheduler(Verdicts):
    """The scheduling state of one run; every ledger write happens on the calling thread."""

    def __init__(
        self,
        lab: Lab,
        view: LiveView,
        run: Run,
        caps: RunCaps,
        proposer: tuple[str, Proposer],
        slots: list[Slot],
    ):
        self.lab, self.view, self.run, self.caps = lab, view, run, caps
        self.proposer, self.propose = proposer
        self.ledger = lab.ledger
        self.cfg = lab.ws.config.acceptance
        self.settings = lab.ws.config.scheduler
        self.ladder = lab.ws.config.fidelity
        self.screen = self.ladder.screen.name if self.ladder.screen is not None else ""
        self.slots: list[Slot] = list(slots)
        self.free: list[int] = list(range(len(slots)))  # indices into self.slots
        self.running: dict[Future, tuple[Experiment, int, float]] = {}
        self.pool = ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="slot")
        self.pipeline = Pipeline(lab, self.propose, self.settings.max_pending_proposals)
        self.infra_retries: dict[int, int] = {}
        self.crashes = 0  # preparations in a row that raised (not a ProposalError): too many stop the run
        self.exhausted = False
        self.fatal = ""
        self.launched: set[int] = set()
        self._rows: list[Experiment] = []
        self._rows_at = -1
        self.best: Experiment | None = None

    # -- what the ledger says (so resume needs no other state) --

    def rows(self) -> list[Experiment]:
        """This run's rows, re-read only after a write (this thread is the run's only writer)."""
        if self._rows_at != self.ledger.writes:
            self._rows = self.ledger.experiments(run_id=self.run.id)
            self._rows_at = self.ledger.writes
        return self._rows

    def charged(self) -> int:
        """Experiments that count against --budget (status.charged: the one definition)."""
        return charged(self.rows())

    def spend(self) -> tuple[float, float]:
        rows = self.rows()
        return sum(e.gpu_seconds or 0.0 for e in rows) / 3600, sum(e.usd for e in rows)

    def calibration(self) -> list[Experiment]:
        """The baseline's seeds at the full budget that ran or run (a failed one is replaced; a screen's are
        `screening.seeds`)."""
        return [
            e
            for e in self.rows()
            if e.kind in NOISE_KINDS and not e.rung and e.status in (RowStatus.running, RowStatus.ok)
        ]

    def current_best(self) -> Experiment | None:
        kept = [e for e in self.rows() if e.kept and e.kind in CHARGED_KINDS]
        return kept[-1] if kept else None

    def state(self) -> SchedulerState:
        (gpu_hours, usd), best = self.spend(), self.best
        return SchedulerState(
            run_id=self.run.id,
            caps=self.caps,
            charged=self.charged(),
            best_id=best.id if best else None,
            best_bpb=best.val_bpb if best else None,
            running=[InFlight.of(e, i, t, self.lab.ws.run_dir(e.id)) for e, i, t in self.running.values()],
            gpu_hours=gpu_hours,
            usd=usd,
            slots=len(self.slots),
            pace=pace(self.rows()),
        )

    # -- the main loop --

    def drive(self) -> str:
        """Schedule until a cap is reached or nothing is left; returns why it stopped."""
        self.best = self.current_best()
        settings = self.ledger.get_run(self.run.id).settings  # how many slots (utilization reads it)
        if settings.get("slots", 0) < len(self.slots):
            self.ledger.update_run(self.run.id, settings={**settings, "slots": len(self.slots)})
        for exp in self.rows():  # resumed: what the baseline measured holds, and no verdict stays lost
            if exp.kind == Kind.baseline and exp.status == RowStatus.ok:
                self._bound_overhead(exp)
            elif exp.kind == Kind.proposal and exp.status == RowStatus.ok and not (exp.kept or exp.decision):
                self._decide(exp)  # a kill -9 came between its result and its decision
        while True:
            stop = self._stop_reason()
            if not stop:
                self._schedule()
                stop = self._stop_reason()
            if not self.running and (stop or not self.pipeline):
                if self._morning(stop):
                    continue
                self._wind_down(stop or "nothing left to schedule")
                if said := morning.false_promotions(self.rows(), self.cfg.alpha):
                    self.view.log(said)
                return stop or "nothing left to schedule"
            self._wait()

    def _stop_reason(self) -> str:
        if self.fatal:
            return self.fatal
        gpu_hours, usd = self.spend()
        if self.caps.gpu_hours is not None and gpu_hours >= self.caps.gpu_hours:
            return f"GPU-hour cap reached ({gpu_hours:.2f} h)"
        if self.caps.usd is not None and usd >= self.caps.usd:
            return f"LLM dollar cap reached (${usd:.2f})"
        rows = self.rows()
        base = next((e for e in rows if e.kind == Kind.baseline), None)
        if base is not None and base.status not in (RowStatus.running, RowStatus.ok):
            return "the baseline did not produce a score; fix it before proposing changes"
        if any(e.status == RowStatus.confirming for e in rows):
            return ""  # a win waiting for its confirmation is finished before the run stops
        if any(self._left_in_flight(e) for e in rows):
            return ""  # re-tests waiting for a slot, and rows a dead loop left (--resume), are finished first
        if self.charged() >= self.caps.experiments:
            return "budget spent"
        if self.exhausted:
            return f"the {self.proposer} proposer has nothing new to try"
        return ""

    def _morning(self, stop: str) -> bool:
        """The run is over: measure its best against the baseline in fresh paired rounds (morning.py), once;
        True while those rounds were just added. When they are in, the number is logged and kept on the run."""
        rows, n = self.rows(), self.settings.morning_rounds
        base = next((e for e in rows if e.kind == Kind.baseline), None)
        if not n or self.fatal or self.best is None or base is None or self.best.id == base.id:
            return False
        if not stop.startswith("GPU-hour cap"):
            added = morning.plan(self.lab, rows, self.best, base, n, self.lab.ws.config.seed)
            if added:
                self.view.log(
                    f"the morning number: #{self.best.id} beside the baseline, {added} fresh round(s)"
                )
                return True
        found = morning.measure(self.rows(), self.best, base)
        if found is not None:
            self.view.log(found.line())
            settings = self.ledger.get_run(self.run.id).settings
            self.ledger.update_run(self.run.id, settings={**settings, "morning": found.model_dump()})
        return False

    def _left_in_flight(self, exp: Experiment) -> bool:
        return exp.status == RowStatus.running and bool(exp.commit_sha) and exp.id not in self.launched

    def _schedule(self) -> None:
        while self.free:
            exp = self._next_measurement()
            if exp is None or not self._launch_round(exp):
                break
        self._ensure_pending()

    def _launch_round(self, exp: Experiment) -> bool:
        """Launch `exp`, with its round's control when it is judged paired (rounds.py); False when the round
        needs more free slots and must wait for them (its rows stay for the next look)."""
        rows = self.rows()
        ctrl = next((c for c in paired.controls_of(rows, exp) if c.status == RowStatus.running), None)
        if exp.kind == Kind.control:
            served = [e for e in rows if e.id in exp.paired_with]
            pair = rounds.order(rows, served, exp) if served else [exp]
        elif ctrl is not None:  # a round made with its control (the morning's)
            pair = rounds.order(rows, [exp], ctrl)
        elif rounds.needs_control(rows, exp):
            ctrl = rounds.control_for(self.lab, rows, exp)
            pair = rounds.order(rows, self._companions(exp, ctrl), ctrl)
        else:
            pair = [exp]
        todo = [e for e in pair if e.id not in self.launched and e.status == RowStatus.running]
        if len(todo) > 1 and len(self.slots) > 1:
            if len(self.free) < len(todo):
                return False
            taken = sorted(self.free)[: len(todo)]
            for run, index in zip(todo, taken, strict=True):
                self.free.remove(index)
                self._launch(run, index)
            return True
        self._launch(todo[0] if todo else exp, self.free.pop(0))  # one slot: back to back, in order
        return True

    def _companions(self, exp: Experiment, ctrl: Experiment) -> list[Experiment]:
        """On more than two slots, one control serves every run of its round that it can (same parent,
        seed and rung, rounds.shares): the runs that come next, while slots are free. The first that cannot
        share is left registered and unlaunched; the next look launches it in its own round."""
        members = [exp]
        held = {exp.id, ctrl.id}
        self.launched |= held  # not offered again by _next_measurement while the round is gathered
        try:
            while len(self.slots) > 2 and len(self.free) > len(members) + 1:
                nxt = self._next_measurement()
                if nxt is None or not rounds.shares(self.rows(), ctrl, nxt):
                    break
                members.append(nxt)
                held.add(nxt.id)
                self.launched.add(nxt.id)
        finally:
            self.launched -= held
        if len(members) > 1:
            self.ledger.update(ctrl.id, paired_with=[e.id for e in members])
        return members

    def _next_measurement(self) -> Experiment | None:
        """What to train next: baseline, calibration seeds, confirmations, then a prepared proposal.
        Proposals may train while calibration seeds do; their verdicts wait for the noise (`_decide`)."""
        lab, seed0 = self.lab, self.lab.ws.config.seed
        for exp in self.rows():  # re-tests, and rows a dead loop left running (--resume): trained in place
            if self._left_in_flight(exp):
                return exp
        base = next((e for e in self.rows() if e.kind == Kind.baseline), None)
        if base is None:
            return lab.add_baseline(self.run)
        seeds = self.calibration()
        if len(seeds) < self.cfg.noise_seeds:  # a seed that failed is replaced by a new one
            seed = seed0 + sum(e.kind in NOISE_KINDS and not e.rung for e in self.rows())
            return lab.remeasure(base, Kind.calibration, seed, title=f"Baseline, seed {seed}")
        if base.status != RowStatus.ok:
            return None  # every proposal is made on, and measured against, the baseline's score
        if self.screen and self.best is not None:
            screen = screening.next_measurement(lab, self.rows(), base, self.best, self.screen)
            if screen is not None:
                return screen
        for exp in self.rows():
            if exp.status == RowStatus.confirming and not rounds.in_flight(self.rows(), exp):
                done = len(acceptance.samples(self.rows(), exp))
                seed = acceptance.confirmation_seed(exp, done, seed0, self.cfg)
                return lab.remeasure(exp, Kind.confirm, seed, title=f"{exp.title} (confirmation)")
        return self._take_prepared()

    def _ensure_pending(self) -> None:
        """One proposal in preparation for each slot that will want one, within the caps (pipeline.py)."""
        if (
            self.exhausted
            or self.fatal
            or self.best is None
            or len(self.calibration()) < self.cfg.noise_seeds
        ):
            return
        claimed = sum(  # slots that re-measurements will take next: re-tests and confirmations waiting
            self._left_in_flight(e)
            or (e.status == RowStatus.confirming and not rounds.in_flight(self.rows(), e))
            for e in self.rows()
        )
        want = min(self.settings.max_pending_proposals, max(1, len(self.slots) - claimed))
        self.pipeline.fill(
            self.best, min(want, self.caps.experiments - self.charged()), self.ledger.experiments
        )

    def _take_prepared(self) -> Experiment | None:
        """The oldest prepared proposal that may run, registered; rejected ones are recorded on the way."""
        while self.charged() < self.caps.experiments and not (self.fatal or self.exhausted):
            future = self.pipeline.ready()
            if future is None:
                return None
            try:
                prepared: Prepared = future.result()
            except AgentgolfError as exc:  # e.g. the LLM endpoint is down for good: finish what runs, stop
                self.fatal = f"proposer failed: {exc}"
                return None
            except Exception as exc:  # git or the disk failed one preparation: dropped, uncharged
                self.crashes += 1
                self.view.log(escape(f"a preparation failed ({type(exc).__name__}: {exc}); dropped"))
                if self.crashes > self.settings.infra_retries:
                    self.fatal = f"{self.crashes} proposal preparations in a row failed: {exc}"
                continue
            self.crashes = 0
            if prepared.proposal is None:
                self.exhausted = True
                return None
            exp, rejected = self.pipeline.register(
                prepared, self.run, self.proposer, self.best, self.view.log, rung=self.screen
            )
            if not rejected:
                return exp
            self._announce(exp)
        return None

    def _launch(self, exp: Experiment, index: int) -> None:
        """Start `exp` on slot `index`, which the caller has taken out of `free`. The row records the slot
        and when it started (a retry keeps the first start): slot utilization is read from these."""
        slot = self.slots[index]
        if exp.id not in self.launched:
            self.ledger.update(exp.id, slot=index, started_at=time.time())
        self.launched.add(exp.id)
        self.lab.prepare_run_dir(exp, slot)
        self.view.started(exp)
        self.running[self.pool.submit(self.lab.sandbox, exp, slot)] = (exp, index, time.monotonic())

    def _wait(self) -> None:
        # A finished proposal waits for a slot; only an unfinished one may wake us (else: a busy loop).
        futures = list(self.running) + self.pipeline.unfinished()
        done, _ = wait(futures, timeout=self.settings.poll_seconds, return_when=FIRST_COMPLETED)
        for future in done:
            if future not in self.running:
                continue  # a proposal: picked up by _schedule
            exp, index, _ = self.running.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # a harness bug or a machine failure: the idea is not charged
                result = SandboxResult(status=Status.infra_error, reason=f"harness error: {exc}")
            if self._retry(exp, result):
                self._launch(exp, index)  # the same slot, straight away: nothing else may take it
            else:
                self.free.append(index)
                self._finish(exp, result, self.slots[index])
        self.view.refresh(self.state())

    def _retry(self, exp: Experiment, result: SandboxResult) -> bool:
        """An infra error is the machine's, not the idea's: run it again, uncharged, a few times."""
        tries = self.infra_retries.get(exp.id, 0)
        if result.status is not Status.infra_error or tries >= self.settings.infra_retries:
            return False
        self.infra_retries[exp.id] = tries + 1
        self.ledger.update(exp.id, reason=f"infra error, retrying: {result.reason}")
        self.view.log(f"#{exp.id} infra error ({result.reason}); retrying without charging the idea")
        return True

    def _wind_down(self, reason: str) -> None:
        """A prepared proposal that never ran is dropped (nothing charged); an unconfirmed win stays unconfirmed."""
        self.pipeline.close()
        for exp in self.rows():
            if exp.status == RowStatus.confirming:
                self.ledger.update(
                    exp.id, status=RowStatus.inconclusive, reason=f"not confirmed: the run stopped ({reason})"
                )
        self.pool.shutdown(wait=True)

    def abandon(self, reason: str) -> None:
        """The loop is going down: stop what must not outlive it and leave the rows `running` for --resume."""
        self.lab.stopping.set()
        for exp, _, _ in self.running.values():
            self.ledger.update(exp.id, reason=f"in flight when {reason}")
            self.lab.executor.release(self.lab.ws.run_dir(exp.id))
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pipeline.close()
