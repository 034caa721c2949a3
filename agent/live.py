"""The terminal view of a run: one line per result, and a live panel of what trains, the best and the spend."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind, RowStatus

if TYPE_CHECKING:
    from agentgolf.agent.scheduler import SchedulerState

REFRESH_PER_SECOND = 2
COLOURS = {
    RowStatus.ok: "green",
    RowStatus.rejected: "yellow",
    RowStatus.inconclusive: "yellow",
    RowStatus.confirming: "cyan",
}


def describe(exp: Experiment) -> str:
    """One line per experiment, for the terminal."""
    bpb = f"val_bpb {exp.val_bpb:.4f}" if exp.val_bpb is not None else ""
    delta = f" (Δ {exp.delta_bpb:+.4f})" if exp.delta_bpb is not None else ""
    colour = COLOURS.get(exp.status, "red")
    kept = " [bold]kept[/]" if exp.kept and exp.kind == Kind.proposal else ""
    shown = exp.status != RowStatus.ok or kept or exp.rung  # a screen's verdict says where the idea went
    reason = f" — {exp.reason}" if exp.reason and shown else ""
    rung = f" ({exp.rung})" if exp.rung else ""
    return f"#{exp.id} {exp.title}{rung}: [{colour}]{exp.status}[/] {bpb}{delta}{kept}{reason}"


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
        self.console.print(line)

    def started(self, exp: Experiment) -> None:
        if self.live is None:
            rung = f" ({exp.rung})" if exp.rung else ""
            self.console.print(f"#{exp.id} {exp.title}{rung}: training (seed {exp.seed})")

    def refresh(self, state: SchedulerState) -> None:
        if self.live is None:
            return
        table = Table(box=None, show_header=True, header_style="bold")
        table.add_column("running")
        table.add_column("elapsed", justify="right")
        now = time.monotonic()
        for exp in sorted(state.running, key=lambda e: e.id):
            table.add_row(f"#{exp.id} {exp.title}", f"{now - exp.started:,.0f} s")
        best = f"#{state.best_id} {state.best_bpb:.4f}" if state.best_bpb is not None else "-"
        line = Text(
            f"best: {best}   experiments: {state.charged}/{state.caps.experiments}   "
            f"device hours: {state.gpu_hours:.2f}   LLM: ${state.usd:.2f}"
        )
        self.live.update(Group(table, line))
