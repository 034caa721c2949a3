"""The command line's renderings of ledger rows: the experiment table, TSV and JSON, one experiment, a replay.

Each function returns what the CLI prints, so the commands only parse, call and print.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from rich import box
from rich.cells import cell_len
from rich.console import RenderableType
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from agentgolf.agent.judge.acceptance import describe_evidence
from agentgolf.agent.judge.deltas import Score
from agentgolf.agent.report.sections import num
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind, RowStatus
from agentgolf.experiments.steps import STEPS_SHARE, pair_flags, recorded_flags, trained
from agentgolf.sandbox.result import SandboxResult

if TYPE_CHECKING:
    from agentgolf.agent.controller.run_status import RunStatus

TSV_HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\tid\trung\tsteps"  # autoresearch's first
JSON_FIELDS = (
    "id parent_id run_id kind status val_bpb delta_bpb self_val_bpb artifact_bytes train_seconds steps step_ms "
    "paired_with wall_seconds branch commit_sha title hypothesis category proposer seed kept reason isolation "
    "trust decision retest_of rung screen_of slot started_at finished_at val_tokens init_hash"
).split()
JSON_RENAMED = {"commit_sha": "commit"}
PEAK_MEMORY = re.compile(r"peak memory allocated: (\d+) MiB")
MIB_PER_GIB = 1024
NO_ROWS = "no experiments yet"
KEPT_NOTE = "* kept: the change beat its parent and is on the run's best branch"
STEPS_MARK = "!"  # beside the steps of a run whose steps differ from its partner's (experiments/steps.py)
WIDTH = 100  # the terminal the CLI's tables are laid out for when not told its width
LEDGER_COLUMNS = ("id", "parent", "run", "status", "val_bpb", "Δ vs parent", "rung", "steps")
LEDGER_COLUMNS += ("artifact bytes", "train s", "ms/step", "title")
OPTIONAL = ("ms/step", "train s", "artifact bytes", "parent")  # left out in this order on a narrow terminal
TITLE_MIN_WIDTH = 28  # the title's width that OPTIONAL columns give way to
TITLE_FLOOR = 12  # the least a title gets, even where that makes the table wider than the terminal
LEFT_COLUMNS = ("status", "title", "run", "rung")
REPLAY_COLUMNS = ("run", "seed", "status", "val_bpb", "artifact bytes", "train s", "steps")


class Line(NamedTuple):
    """One line for a rich console: markup, wrapped at the console's width, or text printed as it is (a diff,
    a log, a manifest), never re-wrapped."""

    text: str
    markup: bool = True

    @property
    def soft_wrap(self) -> bool:
        return not self.markup


def peak_memory_gb(log: str) -> float | None:
    """The last peak-memory line of a train log, in GiB; None when the log has none, or says 0 (not measured:
    a trainer on the CPU tracks no GPU memory and logs 0)."""
    found = PEAK_MEMORY.findall(log)
    return int(found[-1]) / MIB_PER_GIB if found and int(found[-1]) > 0 else None


def ledger_tsv(rows: list[Experiment]) -> str:
    """autoresearch's results.tsv (commit, val_bpb, memory_gb, keep/discard/crash, description), then the
    row's id, rung (`full`, or a screen's name) and steps. A figure not measured is left empty."""
    lines = [TSV_HEADER]
    for e in rows:
        status = "keep" if e.kept else ("discard" if e.val_bpb is not None else "crash")
        memory = peak_memory_gb(e.log_tail)
        title = " ".join(e.title.split())  # no tab or newline inside a field
        fields = [e.commit_sha[:7], f"{e.val_bpb or 0:.6f}", "" if memory is None else f"{memory:.1f}"]
        fields += [status, title, str(e.id), e.rung or "full", "" if e.steps is None else str(e.steps)]
        lines.append("\t".join(fields))
    return "\n".join(lines)


def ledger_json(rows: list[Experiment]) -> str:
    records = [{JSON_RENAMED.get(k, k): getattr(e, k) for k in JSON_FIELDS} for e in rows]
    return json.dumps(records, indent=2)


def ledger_table(
    rows: list[Experiment],
    share: float = STEPS_SHARE,
    scores: dict[int, Score] | None = None,
    width: int = WIDTH,
) -> list[RenderableType]:
    """What `agentgolf ledger` prints, one item per line or table: the run's name (or the runs', when several
    are listed: then a run column too), the table, the notes: which candidate and control pairs trained steps
    more than `share` apart (marked STEPS_MARK). `scores`: each row's current score among its whole run
    (deltas.current; the rows shown may be a filtered few); without it, the Δ recorded when the row finished.

    The table fits `width` columns: id, val_bpb and the other cells never shrink; the columns in OPTIONAL are
    left out, the first first, until the title has TITLE_MIN_WIDTH, and the title, last, is cut with an
    ellipsis. Several runs are numbered in their column and named above the table (a replay's id is long)."""
    scores = scores if scores is not None else {}
    if not rows:
        return [NO_ROWS]
    runs = sorted({e.run_id or "" for e in rows})
    label = {run: str(n) for n, run in enumerate(runs, 1)}  # several runs: numbered, named above the table
    head: list[RenderableType] = [
        Text(
            f"run {runs[0] or '-'}"
            if len(runs) == 1
            else " · ".join(f"run {n}: {r or '-'}" for r, n in label.items())
        )
    ]
    flags = pair_flags(rows, share)
    cells = [_ledger_cells(e, scores.get(e.id), e.id in flags, label) for e in rows]
    columns = [name for name in LEDGER_COLUMNS if name != "run" or len(runs) > 1]
    natural = {name: max(cell_len(name), *(cell_len(c[name]) for c in cells)) for name in columns}

    def room(names: list[str]) -> int:  # what is left for the title beside the other columns
        others = [n for n in names if n != "title"]
        return width - sum(natural[n] for n in others) - 3 * (len(names) - 1) - 2

    for name in OPTIONAL:
        if room(columns) >= min(natural["title"], TITLE_MIN_WIDTH):
            break
        columns.remove(name)
    table = Table(show_lines=False, box=box.SIMPLE_HEAD, pad_edge=False)
    for name in columns:
        table.add_column(
            name,
            justify="left" if name in LEFT_COLUMNS else "right",
            no_wrap=True,
            overflow="ellipsis",
            min_width=None if name == "title" else natural[name],
            max_width=max(room(columns), TITLE_FLOOR) if name == "title" else None,
        )
    for c in cells:
        table.add_row(*(Text(c[name]) for name in columns))  # as they are: a title is no markup
    notes = [f"{STEPS_MARK} #{i}: {f}" for i, found in flags.items() for f in found]
    return [*head, table, KEPT_NOTE, *notes]


def _ledger_cells(e: Experiment, score: Score | None, flagged: bool, runs: dict[str, str]) -> dict[str, str]:
    return {
        "id": str(e.id),
        "parent": str(e.parent_id or ""),
        "run": runs[e.run_id or ""],
        "status": e.status + (" *" if e.kept and e.kind == Kind.proposal else ""),
        "val_bpb": num(e.val_bpb, ".4f"),
        "Δ vs parent": delta_text(score, e, "+.4f"),
        "rung": _rung(e),
        "steps": num(e.steps, ",") + (f" {STEPS_MARK}" if flagged else ""),
        "artifact bytes": num(e.artifact_bytes, ","),
        "train s": num(e.train_seconds, ".1f"),
        "ms/step": num(e.step_ms, ".1f"),
        "title": (f"{e.kind} of {e.replay_of}: " if e.replay_of else "")  # before the title: never cut
        + (f"re-test of {e.retest_of}: " if e.retest_of else "")
        + e.title,
    }


def _rung(e: Experiment) -> str:
    """The fidelity rung that measured it: a screen's name, else `full` ("" for a row that never trained)."""
    return e.rung or ("" if e.status == RowStatus.rejected else "full")


def delta_text(score: Score | None, e: Experiment, spec: str) -> str:
    """Δ vs parent as it stands (the paired mean over n pairs), else as recorded."""
    if score is None or score.delta is None:
        return num(e.delta_bpb, spec)
    return num(score.delta, spec) + (f" ({score.rounds} pairs)" if score.rounds > 1 else "")


def show_experiment(
    e: Experiment, diff: str | None, score: Score | None = None, manifest: bool = False
) -> list[Line]:
    """What `agentgolf show` prints: header, metrics, the diff (None: no change), log tail, then the raw
    manifest with `manifest`, else one line saying how to see it. `score`: the row's current score among its
    run (deltas.current); without it, what was recorded."""
    now = delta_text(score, e, "+.6f")
    then = num(e.delta_bpb, "+.6f")
    lines = [
        f"[bold]experiment {e.id}[/]: {escape(e.title)}  ({e.kind}, run {e.run_id}, proposer {e.proposer})",
        f"status: {e.status}" + (f" — {e.reason}" if e.reason else ""),
        *(
            [f"re-test of experiment {e.retest_of}: its change, rebased onto {e.parent_id}"]
            if e.retest_of
            else []
        ),
        *([f"decision: {describe_evidence(e.decision)}"] if e.decision else []),
        f"hypothesis: {e.hypothesis or '-'}",
        f"branch: {e.branch or '-'}  commit: {e.commit_sha[:12] or '-'}  parent: {e.parent_id or '-'}",
    ]
    metrics = {
        "val_bpb": num(e.val_bpb, ".6f"),
        "rung": _rung(e),
        "delta vs parent": now + (f" (when recorded: {then})" if then and not now.startswith(then) else ""),
        "self-reported val_bpb": num(e.self_val_bpb, ".6f"),
        "artifact bytes": num(e.artifact_bytes, ","),
        "train seconds": num(e.train_seconds, ".1f") + _allowed(e),
        "clock": _clock(e.manifest.get("clock")),
        "steps": trained(e),
        "wall seconds": num(e.wall_seconds, ".1f"),
        "eval": _eval(e.manifest.get("eval")),
        "verified": _verified(e.manifest.get("verification")),
        "isolation": e.isolation,
        "trust": e.trust,
        "seed": str(e.seed),
    }
    lines += [f"  {key}: {value}" for key, value in metrics.items() if value]
    lines += [f"  {STEPS_MARK} {flag}" for flag in recorded_flags(e)]  # beside its control (or candidate)
    shown = [Line(text) for text in lines]
    if diff is not None:
        shown += [Line("[bold]diff vs parent[/]"), Line(diff, markup=False)]
    if e.log_tail:
        shown += [Line("[bold]log tail[/]"), Line(e.log_tail, markup=False)]
    if e.manifest and manifest:
        shown.append(Line("[bold]manifest[/] (what decided this number; `agentgolf replay` compares it)"))
        shown.append(Line(json.dumps(e.manifest, indent=2, sort_keys=True), markup=False))
    elif e.manifest:
        shown.append(Line(f"manifest: `agentgolf show {e.id} --manifest` prints what decided this number"))
    return shown


def replay_table(original: Experiment, copies: list[Experiment], width: int = WIDTH) -> list[RenderableType]:
    """What `agentgolf replay` prints first: which row it replayed (its title last, cut with an ellipsis to
    `width`), then one line per run, the recorded one first: seed, status, score, size, training time and
    steps. As many lines as seeds, and the same few columns: it fits 100 columns whatever --seeds."""
    rung = f" ({original.rung})" if original.rung else ""  # a screen's; the table's status says the rest
    head = Text(f"replay of experiment {original.id}{rung}: ")
    title = Text(original.title)
    title.truncate(max(width - head.cell_len, TITLE_FLOOR), overflow="ellipsis")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in REPLAY_COLUMNS:
        table.add_column(name, justify="left" if name in ("run", "status") else "right", no_wrap=True)
    for label, e in [(f"recorded #{original.id}", original), *((f"replay #{c.id}", c) for c in copies)]:
        cells = [label, num(e.seed, "d"), str(e.status), num(e.val_bpb, ".8f"), num(e.artifact_bytes, ",")]
        table.add_row(*(Text(c) for c in [*cells, num(e.train_seconds, ".1f"), num(e.steps, ",")]))
    return [head + title, table]


def similar_lines(
    hits: list[tuple[Experiment, float]], why: Callable[[Experiment], str], width: int | None = WIDTH
) -> list[RenderableType]:
    """What `agentgolf similar` prints for each past experiment like the idea: its id, similarity, score and Δ
    first, its category and title last, cut with an ellipsis to `width`; then under it, wrapped, its rung,
    its steps and how it came out (`why`, which reads its run folder). No id or number is ever cut. Without
    a `width` (a pipe of no known width: a CLI agent reading it), nothing is cut and nothing is wrapped."""
    lines: list[RenderableType] = []
    for e, score in hits:
        bpb = f" val_bpb {e.val_bpb:.4f}" if e.val_bpb is not None else " no score"
        delta = f" (Δ {e.delta_bpb:+.4f})" if e.delta_bpb is not None else ""
        head = Text(f"- exp {e.id} (similarity {score:.2f}){bpb}{delta}: ")
        title = Text(f"[{e.category}] " * bool(e.category) + e.title)
        if width is not None:
            title.truncate(max(width - head.cell_len, TITLE_FLOOR), overflow="ellipsis")
        facts = Text("; ".join(f for f in (f"{e.rung} rung" * bool(e.rung), trained(e), why(e)) if f))
        under = Padding(facts, (0, 0, 0, 2), expand=False) if width is not None else Text("  ") + facts
        lines += [head + title, under]
    return lines


SANDBOX_FIELDS = (
    "status",
    "reason",
    "val_bpb",
    "self_val_bpb",
    "artifact_bytes",
    "train_seconds",
    "train_clock",
    "train_cpu_seconds",
    "steps",
    "step_ms",
    "wall_seconds",
    "isolation",
    "trust",
)


def _allowed(e: Experiment) -> str:
    allowed = e.manifest.get("train_allowed_seconds")
    return f" (budget {allowed:.1f} with the start-up allowance)" if allowed and e.train_seconds else ""


def _clock(clock: dict | None) -> str:
    """How its training was clocked (lab.py records it): the CPU clock's figures, or nothing on the wall's."""
    if not clock or clock.get("train_clock") != "cpu" or clock.get("cpu_seconds") is None:
        return ""
    return (
        f"CPU ({clock['cpu_seconds']:.1f} CPU-seconds on {clock.get('threads')} thread(s); the budget "
        "is train_seconds x threads of CPU time, which the machine's load cannot move)"
    )


def _eval(mode: dict | None) -> str:
    if not mode:
        return ""
    if mode.get("mode") == "sliding":
        return f"sliding, stride {mode['stride']}, context {mode['context']}"
    return f"{mode.get('mode')}, seq_len {mode.get('seq_len')}"


def _verified(v: dict | None) -> str:
    if not v:
        return ""
    return (
        f"{v['positions']} positions re-scored by a fresh process, largest gap {v['max_gap_nats']:.2g} nats; "
        f"a forger of >= {v['detectable_fraction']:.1%} of positions is caught with 99% probability"
    )


def sandbox_lines(result: SandboxResult) -> list[str]:
    """`agentgolf sandbox FILE`: the result's fields that have a value, one per line, then its folder."""
    lines = []
    for key in SANDBOX_FIELDS:
        value = getattr(result, key)
        if value not in (None, ""):
            lines.append(f"{key}: {value.value if hasattr(value, 'value') else value}")
    return [*lines, f"run folder: {result.run_dir}"]


def status_lines(status: RunStatus) -> list[str]:
    """`agentgolf status`: the run's state in a few lines (`--json` prints the same as one object)."""
    alive = f"live (pid {status.pid})" if status.live else "no loop running"
    caps = status.caps
    lines = [f"run {status.run_id}: {status.status}, {alive}, proposer {status.proposer or '-'}"]
    lines.append(
        f"experiments: {status.experiments}/{caps.experiments if caps.experiments is not None else '-'}"
        f" charged, {status.finished} with a verdict ("
        + ", ".join(f"{k} {v}" for k, v in status.statuses.items())
        + ")"
    )
    for e in status.in_flight:
        lines.append(f"in flight: #{e.id} {e.title} ({e.kind}, {e.status}, {e.seconds:,.0f} s)")
    if status.best is not None:
        b = status.best
        gain = f", {b.delta_vs_baseline:+.4f} vs baseline" if b.delta_vs_baseline is not None else ""
        bpb = f"{b.val_bpb:.4f}" if b.val_bpb is not None else "-"
        lines.append(f"best: #{b.id} {b.title}, val_bpb {bpb}{gain}")
    s = status.spend
    lines.append(f"spend: {s.device_hours:.3f} device hours, ${s.usd:.2f} LLM ({s.tokens:,} tokens)")
    if status.utilization is not None:
        lines.append(status.utilization.line())
    if status.morning:
        lines.append(status.morning)
    if status.stop_reason:
        lines.append(f"stopped: {status.stop_reason}")
    lines.extend(f"note {n.id}: {n.text}" for n in status.notes)
    return lines
