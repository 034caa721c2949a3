"""The terminal view of a run: one line per result, and a live panel of what trains, the best and the spend."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from rich.cells import cell_len
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agentgolf.challenge import TRAINER_FILE
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import NOISE_KINDS, Kind, RowStatus, charged
from agentgolf.sandbox.metrics import parse_train_curve

if TYPE_CHECKING:
    from agentgolf.agent.controller.scheduler import SchedulerState

REFRESH_PER_SECOND = 2
COLOURS = {
    RowStatus.ok: "green",
    RowStatus.rejected: "yellow",
    RowStatus.inconclusive: "yellow",
    RowStatus.confirming: "cyan",
}
WIDTH = 100  # the terminal the panel is laid out for when not told its width
TAIL_BYTES = 64 * 1024  # of train.log, read at each refresh: its last step line is in there
TITLE_FLOOR = 12  # the least a running experiment's title gets, even past the terminal's width
COLUMNS = ("slot", "id", "rung", "phase", "step", "train loss", "elapsed", "title")


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


def _rung(exp: Experiment) -> str:
    """The screen's name, `full` for a screened idea's full-budget run, else "" (the only rung there is)."""
    return exp.rung or ("full" if exp.screen_of is not None else "")


def _head(exp: Experiment) -> str:
    """`#12`, with its rung where it has one: the screen's, or `full` for a screened idea's full-budget run."""
    rung = _rung(exp)
    return f"#{exp.id}" + (f" ({rung})" if rung else "")


class InFlight(BaseModel):
    """An experiment a slot runs now, as the panel shows it."""

    id: int
    title: str
    started: float  # time.monotonic() when its slot started it
    slot: int | None = None  # the scheduler's slot index
    rung: str = ""  # a screen's name, else "" (the full budget)
    run_dir: Path | None = None  # its run folder, which `progress` reads

    @classmethod
    def of(cls, exp: Experiment, slot: int, started: float, run_dir: Path) -> InFlight:
        return cls(id=exp.id, title=exp.title, started=started, slot=slot, rung=exp.rung, run_dir=run_dir)


class Progress(BaseModel):
    """What an experiment's run folder says it is doing now: its phase is `train`, `score` or `verify`, or
    `start` before this attempt has a log (queued under SLURM, or its sandbox starting)."""

    phase: str = "start"
    step: int | None = None  # the last step its trainer logged, of total_steps
    total_steps: int | None = None
    train_loss: float | None = None


def progress(run_dir: Path, tail_bytes: int = TAIL_BYTES) -> Progress:
    """Read a running experiment's folder (on the shared filesystem under SLURM too): the phase is the latest
    log the sandbox opened (train.log, then score.log when scoring starts, verify.log when its verification
    does: score_phase.py), and the step and train loss are train.log's last step line, read from its tail
    only. A log older than the folder's trainer file, which the lab writes at each launch, is from an
    earlier attempt (a retry or --resume trains again in place) and does not count."""
    from agentgolf.sandbox.run_setup import TRAIN_LOG  # the sandbox's names; loaded only when drawn
    from agentgolf.sandbox.scoring.score_phase import SCORE_LOG, VERIFY_LOG

    launched = _mtime(run_dir / TRAINER_FILE)
    logs = {"verify": VERIFY_LOG, "score": SCORE_LOG, "train": TRAIN_LOG}  # the latest phase first
    fresh = {name for name in logs.values() if _newer(_mtime(run_dir / name), launched)}
    found = Progress(phase=next((phase for phase, name in logs.items() if name in fresh), "start"))
    if TRAIN_LOG in fresh:
        points = parse_train_curve(_tail(run_dir / TRAIN_LOG, tail_bytes))
        if points:
            last = points[-1]
            found.step, found.total_steps, found.train_loss = last.step, last.total_steps, last.train_loss
    return found


def _newer(t: float | None, launched: float | None) -> bool:
    return t is not None and (launched is None or t >= launched)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _tail(path: Path, n: int) -> str:
    """The file's last `n` bytes as text, from its first whole line (a log written as we read it)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - n))
            data = f.read(n)
    except OSError:
        return ""
    if size > n:
        data = data.partition(b"\n")[2]
    return data.decode("utf-8", errors="replace")


class Pace(BaseModel):
    """How fast a run goes, from its finished rows: what the panel's ETA is worked out from."""

    run_seconds: float  # the mean wall time of one finished run, any kind
    experiment_seconds: float  # slot-seconds per charged experiment: its own run, controls, screens, seeds
    devices: float  # device-seconds per wall second of a run (gpu_seconds / wall_seconds: 1 on a CPU slot)


def pace(rows: list[Experiment]) -> Pace | None:
    """The run's pace so far; None before its first run finishes. An experiment costs the slot time of every
    run it brought (a proposal beside its parent's control, its confirmations, its full-budget run), over the
    charged proposals decided so far (a rejected one costs none); before any, one run's mean wall time."""
    done = [e for e in rows if e.wall_seconds is not None]
    if not done:
        return None
    wall = sum(e.wall_seconds for e in done)
    spent = sum(e.wall_seconds for e in done if e.kind not in NOISE_KINDS)
    decided = charged(e for e in rows if e.kind == Kind.proposal and e.status != RowStatus.running)
    run_seconds = statistics.fmean(e.wall_seconds for e in done)
    device = sum(e.gpu_seconds or 0.0 for e in done)
    return Pace(
        run_seconds=run_seconds,
        experiment_seconds=spent / decided if decided and spent else run_seconds,
        devices=device / wall if device and wall else 1.0,
    )


def eta_seconds(state: SchedulerState, now: float) -> float | None:
    """When the run should stop, in seconds from `now`: the experiments left in --budget at the run's pace,
    plus what its runs in flight have left of a mean run, spread over its slots; sooner where the GPU-hour
    cap comes first. None before a run has finished (nothing to go by)."""
    p = state.pace
    if p is None:
        return None
    slots = max(1, state.slots)
    left = max(0, state.caps.experiments - state.charged)
    in_flight = sum(max(0.0, p.run_seconds - (now - r.started)) for r in state.running)
    eta = (left * p.experiment_seconds + in_flight) / slots
    if state.caps.gpu_hours is not None:
        device_left = max(0.0, state.caps.gpu_hours - state.gpu_hours) * 3600
        eta = min(eta, device_left / (slots * p.devices))
    return eta


def duration(seconds: float | None) -> str:
    """`45 s`, `6 min 40 s`, `2 h 05 min`; `-` for no figure."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


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
            self.live.update(panel(state, width=self.console.width))


def panel(state: SchedulerState, width: int = WIDTH, now: float | None = None) -> Group:
    """The live panel: each experiment running now (its slot, rung, phase, step, last train loss, time so
    far), then the best, the experiments charged (status.charged, the count `agentgolf status` prints too)
    against the budget and the ETA, then the spend. It fits `width` columns: only a title is cut."""
    now = time.monotonic() if now is None else now
    cells = [_cells(r, now) for r in sorted(state.running, key=lambda r: r.id)]
    best = f"#{state.best_id} {state.best_bpb:.4f}" if state.best_bpb is not None else "-"
    caps = state.caps
    budget = Text(
        f"best: {best}   experiments: {state.charged}/{caps.experiments}   "
        f"ETA: {duration(eta_seconds(state, now))}"
    )
    hours = f" of {caps.gpu_hours:.2f}" if caps.gpu_hours is not None else ""
    usd = f" of ${caps.usd:.2f}" if caps.usd is not None else ""
    spend = Text(f"device hours: {state.gpu_hours:.2f}{hours}   LLM: ${state.usd:.2f}{usd}")
    return Group(_running(cells, width), budget, spend) if cells else Group(budget, spend)


def _running(cells: list[dict[str, str]], width: int) -> Table:
    """The table of what runs: every column as wide as its widest cell, the title, last, cut to what is left."""
    natural = {name: max(cell_len(name), *(cell_len(c[name]) for c in cells)) for name in COLUMNS}
    room = width - sum(natural[n] for n in COLUMNS if n != "title") - 2 * (len(COLUMNS) - 1)
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    for name in COLUMNS:
        title = name == "title"
        table.add_column(
            name,
            justify="left" if name in ("rung", "phase", "title") else "right",
            no_wrap=True,
            overflow="ellipsis",
            min_width=None if title else natural[name],
            max_width=max(room, TITLE_FLOOR) if title else None,
        )
    for c in cells:
        table.add_row(*(Text(c[name]) for name in COLUMNS))  # as they are: a title is no markup
    return table


def _cells(r: InFlight, now: float) -> dict[str, str]:
    p = progress(r.run_dir) if r.run_dir is not None else Progress()
    return {
        "slot": "-" if r.slot is None else str(r.slot),
        "id": f"#{r.id}",
        "rung": r.rung or "full",
        "phase": p.phase,
        "step": "-" if p.step is None else f"{p.step:,}/{p.total_steps:,}",
        "train loss": "-" if p.train_loss is None else f"{p.train_loss:.4f}",
        "elapsed": f"{now - r.started:,.0f} s",
        "title": r.title,
    }
