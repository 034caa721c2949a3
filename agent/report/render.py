"""The report's two renderings of the same sections: Markdown for the terminal, and a self-contained HTML page.

The page loads nothing from anywhere: inline CSS, the progress plot inlined as a base64 PNG, and a
Content-Security-Policy that forbids every external load.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from agentgolf.agent.report.sections import Section
from agentgolf.agent.report.summary import Summary


def render_markdown(summary: Summary, sections: list[Section], plot: Path | None) -> str:
    lines = [f"# agentgolf run {summary.run.id}", ""]
    for sec in sections:
        if sec.plot:
            if plot is not None:
                lines += [f"## {sec.title}", "", f"![progress]({plot.name})", ""]
            continue
        if sec.title:
            lines += [f"## {sec.title}", ""]
        if sec.note:
            lines += [sec.note, ""]
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


CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 0; }
main { max-width: 1060px; margin: 0 auto; padding: 18px 24px 40px; }
h1 { font-size: 22px; margin: 0 0 8px; } h2 { font-size: 17px; margin: 22px 0 6px; }
ul { margin: 4px 0; padding-left: 20px; } p.note { color: #59636e; margin: 2px 0 6px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border: 1px solid #d1d9e0; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } tr:nth-child(even) td { background: #fbfcfd; }
code { background: #eff1f3; padding: 0 4px; border-radius: 4px; }
img.plot { max-width: 100%; border: 1px solid #d1d9e0; }
section.anomalies td:first-child { color: #cf222e; font-weight: 600; }
"""
# The page may load nothing from anywhere: images only from data: URIs, styles only inline.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_html(summary: Summary, sections: list[Section], plot_png: bytes | None) -> str:
    title = f"agentgolf run {summary.run.id}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for sec in sections:
        cls = re.sub(r"[^a-z]+", "-", sec.title.lower()).strip("-") or "headline"
        out.append(f'<section class="{cls}">')
        if sec.title:
            out.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.plot:
            if plot_png is not None:
                data = base64.b64encode(plot_png).decode("ascii")
                out.append(
                    f'<img class="plot" alt="progress: val_bpb per experiment" src="data:image/png;base64,{data}">'
                )
            out.append("</section>")
            continue
        if sec.note:
            out.append(f'<p class="note">{_inline_html(sec.note)}</p>')
        if sec.bullets:
            out.append("<ul>" + "".join(f"<li>{_inline_html(b)}</li>" for b in sec.bullets) + "</ul>")
        if sec.table is not None:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in sec.table.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in sec.table.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif not sec.bullets:
            out.append(f"<p>{html.escape(sec.empty)}</p>")
        out.append("</section>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """Escape, then turn the two Markdown marks the bullets use (**bold**, `code`) into tags."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
