"""When is a win real? Measured noise, a confirmation re-run, and a one-sided test before promotion.

The noise floor is the seed-to-seed standard deviation of the baseline, measured at the start of a
run at the fidelity being judged (short proxy runs are far noisier than full ones). A candidate is:
- a dead end if it is no better than its parent;
- inconclusive if it beats its parent by less than `noise_k` noise floors;
- otherwise re-run with another seed (when `confirm` is on), and promoted only if a one-sided t-test
  says it beats the parent by more than `min_delta_bpb` at level `alpha`. The default mirrors the
  challenge's rule for sp1024: 0.005 nats ~ 0.0029 bpb, p < 0.01.
"""

from __future__ import annotations

import math
import statistics
from typing import Literal

from pydantic import BaseModel

from agentgolf.agent.stats import student_t_sf
from agentgolf.experiments.workspace import AcceptanceConfig

Decision = Literal["dead_end", "inconclusive", "confirm", "promote"]


class Verdict(BaseModel):
    decision: Decision
    delta_bpb: float  # candidate mean - parent mean (negative is better)
    p_value: float | None = None
    reason: str


def noise_sigma(samples: list[float], fallback: float) -> float:
    """Seed-to-seed standard deviation; `fallback` when fewer than two seeds were measured."""
    return statistics.stdev(samples) if len(samples) >= 2 else fallback


def judge(
    candidate: list[float], parent: list[float], sigma: float, dof: int, cfg: AcceptanceConfig
) -> Verdict:
    """Decide on `candidate` runs (val_bpb, one per seed) against the `parent` runs."""
    delta = statistics.fmean(candidate) - statistics.fmean(parent)
    if delta >= 0:
        return Verdict(
            decision="dead_end", delta_bpb=delta, reason=f"no better than its parent ({delta:+.4f} bpb)"
        )
    floor = cfg.noise_k * sigma
    if -delta <= floor:
        return Verdict(
            decision="inconclusive",
            delta_bpb=delta,
            reason=f"{delta:+.4f} bpb is inside the noise floor ({floor:.4f})",
        )
    if cfg.confirm and len(candidate) < 1 + cfg.confirm_seeds:
        return Verdict(
            decision="confirm", delta_bpb=delta, reason="looks better: confirming with another seed"
        )
    margin = -delta - cfg.min_delta_bpb
    if sigma <= 0:  # no measured noise (deterministic runs, no calibration): compare against the margin only
        p = 0.0 if margin > 0 else 1.0
    else:
        t = margin / (sigma * math.sqrt(1 / len(candidate) + 1 / len(parent)))
        p = student_t_sf(t, max(1, dof))
    if p < cfg.alpha:
        return Verdict(
            decision="promote",
            delta_bpb=delta,
            p_value=p,
            reason=f"{delta:+.4f} bpb, p={p:.3g} < {cfg.alpha}",
        )
    return Verdict(
        decision="inconclusive",
        delta_bpb=delta,
        p_value=p,
        reason=f"{delta:+.4f} bpb but not beyond {cfg.min_delta_bpb} bpb at p<{cfg.alpha} (p={p:.3g})",
    )
