"""`agentgolf compare A B`: two experiments side by side: scores and decision, the settings that differ, the
diff between their commits, and their training curves (as text, and as the report's chart with `--plot`).

Pure functions over two ledger rows and what `evidence` read for them; the command (cli/compare.py) opens
the ledger, the repository and the run folders, and prints what `compare_lines` returns.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from rich import box
from rich.cells import cell_len, set_cell_size
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from agentgolf.agent.judge.acceptance import describe_evidence
from agentgolf.agent.judge.deltas import Score
from agentgolf.agent.report.curves import CurveSeries, curve, label
from agentgolf.agent.report.sections import num
from agentgolf.agent.report.tables import delta_text
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.manifest import VOLATILE
from agentgolf.sandbox.metrics import CurvePoint

CURVE_ROWS = 8
"""How many of the steps both runs logged the text table shows, evenly spread, the first and last included.
Only what the terminal shows."""
OWN = ("rung", "seed", "steps", "train seconds")  # the row's own settings: always listed
VALUE_CHARS = 40  # a setting's value is cut past this (`--json` has it whole)
# In the manifest but not a setting: the commits (the diff shows them) and what the run measured of itself.
NOT_SETTINGS = VOLATILE | {
    "commit",
    "parent_commit",
    "trainer_sha256",
    "trainer_ran_sha256",
    "code_bytes",
    "seed",
}


class Side(BaseModel):
    """One of the two experiments: its row, its score among its run (deltas.current), its logged steps."""

    exp: Experiment
    score: Score | None = None
    curve: list[CurvePoint] = Field(default_factory=list)


class Comparison(BaseModel):
    a: Side
    b: Side
    settings: list[tuple[str, str, str]]  # (setting, A's, B's): the row's own four, then what else differs
    same: int  # settings both share, not listed
    diff: str  # git's diff from A's commit to B's
    diff_note: str = ""  # why there is none
    steps: list[tuple[int, float, float]]  # (step, A's train loss, B's) at steps both logged


def settings_of(e: Experiment) -> dict[str, str]:
    """What decided the run, flat: its rung, seed, steps and train seconds, then its manifest's settings
    (`env.WARMDOWN_ITERS`, `budget.train_seconds`, ...)."""
    seed = e.seed if e.seed is not None else e.manifest.get("seed")
    own = ("full" if not e.rung else e.rung, "" if seed is None else str(seed))
    own += (num(e.steps, ","), num(e.train_seconds, ".1f"))
    recorded = _flat({k: v for k, v in e.manifest.items() if k not in NOT_SETTINGS})
    return recorded | dict(zip(OWN, own, strict=True))  # the row's own figures, whatever the manifest says


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in sorted(values.items()):
        if isinstance(value, dict) and value:
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = _text(value)
    return out


def _text(value: Any) -> str:
    if value is None:
        return "-"
    return format(value, ".6g") if isinstance(value, float) else str(value)


def compare(a: Side, b: Side, diff: str, diff_note: str = "") -> Comparison:
    mine, theirs = settings_of(a.exp), settings_of(b.exp)
    names = [
        *OWN,
        *sorted(k for k in set(mine) | set(theirs) if k not in OWN and mine.get(k) != theirs.get(k)),
    ]
    return Comparison(
        a=a,
        b=b,
        settings=[(k, mine.get(k, ""), theirs.get(k, "")) for k in names],
        same=sum(1 for k in set(mine) & set(theirs) if k not in OWN and mine[k] == theirs[k]),
        diff=diff,
        diff_note=diff_note,
        steps=common_steps(a.curve, b.curve),
    )


def common_steps(
    a: list[CurvePoint], b: list[CurvePoint], rows: int = CURVE_ROWS
) -> list[tuple[int, float, float]]:
    """Train loss of both at up to `rows` of the steps both logged, evenly spread, first and last included."""
    la, lb = {p.step: p.train_loss for p in a}, {p.step: p.train_loss for p in b}
    shared = sorted(set(la) & set(lb))
    if len(shared) > rows > 1:  # the logged step nearest to each of `rows` evenly spaced steps
        first, last = shared[0], shared[-1]
        marks = [first + i * (last - first) / (rows - 1) for i in range(rows)]
        shared = sorted({min(shared, key=lambda s, m=m: abs(s - m)) for m in marks})
    return [(s, la[s], lb[s]) for s in shared]


def pair_series(c: Comparison) -> CurveSeries:
    """The two runs as the report's chart draws a labelled run (plot.plot_curves)."""
    return CurveSeries(
        curves=[curve(s.exp, s.curve, "labelled") for s in (c.a, c.b) if s.curve],
        bands=[],
    )


def compare_lines(c: Comparison, width: int) -> list[RenderableType]:
    """What `agentgolf compare` prints, each item at most `width` columns wide."""
    a, b = c.a.exp, c.b.exp
    gap = f"#{b.id} − #{a.id}"
    same = f"{c.same} more setting{'s' if c.same != 1 else ''} the same on both (`--json` has every one)"
    out: list[RenderableType] = [
        Text(f"compare {label(a)} with {label(b)}", style="bold"),
        Text(f"#{a.id}: {_where(a)} · #{b.id}: {_where(b)}"),
        _table(["", f"#{a.id}", f"#{b.id}", gap], _scores(c)),
        Text("\nsettings", style="bold"),
        _table(["setting", f"#{a.id}", f"#{b.id}"], [[k, _cut(x), _cut(y)] for k, x, y in c.settings]),
        *([Text(same)] if c.same else []),
        Text(f"\ndiff from #{a.id} to #{b.id}", style="bold"),
    ]
    if c.diff:
        lines = [line.expandtabs(4) for line in c.diff.splitlines()]
        cut = any(cell_len(line) > width for line in lines)
        note = f" (lines cut at {width} columns)" if cut else ""
        out.append(Text(f"git diff {a.commit_sha[:10]} {b.commit_sha[:10]}{note}"))
        out += [Text(_fit(line, width), style=_diff_style(line), no_wrap=True) for line in lines]
    else:
        out.append(Text(c.diff_note or "no change"))
    out.append(Text("\ntrain loss at the steps both logged", style="bold"))
    if c.steps:
        rows = [[f"{s:,}", f"{x:.4f}", f"{y:.4f}", f"{y - x:+.4f}"] for s, x, y in c.steps]
        out.append(_table(["step", f"#{a.id}", f"#{b.id}", gap], rows))
    else:
        out.append(Text("none: " + ("no step both logged" if c.a.curve and c.b.curve else "no step lines")))
    ends = [
        f"#{s.exp.id} ends at step {s.curve[-1].step:,}, loss {s.curve[-1].train_loss:.4f}"
        for s in (c.a, c.b)
        if s.curve
    ]
    return out + ([Text("; ".join(ends))] if ends else [])


def _where(e: Experiment) -> str:
    parent = f"parent #{e.parent_id}" if e.parent_id is not None else "no parent"
    return f"{e.kind} in run {e.run_id or '-'}, {e.rung or 'full'} budget, {parent}"


def _scores(c: Comparison) -> list[list[str]]:
    a, b = c.a.exp, c.b.exp
    sa, sb = _bpb(c.a), _bpb(c.b)
    rows = [
        ["status", a.status + (" (kept)" if a.kept else ""), b.status + (" (kept)" if b.kept else ""), ""],
        ["val_bpb", num(sa, ".4f"), num(sb, ".4f"), num(sb - sa, "+.4f") if None not in (sa, sb) else ""],
        ["runs in val_bpb", *(str(s.score.runs) if s.score else "" for s in (c.a, c.b)), ""],
        ["Δ vs parent", delta_text(c.a.score, c.a.exp, "+.4f"), delta_text(c.b.score, c.b.exp, "+.4f"), ""],
        [
            "artifact bytes",
            num(a.artifact_bytes, ","),
            num(b.artifact_bytes, ","),
            _gap(a.artifact_bytes, b.artifact_bytes, "+,"),
        ],
        ["decision / reason", _decision(a), _decision(b), ""],
    ]
    return [row for row in rows if any(row[1:3])]


def _bpb(s: Side) -> float | None:
    return s.score.bpb if s.score is not None and s.score.bpb is not None else s.exp.val_bpb


def _decision(e: Experiment) -> str:
    return describe_evidence(e.decision) if e.decision else e.reason


def _gap(x: float | int | None, y: float | int | None, spec: str) -> str:
    return num(y - x, spec) if x is not None and y is not None else ""


def _cut(text: str) -> str:
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def _fit(line: str, width: int) -> str:
    return line if cell_len(line) <= width else set_cell_size(line, width - 1) + "…"


def _diff_style(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "bold"
    return {"+": "green", "-": "red", "@": "magenta"}.get(line[:1], "")


def _table(headers: list[str], rows: list[list[str]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for i, header in enumerate(headers):
        table.add_column(header, overflow="fold", no_wrap=i == 0)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table
