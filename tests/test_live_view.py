"""The live view (issue 23): each running experiment's slot, rung, phase, step and last train loss, read from
its real run folder while it runs, and the run's ETA; the panel fits 100 columns, only a title is cut.

The run folders are real files laid out as the sandbox writes them (the trainer file the lab writes at each
launch, then train.log, score.log, verify.log); their times are set with os.utime, not slept for.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from agentgolf.agent.controller.live import InFlight, Pace, duration, eta_seconds, pace, panel, progress
from agentgolf.agent.controller.scheduler import RunCaps, Scheduler, SchedulerState
from agentgolf.challenge import TRAINER_FILE
from agentgolf.experiments.ledger import Experiment

WIDTH = 100
LONG = "Lower learning rates for Muon, the scalars and the tied embeddings, with a longer warmdown too"
T0 = 1_700_000_000.0  # the launch's file time; each later file a few seconds on


def _write(path: Path, text: str, at: float) -> None:
    path.write_text(text)
    os.utime(path, (at, at))


def _step(step: int, loss: float, total: int = 20_000) -> str:
    return f"step:{step}/{total} train_loss:{loss:.4f} train_time:{step * 48}ms step_avg:48.00ms\n"


def test_progress_follows_a_run_folder_from_launch_to_verification(tmp_path):
    run = tmp_path / "runs" / "7"
    run.mkdir(parents=True)
    _write(run / TRAINER_FILE, "print('the committed trainer')\n", T0)
    assert progress(run).phase == "start" and progress(run).step is None  # launched, no log yet

    log = "model_params:123456\n" + _step(1, 6.9301) + "step:1/20000 val_loss:6.9 val_bpb:4.1\n"
    _write(run / "train.log", log + _step(200, 3.5012), T0 + 5)
    now = progress(run)
    assert (now.phase, now.step, now.total_steps, now.train_loss) == ("train", 200, 20_000, 3.5012)

    _write(run / "train.log", log + _step(200, 3.5012) + "step:400/20000 train_lo", T0 + 6)  # mid-write
    assert progress(run).step == 200  # the half-written line is skipped, not misread

    # A long log: only its tail is read, from its first whole line (a line cut by the tail is not misread).
    filler = "".join(_step(n, 9.0) for n in range(1, 3_000))
    _write(run / "train.log", filler + _step(12_345, 2.7184), T0 + 7)
    assert (progress(run, tail_bytes=1_000).step, progress(run, tail_bytes=1_000).train_loss) == (
        12_345,
        2.7184,
    )
    cut = "step:999/20000 train_loss:0.0001\n"
    _write(run / "train.log", _step(12_345, 2.7184) + "retrying " + cut, T0 + 7)
    assert progress(run, tail_bytes=len(cut)).step is None and progress(run).step == 12_345

    _write(run / "score.log", "[agentgolf] sandbox ready\n", T0 + 8)
    scoring = progress(run)
    assert (scoring.phase, scoring.step, scoring.train_loss) == ("score", 12_345, 2.7184)  # training's last
    _write(run / "verify.log", "[agentgolf] sandbox ready\n", T0 + 9)
    assert progress(run).phase == "verify"

    # Trained again in place (a retry, --resume): the earlier attempt's logs do not count.
    _write(run / TRAINER_FILE, "print('the committed trainer')\n", T0 + 20)
    again = progress(run)
    assert (again.phase, again.step, again.train_loss) == ("start", None, None)
    _write(run / "train.log", _step(3, 6.5), T0 + 21)
    assert (progress(run).phase, progress(run).step) == ("train", 3)  # the stale score.log is older


def test_progress_of_a_missing_folder_is_start(tmp_path):
    assert progress(tmp_path / "nothing").phase == "start"


def _row(id: int, kind: str, wall: float | None, status: str = "ok", **kw) -> Experiment:
    return Experiment(
        id=id, kind=kind, status=status, wall_seconds=wall, gpu_seconds=wall, created_at=0.0, **kw
    )


def _rows() -> list[Experiment]:
    """Two slots. Finished: the baseline (100 s) and a calibration seed (100 s), proposal #3 (120 s) beside
    its control #4 (120 s); #5 was rejected (never ran); #6 runs now. Charged: #1, #3, #5, #6 = 4."""
    return [
        _row(1, "baseline", 100.0),
        _row(2, "calibration", 100.0, replay_of=1),
        _row(3, "proposal", 120.0),
        _row(4, "control", 120.0, replay_of=1),
        _row(5, "proposal", None, status="rejected"),
        _row(6, "proposal", None, status="running"),
    ]


def test_pace_and_eta_by_hand():
    p = pace(_rows())
    # one run: (100 + 100 + 120 + 120) / 4 = 110 s. One experiment: the slot time of the non-noise runs
    # (#3 and its control: 240 s) over the charged proposals decided (#3 and the rejected #5): 120 s.
    assert p == Pace(run_seconds=110.0, experiment_seconds=120.0, devices=1.0)
    assert pace([_row(1, "baseline", None, status="running")]) is None  # nothing finished: no pace

    now = 1_000.0
    running = [InFlight(id=6, title="six", started=now - 30, slot=1)]
    state = SchedulerState(
        run_id="r", caps=RunCaps(experiments=10), charged=4, best_id=3, best_bpb=1.2, running=running,
        gpu_hours=440 / 3600, usd=0.0, slots=2, pace=p,
    )  # fmt: skip
    # 10 - 4 = 6 experiments left x 120 s = 720 s, plus #6's 110 - 30 = 80 s left: 800 s over 2 slots = 400 s.
    assert eta_seconds(state, now) == pytest.approx(400.0)
    # A GPU-hour cap of 0.2 h (720 device-seconds), 440 spent: 280 s of one device per slot, 2 slots: 140 s.
    capped = state.model_copy(update={"caps": RunCaps(experiments=10, gpu_hours=0.2)})
    assert eta_seconds(capped, now) == pytest.approx(140.0)
    # Eight GPUs per slot (gpu_seconds = 8 x wall): the same cap is spent 8 times faster.
    eight = pace(
        [r.model_copy(update={"gpu_seconds": 8 * r.wall_seconds}) if r.wall_seconds else r for r in _rows()]
    )
    assert eight.devices == 8.0
    assert eta_seconds(capped.model_copy(update={"pace": eight}), now) == pytest.approx(140.0 / 8)
    assert eta_seconds(state.model_copy(update={"pace": None}), now) is None  # before the first finishes
    assert [duration(s) for s in (None, 45, 400, 7_500)] == ["-", "45 s", "6 min 40 s", "2 h 05 min"]


def test_the_panel_shows_slot_rung_phase_step_loss_and_eta_in_100_columns(tmp_path):
    now = time.monotonic()
    screen, full = tmp_path / "12", tmp_path / "13"
    for run in (screen, full):
        run.mkdir()
        _write(run / TRAINER_FILE, "x\n", T0)
    _write(screen / "train.log", _step(12_345, 2.7184), T0 + 5)
    _write(full / "train.log", _step(20_000, 2.1), T0 + 5)
    _write(full / "score.log", "", T0 + 6)
    running = [
        InFlight(id=13, title="Wider MLP (3x)", started=now - 1_234, slot=0, run_dir=full),
        InFlight(id=12, title=LONG + " " + LONG, started=now - 75, slot=1, rung="screen", run_dir=screen),
    ]
    state = SchedulerState(
        run_id="r", caps=RunCaps(experiments=10, gpu_hours=40.0, usd=20.0), charged=4, best_id=3,
        best_bpb=1.2187, running=running, gpu_hours=1.5, usd=0.25, slots=2,
        pace=Pace(run_seconds=1_300.0, experiment_seconds=1_000.0, devices=1.0),
    )  # fmt: skip
    console = Console(width=WIDTH, record=True)
    console.print(panel(state, width=WIDTH, now=now))
    lines = console.export_text().splitlines()
    assert all(len(line) <= WIDTH for line in lines), lines
    header = lines[0].split()
    assert header[:5] == ["slot", "id", "rung", "phase", "step"] and header[-2:] == ["elapsed", "title"]
    cells = {line.split()[1]: line for line in lines[1:3]}
    assert cells["#12"].split()[:6] == ["1", "#12", "screen", "train", "12,345/20,000", "2.7184"]
    assert "75 s" in cells["#12"] and cells["#12"].rstrip().endswith("…")  # the title, last, cut
    assert cells["#13"].split()[:6] == ["0", "#13", "full", "score", "20,000/20,000", "2.1000"]
    assert "1,234 s" in cells["#13"] and "Wider MLP (3x)" in cells["#13"]  # room enough: whole
    # ETA: (6 left x 1,000 s + #13's 66 s + #12's 1,225 s) / 2 slots = 3,645.5 s; the cap is far.
    assert "best: #3 1.2187   experiments: 4/10   ETA: 1 h 00 min" in lines[3], lines
    assert "device hours: 1.50 of 40.00   LLM: $0.25 of $20.00" in lines[4], lines

    narrow = Console(width=80, record=True)
    narrow.print(panel(state, width=80, now=now))
    text = narrow.export_text()
    assert all(len(line) <= 80 for line in text.splitlines()) and "12,345/20,000" in text  # never cut


def test_the_scheduler_tells_the_panel_each_runs_slot_and_folder(tmp_path):
    """Scheduler.state() fills what the panel reads: the slot, the run folder, the rung, the slots, the pace."""
    rows = _rows()
    screen = Experiment(id=6, kind="proposal", status="running", title="six", rung="screen", created_at=0.0)
    fake = SimpleNamespace(
        spend=lambda: (0.5, 1.0), best=rows[2], run=SimpleNamespace(id="r"), caps=RunCaps(experiments=10),
        charged=lambda: 4, running={"future": (screen, 1, 123.0)}, slots=[[0], [1]], rows=lambda: rows,
        lab=SimpleNamespace(ws=SimpleNamespace(run_dir=lambda i: tmp_path / "runs" / str(i))),
    )  # fmt: skip
    state = Scheduler.state(fake)
    assert state.running == [
        InFlight(id=6, title="six", started=123.0, slot=1, rung="screen", run_dir=tmp_path / "runs" / "6")
    ]
    assert state.slots == 2 and state.pace == pace(rows) and state.charged == 4
