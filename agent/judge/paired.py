"""The paired judge: a candidate is measured beside a control of its parent, and judged on the differences.

Every measurement of a candidate (its first run, each confirmation) is launched with a `control`: a run of
its parent's commit on the same rung, with the same seed, at the same moment where the slots allow (the
scheduler's rounds). Whatever the two runs of a round share cancels in their difference d_k = candidate_k -
control_k: the machine's load and drift over the night, and, with a common seed, the initial weights (the
data order is the same for every run already). And a promoted parent's lucky runs are never the reference
again: the test uses only the candidate's own pairs.

- Noise: sigma_d pooled over the paired differences of the run's *other* candidates on the rung (each
  around its own mean, n_i - 1 degrees of freedom), with the calibration seeds as a prior: twice their
  variance, on their n - 1 degrees of freedom (conservative under common seeds). Two pools: candidates that
  start from their parent's initial weights at a seed (the trainer logs `init_hash:`), and those that do not
  (a new layer draws its init differently, and its seed noise no longer cancels). A known sigma gives
  sigma_d = sqrt(2) x sigma.
- Rule: acceptance.py's group-sequential boundaries (computed and verified there), with information n (the
  reference is inside every pair) and the design gain per arm, in sigma_d units divided by sqrt(2).
- Never a plain comparison: without a noise estimate there is no verdict (the scheduler calibrates first).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from agentgolf.agent.judge import acceptance
from agentgolf.agent.judge.acceptance import AcceptanceConfig, Evidence, Noise, Verdict
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind

RULE = "paired group-sequential test: candidate - control in rounds with common seeds"
Pool = Literal["same_init", "new_init"]


class Pair(BaseModel):
    """One round: the candidate's run and its control's, with what they share."""

    candidate: int  # row ids
    control: int
    seed: int | None
    slots: tuple[int | None, int | None]
    started: tuple[float | None, float | None]
    d: float  # candidate - control, bpb (negative is better)
    same_init: bool | None  # both logged the same initial weights (None: a trainer that does not say)
    together: bool | None = None  # the two trained at the same time (False: back to back; None: unknown)


def window(e: Experiment) -> tuple[float, float] | None:
    """When a run really ran: from its start (a SLURM job's start on its node, after its queue wait) to its
    end. Two jobs submitted together may still start apart; the evidence says which."""
    if e.started_at is None or e.finished_at is None:
        return None
    return e.started_at + float(e.manifest.get("slurm_queue_wait_s") or 0.0), e.finished_at


def overlapped(a: Experiment, b: Experiment) -> bool | None:
    wa, wb = window(a), window(b)
    return None if wa is None or wb is None else wa[0] < wb[1] and wb[0] < wa[1]


def measured(e: Experiment) -> bool:
    return e.val_bpb is not None and e.status in acceptance.MEASURED


def runs_of(rows: Sequence[Experiment], exp: Experiment) -> list[Experiment]:
    """The candidate's own measurement rows: the row and its confirmations, on its rung."""
    return [e for e in rows if e.id == exp.id or (e.kind == Kind.confirm and e.replay_of == exp.id)]


def controls_of(rows: Sequence[Experiment], run: Experiment) -> list[Experiment]:
    return [e for e in rows if e.kind == Kind.control and run.id in e.paired_with]


def pairs(rows: Sequence[Experiment], exp: Experiment) -> list[Pair]:
    """The candidate's complete rounds: each of its scored runs with a scored control of the same seed."""
    out = []
    for run in runs_of(rows, exp):
        ctrl = next((c for c in controls_of(rows, run) if measured(c) and c.seed == run.seed), None)
        if ctrl is None or not measured(run):
            continue
        a, b = run.init_hash or None, ctrl.init_hash or None
        out.append(
            Pair(
                candidate=run.id,
                control=ctrl.id,
                seed=run.seed,
                slots=(run.slot, ctrl.slot),
                started=(run.started_at, ctrl.started_at),
                d=run.val_bpb - ctrl.val_bpb,
                same_init=None if a is None or b is None else a == b,
                together=overlapped(run, ctrl),
            )
        )
    return out


def pool_of(found: list[Pair]) -> Pool:
    """Which noise pool a candidate's pairs belong to: its seed noise cancels only from the same init."""
    return "new_init" if any(p.same_init is False for p in found) else "same_init"


def noise(
    rows: Sequence[Experiment], exp: Experiment, calibration: list[float], cfg: AcceptanceConfig
) -> tuple[Noise, Pool]:
    """sigma_d for `exp`: the other candidates' paired differences in its pool, on the calibration prior."""
    pool = pool_of(pairs(rows, exp))
    if cfg.known_sigma_bpb > 0:
        return Noise(sigma=math.sqrt(2) * cfg.known_sigma_bpb, dof=math.inf, source="known"), pool
    squares, dof, runs = 0.0, 0, 0
    if len(calibration) >= 2:
        squares, dof, runs = (
            2 * statistics.variance(calibration) * (len(calibration) - 1),
            len(calibration) - 1,
            len(calibration),
        )
    for other in rows:
        if other.id == exp.id or other.kind != Kind.proposal or other.rung != exp.rung:
            continue
        found = pairs(rows, other)
        if len(found) < 2 or pool_of(found) != pool:
            continue
        ds = [p.d for p in found]
        mean = statistics.fmean(ds)
        squares += sum((d - mean) ** 2 for d in ds)
        dof += len(ds) - 1
        runs += len(ds)
    if dof == 0:
        return Noise(sigma=0.0, dof=0, source="none"), pool
    return Noise(sigma=math.sqrt(squares / dof), dof=dof, runs=runs), pool


def judge(
    found: list[Pair], sigma_d: float, dof: float, cfg: AcceptanceConfig, margin: float, pool: Pool
) -> Verdict:
    """The sequential rule on the candidate's pairs (see the module docstring); needs a noise estimate."""
    diffs = [p.d for p in found]
    n, cap = len(diffs), cfg.runs_cap
    delta = statistics.fmean(diffs)
    source = "known" if math.isinf(dof) else "pooled"
    evidence = Evidence(
        rule=RULE,
        decision="dead_end",
        runs=n,
        max_runs=cap,
        samples=diffs,
        parent_samples=[],
        delta_bpb=delta,
        margin_bpb=margin,
        sigma_bpb=sigma_d,
        noise=source,
        dof=None if source == "known" else int(dof),
        design="paired",
        pool=pool,
        pairs=[p.model_dump() for p in found],
    )
    c, drop = acceptance.paired_boundaries(dof, cfg)
    statistic = (-delta - margin) / (sigma_d / math.sqrt(n))
    return acceptance.sequential(evidence, statistic, c, drop, cfg, unit="pairs")


def decide(
    rows: Sequence[Experiment], exp: Experiment, calibration: list[float], cfg: AcceptanceConfig
) -> Verdict | None:
    """The verdict on `exp` from its complete rounds; None while it has none, or no noise is known yet."""
    rows = acceptance.comparable(rows, exp)
    found = pairs(rows, exp)
    sigma, pool = noise(rows, exp, calibration, cfg)
    if not found or sigma.source == "none":
        return None
    return judge(found, sigma.sigma, sigma.dof, cfg, acceptance.margin_bpb(rows, cfg), pool)


def all_favour(verdict: Verdict) -> bool:
    """An undecided candidate whose every pair favours it (each difference below zero): worth carrying onto
    a new best and testing there, rather than dropping on a coin flip."""
    ev = verdict.evidence
    return ev is not None and ev.design == "paired" and bool(ev.samples) and all(d < 0 for d in ev.samples)
