"""The morning number: when a run ends, the tip of its best chain measured against its base commit, in
fresh paired rounds, with a 95% interval.

Why: each promotion was judged against its own parent, one step at a time; chained, the small false wins and
the winner's curse of each step add up. So the run's end measures the whole chain at once, the best beside
the baseline, with seeds no decision used (`MORNING_SEED_OFFSET`), and states the gain that held. Its rounds
are launched like every other round (agent/judge/rounds.py), count against the GPU-hour cap, never `--budget`,
and are `SchedulerConfig.morning_rounds` in number (0: none).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from agentgolf.agent.judge.paired import controls_of, measured
from agentgolf.agent.judge.stats import t_isf
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind

if TYPE_CHECKING:
    from agentgolf.agent.controller.lab import Lab

MORNING_SEED_OFFSET = (
    500  # morning seeds: seed + 500 + r, apart from calibration (+k) and confirmations (+1000k)
)
TITLE = "Morning: the best again, beside the baseline"
CONFIDENCE = 0.95


class Morning(BaseModel):
    """The chain's confirmed gain: the best's runs minus the baseline's, round by round."""

    best_id: int
    base_id: int
    rounds: int  # complete rounds
    diffs: list[float]  # best - baseline per round, bpb (negative is better)
    gain_bpb: float  # -mean(diffs): positive is a gain
    low: float | None  # the 95% interval of the gain (None with one round)
    high: float | None
    promotions: int  # promotions in the chain (the baseline's own excluded)

    @property
    def held(self) -> bool:
        """The chain's gain is confirmed: its interval lies above zero."""
        return self.low is not None and self.low > 0

    def line(self) -> str:
        ci = f", 95% CI [{self.low:+.4f}, {self.high:+.4f}]" if self.low is not None else ""
        verdict = "held" if self.held else "did not hold"
        return (
            f"morning number: best #{self.best_id} beats the baseline by {self.gain_bpb:+.4f} bpb over "
            f"{self.rounds} fresh paired round(s){ci}; the chain of {self.promotions} promotion(s) {verdict}"
        )


def runs(rows: Sequence[Experiment], best: Experiment) -> list[Experiment]:
    """The morning rows of `best`: replays of it titled as such, in this run."""
    return [e for e in rows if e.kind == Kind.replay and e.replay_of == best.id and e.title == TITLE]


def plan(lab: Lab, rows: Sequence[Experiment], best: Experiment, base: Experiment, n: int, seed0: int) -> int:
    """Add the missing rounds (the best's run and the baseline's control, one seed each): how many were added."""
    have = len(runs(rows, best))
    for r in range(have, n):
        seed = seed0 + MORNING_SEED_OFFSET + r
        tip = lab.remeasure(best, Kind.replay, seed, title=TITLE, rung="")
        ctrl = lab.remeasure(base, Kind.control, seed, title=f"Control of #{tip.id}: {base.title}", rung="")
        lab.ledger.update(ctrl.id, paired_with=[tip.id])
    return max(0, n - have)


def measure(rows: Sequence[Experiment], best: Experiment, base: Experiment) -> Morning | None:
    """The gain of `best` over `base` from the complete morning rounds; None when none is complete."""
    diffs = []
    for tip in runs(rows, best):
        ctrl = next((c for c in controls_of(rows, tip) if measured(c) and c.seed == tip.seed), None)
        if ctrl is not None and measured(tip):
            diffs.append(tip.val_bpb - ctrl.val_bpb)
    if not diffs:
        return None
    gain, low, high = -statistics.fmean(diffs), None, None
    if len(diffs) >= 2:
        half = t_isf((1 - CONFIDENCE) / 2, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
        low, high = gain - half, gain + half
    kept = [e for e in rows if e.kept and e.kind == Kind.proposal]
    return Morning(
        best_id=best.id,
        base_id=base.id,
        rounds=len(diffs),
        diffs=diffs,
        gain_bpb=gain,
        low=low,
        high=high,
        promotions=len(kept),
    )


def false_promotions(rows: Sequence[Experiment], alpha: float, night_rate: float = 0.10) -> str:
    """What the night's verdicts risk: alpha x the candidates judged at the full budget is the expected
    number of false promotions among them; the alpha that would keep the chance of any at `night_rate`."""
    judged = sum(1 for e in rows if e.kind == Kind.proposal and not e.rung and e.decision)
    if not judged:
        return ""
    return (
        f"false promotions expected among the {judged} candidate(s) judged: at most {alpha * judged:.2f} "
        f"(alpha {alpha:g} each); for at most a {night_rate:.0%} chance of any in a night like this one, "
        f"set acceptance.alpha to {night_rate / judged:.2g}"
    )


def said(settings: dict[str, Any]) -> str:
    """A run's morning number as one line, from the run's settings (where the scheduler keeps it); "" if none."""
    found = settings.get("morning")
    return Morning.model_validate(found).line() if found else ""
