"""The report's renderings of the same sections: Markdown (the file), plain text at the terminal's 100 columns
(what `agentgolf report` prints), and a self-contained HTML page.

The page loads nothing from anywhere: inline CSS, the charts inlined as base64 PNGs, and a
Content-Security-Policy that forbids every external load. In the page, every experiment id links to that
experiment's own section at the end: its diff against its parent and the tail of its log (evidence.py).
"""

from __future__ import annotations

import base64
import html
import io
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from agentgolf.agent.report.evidence import Evidence
from agentgolf.agent.report.sections import Section, num
from agentgolf.agent.report.summary import Summary
from agentgolf.experiments.ledger import Experiment

TEXT_WIDTH = 100  # the terminal the printed report is laid out for


def render_markdown(summary: Summary, sections: list[Section], charts: Mapping[str, Path]) -> str:
    lines = [f"# agentgolf run {summary.run.id}", ""]
    for sec in sections:
        if sec.chart and sec.chart not in charts:
            continue
        if sec.title:
            lines += [f"## {sec.title}", ""]
        if sec.note:
            lines += [sec.note, ""]
        if sec.chart:
            lines += [f"![{sec.chart}]({charts[sec.chart].name})", ""]
            continue
        lines += [f"- {b}" for b in sec.bullets]
        if sec.table is not None:
            lines.append("| " + " | ".join(map(_md_cell, sec.table.headers)) + " |")
            lines.append("|" + "---|" * len(sec.table.headers))
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in sec.table.rows]
        elif not sec.bullets:
            lines.append(sec.empty)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_text(
    summary: Summary, sections: list[Section], charts: Mapping[str, Path], width: int = TEXT_WIDTH
) -> str:
    """The Markdown's content with no line over `width` columns: prose wrapped, tables laid out to fit (a
    long cell wraps inside its column), each chart named by its file."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None, highlight=False)

    def say(text: str, first: str = "", rest: str = "") -> None:
        for line in textwrap.wrap(_plain(text), width, initial_indent=first, subsequent_indent=rest) or [""]:
            console.print(line, markup=False, soft_wrap=True)

    say(f"agentgolf run {summary.run.id}")
    for sec in sections:
        if sec.chart and sec.chart not in charts:
            continue
        console.print()
        if sec.title:
            say(f"## {sec.title}")
        if sec.note:
            say(sec.note)
        if sec.chart:
            say(f"chart: {charts[sec.chart].name} (in the report's folder, and in report.html)")
            continue
        for bullet in sec.bullets:
            say(bullet, "- ", "  ")
        if sec.table is not None:
            table = RichTable(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
            for header in sec.table.headers:
                table.add_column(header, overflow="fold")
            for row in sec.table.rows:
                table.add_row(*(Text(" ".join(cell.split())) for cell in row))
            console.print(table)
        elif not sec.bullets:
            say(sec.empty)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()).strip() + "\n"


def _plain(text: str) -> str:
    return " ".join(text.replace("**", "").split())


CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 0; }
main { max-width: 1060px; margin: 0 auto; padding: 18px 24px 40px; }
h1 { font-size: 22px; margin: 0 0 8px; } h2 { font-size: 17px; margin: 22px 0 6px; }
h3 { font-size: 15px; margin: 18px 0 4px; } h4 { font-size: 13px; margin: 8px 0 2px; }
ul { margin: 4px 0; padding-left: 20px; } p.note { color: #59636e; margin: 2px 0 6px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border: 1px solid #d1d9e0; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } tr:nth-child(even) td { background: #fbfcfd; }
code { background: #eff1f3; padding: 0 4px; border-radius: 4px; }
a { color: #0550ae; text-decoration: none; } a:hover { text-decoration: underline; }
img.plot { max-width: 100%; border: 1px solid #d1d9e0; }
pre { background: #f6f8fa; border: 1px solid #d1d9e0; padding: 6px 8px; font-size: 12px; overflow: auto;
  max-height: 480px; margin: 2px 0; }
pre .add { color: #116329; } pre .del { color: #a40e26; } pre .hunk { color: #6639ba; }
section.experiment { border-top: 1px solid #d1d9e0; } section.experiment:target { background: #fff8c5; }
section.anomalies td:first-child { color: #cf222e; font-weight: 600; }
"""
# The page may load nothing from anywhere: images only from data: URIs, styles only inline.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
ID_MENTION = re.compile(r"(?<![&\w])#(\d+)\b")  # "#12" in a bullet or a cell (never "&#x27;")
ANCHOR = "exp-{}"  # an experiment's section in the page


def render_html(
    summary: Summary,
    sections: list[Section],
    charts: Mapping[str, bytes],
    experiments: list[Experiment] | None = None,
    evidence: Mapping[int, Evidence] | None = None,
) -> str:
    """The page; with `experiments` and their `evidence`, a section for each, which every id links to."""
    title = f"agentgolf run {summary.run.id}"
    rows = experiments or []
    ids = {e.id for e in rows}
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for sec in sections:
        if sec.chart and sec.chart not in charts:
            continue
        cls = re.sub(r"[^a-z]+", "-", sec.title.lower()).strip("-") or "headline"
        out.append(f'<section class="{cls}">')
        if sec.title:
            out.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.note:
            out.append(f'<p class="note">{_inline_html(sec.note, ids)}</p>')
        if sec.chart:
            data = base64.b64encode(charts[sec.chart]).decode("ascii")
            out.append(f'<img class="plot" alt="{sec.chart}" src="data:image/png;base64,{data}">')
            out.append("</section>")
            continue
        if sec.bullets:
            out.append("<ul>" + "".join(f"<li>{_inline_html(b, ids)}</li>" for b in sec.bullets) + "</ul>")
        if sec.table is not None:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in sec.table.headers)
            is_id = [h == "#" for h in sec.table.headers]
            body = "".join(
                "<tr>"
                + "".join(f"<td>{_cell(c, ids, i)}</td>" for c, i in zip(row, is_id, strict=True))
                + "</tr>"
                for row in sec.table.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif not sec.bullets:
            out.append(f"<p>{html.escape(sec.empty)}</p>")
        out.append("</section>")
    if rows:
        out += _experiments_html(rows, evidence or {}, ids)
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def _link(exp_id: int, text: str) -> str:
    return f'<a href="#{ANCHOR.format(exp_id)}">{text}</a>'


def _link_ids(escaped: str, ids: set[int]) -> str:
    return ID_MENTION.sub(lambda m: _link(int(m[1]), m[0]) if int(m[1]) in ids else m[0], escaped)


def _cell(text: str, ids: set[int], whole_id: bool) -> str:
    if whole_id and text.isdigit() and int(text) in ids:
        return _link(int(text), text)
    return _link_ids(html.escape(text), ids)


def _inline_html(text: str, ids: set[int] | None = None) -> str:
    """Escape, then turn the two Markdown marks the bullets use (**bold**, `code`) into tags, and each
    experiment's "#id" into a link to its section."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
    return _link_ids(text, ids or set())


def _experiments_html(rows: list[Experiment], evidence: Mapping[int, Evidence], ids: set[int]) -> list[str]:
    out = [
        '<section class="experiments"><h2>Experiments</h2>',
        '<p class="note">Every experiment of the run: its change against its parent (git\'s diff between the '
        "recorded commits, as <code>agentgolf show</code> prints it) and the last lines of its log.</p>",
    ]
    for e in sorted(rows, key=lambda e: e.id):
        found = evidence.get(e.id) or Evidence(exp_id=e.id)
        facts = [f"{e.kind}, {e.status}", e.rung or "full budget"]
        facts += [f"val_bpb {num(e.val_bpb, '.4f')}"] if e.val_bpb is not None else []
        facts += [f"parent #{e.parent_id}"] if e.parent_id is not None else []
        facts += [f"measures #{e.replay_of} again"] if e.replay_of is not None else []
        facts += ["kept"] if e.kept else []
        out.append(f'<section class="experiment" id="{ANCHOR.format(e.id)}">')
        out.append(f"<h3>#{e.id} {html.escape(e.title or '(untitled)')}</h3>")
        out.append(f'<p class="note">{_link_ids(html.escape("; ".join(facts)), ids)}</p>')
        if e.reason:
            out.append(f"<p>{html.escape(e.reason)}</p>")
        out.append("<h4>diff vs parent</h4>")
        if found.diff:
            out.append(f'<pre class="diff">{_diff_html(found.diff)}</pre>')
        if found.diff_note:
            out.append(f'<p class="note">{_inline_html(found.diff_note)}</p>')
        out.append(f"<h4>log tail{f' ({found.log_source})' if found.log_source else ''}</h4>")
        log = found.log_tail
        out.append(f'<pre class="log">{html.escape(log)}</pre>' if log else '<p class="note">No log.</p>')
        out.append("</section>")
    out.append("</section>")
    return out


def _diff_html(diff: str) -> str:
    marks = {"+": "add", "-": "del", "@": "hunk"}
    lines = []
    for line in diff.splitlines():
        cls = marks.get(line[:1]) if not line.startswith(("+++", "---")) else None
        text = html.escape(line)
        lines.append(f'<span class="{cls}">{text}</span>' if cls else text)
    return "\n".join(lines)
