"""The scheduler of one run: what to train next, on which slot, and what each result means for the run.

One thread (the caller's) owns the ledger and the git refs; sandboxes run in a pool with one worker per
slot, and the next proposal is prepared in a second pool while experiments train, so the hardware does
not wait for the LLM. Everything the scheduler knows is re-read from the ledger, so `--resume` needs no
other state. `state()` is its public view: the live display reads that and nothing else.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from pydantic import BaseModel, Field

from agentgolf.agent import acceptance
from agentgolf.agent.executor import Slot
from agentgolf.agent.lab import Lab
from agentgolf.agent.live import LiveView, describe
from agentgolf.agent.proposers.prepare import Prepared, prepare_proposal
from agentgolf.agent.proposers.proposal import Proposer, diff_fingerprint
from agentgolf.errors import AgentgolfError
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import Experiment, Run
from agentgolf.experiments.status import CHARGED_KINDS, NOISE_KINDS, Kind, RowStatus
from agentgolf.sandbox.result import SandboxResult, Status


class SchedulerConfig(BaseModel):
    """How the scheduler treats the machine's failures and how often it looks at its slots."""

    infra_retries: int = Field(
        2, ge=0, description="an infra error (the machine, not the idea) is retried this often, uncharged"
    )
    poll_seconds: float = Field(0.5, gt=0, description="how often finished slots and proposals are checked")


class RunCaps(BaseModel):
    """When a run stops: whichever comes first."""

    experiments: int
    gpu_hours: float | None = None
    usd: float | None = None


class InFlight(BaseModel):
    id: int
    title: str
    started: float  # time.monotonic() when its slot started it


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


class Scheduler:
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
        self.free: list[Slot] = list(slots)
        self.running: dict[Future, tuple[Experiment, Slot, float]] = {}
        self.pool = ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="slot")
        self.proposer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proposer")
        self.pending: Future | None = None
        self.infra_retries: dict[int, int] = {}
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
        """Experiments that count against --budget: the baseline and every proposal, rejected ones too
        (so a proposer that only produces rejects still ends). Calibration and confirmation seeds are
        extra measurements of those and count only against the GPU-hour cap."""
        return sum(1 for e in self.rows() if e.kind in CHARGED_KINDS)

    def spend(self) -> tuple[float, float]:
        rows = self.rows()
        return sum(e.gpu_seconds or 0.0 for e in rows) / 3600, sum(e.usd for e in rows)

    def calibration(self) -> list[Experiment]:
        return [e for e in self.rows() if e.kind in NOISE_KINDS]

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
            running=[InFlight(id=e.id, title=e.title, started=t) for e, _, t in self.running.values()],
            gpu_hours=gpu_hours,
            usd=usd,
        )

    # -- the main loop --

    def drive(self) -> str:
        """Schedule until a cap is reached or nothing is left; returns why it stopped."""
        self.best = self.current_best()
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
            if not self.running and (stop or self.pending is None):
                self._wind_down(stop or "nothing left to schedule")
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
            return ""  # rows left in flight by a dead loop (--resume) are finished before the run stops
        if self.charged() >= self.caps.experiments:
            return "budget spent"
        if self.exhausted:
            return f"the {self.proposer} proposer has nothing new to try"
        return ""

    def _left_in_flight(self, exp: Experiment) -> bool:
        return exp.status == RowStatus.running and bool(exp.commit_sha) and exp.id not in self.launched

    def _schedule(self) -> None:
        while self.free:
            exp = self._next_measurement()
            if exp is None:
                break
            self._launch(exp, self.free.pop(0))
        self._ensure_pending()

    def _next_measurement(self) -> Experiment | None:
        """What to train next: baseline, calibration seeds, confirmations, then a prepared proposal."""
        lab, seed0 = self.lab, self.lab.ws.config.seed
        for exp in self.rows():  # rows left running by a dead loop (--resume) are trained again, in place
            if self._left_in_flight(exp):
                return exp
        base = next((e for e in self.rows() if e.kind == Kind.baseline), None)
        if base is None:
            return self._add_baseline()
        seeds = self.calibration()
        if len(seeds) < self.cfg.noise_seeds:
            seed = seed0 + len(seeds)
            return lab.remeasure(base, Kind.calibration, seed, title=f"Baseline, seed {seed}")
        if any(e.status == RowStatus.running for e in seeds) or base.status != RowStatus.ok:
            return None  # acceptance needs the noise floor first
        for exp in self.rows():
            if exp.status == RowStatus.confirming and not self._confirmation_running(exp):
                done = len(acceptance.samples(self.rows(), exp))
                seed = acceptance.confirmation_seed(exp, done, seed0, self.cfg)
                return lab.remeasure(exp, Kind.confirm, seed, title=f"{exp.title} (confirmation)")
        if self.charged() >= self.caps.experiments:
            return None
        return self._take_prepared()

    def _add_baseline(self) -> Experiment:
        run = self.run
        base = self.ledger.add_experiment(
            run_id=run.id,
            kind=Kind.baseline,
            status=RowStatus.running,
            title="Baseline",
            hypothesis="The unmodified trainer: the reference every change is measured against.",
            proposer="baseline",
            commit_sha=run.base_commit,
            parent_commit=run.base_commit,
            seed=self.lab.ws.config.seed,
        )
        branch = wt.branch_name(run.id, base.id, "baseline")
        wt.set_branch(self.lab.repo, branch, run.base_commit)
        return self.ledger.update(base.id, branch=branch)

    def _confirmation_running(self, exp: Experiment) -> bool:
        return any(
            e.kind == Kind.confirm and e.replay_of == exp.id and e.status == RowStatus.running
            for e in self.rows()
        )

    def _ensure_pending(self) -> None:
        if self.pending is not None or self.exhausted or self.best is None:
            return
        if self.charged() >= self.caps.experiments:
            return
        if len(self.calibration()) < self.cfg.noise_seeds:
            return
        history = self.ledger.experiments()
        self.pending = self.proposer_pool.submit(prepare_proposal, self.lab, self.best, history, self.propose)

    def _take_prepared(self) -> Experiment | None:
        if self.pending is None or not self.pending.done():
            return None
        future, self.pending = self.pending, None
        try:
            prepared: Prepared = future.result()
        except AgentgolfError as exc:  # e.g. the LLM endpoint is down for good: finish what runs, then stop
            self.fatal = f"proposer failed: {exc}"
            return None
        if prepared.proposal is None:
            self.exhausted = True
            return None
        if not prepared.error and self.best is not None and prepared.parent_id != self.best.id:
            # The best moved on while this was prepared: carry the change over if it still applies.
            old_parent = self.ledger.get(prepared.parent_id)
            moved = self.lab.rebase(prepared.commit, old_parent.commit_sha, self.best.commit_sha)
            if moved is not None:
                prepared = prepared.model_copy(update={"commit": moved, "parent_id": self.best.id})
        return self._register(prepared)

    def _register(self, prepared: Prepared) -> Experiment | None:
        lab, run, proposal = self.lab, self.run, prepared.proposal
        parent = self.ledger.get(prepared.parent_id)
        exp = self.ledger.add_experiment(
            run_id=run.id,
            kind=Kind.proposal,
            status=RowStatus.running,
            parent_id=parent.id,
            parent_commit=parent.commit_sha,
            title=proposal.title,
            hypothesis=proposal.hypothesis,
            category=proposal.category,
            proposer=self.proposer,
            seed=lab.ws.config.seed,
            tokens=prepared.usage.prompt_tokens + prepared.usage.completion_tokens,
            usd=prepared.usage.usd,
            manifest={"proposer_session": proposal.session} if proposal.session else {},  # mode, turns, tools
        )
        reason = prepared.error
        if not reason:
            branch = wt.branch_name(run.id, exp.id, proposal.title)
            wt.set_branch(lab.repo, branch, prepared.commit)
            change = diff_fingerprint(wt.diff(lab.repo, parent.commit_sha, prepared.commit))
            exp = self.ledger.update(exp.id, branch=branch, commit_sha=prepared.commit, fingerprint=change)
            if prepared.commit == parent.commit_sha:
                reason = "the proposal changed nothing"
            else:
                repeat = self._repeat_of(exp)
                if repeat is not None:
                    reason = f"repeat of experiment {repeat.id} ({repeat.title}): same change"
        if reason:
            self._announce(
                self.ledger.update(exp.id, status=RowStatus.rejected, reason=reason, finished_at=time.time())
            )
            return None
        return exp

    def _repeat_of(self, exp: Experiment) -> Experiment | None:
        return next(
            (
                e
                for e in self.ledger.experiments()
                if e.id != exp.id
                and e.kind == Kind.proposal
                and e.fingerprint == exp.fingerprint
                and e.status != RowStatus.infra_error
            ),
            None,
        )

    def _launch(self, exp: Experiment, slot: Slot) -> None:
        """Start `exp` on `slot`, which the caller has taken out of `free`."""
        self.launched.add(exp.id)
        self.lab.prepare_run_dir(exp, slot)
        self.view.started(exp)
        self.running[self.pool.submit(self.lab.sandbox, exp, slot)] = (exp, slot, time.monotonic())

    def _wait(self) -> None:
        futures = list(self.running)
        # A finished proposal waits for a slot; only an unfinished one may wake us (else: a busy loop).
        if self.pending is not None and not self.pending.done():
            futures.append(self.pending)
        done, _ = wait(futures, timeout=self.settings.poll_seconds, return_when=FIRST_COMPLETED)
        for future in done:
            if future is self.pending:
                continue  # picked up by _schedule
            exp, slot, _ = self.running.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # a harness bug or a machine failure: the idea is not charged
                result = SandboxResult(status=Status.infra_error, reason=f"harness error: {exc}")
            if self._retry(exp, result):
                self._launch(exp, slot)  # the same slot, straight away: nothing else may take it
            else:
                self.free.append(slot)
                self._finish(exp, result, slot)
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

    def _finish(self, exp: Experiment, result: SandboxResult, slot: Slot) -> None:
        exp = self.lab.record(exp, result, slot)
        if exp.kind == Kind.baseline:
            if exp.status == RowStatus.ok:
                exp = self._promote(exp, reason=exp.reason)
                self._bound_overhead(exp)
            self._announce(exp)
        elif exp.kind == Kind.calibration:
            self._announce(exp)
        elif exp.kind in (Kind.proposal, Kind.confirm):
            target = self.ledger.get(exp.replay_of) if exp.kind == Kind.confirm else exp
            if exp.kind == Kind.confirm:
                self._announce(exp)
            if target.status in (RowStatus.ok, RowStatus.confirming) and exp.status == RowStatus.ok:
                self._decide(target)
            elif exp.kind == Kind.confirm:  # the confirmation itself failed: the win is not confirmed
                reason = f"confirmation run failed: {exp.status}"
                self._announce(self.ledger.update(target.id, status=RowStatus.inconclusive, reason=reason))
            else:
                self._announce(exp)

    def _decide(self, exp: Experiment) -> None:
        parent = self.ledger.get(exp.parent_id)
        verdict = acceptance.decide(self.rows(), exp, parent, self.cfg)
        fields = {"reason": verdict.reason, "decision": verdict.record()}  # evidence: ledger --json, report
        if verdict.decision == "promote" and self.best is not None and parent.id != self.best.id:
            fields["reason"] += f", but the best moved on to experiment {self.best.id} meanwhile"
            exp = self.ledger.update(exp.id, status=RowStatus.inconclusive, **fields)
        elif verdict.decision == "promote":
            exp = self._promote(exp, **fields)
        else:  # "confirm" leaves it confirming: _next_measurement schedules its next run
            exp = self.ledger.update(exp.id, status=acceptance.ROW_STATUS[verdict.decision], **fields)
        self._announce(exp)

    def _promote(self, exp: Experiment, reason: str, **fields: object) -> Experiment:
        exp = self.ledger.update(exp.id, status=RowStatus.ok, kept=True, reason=reason, **fields)
        wt.set_branch(self.lab.repo, wt.best_branch(self.run.id), exp.commit_sha)
        self.best = exp
        return exp

    def _bound_overhead(self, base: Experiment) -> None:
        """No candidate may buy training time in the start-up allowance: cut it to what the baseline needed."""
        if base.train_seconds is not None:
            self.lab.budget = self.lab.budget.with_measured_overhead(base.train_seconds)

    def _announce(self, exp: Experiment) -> None:
        self.view.log(describe(exp))

    def _wind_down(self, reason: str) -> None:
        """A prepared proposal that never ran is dropped (nothing charged); an unconfirmed win stays unconfirmed."""
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        for exp in self.rows():
            if exp.status == RowStatus.confirming:
                self.ledger.update(
                    exp.id, status=RowStatus.inconclusive, reason=f"not confirmed: the run stopped ({reason})"
                )
        self.pool.shutdown(wait=True)
        self.proposer_pool.shutdown(wait=False, cancel_futures=True)

    def abandon(self, reason: str) -> None:
        """The loop is going down: stop what must not outlive it and leave the rows `running` for --resume."""
        self.lab.stopping.set()
        for exp, _, _ in self.running.values():
            self.ledger.update(exp.id, reason=f"in flight when {reason}")
            self.lab.executor.release(self.lab.ws.run_dir(exp.id))
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.proposer_pool.shutdown(wait=False, cancel_futures=True)
