"""The loss-curves chart's data: which runs it draws, how each is drawn, and the baseline's noise band.

One chart, train loss by training step, from each run's `train.log` (evidence.py): the baseline's seeds
(with the band their curves span), every kept idea (labelled with its id), and the most recent other
experiments (faint). A screen-rung run is drawn dashed, a full-budget run solid. A run whose log has no
step lines (it crashed first, or its folder is gone) is left out without a word.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import NOISE_KINDS, Kind
from agentgolf.sandbox.metrics import CurvePoint

RECENT_OTHER_CURVES = 8
"""How many of the latest experiments that were not kept the chart draws, faint, beside the baseline's seeds
and the kept ideas: enough to see what was tried lately, few enough to read. Only what the chart shows;
no result depends on it."""
LABEL_CHARS = 32  # of a title in the chart's legend

Style = Literal["seed", "labelled", "faint"]  # a baseline seed, a kept (or compared) run, any other run


class Curve(BaseModel):
    """One run's line on the chart."""

    exp_id: int
    label: str  # the legend's text for a labelled run ("#7 Wider MLP"); seeds and faint runs share one entry
    style: Style
    screen: bool  # measured on a screen rung: drawn dashed; at the full budget: solid
    steps: list[int]
    losses: list[float]


class Band(BaseModel):
    """The spread (min..max) of the baseline seeds' curves on one rung, at the steps all of them reached."""

    rung: str  # "" is the full budget
    seeds: list[int]
    steps: list[int]
    low: list[float]
    high: list[float]


class CurveSeries(BaseModel):
    curves: list[Curve]
    bands: list[Band]


def label(e: Experiment, suffix: str = "") -> str:
    title = " ".join((e.title or "(untitled)").split())
    title = title if len(title) <= LABEL_CHARS else title[: LABEL_CHARS - 1] + "…"
    return f"#{e.id} {title}{suffix}"


def curve(e: Experiment, points: list[CurvePoint], style: Style, text: str = "") -> Curve:
    return Curve(
        exp_id=e.id,
        label=text or label(e),
        style=style,
        screen=bool(e.rung),
        steps=[p.step for p in points],
        losses=[p.train_loss for p in points],
    )


def chosen(
    experiments: list[Experiment], others: int = RECENT_OTHER_CURVES
) -> list[tuple[Experiment, Style]]:
    """The runs the chart draws, and how: the baseline's seeds, the kept ideas, the latest `others` other
    proposals. Confirmations, controls and replays re-measure a drawn run: not drawn again."""
    seeds = [(e, "seed") for e in experiments if e.kind in NOISE_KINDS]
    kept = [(e, "labelled") for e in experiments if e.kind == Kind.proposal and e.kept]
    rest = [e for e in experiments if e.kind == Kind.proposal and not e.kept]
    faint = [(e, "faint") for e in sorted(rest, key=lambda e: e.id)[-others:]] if others > 0 else []
    return sorted([*seeds, *kept, *faint], key=lambda pair: pair[0].id)


def curve_series(
    experiments: list[Experiment],
    points: dict[int, list[CurvePoint]],
    others: int = RECENT_OTHER_CURVES,
) -> CurveSeries:
    """What the report's chart draws; `points`: each row's logged steps (evidence.curve_of)."""
    drawn = [e for e in experiments if points.get(e.id)]  # the latest others that have a curve
    curves = [
        curve(e, points[e.id], style, label(e, " (kept)") if style == "labelled" else "")
        for e, style in chosen(drawn, others)
    ]
    rows = {e.id: e for e in experiments}
    bands = []
    for rung in sorted({rows[c.exp_id].rung for c in curves if c.style == "seed"}):
        band = noise_band([c for c in curves if c.style == "seed" and rows[c.exp_id].rung == rung], rung)
        if band is not None:
            bands.append(band)
    return CurveSeries(curves=curves, bands=bands)


def noise_band(seeds: list[Curve], rung: str = "") -> Band | None:
    """min..max of the seeds' losses at every step any of them logged up to the last step all reached, each
    curve interpolated between its own logged steps; None with fewer than two seeds (no spread to show)."""
    import numpy as np

    if len(seeds) < 2:
        return None
    end = min(c.steps[-1] for c in seeds)
    start = max(c.steps[0] for c in seeds)
    grid = sorted({s for c in seeds for s in c.steps if start <= s <= end})
    if not grid:
        return None
    at = np.array([np.interp(grid, c.steps, c.losses) for c in seeds])
    return Band(
        rung=rung,
        seeds=[c.exp_id for c in seeds],
        steps=grid,
        low=at.min(axis=0).tolist(),
        high=at.max(axis=0).tolist(),
    )
