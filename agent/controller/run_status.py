"""A run's state as a script or a driving agent reads it (`agentgolf status --json`): experiments done and in
flight, the best so far, the spend against the caps, whether its loop is alive, and why it stopped.

Everything comes from the ledger (which the live loop writes as each fact is known) and from the run's
lock file (which names the live loop's process), so it reads the same while the run goes, after it
ended, and after its loop died.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from agentgolf.agent.controller.notes import Note, read_notes
from agentgolf.agent.controller.processes import live_runs, lock_owner
from agentgolf.agent.judge import deltas
from agentgolf.agent.report.summary import Utilization, slot_utilization
from agentgolf.agent.results import morning
from agentgolf.experiments.ledger import Ledger
from agentgolf.experiments.status import CHARGED_KINDS, UNDECIDED, Kind, RowStatus, charged

SECONDS_PER_HOUR = 3600.0


class Running(BaseModel):
    id: int
    kind: str
    status: str  # running, or confirming (a win waiting for its re-run)
    title: str
    parent_id: int | None
    seconds: float  # since its row was added


class Best(BaseModel):
    id: int
    title: str
    val_bpb: float | None
    delta_vs_baseline: float | None


class Caps(BaseModel):
    experiments: int | None = None
    gpu_hours: float | None = None
    usd: float | None = None


class Spend(BaseModel):
    device_hours: float  # what --max-gpu-hours caps: sandbox wall seconds x devices held
    usd: float  # what --max-usd caps
    tokens: int


class RunStatus(BaseModel):
    run_id: str
    status: str  # the ledger's: running, finished, interrupted, stopped, cancelled
    live: bool  # a loop process holds the run now
    pid: int | None
    proposer: str
    caps: Caps
    experiments: int  # charged against caps.experiments (status.charged): the baseline and every new proposal
    finished: int  # rows with a verdict (every kind)
    statuses: dict[str, int]
    in_flight: list[Running]
    best: Best | None
    spend: Spend
    stop_reason: str
    notes: list[Note]
    utilization: Utilization | None = None  # of the slots, over the finished experiments (summary.py)
    morning: str = ""  # the best against the baseline in fresh paired rounds, when the run ended (morning.py)


def lock_file(state: Path, run_id: str) -> Path:
    return state / "locks" / f"{run_id}.lock"  # Loop.lock_path's


def live_run(state: Path) -> str | None:
    """The run a live loop holds now (the newest, should there be several), or None."""
    live = live_runs(state / "locks")
    return live[0][0] if live else None


def run_status(state: Path, ledger: Ledger, run_id: str) -> RunStatus:
    run = ledger.get_run(run_id)
    rows = ledger.experiments(run_id=run_id)
    owner = lock_owner(lock_file(state, run_id))
    now = time.time()
    kept = [e for e in rows if e.kept and e.kind in CHARGED_KINDS]
    base = next((e for e in rows if e.kind == Kind.baseline and e.val_bpb is not None), None)
    best = None
    if kept:
        top, scores = kept[-1], deltas.Scores(rows)  # means of their runs, never first runs
        mine, theirs = scores.score(top).bpb, scores.score(base).bpb if base else None
        delta = mine - theirs if mine is not None and theirs is not None else None
        best = Best(id=top.id, title=top.title, val_bpb=mine, delta_vs_baseline=delta)
    statuses: dict[str, int] = {}
    for e in rows:
        statuses[str(e.status)] = statuses.get(str(e.status), 0) + 1
    settings = run.settings
    return RunStatus(
        run_id=run.id,
        status=run.status,
        live=owner is not None,
        pid=owner.pid if owner else None,
        proposer=str(settings.get("proposer", "")),
        caps=Caps(
            experiments=settings.get("experiments"),
            gpu_hours=settings.get("gpu_hours"),
            usd=settings.get("usd"),
        ),
        experiments=charged(rows),  # the scheduler's count, which the live view prints
        finished=sum(1 for e in rows if e.status not in UNDECIDED),
        statuses=statuses,
        in_flight=[
            Running(
                id=e.id,
                kind=str(e.kind),
                status=str(e.status),
                title=e.title,
                parent_id=e.parent_id,
                seconds=round(now - e.created_at, 1),
            )
            for e in rows
            if e.status in UNDECIDED and (e.status == RowStatus.confirming or owner is not None)
        ],
        best=best,
        spend=Spend(
            device_hours=sum(e.gpu_seconds or 0.0 for e in rows) / SECONDS_PER_HOUR,
            usd=sum(e.usd for e in rows),
            tokens=sum(e.tokens for e in rows),
        ),
        stop_reason=run.stop_reason,
        notes=read_notes(state),
        utilization=slot_utilization(rows, int(settings.get("slots") or 0)),
        morning=morning.said(settings),
    )
