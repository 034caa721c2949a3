"""What a finished run means for the run: recorded, judged on its paired rounds, promoted, carried or re-run.

Part of the scheduler (agent/controller/scheduler.py decides what runs where and when; this, what each result means),
split out to keep both readable. Every method runs on the scheduler's thread, the ledger's only writer.
A candidate is decided once all of its rounds are in (agent/judge/rounds.py, agent/judge/paired.py); a win over a
parent that is no longer the best is carried onto the best and re-tested (agent/judge/retest.py); a screened
idea's verdict only sends it on to the full budget (agent/judge/screening.py).
"""

from __future__ import annotations

from agentgolf.agent.controller.executor import Slot
from agentgolf.agent.controller.live import describe
from agentgolf.agent.judge import acceptance, allowance, paired, retest, rounds, screening
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind, RowStatus
from agentgolf.sandbox.result import SandboxResult


class Verdicts:
    """The scheduler's judging half (mixed into Scheduler, whose state it reads)."""

    def _finish(self, exp: Experiment, result: SandboxResult, slot: Slot) -> None:
        exp = self.lab.record(exp, result, slot)
        if exp.kind == Kind.baseline:
            if exp.status == RowStatus.ok:
                exp = self._promote(exp, reason=exp.reason)
                self._bound_overhead(exp)
            self._announce(exp)
        elif exp.kind == Kind.calibration:
            self._bound_overhead(exp)  # a baseline seed measures its rung's allowances too
            self._announce(exp)
            for waiting in self.rows():  # proposals that finished while the noise was being measured
                if waiting.kind == Kind.proposal and waiting.status == RowStatus.ok and not waiting.decision:
                    self._decide(waiting)
        elif exp.kind == Kind.control:
            self._announce(exp)
            for served in [self.ledger.get(i) for i in exp.paired_with]:
                self._round_done(served, exp)
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
        """The verdict on a scored proposal, once every calibration seed is in (until then it waits)."""
        if exp.rung:  # the screen's verdict: a full-budget run for what earns one, never a promotion
            screened = screening.decide(
                self.lab, self.run, self.rows(), exp, self.best, self.settings.carry_forward
            )
            return self._announce(screened) if screened is not None else None
        seeds = self.calibration()
        if len(seeds) < self.cfg.noise_seeds or any(e.status == RowStatus.running for e in seeds):
            return  # decided when the last seed comes in (_finish)
        rows = screening.lane(self.rows(), "")
        if rounds.in_flight(rows, exp):
            return  # decided when the last run of its rounds comes in
        verdict = paired.decide(rows, exp, [e.val_bpb for e in seeds], self.cfg)
        if verdict is None:
            return  # no complete round yet (a voided one runs again)
        parent = self.ledger.get(exp.parent_id)
        fields = {"reason": verdict.reason, "decision": verdict.record()}  # evidence: ledger --json, report
        moved_on = self.best is not None and parent.id != self.best.id
        if verdict.decision == "inconclusive" and moved_on and paired.all_favour(verdict):
            # Undecided, but every pair favours it: not dropped on a coin flip, carried like a win.
            fields["reason"] += "; every pair favoured it"
            verdict.decision = "promote"  # for the branch below only: its evidence keeps "inconclusive"
        if verdict.decision == "promote" and moved_on:
            # A win over a parent that is no longer the best: re-test its change on the best (retest.py).
            fields["reason"] += f", but the best moved on to experiment {self.best.id} meanwhile"
            again, said = retest.carry(
                self.lab, self.run, self.rows(), exp, self.best, self.settings.carry_forward
            )
            exp = self.ledger.update(
                exp.id, status=RowStatus.inconclusive, **{**fields, "reason": fields["reason"] + said}
            )
        elif verdict.decision == "promote":
            exp = self._promote(exp, **fields)
        else:  # "confirm" leaves it confirming: _next_measurement schedules its next run
            exp = self.ledger.update(exp.id, status=acceptance.ROW_STATUS[verdict.decision], **fields)
        self._announce(exp)

    def _round_done(self, run: Experiment, ctrl: Experiment) -> None:
        """A control came in: its round is complete (decide), or it failed and voids the round, which runs
        again with the same seed, uncharged, until MAX_VOIDED rounds were lost to the parent's failures."""
        target = rounds.target_of(self.rows(), run)
        if (
            target.status not in (RowStatus.ok, RowStatus.confirming)
            or target.kept
            or target.decision.get("decision") in ("promote", "dead_end", "inconclusive")
        ):
            return
        if ctrl.status == RowStatus.ok:
            return self._decide(target)
        if rounds.voided(self.rows(), target) > rounds.MAX_VOIDED:
            why = f"not decided: the control of its parent failed in {rounds.MAX_VOIDED + 1} rounds ({ctrl.status})"
            return self._announce(self.ledger.update(target.id, status=RowStatus.inconclusive, reason=why))
        again = rounds.rerun(self.lab, target, run)
        self.view.log(
            f"#{target.id}: its control #{ctrl.id} failed ({ctrl.status}); round again as #{again.id}"
        )

    def _promote(self, exp: Experiment, reason: str, **fields: object) -> Experiment:
        exp = self.ledger.update(exp.id, status=RowStatus.ok, kept=True, reason=reason, **fields)
        wt.set_branch(self.lab.repo, wt.best_branch(self.run.id), exp.commit_sha)
        self.best = exp
        return exp

    def _bound_overhead(self, exp: Experiment) -> None:
        """No candidate may buy training time in the start-up allowance, nor spend longer loading or scoring
        than the baseline needed: each rung's allowances follow what its baseline runs measured, up or down
        (agent/judge/allowance.py; the baseline runs themselves are judged against the kill limits only)."""
        if said := allowance.update(self.lab, self.rows(), exp):
            self.view.log(said)

    def _announce(self, exp: Experiment) -> None:
        self.view.log(describe(exp))
        self.lab.tracking.update(exp)  # a verdict, to its dashboards (agent/tracking/hub.py)
