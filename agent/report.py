"""The morning report: what a run tried, what held, what failed, and the progress plot."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from agentgolf.experiments.errors import AgentgolfError
from agentgolf.experiments.ledger import Experiment, Ledger, Run

PLOT_FILE = "progress.png"
REPORT_FILE = "report.md"


def pick_run(ledger: Ledger, run_id: str | None) -> Run:
    if run_id:
        return ledger.get_run(run_id)
    runs = ledger.runs()
    if not runs:
        raise AgentgolfError("the ledger has no runs yet; start one with `agentgolf run --budget N`")
    return runs[-1]


def best_chain(experiments: list[Experiment]) -> list[Experiment]:
    """Kept experiments from the baseline to the best one, following parent links."""
    by_id = {e.id: e for e in experiments}
    kept = [e for e in experiments if e.kept and e.kind in ("baseline", "proposal") and e.val_bpb is not None]
    if not kept:
        return []
    best = min(kept, key=lambda e: e.val_bpb)
    chain = [best]
    while chain[-1].parent_id in by_id:
        chain.append(by_id[chain[-1].parent_id])
    return chain[::-1]


def plot_progress(experiments: list[Experiment], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [e for e in experiments if e.kind in ("baseline", "proposal")]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    xs = [i for i, e in enumerate(scored, 1) if e.val_bpb is not None]
    ys = [e.val_bpb for e in scored if e.val_bpb is not None]
    kept = [(i, e.val_bpb) for i, e in enumerate(scored, 1) if e.val_bpb is not None and e.kept]
    failed = [i for i, e in enumerate(scored, 1) if e.val_bpb is None]
    ax.scatter(xs, ys, color="#9aa5b1", s=28, label="experiment", zorder=2)
    if kept:
        ax.scatter(*zip(*kept, strict=True), color="#1a7f37", s=40, label="kept", zorder=3)
    running, best = [], float("inf")
    for e in scored:
        if e.val_bpb is not None and e.kept:
            best = min(best, e.val_bpb)
        running.append(best if best < float("inf") else None)
    steps = [(i, b) for i, b in enumerate(running, 1) if b is not None]
    if steps:
        ax.step(*zip(*steps, strict=True), where="post", color="#1a7f37", linewidth=1.5, label="running best")
    if failed and ys:
        top = max(ys)
        ax.scatter(failed, [top] * len(failed), marker="x", color="#cf222e", s=36, label="no score", zorder=3)
    ax.set_xlabel("experiment")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def render_markdown(run: Run, experiments: list[Experiment], plot: Path | None) -> str:
    scored = [e for e in experiments if e.kind in ("baseline", "proposal")]
    chain = best_chain(experiments)
    lines = [f"# agentgolf run {run.id}", ""]
    lines.append(
        f"- base commit `{run.base_commit[:10]}`, status **{run.status}** ({run.stop_reason or 'in progress'})"
    )
    lines.append(f"- experiments: {len(scored)}; statuses: " + _counts(scored))
    if chain:
        first, last = chain[0], chain[-1]
        lines.append(
            f"- best: #{last.id} {last.title}, val_bpb **{last.val_bpb:.4f}** "
            f"({last.val_bpb - first.val_bpb:+.4f} vs baseline {first.val_bpb:.4f}), branch `{last.branch}`"
        )
    lines += ["", "## Best chain", ""]
    if chain:
        lines += ["| # | change | val_bpb | Δ vs parent |", "|---|---|---|---|"]
        for e in chain:
            delta = f"{e.delta_bpb:+.4f}" if e.delta_bpb is not None else ""
            lines.append(f"| {e.id} | {e.title} | {e.val_bpb:.4f} | {delta} |")
    else:
        lines.append("No experiment produced a score.")
    wins = [e for e in scored if e.kind == "proposal" and e.kept]
    dead = [e for e in scored if e.kind == "proposal" and e.status == "ok" and not e.kept]
    failures = [e for e in scored if e.status not in ("ok", "running")]
    lines += ["", "## Wins", ""] + ([_item(e) for e in wins] or ["None."])
    lines += ["", "## Dead ends (scored, not better than the parent)", ""] + (
        [_item(e) for e in dead] or ["None."]
    )
    lines += ["", "## Failures", ""] + ([_item(e) for e in failures] or ["None."])
    if plot is not None:
        lines += ["", "## Progress", "", f"![progress]({plot.name})"]
    return "\n".join(lines) + "\n"


def _counts(experiments: list[Experiment]) -> str:
    return ", ".join(f"{status} {n}" for status, n in Counter(e.status for e in experiments).most_common())


def _item(e: Experiment) -> str:
    delta = f", Δ {e.delta_bpb:+.4f}" if e.delta_bpb is not None else ""
    bpb = f"val_bpb {e.val_bpb:.4f}" if e.val_bpb is not None else e.status
    reason = f" — {e.reason}" if e.reason and e.status != "ok" else ""
    return f"- #{e.id} {e.title}: {bpb}{delta}{reason}"


def write_report(ledger: Ledger, run_id: str | None, out_dir: Path) -> tuple[Path, Path]:
    run = pick_run(ledger, run_id)
    experiments = ledger.experiments(run_id=run.id)
    folder = out_dir / run.id
    plot = plot_progress(experiments, folder / PLOT_FILE, f"agentgolf run {run.id}")
    report = folder / REPORT_FILE
    report.write_text(render_markdown(run, experiments, plot))
    return report, plot
