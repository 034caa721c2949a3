"""One owner per run: a live loop holds its run, a second --resume refuses, cancel stops it cleanly.

Real subprocesses (`python -m agentgolf.agent.cli.main`), a real workspace on tiny data, real SQLite and git;
the lock file itself (two loops starting at once, a dead owner's lock) in threads of this process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from agentgolf.agent.controller import processes
from agentgolf.errors import AgentgolfError
from tests.test_cli import agentgolf, one_line_error
from tests.tiny import alive, make_workspace, phase_pids, training_row, wait_dead


@pytest.fixture
def slow_workspace(tmp_path, tiny_dataset):
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    cfg_path = ws.config_path
    cfg = json.loads(cfg_path.read_text())
    cfg["trainer_env"]["ITERATIONS"] = "60"  # long enough to be caught mid-flight
    cfg_path.write_text(json.dumps(cfg))
    return ws.root


@pytest.mark.slow
def test_a_live_run_has_one_owner_and_cancel_stops_it(slow_workspace):
    ws = slow_workspace
    loop = subprocess.Popen(
        [sys.executable, "-m", "agentgolf.agent.cli.main", "run", "--budget", "2"],
        cwd=ws,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        victim = training_row(ws)
        assert victim is not None, "no experiment reached its second training step in time"
        pids = phase_pids(ws, victim)

        # A second loop on the same run refuses, names the owner, and changes nothing.
        second = agentgolf("run", "--resume", cwd=ws)
        one_line_error(second, f"is live in process {loop.pid}")
        assert alive(loop.pid) and all(alive(p) for p in pids)

        # Cancel asks the owner to stop: it cancels its own phases and marks its rows.
        cancelled = agentgolf("cancel", cwd=ws, check=True)
        assert f"cancelled 1 experiment(s) in flight [{victim}]" in cancelled.stdout
        loop.wait(timeout=60)
    finally:
        if loop.poll() is None:
            loop.send_signal(signal.SIGKILL)
            loop.wait()
    assert loop.returncode != 0 and "cancelled" in loop.stderr.read()
    assert not wait_dead(pids, 10)
    rows = json.loads(agentgolf("ledger", "--json", cwd=ws, check=True).stdout)
    row = next(r for r in rows if r["id"] == victim)
    assert row["status"] == "interrupted" and row["reason"] == "cancelled by the user", row  # not `oom`

    # With the owner gone, --resume alone takes the run back, under its recorded caps.
    resumed = agentgolf("run", "--resume", cwd=ws)
    assert "with caps: 2 experiment(s) (as recorded)" in resumed.stderr, resumed.stderr


def test_two_loops_starting_together_never_both_hold_the_workspace(tmp_path, monkeypatch):
    """The first loop is held while it writes its owner (os.fdopen), and a second loop starts right then.
    A lock created empty and written after was read by the second as ownerless, called stale and taken
    over: both loops then held one workspace. Whoever wins, the two must never hold it at once."""
    locks = tmp_path / "locks"
    writing, second_tried, first_tried = threading.Event(), threading.Event(), threading.Event()
    inside: set[str] = set()
    overlaps: list[set[str]] = []
    real_fdopen = processes.os.fdopen

    def fdopen(fd, *args, **kwargs):
        if threading.current_thread().name == "first":
            writing.set()
            second_tried.wait(3)  # the second loop tries now (or, serialized, waits for us instead)
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(processes.os, "fdopen", fdopen)

    def first() -> None:
        try:
            with processes.workspace_lock(locks):
                overlaps.append(set(inside))
        except AgentgolfError:
            pass
        finally:
            first_tried.set()

    thread = threading.Thread(target=first, name="first")
    thread.start()
    try:
        assert writing.wait(10)
        with processes.workspace_lock(locks):
            inside.add("second")
            second_tried.set()
            first_tried.wait(10)  # held while the first finishes its attempt
            inside.discard("second")
    except AgentgolfError:
        pass
    finally:
        second_tried.set()
        thread.join(10)
    assert first_tried.is_set() and overlaps in ([], [set()]), overlaps
    assert not list(locks.iterdir())  # both released what they held; no temp file left


def test_a_lock_left_by_a_dead_loop_is_taken_over(tmp_path):
    locks = tmp_path / "locks"
    locks.mkdir()
    dead = processes.Owner(pid=2**22 + 1, started="1", since=0.0)  # above pid_max's default: no such process
    (locks / processes.WORKSPACE_LOCK).write_text(dead.model_dump_json())
    with processes.workspace_lock(locks) as me:
        assert processes.lock_owner(locks / processes.WORKSPACE_LOCK) == me
    assert not list(locks.iterdir())


def test_two_loops_taking_over_one_stale_lock_never_both_hold_it(tmp_path, monkeypatch):
    """A lock left by a dead loop, and two loops starting at once. The first has read it as stale and pauses
    (lock_owner held back) while the second reads it too, removes it and makes its own; the first then
    removed the second's new lock and made one of its own: both held the workspace. Takeovers are
    serialized, so whoever wins, the other is refused."""
    locks = tmp_path / "locks"
    locks.mkdir()
    dead = processes.Owner(pid=2**22 + 1, started="1", since=0.0)  # above pid_max's default: no such process
    (locks / processes.WORKSPACE_LOCK).write_text(dead.model_dump_json())
    first_read, second_done = threading.Event(), threading.Event()
    inside: set[str] = set()
    overlaps: list[set[str]] = []
    real_owner = processes.lock_owner

    def lock_owner(lock):
        holder = real_owner(lock)
        if threading.current_thread().name == "first" and not first_read.is_set():
            first_read.set()
            second_done.wait(3)  # the second loop starts right now (serialized: it waits for us instead)
        return holder

    monkeypatch.setattr(processes, "lock_owner", lock_owner)

    def hold(name: str) -> None:
        try:
            with processes.workspace_lock(locks):
                overlaps.append(set(inside))
                inside.add(name)
                time.sleep(0.5)
                inside.discard(name)
        except AgentgolfError:
            pass

    thread = threading.Thread(target=hold, args=("first",), name="first")
    thread.start()
    assert first_read.wait(10)
    hold("second")
    second_done.set()
    thread.join(10)
    assert overlaps == [set()], overlaps  # exactly one loop held it, alone
    assert not list(locks.iterdir())


SLOW_STARTER = """import pathlib, time
time.sleep(3)
pathlib.Path("woke").write_text("trained on after the loop went down")
"""


@pytest.mark.parametrize("going_down", [False, True])
def test_a_phase_starting_while_the_loop_goes_down_is_killed_at_once(tiny_dataset, tmp_path, going_down):
    """The loop's kills on the way down reach the phases recorded so far; a phase that starts after them (a
    scoring phase right after a training ended) was left to run, and the loop waited for it. The executor
    kills it as it starts. The control: the same phase with the loop up runs to its end."""
    from agentgolf.agent.controller.executor import LocalExecutor
    from tests.sandbox_support import TEST_BUDGET, data_spec

    trainer = tmp_path / "slow.py"
    trainer.write_text(SLOW_STARTER)
    stopping = threading.Event()
    if going_down:
        stopping.set()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    LocalExecutor(data_spec(tiny_dataset), stopping=stopping).run(trainer, run_dir, 1, {}, None, TEST_BUDGET)
    assert (run_dir / "train" / "woke").exists() != going_down, list(run_dir.rglob("*"))
