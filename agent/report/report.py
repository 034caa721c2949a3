"""The morning report's entry point: what a run tried, what held, what failed, what it cost, what looks wrong.

`write_report` summarizes a run's ledger rows once (`summary`), cuts the summary into sections
(`sections`), reads each experiment's diff, log tail and training curve (`evidence`), draws the progress
plot and the loss curves (`plot`, `curves`), and renders the same sections three times (`render`): the
Markdown file, the text `agentgolf report` prints (100 columns), and a self-contained HTML page.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from agentgolf.agent.report import evidence
from agentgolf.agent.report.curves import curve_series
from agentgolf.agent.report.plot import plot_curves, plot_progress
from agentgolf.agent.report.render import render_html, render_markdown, render_text
from agentgolf.agent.report.sections import CURVES, PROGRESS, build_sections
from agentgolf.agent.report.summary import pick_run, summarize
from agentgolf.agent.results.submit import run_folder
from agentgolf.experiments.ledger import Ledger

PLOT_FILE = "progress.png"
CURVES_FILE = "curves.png"
REPORT_FILE = "report.md"
HTML_FILE = "report.html"
TEXT_FILE = "report.txt"


class ReportFiles(NamedTuple):
    """Unpacks as (markdown, plot) like before; the HTML page, the text and the curves sit beside them."""

    markdown: Path
    plot: Path

    @property
    def html(self) -> Path:
        return self.markdown.with_name(HTML_FILE)

    @property
    def text(self) -> Path:
        return self.markdown.with_name(TEXT_FILE)

    @property
    def curves(self) -> Path:
        return self.markdown.with_name(CURVES_FILE)

    def where(self, here: Path) -> str:
        """Where the files are, short: relative to `here` (the current folder) when they are under it."""
        folder = self.markdown.parent
        if folder.is_relative_to(here):
            folder = folder.relative_to(here)
        return (
            f"report: {folder / REPORT_FILE} (as printed: {TEXT_FILE})\npage: {folder / HTML_FILE}\n"
            f"charts: {folder / PLOT_FILE}, {CURVES_FILE}"
        )


def write_report(
    ledger: Ledger, run_id: str | None, out_dir: Path, repo_root: Path | None = None
) -> ReportFiles:
    """Write report.md, report.txt, report.html, progress.png and curves.png under out_dir/<run id>/.
    `repo_root`: the workspace whose git holds the experiments' commits (default: the one the ledger is in)."""
    run = pick_run(ledger, run_id)
    experiments = ledger.experiments(run_id=run.id, full=True)
    folder = out_dir / run.id
    title = f"agentgolf run {run.id}"
    found = evidence.gather(
        experiments, lambda exp_id: run_folder(ledger, exp_id), evidence.open_repo(repo_root or _root(ledger))
    )
    series = curve_series(experiments, {i: ev.curve for i, ev in found.items()})
    files = ReportFiles(
        markdown=folder / REPORT_FILE, plot=plot_progress(experiments, folder / PLOT_FILE, title)
    )
    plot_curves(series, files.curves, f"{title}: train loss")
    charts = {PROGRESS: files.plot, CURVES: files.curves}
    summary = summarize(run, experiments)
    sections = build_sections(summary)
    files.markdown.write_text(render_markdown(summary, sections, charts))
    files.text.write_text(render_text(summary, sections, charts))
    pngs = {name: path.read_bytes() for name, path in charts.items()}
    files.html.write_text(render_html(summary, sections, pngs, experiments, found))
    return files


def _root(ledger: Ledger) -> Path | None:
    """The workspace around the ledger, when it sits in one's state folder."""
    from agentgolf.agent.workspace import STATE_DIR

    return ledger.path.parent.parent if ledger.path.parent.name == STATE_DIR else None
