"""The morning report's entry point: what a run tried, what held, what failed, what it cost, what looks wrong.

`write_report` summarizes a run's ledger rows once (`summary`), cuts the summary into sections
(`sections`), and renders the same sections twice (`render`): Markdown for the terminal and a
self-contained HTML page, beside the progress plot (`plot`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from agentgolf.agent.report.plot import plot_progress
from agentgolf.agent.report.render import render_html, render_markdown
from agentgolf.agent.report.sections import build_sections
from agentgolf.agent.report.summary import pick_run, summarize
from agentgolf.experiments.ledger import Ledger

PLOT_FILE = "progress.png"
REPORT_FILE = "report.md"
HTML_FILE = "report.html"


class ReportFiles(NamedTuple):
    """Unpacks as (markdown, plot) like before; the HTML page sits beside the Markdown."""

    markdown: Path
    plot: Path

    @property
    def html(self) -> Path:
        return self.markdown.with_name(HTML_FILE)


def write_report(ledger: Ledger, run_id: str | None, out_dir: Path) -> ReportFiles:
    """Write report.md, report.html and progress.png under out_dir/<run id>/."""
    run = pick_run(ledger, run_id)
    experiments = ledger.experiments(run_id=run.id, full=True)
    folder = out_dir / run.id
    plot = plot_progress(experiments, folder / PLOT_FILE, f"agentgolf run {run.id}")
    summary = summarize(run, experiments)
    sections = build_sections(summary)
    files = ReportFiles(markdown=folder / REPORT_FILE, plot=plot)
    files.markdown.write_text(render_markdown(summary, sections, plot))
    files.html.write_text(render_html(summary, sections, plot.read_bytes()))
    return files
