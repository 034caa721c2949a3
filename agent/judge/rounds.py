"""Rounds of the paired judge: which runs need a control, the control itself, and how a round is launched.

Every full-budget measurement of a candidate (its first run, each confirmation, a re-test's runs, a screened
idea's full-budget runs) is one round: the candidate's run and a `control`, a run of its parent's commit
with the same seed on the same rung (agent/judge/paired.py judges the differences). The scheduler launches both
together:
- on two or more free slots, at the same moment, the candidate taking slot `look % 2` of the two, so that a
  slot effect cancels from look to look;
- on one slot, back to back, the order alternating by look (candidate first, then control first, ...), so
  that a linear drift cancels too;
- with several slots but one free, the round waits for a second (a pair split in time is not a pair);
- on more than two slots, one control serves every run of its round with the same parent, seed and rung
  (the runs the scheduler has ready while slots are free), so a round of k candidates takes k + 1 slots.
A control that fails voids its round: the round runs again with the same seed, not charged to the idea.
Screen-rung rows are judged unpaired (screening.py): a screen only sends ideas on, it never promotes.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentgolf.agent.controller.lab import Lab
from agentgolf.agent.judge.paired import controls_of, runs_of
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind, RowStatus

MAX_VOIDED = 2  # rounds voided by a failing control before the idea is left inconclusive


def target_of(rows: Sequence[Experiment], row: Experiment) -> Experiment:
    """The candidate a measurement row measures: the row itself, or what a confirmation re-measures."""
    if row.kind == Kind.confirm and row.replay_of is not None:
        return next((e for e in rows if e.id == row.replay_of), row)
    return row


def needs_control(rows: Sequence[Experiment], row: Experiment) -> bool:
    """A full-budget run of a proposal (or its confirmation) is judged against a control beside it."""
    target = target_of(rows, row)
    return (
        row.kind in (Kind.proposal, Kind.confirm)
        and not row.rung
        and target.kind == Kind.proposal
        and target.parent_id is not None
    )


def look(rows: Sequence[Experiment], row: Experiment) -> int:
    """Which round of its candidate `row` is: 0 for the first run, 1 for the first confirmation, ... (a
    replay's: its place among the replays of the same row)."""
    if row.kind == Kind.replay:
        runs = [e for e in rows if e.kind == Kind.replay and e.replay_of == row.replay_of]
    else:
        runs = runs_of(rows, target_of(rows, row))
    return next((k for k, e in enumerate(runs) if e.id == row.id), len(runs))


def control_for(lab: Lab, rows: Sequence[Experiment], row: Experiment) -> Experiment:
    """The round's control: its existing one (running, or done: on one slot it may run first), or a new run
    of the parent with the same seed and rung."""
    found = next((c for c in controls_of(rows, row) if c.status in (RowStatus.running, RowStatus.ok)), None)
    if found is not None:
        return found
    parent = lab.ledger.get(target_of(rows, row).parent_id)
    ctrl = lab.remeasure(
        parent, Kind.control, row.seed, title=f"Control of #{row.id}: {parent.title}", rung=row.rung
    )
    return lab.ledger.update(ctrl.id, paired_with=[row.id])


def shares(rows: Sequence[Experiment], ctrl: Experiment, row: Experiment) -> bool:
    """`ctrl` can serve `row` too: a run that needs a control and has none yet, of the same parent, with the
    same seed, on the same rung (on more than two slots one control serves its whole round)."""
    return (
        needs_control(rows, row)
        and not controls_of(rows, row)
        and target_of(rows, row).parent_id == ctrl.replay_of
        and row.seed == ctrl.seed
        and row.rung == ctrl.rung
    )


def order(rows: Sequence[Experiment], runs: Sequence[Experiment], ctrl: Experiment) -> list[Experiment]:
    """The round's runs in launch order (or slot order): the (first) candidate before its control on even
    looks, after it on odd ones, so that a slot effect or a drift cancels from look to look."""
    return [*runs, ctrl] if look(rows, runs[0]) % 2 == 0 else [ctrl, *runs]


def in_flight(rows: Sequence[Experiment], target: Experiment) -> bool:
    """A round of `target` is still running: its verdict waits for both of its runs."""
    runs = runs_of(rows, target)
    return any(e.status == RowStatus.running for e in runs) or any(
        c.status == RowStatus.running for r in runs for c in controls_of(rows, r)
    )


def voided(rows: Sequence[Experiment], target: Experiment) -> int:
    """Rounds of `target` whose control failed (no scored control of the same seed)."""
    return sum(
        1
        for r in runs_of(rows, target)
        for c in controls_of(rows, r)
        if c.status not in (RowStatus.running, RowStatus.ok)
    )


def rerun(lab: Lab, target: Experiment, failed: Experiment) -> Experiment:
    """A voided round again, with the same seed: a confirmation row (never charged as an idea)."""
    title = f"{target.title} (round again: its control failed)"
    return lab.remeasure(target, Kind.confirm, failed.seed, title=title)
