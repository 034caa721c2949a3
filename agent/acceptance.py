"""When is a win real? Pure functions over ledger rows: samples, the noise floor, and the decision.

The noise floor is the seed-to-seed standard deviation of the baseline, measured at the start of a
run at the fidelity being judged (short proxy runs are far noisier than full ones). A candidate is:
- a dead end if it is no better than its parent;
- inconclusive if it beats its parent by less than `noise_k` noise floors;
- otherwise re-run with another seed (when `confirm` is on), and promoted only if a one-sided t-test
  says it beats the parent by more than the margin at level `alpha`. By default the margin is the
  challenge's 0.005 nats per token, turned into bpb with the run's own tokens per byte.

Nothing here trains or writes: the scheduler, the report and `replay` all call these on rows.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from agentgolf import challenge
from agentgolf.agent.stats import student_t_sf
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import NOISE_KINDS, Kind, RowStatus

Decision = Literal["dead_end", "inconclusive", "confirm", "promote"]
MEASURED = frozenset({RowStatus.ok, RowStatus.inconclusive, RowStatus.confirming})  # a score that counts


class AcceptanceConfig(BaseModel):
    """When a candidate counts as better than its parent."""

    noise_seeds: int = Field(3, ge=1, description="baseline runs with distinct seeds at the start of a run")
    fallback_sigma_bpb: float = Field(0.0, ge=0, description="noise floor used when noise_seeds < 2")
    noise_k: float = Field(1.0, ge=0, description="wins within noise_k noise floors are inconclusive")
    confirm: bool = Field(True, description="re-run a candidate that looks better with another seed")
    confirm_seeds: int = Field(1, ge=1, description="extra seeds for a confirmation")
    confirm_seed_stride: int = Field(
        1000, ge=1, description="the k-th confirmation of a row trains with seed + k x this"
    )
    min_delta_bpb: float | None = Field(
        None,
        ge=0,
        description="promotion margin in bpb; None: the challenge's 0.005 nats at the run's tokens per byte",
    )
    alpha: float = Field(challenge.RECORD_ALPHA, gt=0, lt=1, description="one-sided test level for promotion")
    replay_noise_k: float = Field(
        2.0, ge=0, description="a replay within this many noise floors of the original reproduces it"
    )


class Verdict(BaseModel):
    decision: Decision
    delta_bpb: float  # candidate mean - parent mean (negative is better)
    p_value: float | None = None
    reason: str


class Noise(BaseModel):
    """The seed-to-seed standard deviation of a run's baseline and the degrees of freedom behind it."""

    sigma: float  # 0.0 when unknown
    dof: int


def samples(rows: Sequence[Experiment], exp: Experiment) -> list[float]:
    """All scored measurements of the same commit in `rows`: the row and its confirmations or seeds."""
    return [
        e.val_bpb
        for e in rows
        if e.val_bpb is not None
        and e.status in MEASURED
        and (e.id == exp.id or (e.kind in (Kind.confirm, Kind.calibration) and e.replay_of == exp.id))
    ]


def noise_floor(rows: Sequence[Experiment], fallback_sigma: float = 0.0) -> Noise:
    """The std of the baseline's seeds (baseline + calibration rows); `fallback_sigma` below two seeds."""
    seeds = [e.val_bpb for e in rows if e.kind in NOISE_KINDS and e.status == RowStatus.ok and e.val_bpb]
    sigma = statistics.stdev(seeds) if len(seeds) >= 2 else fallback_sigma
    return Noise(sigma=sigma, dof=max(1, len(seeds) - 1))


def margin_bpb(rows: Sequence[Experiment], cfg: AcceptanceConfig) -> float:
    """The promotion margin: the configured bpb, or the record margin at the baseline's tokens per byte."""
    if cfg.min_delta_bpb is not None:
        return cfg.min_delta_bpb
    base = next((e for e in rows if e.kind == Kind.baseline and e.status == RowStatus.ok), None)
    return challenge.margin_bpb(challenge.tokens_per_byte(base.val_loss, base.val_bpb) if base else None)


def judge(
    candidate: list[float],
    parent: list[float],
    sigma: float,
    dof: int,
    cfg: AcceptanceConfig,
    margin: float | None = None,
) -> Verdict:
    """Decide on `candidate` runs (val_bpb, one per seed) against the `parent` runs."""
    if margin is None:
        margin = cfg.min_delta_bpb if cfg.min_delta_bpb is not None else challenge.margin_bpb()
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
    beyond = -delta - margin
    if sigma <= 0:  # no measured noise (deterministic runs, no calibration): compare against the margin only
        p = 0.0 if beyond > 0 else 1.0
    else:
        t = beyond / (sigma * math.sqrt(1 / len(candidate) + 1 / len(parent)))
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
        reason=f"{delta:+.4f} bpb but not beyond {margin:.4f} bpb at p<{cfg.alpha} (p={p:.3g})",
    )


def decide(rows: Sequence[Experiment], exp: Experiment, parent: Experiment, cfg: AcceptanceConfig) -> Verdict:
    """The verdict on `exp` against `parent`, from everything `rows` (one run's) has measured."""
    noise = noise_floor(rows, cfg.fallback_sigma_bpb)
    return judge(
        samples(rows, exp), samples(rows, parent), noise.sigma, noise.dof, cfg, margin_bpb(rows, cfg)
    )


def confirmation_seed(exp: Experiment, done: int, default_seed: int, cfg: AcceptanceConfig) -> int:
    """The seed of the next confirmation of `exp`, after `done` measurements of it."""
    return (exp.seed if exp.seed is not None else default_seed) + cfg.confirm_seed_stride * done


def reproduction(original: float, again: float, noise: Noise, cfg: AcceptanceConfig) -> str:
    """Does a replay's score reproduce the original's? Exactly, within the noise, or not."""
    gap = again - original
    floor = f" (noise floor {noise.sigma:.6f})" if noise.sigma else ""
    if gap == 0:
        return "reproduced exactly"
    if noise.sigma and abs(gap) <= cfg.replay_noise_k * noise.sigma:
        return f"reproduced within noise: {gap:+.6f} bpb{floor}"
    return f"DOES NOT REPRODUCE: {gap:+.6f} bpb{floor}"
