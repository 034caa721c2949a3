"""The terminal view of a run: one line per result, and a live panel of what trains, the best and the spend."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind, RowStatus

if TYPE_CHECKING:
    from agentgolf.agent.controller.scheduler import SchedulerState

REFRESH_PER_SECOND = 2
COLOURS = {
    RowStatus.ok: "green",
    RowStatus.rejected: "yellow",
    RowStatus.inconclusive: "yellow",
    RowStatus.confirming: "cyan",
}


def describe(exp: Experiment) -> str:
    """One line per experiment, for the terminal: the id, rung and score first, then the title and the reason,
    which a narrow terminal wraps (LiveView.log) and never cuts."""
    bpb = f" val_bpb {exp.val_bpb:.4f}" if exp.val_bpb is not None else ""
    delta = f" (Δ {exp.delta_bpb:+.4f})" if exp.delta_bpb is not None else ""
    colour = COLOURS.get(exp.status, "red")
    kept = " [bold]kept[/]" if exp.kept and exp.kind == Kind.proposal else ""
    shown = exp.status != RowStatus.ok or kept or exp.rung  # a screen's verdict says where the idea went
    reason = f" — {escape(exp.reason)}" if exp.reason and shown else ""
    return f"{_head(exp)} [{colour}]{exp.status}[/]{bpb}{delta}{kept}: {escape(exp.title)}{reason}"


def _head(exp: Experiment) -> str:
    """`#12`, with its rung where it has one: the screen's, or `full` for a screened idea's full-budget run."""
    rung = exp.rung or ("full" if exp.screen_of is not None else "")
    return f"#{exp.id}" + (f" ({rung})" if rung else "")


class LiveView:
    """A rich Live panel on a terminal; plain lines (one per event) anywhere else, e.g. a log file."""

    def __init__(self, console: Console):
        self.console = console
        self.live: Live | None = None

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self.live = Live(
                Text(""), console=self.console, refresh_per_second=REFRESH_PER_SECOND, transient=True
            )
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None

    def log(self, line: str) -> None:
        self.console.print(line, soft_wrap=False)  # wrapped at the terminal's width, never cut

    def started(self, exp: Experiment) -> None:
        if self.live is None:
            self.log(f"{_head(exp)} training (seed {exp.seed}): {escape(exp.title)}")

    def refresh(self, state: SchedulerState) -> None:
        if self.live is not None:
            self.live.update(panel(state))


def panel(state: SchedulerState) -> Group:
    """The live panel: what trains now, then the best, the experiments charged (status.charged, the count
    `agentgolf status` prints too) against the budget, and the spend."""
    table = Table(box=None, show_header=True, header_style="bold")
    table.add_column("running")
    table.add_column("elapsed", justify="right")
    now = time.monotonic()
    for exp in sorted(state.running, key=lambda e: e.id):
        table.add_row(Text(f"#{exp.id} {exp.title}"), f"{now - exp.started:,.0f} s")
    best = f"#{state.best_id} {state.best_bpb:.4f}" if state.best_bpb is not None else "-"
    line = Text(
        f"best: {best}   experiments: {state.charged}/{state.caps.experiments}   "
        f"device hours: {state.gpu_hours:.2f}   LLM: ${state.usd:.2f}"
    )
    return Group(table, line)
