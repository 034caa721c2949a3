"""When is a win real? Pure functions over ledger rows: samples, the noise, and a sequential decision.

A hill-climbing step is not a record. The challenge's record rule (beat the previous record by 0.005
nats at p < 0.01) belongs to `agentgolf submit` and to the optional `record_mode`; by default a step
only has to show, against measured noise, that it beats its parent at all.

The rule: a group-sequential test with a bounded number of looks.
- Noise: the seed-to-seed standard deviation, pooled over every commit the run measured more than once
  (the baseline and its calibration seeds, each candidate and its re-measurements), with
  sum(n_i - 1) degrees of freedom; the candidate being judged is left out of its own estimate (see
  `noise_floor`). A user-given `known_sigma_bpb` is taken as known: a z-test.
- Look n (the candidate's n-th run, n <= max_runs): gain = mean(parent) - mean(candidate) - margin,
  statistic T = gain / (sigma * sqrt(1/n + 1/m)) with m the parent's runs.
  - promote when T reaches a constant boundary c (Pocock's shape), from the second run on;
  - stop when the candidate is no better than its parent (a dead end), or when the likelihood ratio
    favours "no gain" over "a gain of `design_gain_sigma` noise floors" by `futility_odds` to one
    (Wald's lower line; inconclusive);
  - otherwise measure it again with a new seed; at the cap it is inconclusive.
- c is computed, not tabled: the looks' z statistics are a Brownian motion observed at information
  1/(1/n + 1/m) (the parent's noise is shared by every look), and c is set so that a change with no
  real gain reaches it with probability exactly `alpha` over all looks, given the stops above
  (stats.efficacy_boundary). With an estimated sigma, T is a t statistic: the futility line keeps its
  tail probability, and c is computed for t by averaging over the estimate's sampling distribution.

Why this design: a one-shot test at alpha would need many runs of every candidate, and an open-ended
SPRT has no cap and, with the parent's noise fixed after its last run, rarely reaches its upper line.
Looking after every run with a constant boundary stops early on clear wins, the futility line stops
early on clear losers, and the cap bounds the cost; both boundaries and the p-values are plain to
show. The parent's own runs bound the power: the baseline gets `noise_seeds` of them.
`bench/acceptance_power.py` measures the promotion rate and the runs per candidate, with this code.

Nothing here trains or writes: the scheduler, the report and `replay` all call these on rows.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, model_validator

from agentgolf import challenge
from agentgolf.agent.judge.stats import efficacy_boundary, normal_sf, student_t_sf, t_isf
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import SCORED_KINDS, Kind, RowStatus

Decision = Literal["dead_end", "inconclusive", "confirm", "promote"]
MEASURED = frozenset({RowStatus.ok, RowStatus.inconclusive, RowStatus.confirming})  # a score that counts
REMEASURE_KINDS = frozenset({Kind.confirm, Kind.calibration})  # the same commit again, another seed
RULE = "group-sequential test: Pocock promotion boundary, SPRT futility line, capped runs"
ROW_STATUS = {  # the row's status after each decision (a promoted row is also kept)
    "promote": RowStatus.ok,
    "dead_end": RowStatus.ok,
    "inconclusive": RowStatus.inconclusive,
    "confirm": RowStatus.confirming,
}
SAID = {
    "promote": "promoted",
    "dead_end": "dead end",
    "inconclusive": "inconclusive",
    "confirm": "re-measuring",
}


class AcceptanceConfig(BaseModel):
    """When a candidate counts as better than its parent (see the module's docstring for the rule)."""

    noise_seeds: int = Field(10, ge=1, description="baseline runs with distinct seeds at the start of a run")
    known_sigma_bpb: float = Field(
        0.0,
        ge=0,
        validation_alias=AliasChoices("known_sigma_bpb", "fallback_sigma_bpb"),
        description="seed noise you know (bpb): tested as known (z-test) instead of the run's pooled estimate",
    )
    alpha: float = Field(
        0.01, gt=0, lt=1, description="chance that a change with no real gain is promoted, over all its runs"
    )
    confirm: bool = Field(True, description="promote only after a re-measurement (off: decide on one run)")
    max_runs: int = Field(8, ge=1, description="the most runs of one candidate; then it is inconclusive")
    design_gain_sigma: float = Field(
        2.5, gt=0, description="the gain, in noise floors, that the futility line weighs against no gain"
    )
    futility_odds: float = Field(
        5.0, gt=1, description="drop a candidate once the evidence favours no gain by these odds"
    )
    record_mode: bool = Field(
        False, description="every step must beat its parent by the challenge's record margin (0.005 nats)"
    )
    min_delta_bpb: float | None = Field(
        None, ge=0, description="the margin a step must beat its parent by; None: 0, or the record margin"
    )
    confirm_seed_stride: int = Field(
        1000, ge=1, description="the k-th re-measurement of a row trains with seed + k x this"
    )
    replay_noise_k: float = Field(
        2.0, ge=0, description="a replay within this many noise floors of the original reproduces it"
    )

    @model_validator(mode="after")
    def _noise_is_measured(self) -> AcceptanceConfig:
        if self.noise_seeds < 2 and self.known_sigma_bpb <= 0:
            raise ValueError(
                "noise_seeds must be at least 2 (the baseline and a seed: a noise estimate) unless "
                "known_sigma_bpb gives the noise; a verdict is never a plain comparison"
            )
        return self

    @property
    def fallback_sigma_bpb(self) -> float:
        """The old name of `known_sigma_bpb`."""
        return self.known_sigma_bpb

    @property
    def runs_cap(self) -> int:
        return self.max_runs if self.confirm else 1

    @property
    def first_promotion(self) -> int:
        """The run from which a candidate may be promoted: the second (a confirmation), or the first."""
        return 2 if self.confirm and self.max_runs >= 2 else 1


class Evidence(BaseModel):
    """What a decision was made on, stored on the row (`decision` column) for the ledger and the report."""

    rule: str
    decision: Decision
    runs: int  # the candidate's runs so far
    max_runs: int
    samples: list[float]  # the candidate's val_bpb, one per seed
    parent_samples: list[float]
    delta_bpb: float  # candidate mean - parent mean (negative is better)
    margin_bpb: float
    sigma_bpb: float  # the noise the test used
    noise: Literal["pooled", "known", "none"]
    dof: int | None  # pooled degrees of freedom; None for a known sigma (or none)
    statistic: float | None = None  # t (pooled) or z (known)
    p_value: float | None = None  # one-sided, at this look
    promote_below: float | None = None  # promoted when p_value <= this
    drop_above: float | None = None  # dropped when p_value >= this
    design: Literal["unpaired", "paired"] = "unpaired"  # paired: samples are candidate - control differences
    pool: str = ""  # paired: the noise pool ("same_init" or "new_init")
    pairs: list[dict[str, Any]] = []  # paired: each round's rows, seed, slots, start times and difference


class Verdict(BaseModel):
    decision: Decision
    delta_bpb: float  # candidate mean - parent mean (negative is better)
    p_value: float | None = None
    reason: str
    evidence: Evidence | None = None

    def record(self) -> dict[str, Any]:
        """The evidence as the ledger's `decision` column stores it."""
        return self.evidence.model_dump() if self.evidence else {}


class Noise(BaseModel):
    """The seed-to-seed standard deviation the run has measured, and what it rests on."""

    sigma: float  # 0.0 when unknown
    dof: float  # pooled degrees of freedom; math.inf when known; 0 when unknown
    source: Literal["pooled", "known", "none"] = "pooled"
    runs: int = 0  # the measurements it was pooled from (commits measured more than once, all their runs)


def samples(rows: Sequence[Experiment], exp: Experiment) -> list[float]:
    """All scored measurements of the same commit in `rows`: the row and its confirmations or seeds."""
    return [
        e.val_bpb
        for e in rows
        if e.val_bpb is not None
        and e.status in MEASURED
        and (e.id == exp.id or (e.kind in REMEASURE_KINDS and e.replay_of == exp.id))
    ]


def noise_floor(rows: Sequence[Experiment], known_sigma: float = 0.0, leave_out: int | None = None) -> Noise:
    """The pooled seed noise of `rows` (one run's): sum of squares within each commit measured more than
    once (baseline + calibration seeds, candidate + re-measurements) over sum(n_i - 1) degrees of freedom.
    A `known_sigma` wins over the estimate and has infinite degrees of freedom.

    `leave_out`: the id of the candidate being judged, whose own runs are left out of the estimate. Its
    runs are taken while it looks better, so the agreement between them is not independent of its
    mean: counting it would promote a null change more often than alpha.
    """
    if known_sigma > 0:
        return Noise(sigma=known_sigma, dof=math.inf, source="known")
    groups: dict[int, list[float]] = {}
    for e in rows:
        if e.val_bpb is None or e.status not in MEASURED:
            continue
        root = e.id if e.kind in SCORED_KINDS else e.replay_of if e.kind in REMEASURE_KINDS else None
        if root is not None and root != leave_out:
            groups.setdefault(root, []).append(e.val_bpb)
    spread = [(sum((x - statistics.fmean(g)) ** 2 for x in g), len(g) - 1) for g in groups.values()]
    dof = sum(d for _, d in spread)
    if dof == 0:
        return Noise(sigma=0.0, dof=0, source="none")
    runs = sum(len(g) for g in groups.values() if len(g) > 1)
    return Noise(sigma=math.sqrt(sum(s for s, _ in spread) / dof), dof=dof, runs=runs)


def margin_bpb(rows: Sequence[Experiment], cfg: AcceptanceConfig) -> float:
    """The margin a step must beat its parent by: the configured bpb; 0; or, in record mode, the record
    margin at the baseline's tokens per byte."""
    if cfg.min_delta_bpb is not None:
        return cfg.min_delta_bpb
    if not cfg.record_mode:
        return 0.0
    base = next((e for e in rows if e.kind == Kind.baseline and e.status == RowStatus.ok), None)
    return challenge.margin_bpb(challenge.tokens_per_byte(base.val_loss, base.val_bpb) if base else None)


# Pooled degrees of freedom are rounded down to one of these before the boundaries are computed (fewer
# dof: wider boundaries, so the rounding only ever makes the test stricter); beyond the last, the last.
DOF_STEPS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64, 80, 96, 128, 192, 256)


def boundaries(parent_runs: int, dof: float, cfg: AcceptanceConfig) -> tuple[float, tuple[float, ...]]:
    """The boundaries on the look statistic's scale (z for a known sigma, else t) for a parent measured
    `parent_runs` times and noise on `dof` degrees of freedom: (promote at, drop at each look)."""
    steps = math.inf if math.isinf(dof) else max(d for d in DOF_STEPS if d <= max(dof, 1))
    return _boundaries(
        parent_runs,
        steps,
        cfg.runs_cap,
        cfg.first_promotion,
        cfg.alpha,
        cfg.design_gain_sigma,
        cfg.futility_odds,
    )


@lru_cache(maxsize=1024)
def _boundaries(
    parent_runs: int, dof: float, cap: int, first: int, alpha: float, gain: float, odds: float
) -> tuple[float, tuple[float, ...]]:
    info = [1.0 / (1.0 / n + 1.0 / parent_runs) for n in range(1, cap + 1)]
    # Wald's lower line for "gain 0" against "gain g": drop when g*sqrt(I)*Z - g^2*I/2 <= -log(odds);
    # never lower than 0, where the candidate is no better than its parent. On the t scale: the same tail.
    drop = [max(0.0, -math.log(odds) / (gain * math.sqrt(i)) + gain * math.sqrt(i) / 2) for i in info]
    drop_t = tuple(t_isf(normal_sf(z), dof) for z in drop)
    return efficacy_boundary(tuple(info), drop_t, alpha, first - 1, dof), drop_t


def judge(
    candidate: list[float],
    parent: list[float],
    sigma: float,
    dof: float,
    cfg: AcceptanceConfig,
    margin: float | None = None,
) -> Verdict:
    """Decide on `candidate` runs (val_bpb, one per seed) against the `parent` runs, with seed noise
    `sigma` resting on `dof` degrees of freedom (math.inf: known; 0 or sigma 0: no noise estimate)."""
    margin = margin_bpb([], cfg) if margin is None else margin
    n, m, cap = len(candidate), len(parent), cfg.runs_cap
    delta = statistics.fmean(candidate) - statistics.fmean(parent)
    gain = -delta - margin
    source = "known" if math.isinf(dof) else ("pooled" if sigma > 0 and dof > 0 else "none")
    evidence = Evidence(
        rule=RULE if source != "none" else "plain comparison (no noise estimate)",
        decision="dead_end",
        runs=n,
        max_runs=cap,
        samples=candidate,
        parent_samples=parent,
        delta_bpb=delta,
        margin_bpb=margin,
        sigma_bpb=sigma if source != "none" else 0.0,
        noise=source,
        dof=int(dof) if source == "pooled" else None,
    )

    def verdict(decision: Decision, reason: str, p: float | None = None) -> Verdict:
        evidence.decision = decision
        return Verdict(decision=decision, delta_bpb=delta, p_value=p, reason=reason, evidence=evidence)

    if source == "none":  # never a plain comparison: a rung without a noise estimate is calibrated first
        return verdict(
            "inconclusive", f"{delta:+.4f} bpb, not decided: no noise estimate (calibrate the rung)"
        )
    c, drop = boundaries(m, dof, cfg)
    return sequential(evidence, gain / (sigma * math.sqrt(1.0 / n + 1.0 / m)), c, drop, cfg)


def paired_boundaries(dof: float, cfg: AcceptanceConfig) -> tuple[float, tuple[float, ...]]:
    """The boundaries for paired differences: information n (the reference is inside every pair), and the
    design gain, given per arm, in units of the differences' noise (divided by sqrt(2))."""
    steps = math.inf if math.isinf(dof) else max(d for d in DOF_STEPS if d <= max(dof, 1))
    gain = cfg.design_gain_sigma / math.sqrt(2)
    return _boundaries(math.inf, steps, cfg.runs_cap, cfg.first_promotion, cfg.alpha, gain, cfg.futility_odds)


def sequential(
    evidence: Evidence,
    statistic: float,
    c: float,
    drop: tuple[float, ...],
    cfg: AcceptanceConfig,
    unit: str = "runs",
) -> Verdict:
    """One look of the group-sequential rule: promote at c (from the first promotion on), drop at the
    futility line or when no better, else measure again up to the cap. `evidence` is completed here."""
    n, cap, delta = evidence.runs, cfg.runs_cap, evidence.delta_bpb
    known = evidence.noise == "known"
    dof = math.inf if known else float(evidence.dof or 0)

    def tail(t: float) -> float:
        return normal_sf(t) if known else student_t_sf(t, dof)

    look = min(n, cap)
    p, promote_below, drop_above = tail(statistic), tail(c), tail(drop[look - 1])
    evidence.statistic, evidence.p_value = statistic, p
    evidence.promote_below, evidence.drop_above = promote_below, drop_above
    test = f"{'z' if known else 't'}={statistic:.2f}, p={p:.3g}"

    def verdict(decision: Decision, reason: str) -> Verdict:
        evidence.decision = decision
        return Verdict(decision=decision, delta_bpb=delta, p_value=p, reason=reason, evidence=evidence)

    if delta >= 0:
        return verdict("dead_end", f"no better than its parent ({delta:+.4f} bpb, {test})")
    if n >= cfg.first_promotion and statistic >= c:
        return verdict("promote", f"{delta:+.4f} bpb after {n} {unit}, {test} <= {promote_below:.3g}")
    if statistic <= drop[look - 1]:
        return verdict("inconclusive", f"{delta:+.4f} bpb, likely no real gain: {test} >= {drop_above:.3g}")
    if n >= cap:
        return verdict("inconclusive", f"{delta:+.4f} bpb, undecided after {n} {unit}: {test}")
    return verdict(
        "confirm", f"looks better ({delta:+.4f} bpb, {test}): measuring again, {unit[:-1]} {n + 1}/{cap}"
    )


def comparable(rows: Sequence[Experiment], exp: Experiment) -> list[Experiment]:
    """The rows scored on the same validation targets as `exp` (the harness records how many): a score over
    other targets is another number, never compared. Rows that do not say (older ledgers) are kept."""
    mine = exp.val_tokens
    return [e for e in rows if mine is None or e.val_tokens in (None, mine)]


def decide(rows: Sequence[Experiment], exp: Experiment, parent: Experiment, cfg: AcceptanceConfig) -> Verdict:
    """The verdict on `exp` against `parent`, from everything `rows` (one run's) has measured on its targets."""
    rows = comparable(rows, exp)
    noise = noise_floor(rows, cfg.known_sigma_bpb, leave_out=exp.id)
    return judge(
        samples(rows, exp), samples(rows, parent), noise.sigma, noise.dof, cfg, margin_bpb(rows, cfg)
    )


def describe_evidence(evidence: dict[str, Any]) -> str:
    """One line for a person: what a stored decision rested on."""
    if not evidence:
        return ""
    runs = ", ".join(f"{x:.4f}" for x in evidence["samples"])
    if evidence.get("design") == "paired":  # samples are candidate - control, one per round
        apart = sum(p.get("together") is False for p in evidence.get("pairs") or [])
        line = (
            f"{SAID[evidence['decision']]} after {evidence['runs']}/{evidence['max_runs']} pairs "
            f"(candidate - control: {', '.join(f'{x:+.4f}' for x in evidence['samples'])}"
            + (f"; {apart} ran back to back, not side by side" if apart else "")
            + f"): Δ {evidence['delta_bpb']:+.4f} bpb"
        )
    else:
        line = (
            f"{SAID[evidence['decision']]} after {evidence['runs']}/{evidence['max_runs']} runs ({runs}) vs "
            f"{len(evidence['parent_samples'])} parent runs: Δ {evidence['delta_bpb']:+.4f} bpb"
        )
    if evidence.get("margin_bpb"):
        line += f" (margin {evidence['margin_bpb']:.4f})"
    if evidence["noise"] == "none":
        return line + "; no noise estimate: plain comparison"
    dof = "known" if evidence["noise"] == "known" else f"pooled, {evidence['dof']} dof"
    line += f"; σ {evidence['sigma_bpb']:.4f} ({dof})"
    if evidence.get("p_value") is not None:
        name = "z" if evidence["noise"] == "known" else "t"
        line += (
            f"; {name} = {evidence['statistic']:.2f}, p = {evidence['p_value']:.3g} "
            f"(promote ≤ {evidence['promote_below']:.3g}, drop ≥ {evidence['drop_above']:.3g})"
        )
    return line


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
