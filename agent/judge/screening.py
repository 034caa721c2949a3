"""Screening: what the scheduler does on the fidelity ladder's cheaper rung (fidelity.py holds its rules).

With a screen configured, every new proposal is first measured on the screen rung and decided there by
the same sequential rule, against its parent's runs on that rung and with that rung's own pooled noise:
the baseline gets `noise_seeds` seeds on the screen too (they also set the screen's allowances, judged by
the kill limits only: agent/judge/allowance.py), and a new best that has no screened run yet gets one. A screened idea that earns it (fidelity.send_to_full) is measured again at the full budget as
a new row linked to it (`screen_of`), on the current best, and only that row can be promoted. If the best
moved on since the idea was screened, its change is carried onto the new best first (retest.py).

Everything here runs on the scheduler's thread, the ledger's only writer, and re-reads what it needs
from the rows, so `--resume` finds every step again.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentgolf.agent.controller.lab import Lab
from agentgolf.agent.judge import acceptance, retest
from agentgolf.agent.judge.acceptance import AcceptanceConfig, Verdict
from agentgolf.agent.judge.fidelity import pairs, send_to_full
from agentgolf.experiments.ledger import Experiment, Run
from agentgolf.experiments.status import Kind, RowStatus


def lane(rows: Sequence[Experiment], rung: str) -> list[Experiment]:
    """The rows one rung measured ("" is the full budget): each rung's noise and verdicts stay apart."""
    return [e for e in rows if e.rung == rung]


def seeds(rows: Sequence[Experiment], base: Experiment, rung: str) -> list[Experiment]:
    """The baseline's runs on `rung`: that rung's calibration seeds."""
    return [e for e in rows if e.rung == rung and e.kind == Kind.calibration and e.replay_of == base.id]


def anchor(rows: Sequence[Experiment], parent: Experiment, rung: str) -> list[Experiment]:
    """`parent`'s runs on `rung`: the screened row that made it (and its confirmations) when that is the same
    commit (a change carried onto a newer best was screened as another commit: it is screened again), or runs
    of it measured there since (the baseline's seeds, a new best's screened run)."""
    screened = next((e for e in rows if e.id == parent.screen_of), None)
    same = screened is not None and screened.commit_sha == parent.commit_sha
    own = {parent.id, parent.screen_of if same else None} - {None}
    return [e for e in rows if e.rung == rung and (e.id in own or e.replay_of in own)]


def anchor_samples(rows: Sequence[Experiment], parent: Experiment, rung: str) -> list[float]:
    return [
        e.val_bpb
        for e in anchor(rows, parent, rung)
        if e.val_bpb is not None and e.status in acceptance.MEASURED
    ]


def next_measurement(
    lab: Lab, rows: Sequence[Experiment], base: Experiment, best: Experiment, rung: str
) -> Experiment | None:
    """The screen's next calibration: a baseline seed on it, else a first screened run of the best."""
    cfg, seed0 = lab.ws.config.acceptance, lab.ws.config.seed
    have = seeds(rows, base, rung)
    if len(have) < cfg.noise_seeds:
        seed = seed0 + len(have)
        return lab.remeasure(base, Kind.calibration, seed, title=f"Baseline, seed {seed}", rung=rung)
    if best.id != base.id and not anchor(rows, best, rung):
        return lab.remeasure(best, Kind.calibration, seed0, title=best.title, rung=rung)
    return None


def ready(
    rows: Sequence[Experiment], base: Experiment, parent: Experiment, rung: str, noise_seeds: int
) -> bool:
    """Can a screened row be decided: the rung's seeds all in, and its parent measured on the rung?"""
    have = seeds(rows, base, rung)
    if len(have) < noise_seeds or any(e.status == RowStatus.running for e in have):
        return False
    return bool(anchor_samples(rows, parent, rung))


def judge(rows: Sequence[Experiment], exp: Experiment, parent: Experiment, cfg: AcceptanceConfig) -> Verdict:
    """The sequential rule on the screen's rows only: its own samples, its parent's, its pooled noise."""
    rows = acceptance.comparable(rows, exp)
    on_rung = lane(rows, exp.rung)
    noise = acceptance.noise_floor(on_rung, cfg.known_sigma_bpb, leave_out=exp.id)
    return acceptance.judge(
        acceptance.samples(on_rung, exp),
        anchor_samples(rows, parent, exp.rung),
        noise.sigma,
        noise.dof,
        cfg,
        acceptance.margin_bpb(rows, cfg),
    )


def to_full(
    lab: Lab, run: Run, rows: Sequence[Experiment], exp: Experiment, best: Experiment, limit: int
) -> tuple[Experiment | None, str]:
    """`exp`'s change as a full-budget row on the best: (the row, what to add to `exp`'s reason), or
    (None, why not) when its change cannot be carried onto a best that moved on."""
    done = next((e for e in rows if e.screen_of == exp.id), None)
    if done is not None:  # a kill came between adding the full run and deciding the screened row
        return done, f"; measured at the full budget as experiment {done.id}"
    if exp.parent_id != best.id:
        carried, said = retest.carry(lab, run, rows, exp, best, limit)
        if carried is None:
            return None, said
        return lab.ledger.update(carried.id, screen_of=exp.id, rung=""), said + " at the full budget"
    full = lab.ledger.add_experiment(
        run_id=run.id,
        kind=Kind.proposal,
        status=RowStatus.running,
        rung="",
        screen_of=exp.id,
        parent_id=best.id,
        parent_commit=best.commit_sha,
        commit_sha=exp.commit_sha,
        branch=exp.branch,
        fingerprint=exp.fingerprint,
        title=exp.title,
        hypothesis=exp.hypothesis,
        category=exp.category,
        proposer=exp.proposer,
        seed=exp.seed,
    )
    return full, f"; measured at the full budget as experiment {full.id}"


def decide(
    lab: Lab, run: Run, rows: Sequence[Experiment], exp: Experiment, best: Experiment, carry_limit: int
) -> Experiment | None:
    """The screen's verdict on `exp`, written to its row; None while it must wait (its rung's seeds or
    its parent's screened run are still to come: the scheduler asks again when they finish)."""
    cfg, parent = lab.ws.config.acceptance, lab.ledger.get(exp.parent_id)
    base = next(e for e in rows if e.kind == Kind.baseline)
    if not ready(rows, base, parent, exp.rung, cfg.noise_seeds):
        return None
    verdict = judge(rows, exp, parent, cfg)
    reason = f"screen: {verdict.reason}"
    earned = send_to_full(verdict.decision, verdict.delta_bpb, pairs(rows), lab.ws.config.fidelity)
    if verdict.decision != "confirm" and earned:
        reason += to_full(lab, run, rows, exp, best, carry_limit)[1]
    status = acceptance.ROW_STATUS[verdict.decision]  # a screen's "promote" is `ok`, never kept
    return lab.ledger.update(exp.id, status=status, reason=reason, decision=verdict.record())
