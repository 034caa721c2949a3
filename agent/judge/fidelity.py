"""The fidelity ladder: judge an idea cheaply first, and spend full runs only on what the screen favours.

A full Parameter Golf run is 10 minutes on 8 GPUs, so a run may screen every proposal on a cheaper rung
(say 1 GPU x 120 s, or on the CPU demo a shorter training) and measure at the full budget only the
screen's winners. Each rung is a lane of its own: its own calibration seeds, its own pooled noise and its
own sequential decision (acceptance.py over that rung's rows only). The ledger links an idea's rungs
(`screen_of` on the full-rung row).

Screens can mislead: peers lost about a quarter of their GPU spend to proxy wins that flipped at full
scale. So the ladder measures its own reliability: for every idea measured on both rungs it compares
the verdicts (agreement) and the gains (Spearman rank correlation), per category. While that evidence
is thin or poor, the loop also sends the screen's near-misses (better on the screen but not decided)
to the full rung; once the screen has proved itself, only its winners.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from agentgolf.experiments.ledger import Experiment
from agentgolf.sandbox.budget import Budget

FULL = ""  # the rung name of the full budget: rows from before the ladder existed are full-rung rows


class Rung(BaseModel):
    """A cheaper measurement than the full budget: its training seconds and extra trainer settings."""

    name: str = Field("screen", min_length=1)
    train_seconds: float | None = Field(None, gt=0, description="training window; None keeps the budget's")
    trainer_env: dict[str, str] = Field(default_factory=dict, description="added to the workspace's env")
    gpus_per_experiment: int | None = Field(None, ge=1, description="GPUs per screening slot (GPU runs)")


class FidelityConfig(BaseModel):
    """The ladder: no screen (every idea at the full budget), or one screening rung below it."""

    screen: Rung | None = None
    min_pairs: int = Field(
        4, ge=1, description="ideas measured on both rungs before the screen's agreement is trusted"
    )
    trust_agreement: float = Field(
        0.8, ge=0, le=1, description="agreement at which only the screen's winners go to the full rung"
    )


class Pair(BaseModel):
    """One idea measured on both rungs: what each rung decided and what each measured."""

    category: str
    screen_delta: float  # candidate minus parent, bpb (negative is better)
    full_delta: float
    screen_promoted: bool
    full_promoted: bool


class Agreement(BaseModel):
    """How far the screen's verdicts held at full scale, for one category or all."""

    pairs: int
    agreement: float | None  # share of ideas where both rungs reached the same verdict
    rank_correlation: float | None  # Spearman's rho between the screen's and the full rung's gains


def rung_budget(budget: Budget, rung: Rung | None) -> Budget:
    """The budget a row on `rung` runs under (None or the full rung: the budget itself), before its
    allowances: those each rung takes from what its own baseline runs measured (agent/judge/allowance.py)."""
    if rung is None or rung.train_seconds is None:
        return budget
    return budget.model_copy(update={"train_seconds": rung.train_seconds})


def rung_env(env: dict[str, str], rung: Rung | None) -> dict[str, str]:
    return {**env, **rung.trainer_env} if rung is not None else dict(env)


def pairs(rows: Sequence[Experiment]) -> list[Pair]:
    """Every idea with a decided full-rung row linked to its screened row, both of one commit (a change
    carried onto a newer best was screened against another parent: its two deltas do not compare)."""
    by_id = {e.id: e for e in rows}
    out = []
    for full in rows:
        screened = by_id.get(full.screen_of) if full.screen_of is not None else None
        if screened is None or not full.decision or not screened.decision:
            continue
        if screened.commit_sha != full.commit_sha or screened.parent_id != full.parent_id:
            continue
        out.append(
            Pair(
                category=screened.category or "other",
                screen_delta=screened.decision["delta_bpb"],
                full_delta=full.decision["delta_bpb"],
                screen_promoted=screened.decision["decision"] == "promote",
                full_promoted=full.decision["decision"] == "promote",
            )
        )
    return out


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's rho needs."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when it is undefined (under 3 pairs, or no spread)."""
    if len(a) < 3:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def agreement(found: Sequence[Pair]) -> Agreement:
    if not found:
        return Agreement(pairs=0, agreement=None, rank_correlation=None)
    same = sum(p.screen_promoted == p.full_promoted for p in found)
    rho = spearman([p.screen_delta for p in found], [p.full_delta for p in found])
    return Agreement(pairs=len(found), agreement=same / len(found), rank_correlation=rho)


def by_category(found: Sequence[Pair]) -> dict[str, Agreement]:
    """Agreement per technique category, then "all"."""
    cats = sorted({p.category for p in found})
    out = {c: agreement([p for p in found if p.category == c]) for c in cats}
    out["all"] = agreement(found)
    return out


def send_to_full(
    screen_decision: str, screen_delta: float, found: Sequence[Pair], cfg: FidelityConfig
) -> bool:
    """Does a screened idea earn a full run? Its winners always; its near-misses (better on the screen,
    but not decided) while the screen has not yet shown, on `min_pairs` ideas, that it agrees with the
    full rung at least `trust_agreement` of the time."""
    if screen_decision == "promote":
        return True
    if screen_decision != "inconclusive" or screen_delta >= 0:
        return False
    seen = agreement(found)
    return seen.pairs < cfg.min_pairs or (seen.agreement or 0.0) < cfg.trust_agreement
