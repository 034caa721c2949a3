"""The terminal view of a run: what is training, for how long, the best so far, and the spend."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agentgolf.experiments.ledger import Experiment

if TYPE_CHECKING:
    from agentgolf.agent.loop import _Orchestrator

REFRESH_PER_SECOND = 2


class LiveView:
    """A rich Live panel on a terminal; plain lines (one per event) anywhere else, e.g. a log file."""

    def __init__(self, console: Console):
        self.console = console
        self.started_at: dict[int, tuple[float, str]] = {}
        self.live: Live | None = None
        self.status: Any = Text("")

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self.live = Live(
                self.status, console=self.console, refresh_per_second=REFRESH_PER_SECOND, transient=True
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
        self.started_at[exp.id] = (time.monotonic(), exp.title)
        if self.live is None:
            self.console.print(f"#{exp.id} {exp.title}: training (seed {exp.seed})")

    def finished(self, exp: Experiment) -> None:
        self.started_at.pop(exp.id, None)

    def refresh(self, orchestrator: _Orchestrator) -> None:
        if self.live is None:
            return
        table = Table(box=None, show_header=True, header_style="bold")
        table.add_column("running")
        table.add_column("elapsed", justify="right")
        now = time.monotonic()
        for exp_id, (start, title) in sorted(self.started_at.items()):
            table.add_row(f"#{exp_id} {title}", f"{now - start:,.0f} s")
        best = orchestrator.best
        gpu_hours, usd = orchestrator.spend()
        line = Text(
            f"best: {f'#{best.id} {best.val_bpb:.4f}' if best and best.val_bpb is not None else '-'}   "
            f"experiments: {orchestrator.charged()}/{orchestrator.caps.experiments}   "
            f"device hours: {gpu_hours:.2f}   LLM: ${usd:.2f}"
        )
        self.live.update(Group(table, line))
