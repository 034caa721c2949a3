"""The morning report: what a run tried, what held, what failed, what it cost, and what looks wrong.

One summary of the ledger is built first (`summarize`), cut into sections of bullets and tables, and the
same sections are rendered twice: Markdown for the terminal and a self-contained HTML page (inline CSS,
the progress plot inlined as a base64 PNG, a Content-Security-Policy that forbids every external load).
"""

from __future__ import annotations

import base64
import html
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, Field

from agentgolf.experiments.errors import AgentgolfError
from agentgolf.experiments.ledger import INTERRUPTED, REJECTED, RUNNING, Experiment, Ledger, Run
from agentgolf.sandbox.budget import Budget

PLOT_FILE = "progress.png"
REPORT_FILE = "report.md"
HTML_FILE = "report.html"

SCORED_KINDS = ("baseline", "proposal")  # new points; re-runs (replay_of set) re-measure one of them
NOISE_KINDS = ("baseline", "calibration")  # seeds of the unmodified trainer: the run's noise floor
INCONCLUSIVE = "inconclusive"  # looked better, but not beyond the noise floor after confirmation
CONFIRMING = "confirming"  # looked better; a confirmation seed is pending
NOT_FAILURES = {"ok", RUNNING, INCONCLUSIVE, CONFIRMING}
# Failure causes in the order the report lists them, with what each one means for the reader.
FAILURE_CAUSES = {
    "crash": "the trainer exited non-zero or wrote no artifact",
    "oom": "out of host or GPU memory",
    "nan": "non-finite loss or logits",
    "timeout": "a phase ran past its wall-clock limit",
    "over_size": "code + model bytes above the size limit",
    "metric_mismatch": "the trainer's own score beat the harness's",
    "violation": "broke a rule (non-causal model, forbidden access, limits)",
    "infra_error": "the machine failed, not the idea",
    REJECTED: "never reached the sandbox (bad edit, does not compile, repeat)",
    INTERRUPTED: "the loop stopped while it ran",
}
NOT_CHARGED = {REJECTED, INTERRUPTED, "infra_error"}  # an idea was not really tried
UNDECIDED = {RUNNING, CONFIRMING}

JUMP_NOISE_MULTIPLE = 5.0  # a gain this many noise floors wide deserves a second look
JUMP_DEFAULT_BPB = 0.05  # ...or this large when the run has no noise floor
DEFAULT_MISMATCH_BPB = Budget().metric_tolerance_bpb
MAX_IDS_SHOWN = 10
MAX_REASON_CHARS = 90
SECONDS_PER_HOUR = 3600.0

PLOT_COLOR_POINT = "#9aa5b1"
PLOT_COLOR_BEST = "#1a7f37"  # kept points and the running-best line
PLOT_COLOR_FAIL = "#cf222e"


# --- the summary ----------------------------------------------------------------------------------


class Spend(BaseModel):
    device_hours: float = 0.0  # sandbox wall seconds x GPUs held (x1 on CPU): what --gpu-hours caps
    gpu_hours: float = 0.0  # training seconds x GPUs, for experiments that ran on GPUs
    cpu_hours: float = 0.0  # training seconds of experiments that ran on CPU
    wall_hours: float = 0.0  # sandbox wall time, training + scoring + overheads
    tokens: int = 0  # LLM tokens spent proposing
    usd: float = 0.0  # LLM dollars spent proposing


class Anomaly(BaseModel):
    kind: str  # metric_mismatch | suspicious_jump | unsandboxed | self_reported
    exp_id: int
    detail: str


class CategoryStats(BaseModel):
    category: str
    proposals: int = 0
    ran: int = 0  # proposals that charged the idea: not rejected, interrupted, infra failures
    wins: int = 0
    inconclusive: int = 0
    dead_ends: int = 0
    failed: int = 0

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.ran if self.ran else None


class Summary(BaseModel):
    run: Run
    statuses: dict[str, int]
    scored: int  # baseline + proposal rows: the x axis of the plot
    chain: list[Experiment]
    confirmed: list[Experiment]
    reruns: dict[int, list[Experiment]] = Field(default_factory=dict)  # original id -> its re-runs
    inconclusive: list[Experiment]
    dead_ends: list[Experiment]
    failures: dict[str, list[Experiment]]  # cause -> experiments, in FAILURE_CAUSES order
    spend: Spend
    anomalies: list[Anomaly]
    categories: list[CategoryStats]
    noise_bpb: float | None  # seed-to-seed std of the run, None when unknown
    jump_threshold_bpb: float


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
    kept = [e for e in experiments if e.kept and e.kind in SCORED_KINDS and e.val_bpb is not None]
    if not kept:
        return []
    best = min(kept, key=lambda e: e.val_bpb)
    chain = [best]
    while chain[-1].parent_id in by_id and len(chain) <= len(by_id):
        chain.append(by_id[chain[-1].parent_id])
    return chain[::-1]


def summarize(run: Run, experiments: list[Experiment]) -> Summary:
    proposals = [e for e in experiments if e.kind == "proposal"]
    failures: dict[str, list[Experiment]] = {}
    for e in experiments:
        if e.status not in NOT_FAILURES:
            failures.setdefault(e.status, []).append(e)
    order = list(FAILURE_CAUSES)
    failures = dict(sorted(failures.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))
    reruns: dict[int, list[Experiment]] = {}
    for e in experiments:
        if e.replay_of is not None:  # replay, confirm and calibration rows
            reruns.setdefault(e.replay_of, []).append(e)
    noise = noise_floor(run, experiments)
    jump = JUMP_NOISE_MULTIPLE * noise if noise else JUMP_DEFAULT_BPB
    return Summary(
        run=run,
        statuses=dict(Counter(e.status for e in experiments).most_common()),
        scored=sum(e.kind in SCORED_KINDS for e in experiments),
        chain=best_chain(experiments),
        confirmed=[e for e in proposals if e.kept],
        reruns=reruns,
        inconclusive=[e for e in proposals if e.status in (INCONCLUSIVE, CONFIRMING)],
        dead_ends=[e for e in proposals if e.status == "ok" and not e.kept],
        failures=failures,
        spend=spend_of(experiments),
        anomalies=find_anomalies(run, experiments, jump),
        categories=category_stats(proposals),
        noise_bpb=noise,
        jump_threshold_bpb=jump,
    )


def noise_floor(run: Run, experiments: list[Experiment]) -> float | None:
    """`noise_bpb` from the run settings, else the std of the baseline's seeds (baseline + calibration)."""
    if run.settings.get("noise_bpb"):
        return float(run.settings["noise_bpb"])
    seeds = [
        e.val_bpb for e in experiments if e.kind in NOISE_KINDS and e.status == "ok" and e.val_bpb is not None
    ]
    sigma = statistics.stdev(seeds) if len(seeds) >= 2 else 0.0
    return sigma or None


def spend_of(experiments: list[Experiment]) -> Spend:
    spend = Spend()
    for e in experiments:
        gpus = len(e.manifest.get("gpus") or [])
        hours = (e.train_seconds or 0.0) / SECONDS_PER_HOUR
        if gpus:
            spend.gpu_hours += hours * gpus
        else:
            spend.cpu_hours += hours
        spend.wall_hours += (e.wall_seconds or 0.0) / SECONDS_PER_HOUR
        spend.device_hours += (e.gpu_seconds or 0.0) / SECONDS_PER_HOUR
        spend.tokens += e.tokens
        spend.usd += e.usd
    return spend


def find_anomalies(run: Run, experiments: list[Experiment], jump_bpb: float) -> list[Anomaly]:
    """Things a person should look at before believing the numbers."""
    tolerance = float(run.settings.get("metric_tolerance_bpb", DEFAULT_MISMATCH_BPB))
    found = []
    for e in experiments:
        if e.self_val_bpb is not None and e.val_bpb is not None:
            gap = e.self_val_bpb - e.val_bpb
            if abs(gap) > tolerance or e.status == "metric_mismatch":
                side = "better" if gap < 0 else "worse"
                found.append(
                    Anomaly(
                        kind="metric_mismatch",
                        exp_id=e.id,
                        detail=f"trainer says {e.self_val_bpb:.4f}, harness {e.val_bpb:.4f} "
                        f"({abs(gap):.4f} {side} than the harness)",
                    )
                )
        elif e.status == "metric_mismatch":
            found.append(
                Anomaly(kind="metric_mismatch", exp_id=e.id, detail=e.reason or "status metric_mismatch")
            )
        if e.kind == "proposal" and e.delta_bpb is not None and -e.delta_bpb > jump_bpb:
            found.append(
                Anomaly(
                    kind="suspicious_jump",
                    exp_id=e.id,
                    detail=f"improved by {-e.delta_bpb:.4f} bpb in one step (threshold {jump_bpb:.4f}): "
                    "check the eval and the data the trainer reads",
                )
            )
        if e.isolation == "none":
            found.append(
                Anomaly(kind="unsandboxed", exp_id=e.id, detail="ran with isolation 'none': no sandbox")
            )
        if e.trust == "self_reported" and e.val_bpb is not None:
            found.append(
                Anomaly(kind="self_reported", exp_id=e.id, detail="score is the trainer's own claim")
            )
    return found


def category_stats(proposals: list[Experiment]) -> list[CategoryStats]:
    stats: dict[str, CategoryStats] = {}
    for e in proposals:
        if e.status in UNDECIDED:
            continue
        s = stats.setdefault(e.category or "(none)", CategoryStats(category=e.category or "(none)"))
        s.proposals += 1
        if e.status in NOT_CHARGED:
            continue
        s.ran += 1
        if e.kept:
            s.wins += 1
        elif e.status == INCONCLUSIVE:
            s.inconclusive += 1
        elif e.status == "ok":
            s.dead_ends += 1
        else:
            s.failed += 1
    return sorted(stats.values(), key=lambda s: (-(s.win_rate or 0.0), -s.ran, s.category))


# --- sections: the format-neutral shape both renderers share ----------------------------------------


class Table(BaseModel):
    headers: list[str]
    rows: list[list[str]]


class Section(BaseModel):
    title: str
    note: str = ""
    bullets: list[str] = Field(default_factory=list)
    table: Table | None = None
    empty: str = "None."
    plot: bool = False  # the progress plot goes here


def build_sections(s: Summary) -> list[Section]:
    return [
        Section(title="", bullets=_headline(s)),
        Section(title="Progress", plot=True),
        _chain_section(s),
        _wins_section(s),
        Section(
            title="Inconclusive wins",
            note="Looked better than the parent, but not beyond the noise floor or not (yet) confirmed.",
            table=_exp_table(s.inconclusive, status=True) if s.inconclusive else None,
        ),
        Section(
            title="Dead ends",
            note="Scored, not better than the parent.",
            table=_exp_table(s.dead_ends) if s.dead_ends else None,
        ),
        _failures_section(s),
        _spend_section(s),
        _anomalies_section(s),
        _categories_section(s),
    ]


def _headline(s: Summary) -> list[str]:
    run = s.run
    lines = [
        f"base commit `{run.base_commit[:10]}`, status **{run.status}** ({run.stop_reason or 'in progress'})",
        f"experiments: {s.scored} (+{sum(map(len, s.reruns.values()))} re-runs); statuses: "
        + (", ".join(f"{k} {n}" for k, n in s.statuses.items()) or "none"),
    ]
    if s.chain:
        first, last = s.chain[0], s.chain[-1]
        lines.append(
            f"best: #{last.id} {_title(last)}, val_bpb **{last.val_bpb:.4f}** "
            f"({last.val_bpb - first.val_bpb:+.4f} vs baseline {first.val_bpb:.4f}), branch `{last.branch}`"
        )
    n_fail = sum(map(len, s.failures.values()))
    lines.append(
        f"wins: {len(s.confirmed)} confirmed, {len(s.inconclusive)} inconclusive; "
        f"{len(s.dead_ends)} dead ends; {n_fail} failures"
    )
    lines.append(f"spend: {_spend_line(s.spend)}")
    if s.anomalies:
        kinds = Counter(a.kind for a in s.anomalies)
        lines.append("**anomalies: " + ", ".join(f"{k} {n}" for k, n in kinds.items()) + "** (see below)")
    return lines


def _chain_section(s: Summary) -> Section:
    rows = []
    base = s.chain[0].val_bpb if s.chain else None
    for e in s.chain:
        rows.append(
            [
                str(e.id),
                _title(e),
                e.category,
                f"{e.val_bpb:.4f}",
                _delta(e.delta_bpb) if e.kind != "baseline" else "",
                _delta(e.val_bpb - base) if e.kind != "baseline" else "",
            ]
        )
    table = Table(headers=["#", "change", "category", "val_bpb", "Δ vs parent", "Δ vs baseline"], rows=rows)
    return Section(title="Best chain", table=table if rows else None, empty="No experiment produced a score.")


def _wins_section(s: Summary) -> Section:
    rows = []
    for e in s.confirmed:
        reruns = [r for r in s.reruns.get(e.id, []) if r.val_bpb is not None]
        rows.append(
            [
                str(e.id),
                _title(e),
                e.category,
                _num(e.val_bpb),
                _delta(e.delta_bpb),
                ", ".join(f"{r.val_bpb:.4f}" for r in reruns) or "none",
            ]
        )
    table = Table(headers=["#", "change", "category", "val_bpb", "Δ vs parent", "re-runs"], rows=rows)
    return Section(
        title="Confirmed wins",
        note="Kept: accepted as better than the parent. Re-runs: confirmation seeds and replays of the commit.",
        table=table if rows else None,
    )


def _failures_section(s: Summary) -> Section:
    rows = []
    for cause, exps in s.failures.items():
        ids = ", ".join(f"#{e.id}" for e in exps[:MAX_IDS_SHOWN]) + (
            " …" if len(exps) > MAX_IDS_SHOWN else ""
        )
        reasons = Counter(e.reason for e in exps if e.reason)
        common = _clip(reasons.most_common(1)[0][0]) if reasons else ""
        rows.append([cause, str(len(exps)), FAILURE_CAUSES.get(cause, ""), ids, common])
    table = Table(headers=["cause", "count", "meaning", "experiments", "most common reason"], rows=rows)
    return Section(title="Failures by cause", table=table if rows else None)


def _spend_section(s: Summary) -> Section:
    sp = s.spend
    rows = [
        ["device hours held (the --gpu-hours cap)", f"{sp.device_hours:.2f}"],
        ["GPU hours (training)", f"{sp.gpu_hours:.2f}"],
        ["CPU hours (training)", f"{sp.cpu_hours:.2f}"],
        ["sandbox wall hours", f"{sp.wall_hours:.2f}"],
        ["LLM tokens", f"{sp.tokens:,}"],
        ["LLM cost (USD)", f"{sp.usd:.2f}"],
    ]
    return Section(title="Spend", table=Table(headers=["what", "total"], rows=rows))


def _anomalies_section(s: Summary) -> Section:
    rows = [[a.kind, f"#{a.exp_id}", a.detail] for a in s.anomalies]
    noise = f"noise floor {s.noise_bpb:.4f} bpb" if s.noise_bpb else "no measured noise floor"
    note = (
        f"Metric mismatches (trainer vs harness), suspicious jumps (a gain above {s.jump_threshold_bpb:.4f} "
        f"bpb in one step; {noise}), unsandboxed runs and self-reported scores."
    )
    return Section(
        title="Anomalies",
        note=note,
        table=Table(headers=["kind", "experiment", "detail"], rows=rows) if rows else None,
    )


def _categories_section(s: Summary) -> Section:
    rows = [
        [
            c.category,
            str(c.proposals),
            str(c.ran),
            str(c.wins),
            str(c.inconclusive),
            str(c.dead_ends),
            str(c.failed),
            f"{c.win_rate:.0%}" if c.win_rate is not None else "–",
        ]
        for c in s.categories
    ]
    headers = ["category", "proposals", "ran", "wins", "inconclusive", "dead ends", "failed", "win rate"]
    return Section(
        title="Win rate by category",
        note="Win rate = confirmed wins / proposals that ran (rejected, interrupted and infra failures excluded).",
        table=Table(headers=headers, rows=rows) if rows else None,
    )


def _exp_table(exps: list[Experiment], status: bool = False) -> Table:
    headers = ["#", "change", "category", "val_bpb", "Δ vs parent"] + (["status", "why"] if status else [])
    rows = []
    for e in exps:
        row = [str(e.id), _title(e), e.category, _num(e.val_bpb), _delta(e.delta_bpb)]
        rows.append(row + ([e.status, _clip(e.reason)] if status else []))
    return Table(headers=headers, rows=rows)


def _spend_line(sp: Spend) -> str:
    return (
        f"{sp.gpu_hours:.2f} GPU h, {sp.cpu_hours:.2f} CPU h of training; "
        f"{sp.tokens:,} LLM tokens, ${sp.usd:.2f}"
    )


def _title(e: Experiment) -> str:
    return e.title or "(untitled)"


def _num(x: float | None) -> str:
    return f"{x:.4f}" if x is not None else ""


def _delta(x: float | None) -> str:
    return f"{x:+.4f}" if x is not None else ""


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


# --- renderers ------------------------------------------------------------------------------------


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


# --- the plot -------------------------------------------------------------------------------------


class ProgressSeries(BaseModel):
    """What the plot draws; x is the ledger id, so a point can be found in the report's tables."""

    points: list[tuple[int, float]]  # every scored baseline/proposal
    kept: list[tuple[int, float]]
    running_best: list[tuple[int, float]]  # best kept score so far, from the first kept experiment on
    no_score: list[int]  # finished without a score (failed or rejected)


def progress_series(experiments: list[Experiment]) -> ProgressSeries:
    scored = [e for e in experiments if e.kind in SCORED_KINDS]
    running, best = [], float("inf")
    for e in scored:
        if e.val_bpb is not None and e.kept:
            best = min(best, e.val_bpb)
        if best < float("inf"):
            running.append((e.id, best))
    return ProgressSeries(
        points=[(e.id, e.val_bpb) for e in scored if e.val_bpb is not None],
        kept=[(e.id, e.val_bpb) for e in scored if e.val_bpb is not None and e.kept],
        running_best=running,
        no_score=[e.id for e in scored if e.val_bpb is None and e.status != RUNNING],
    )


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


# --- entry point ----------------------------------------------------------------------------------


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
