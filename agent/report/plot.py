"""The progress plot: val_bpb of each new point by ledger id, the kept ones, and the best so far."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from agentgolf.agent.judge.deltas import Scores
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import SCORED_KINDS, RowStatus

PLOT_COLOR_POINT = "#9aa5b1"
PLOT_COLOR_BEST = "#1a7f37"  # kept points and the running-best line
PLOT_COLOR_FAIL = "#cf222e"


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    series = progress_series(experiments)
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
