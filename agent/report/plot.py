"""The report's two charts: the progress plot (val_bpb of each new point by ledger id, the kept ones, the best
so far) and the loss curves (train loss by step, curves.py), which `agentgolf compare --plot` draws too."""

from __future__ import annotations

from itertools import cycle
from pathlib import Path

from pydantic import BaseModel

from agentgolf.agent.judge.deltas import Scores
from agentgolf.agent.report.curves import CurveSeries
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import SCORED_KINDS, RowStatus

PLOT_COLOR_POINT = "#9aa5b1"
PLOT_COLOR_BEST = "#1a7f37"  # kept points and the running-best line
PLOT_COLOR_FAIL = "#cf222e"
CURVE_COLOR_SEED = "#57606a"  # the baseline's seeds, and their band (lighter)
CURVE_COLOR_FAINT = "#afb8c1"  # the latest other experiments
# Labelled runs (kept ideas, or the two compared), in turn; none is the progress plot's green.
CURVE_COLORS = ("#0969da", "#8250df", "#bc4c00", "#bf3989", "#1b7c83", "#4d2d00", "#6639ba", "#a40e26")
NO_CURVES = "no training curves yet (no step lines in any train.log)"
FIGURE_SIZE, FIGURE_DPI = (9, 4.5), 110


class ProgressSeries(BaseModel):
    """What the plot draws; x is the ledger id, so a point can be found in the report's tables. Each score is
    the mean of the row's runs (`deltas`), as in the report's tables."""

    points: list[tuple[int, float]]  # every scored baseline/proposal
    kept: list[tuple[int, float]]
    running_best: list[tuple[int, float]]  # the last promotion so far, from the first kept experiment on
    no_score: list[int]  # finished without a score (failed or rejected)


def progress_series(experiments: list[Experiment]) -> ProgressSeries:
    index = Scores(experiments)
    # A row none of whose runs counts (a metric mismatch, an overrun) still shows its harness score.
    scored = [(e, _mean(index, e)) for e in experiments if e.kind in SCORED_KINDS]
    running, best = [], None
    for e, bpb in scored:
        if bpb is not None and e.kept:
            best = bpb  # the best is the last promotion, not the lowest score seen
        if best is not None:
            running.append((e.id, best))
    return ProgressSeries(
        points=[(e.id, bpb) for e, bpb in scored if bpb is not None],
        kept=[(e.id, bpb) for e, bpb in scored if bpb is not None and e.kept],
        running_best=running,
        no_score=[e.id for e, _ in scored if e.val_bpb is None and e.status != RowStatus.running],
    )


def _mean(index: Scores, e: Experiment) -> float | None:
    mean = index.mean(e) if e.val_bpb is not None else None
    return mean if mean is not None else e.val_bpb


def plot_progress(experiments: list[Experiment], path: Path, title: str) -> Path:
    """val_bpb of each baseline/proposal by ledger id, kept ones highlighted, and the running best."""
    from matplotlib.ticker import MaxNLocator

    series = progress_series(experiments)
    plt, fig, ax = _figure()
    xs, ys = [x for x, _ in series.points], [y for _, y in series.points]
    kept, steps, failed = series.kept, series.running_best, series.no_score
    ax.scatter(xs, ys, color=PLOT_COLOR_POINT, s=28, label="experiment", zorder=2)
    if kept:
        ax.scatter(*zip(*kept, strict=True), color=PLOT_COLOR_BEST, s=40, label="kept", zorder=3)
    if steps:
        ax.step(
            *zip(*steps, strict=True),
            where="post",
            color=PLOT_COLOR_BEST,
            linewidth=1.5,
            label="running best",
        )
    if failed and ys:
        top = max(ys)
        ax.scatter(
            failed, [top] * len(failed), marker="x", color=PLOT_COLOR_FAIL, s=36, label="no score", zorder=3
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("experiment id")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _save(plt, fig, path)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGURE_SIZE, dpi=FIGURE_DPI)
    return plt, fig, ax


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_curves(series: CurveSeries, path: Path, title: str) -> Path:
    """Train loss by training step: the baseline seeds' band shaded, their curves grey, labelled runs in
    colour with their id at the line's end, faint runs light grey; screen-rung runs dashed."""
    plt, fig, ax = _figure()
    for band in series.bands:
        name = f"baseline noise band: min–max of {len(band.seeds)} seeds" + (
            f" ({band.rung})" if band.rung else ""
        )
        ax.fill_between(band.steps, band.low, band.high, color=CURVE_COLOR_SEED, alpha=0.18, lw=0, label=name)
    shared = {"seed": "baseline seeds", "faint": "other recent experiments"}
    colors = cycle(CURVE_COLORS)
    for c in series.curves:
        dash = "--" if c.screen else "-"
        if c.style == "labelled":
            color = next(colors)
            ax.plot(c.steps, c.losses, dash, color=color, lw=1.8, label=c.label, zorder=4)
            end = (c.steps[-1], c.losses[-1])
            ax.annotate(
                f"#{c.exp_id}", end, xytext=(3, 0), textcoords="offset points", color=color, fontsize=8
            )
            continue
        color = CURVE_COLOR_SEED if c.style == "seed" else CURVE_COLOR_FAINT
        width, layer = (1.0, 3) if c.style == "seed" else (0.8, 2)
        ax.plot(c.steps, c.losses, dash, color=color, lw=width, label=shared.pop(c.style, None), zorder=layer)
    if any(c.screen for c in series.curves):
        ax.plot([], [], "--", color="black", lw=1, label="dashed: screen rung")
        if not all(c.screen for c in series.curves):
            ax.plot([], [], "-", color="black", lw=1, label="solid: full budget")
    if not series.curves:
        ax.text(0.5, 0.5, NO_CURVES, ha="center", transform=ax.transAxes, color=CURVE_COLOR_SEED)
    ax.set_xlabel("training step")
    ax.set_ylabel("train loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=7)
    return _save(plt, fig, path)
