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
        p = t_sf(t, max(1, dof))
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


# --- Student's t distribution, standard library only -------------------------------------------------


def t_sf(t: float, dof: float) -> float:
    """P(T > t) for Student's t with `dof` degrees of freedom (the one-sided p-value)."""
    x = dof / (dof + t * t)
    tail = 0.5 * _betainc(dof / 2, 0.5, x)
    return tail if t >= 0 else 1 - tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), by Lentz's continued fraction (Numerical Recipes 6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float, iterations: int = 300, eps: float = 1e-15) -> float:
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, iterations + 1):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < eps:
            break
    return h
