"""One owner per run: a live loop holds its run, a second --resume refuses, cancel stops it cleanly.

Real subprocesses (`python -m agentgolf.agent.cli.main`), a real workspace on tiny data, real SQLite and git.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.test_cli import agentgolf, one_line_error
from tests.tiny import alive, make_workspace, phase_pids, training_row


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
    time.sleep(1.0)
    assert not any(alive(p) for p in pids)
    rows = json.loads(agentgolf("ledger", "--json", cwd=ws, check=True).stdout)
    row = next(r for r in rows if r["id"] == victim)
    assert row["status"] == "interrupted" and row["reason"] == "cancelled by the user", row  # not `oom`

    # With the owner gone, --resume alone takes the run back, under its recorded caps.
    resumed = agentgolf("run", "--resume", cwd=ws)
    assert "with caps: 2 experiment(s) (as recorded)" in resumed.stderr, resumed.stderr
