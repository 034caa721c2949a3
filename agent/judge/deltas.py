"""A row's score and its "Δ vs parent": one definition for the ledger, the report, the digest, the search
and the submission README.

- A row's runs: the row and its re-measurements on its rung (its confirmations; for the baseline, its
  calibration seeds), each with a score that counts (`acceptance.MEASURED`). Its score is their mean, never
  one lucky first run.
- Δ vs parent: the mean of the paired differences (candidate - control) when the row has complete paired
  rounds (`paired.pairs`); else the mean of its runs minus the mean of its parent's runs on the same rung:
  every scored run of the parent's commit on that rung in the rows given (the parent and its
  re-measurements, the baseline's seeds on a screen rung, controls run beside other candidates). Never one
  run against one run. Rows scored on other validation targets are left out (`acceptance.comparable`).

Both are read from the rows, so they move as confirmations come in; the ledger's `delta_bpb` column holds
the same figure as it stood when the row was recorded (`lab.Lab._delta`); `ledger` and `show` print the
current one (`current`). Pass one run's rows.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable

from pydantic import BaseModel

from agentgolf.agent.judge import acceptance, paired
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind

# Rows that measure their own commit, on their rung: what a parent's runs are gathered from (a replay runs in
# a run of its own, so it is never one).
MEASURES_COMMIT = frozenset({Kind.baseline, Kind.proposal, Kind.confirm, Kind.calibration, Kind.control})


class Score(BaseModel):
    """A row's score as every display shows it."""

    bpb: float | None  # the mean of the row's runs; None when none of them counts
    runs: int  # how many runs the mean rests on
    delta: float | None  # Δ vs parent (negative is better); None without a parent or its runs
    rounds: int = 0  # paired rounds the delta rests on; 0: a difference of means


def counts(e: Experiment) -> bool:
    return e.val_bpb is not None and e.status in acceptance.MEASURED


class Scores:
    """One run's rows, indexed once (linear in the rows): each row's runs, score and Δ vs parent."""

    def __init__(self, rows: Iterable[Experiment]):
        self.rows = list(rows)
        self.by_id = {e.id: e for e in self.rows}
        self._again: dict[int, list[Experiment]] = defaultdict(list)  # id -> its confirmations / seeds
        self._controls: dict[int, list[Experiment]] = defaultdict(list)  # run id -> controls beside it
        self._commit: dict[tuple[str, str], list[Experiment]] = defaultdict(list)  # (rung, commit) -> rows
        for e in self.rows:
            if e.replay_of is not None and e.kind in acceptance.REMEASURE_KINDS:
                self._again[e.replay_of].append(e)
            if e.kind == Kind.control:
                for run_id in e.paired_with:
                    self._controls[run_id].append(e)
            if e.kind in MEASURES_COMMIT and e.commit_sha:
                self._commit[(e.rung, e.commit_sha)].append(e)

    def runs(self, exp: Experiment) -> list[Experiment]:
        """`exp` and its re-measurements on its rung that count, on `exp`'s validation targets."""
        own = [exp, *(e for e in self._again.get(exp.id, []) if e.rung == exp.rung)]
        return [e for e in acceptance.comparable(own, exp) if counts(e)]

    def parent_runs(self, exp: Experiment, parent: Experiment) -> list[Experiment]:
        """`parent`'s scored runs on `exp`'s rung: every run of its commit there; where the rows hold none
        (no commit recorded, or the parent is in another run), the parent and its re-measurements."""
        found = self._commit.get((exp.rung, parent.commit_sha), []) if parent.commit_sha else []
        if not found and parent.rung == exp.rung:
            found = self.runs(parent)
        return [e for e in acceptance.comparable(found, exp) if counts(e)]

    def rounds(self, exp: Experiment) -> list[paired.Pair]:
        """`exp`'s complete paired rounds (its runs, each with a scored control of the same seed)."""
        own = [exp, *self._again.get(exp.id, [])]
        near = own + [c for e in own for c in self._controls.get(e.id, [])]
        return paired.pairs(acceptance.comparable(near, exp), exp)

    def parent_of(self, exp: Experiment) -> Experiment | None:
        return self.by_id.get(exp.parent_id) if exp.parent_id is not None else None

    def mean(self, exp: Experiment) -> float | None:
        found = self.runs(exp)
        return statistics.fmean(e.val_bpb for e in found) if found else None

    def delta(self, exp: Experiment, parent: Experiment | None = None) -> float | None:
        """Δ vs parent: the paired mean difference, else the difference of the means on the rung."""
        return self.score(exp, parent).delta

    def score(self, exp: Experiment, parent: Experiment | None = None) -> Score:
        mine = self.runs(exp)
        bpb = statistics.fmean(e.val_bpb for e in mine) if mine else None
        parent = parent or self.parent_of(exp)
        if parent is None:
            return Score(bpb=bpb, runs=len(mine), delta=None)
        found = self.rounds(exp)
        if found:
            return Score(
                bpb=bpb, runs=len(mine), delta=statistics.fmean(p.d for p in found), rounds=len(found)
            )
        theirs = self.parent_runs(exp, parent)
        if bpb is None or not theirs:
            return Score(bpb=bpb, runs=len(mine), delta=None)
        return Score(bpb=bpb, runs=len(mine), delta=bpb - statistics.fmean(e.val_bpb for e in theirs))


def current(rows: Iterable[Experiment]) -> dict[int, Score]:
    """Each row's score as it stands now, each among its own run's rows (pass whole runs): what `ledger` and
    `show` print instead of the figure recorded when the row finished."""
    runs: dict[str | None, list[Experiment]] = defaultdict(list)
    for e in rows:
        runs[e.run_id].append(e)
    out: dict[int, Score] = {}
    for group in runs.values():
        scores = Scores(group)
        out.update((e.id, scores.score(e)) for e in group)
    return out


def vs_parent(rows: Iterable[Experiment], exp: Experiment, parent: Experiment | None = None) -> float | None:
    """Δ vs parent of `exp` among `rows` (one run's); `exp` stands in for its own row there."""
    listed = [e for e in rows if e.id != exp.id]
    return Scores([*listed, exp]).delta(exp, parent)


def score_of(rows: Iterable[Experiment], exp: Experiment) -> Score:
    """`exp`'s score among `rows` (one run's): the mean of its runs, and its Δ vs parent."""
    listed = [e for e in rows if e.id != exp.id]
    return Scores([*listed, exp]).score(exp)
