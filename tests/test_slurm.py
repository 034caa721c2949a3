"""The SLURM executor against a real single-node SLURM (.ci/run installs and starts it).

Skipped, with the reason, only where no SLURM controller answers (e.g. a laptop without one).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentgolf.agent.workspace import Workspace
from agentgolf.sandbox import slurm
from agentgolf.sandbox.result import Status
from tests.sandbox_support import TEST_BUDGET, TOY, TRAINERS, data_spec
from tests.test_cli import agentgolf
from tests.tiny import TINY_ENV, make_workspace, wait_until


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=20)
    return proc.returncode == 0 and "up" in proc.stdout


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _slurm_up(), reason="no SLURM controller answers here (.ci/run starts one)"),
]
CPU_JOB = slurm.SlurmConfig(cpus_per_experiment=1)


def _submit(trainer: Path, tmp_path: Path, dataset, name: str) -> tuple[str, Path]:
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "train_gpt.py").write_bytes(trainer.read_bytes())
    job = slurm.submit(run_dir / "train_gpt.py", run_dir, data_spec(dataset), TEST_BUDGET, {}, 1337, CPU_JOB)
    return job, run_dir


def _wait_for(state: str, job_id: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while slurm.job_state(job_id) != state and time.monotonic() < deadline:
        time.sleep(0.5)
    assert slurm.job_state(job_id) == state


def test_submitted_job_runs_the_sandboxed_experiment(tmp_path, tiny_dataset):
    job_id, run_dir = _submit(TOY, tmp_path, tiny_dataset, "ok")
    result = slurm.wait(job_id, run_dir)
    assert result.status is Status.ok and result.val_bpb is not None, result.reason
    assert result.isolation == "bwrap" and f"slurm job {job_id}" in result.reason
    facts = slurm.queue_facts(run_dir)
    assert facts["slurm_job_id"] == job_id and facts["slurm_node"] and facts["slurm_queue_wait_s"] >= 0
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"
    assert slurm.reusable_job(run_dir) == job_id  # finished cleanly: a restarted loop reads, not resubmits


def test_job_killed_by_scancel_is_an_infra_error(tmp_path, tiny_dataset):
    job_id, run_dir = _submit(TRAINERS / "sleep_forever.py", tmp_path, tiny_dataset, "cancelled")
    _wait_for("RUNNING", job_id)
    slurm.cancel([job_id])
    result = slurm.wait(job_id, run_dir)
    assert result.status is Status.infra_error and "CANCELLED" in result.reason
    assert slurm.live_job(run_dir) is None and slurm.reusable_job(run_dir) is None  # a retry submits anew


# The toy trainer, held at its start until the test lets it go: it says it waits (a file in its folder, which
# the sandbox binds from the run's train/ folder), and goes on once the test has written `release` there.
HELD = """import os, time
if __name__ == "__main__":
    open("waiting", "w").close()
    while not os.path.exists("release"):
        time.sleep(0.1)
    os.remove("release"); os.remove("waiting")
"""


def test_resume_reattaches_to_a_running_job(tmp_path, tiny_dataset):
    held = tmp_path / "held_toy.py"
    held.write_text(HELD + TOY.read_text())
    job_id, run_dir = _submit(held, tmp_path, tiny_dataset, "resumed")
    wait_until((run_dir / "train" / "waiting").exists, 120, every=0.2)
    try:
        assert (run_dir / "train" / "waiting").exists(), "the job's trainer did not start"
        # A restarted loop finds the job through the run folder alone, while it is certainly still running.
        found = slurm.live_job(run_dir)
        assert slurm.job_state(job_id) == "RUNNING" and found == job_id
    finally:
        if (run_dir / "train").is_dir():
            (run_dir / "train" / "release").touch()
    # It waits on it: nothing is resubmitted.
    result = slurm.wait(found, run_dir)
    assert result.status is Status.ok, result.reason
    assert len((run_dir / slurm.STARTED_FILE).read_text().splitlines()) == 1  # the job started exactly once
    assert sorted(p.name for p in (run_dir / "slurm").glob("*_submitted.pkl")) == [f"{job_id}_submitted.pkl"]


def _orphaned_slurm_run(tmp_path: Path, dataset, iterations: int, started: bool) -> tuple[Workspace, str]:
    """`agentgolf run --executor slurm --budget 1`, killed with kill -9 once its job is submitted (and,
    with `started`, running): the workspace and the job the dead loop left behind."""
    ws = make_workspace(tmp_path / "ws", dataset, env={**TINY_ENV, "ITERATIONS": str(iterations)})
    loop = subprocess.Popen(
        [sys.executable, "-m", "agentgolf.agent.cli.main", "run", "--budget", "1", "--executor", "slurm"],
        cwd=ws.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    waited_for = [ws.run_dir(1) / slurm.JOB_FILE] + ([ws.run_dir(1) / slurm.STARTED_FILE] if started else [])
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in waited_for) and time.monotonic() < deadline:
        time.sleep(0.5)
    job_id = json.loads(waited_for[0].read_text())["job_id"]
    loop.send_signal(signal.SIGKILL)
    loop.wait()
    return ws, job_id


def test_loop_on_slurm_survives_kill_9_and_reattaches(tmp_path, tiny_dataset):
    """`agentgolf run --executor slurm`, kill -9 while a job runs: the job lives on, --resume waits on it."""
    ws, job_id = _orphaned_slurm_run(tmp_path, tiny_dataset, iterations=30, started=True)
    assert slurm.live_job(ws.run_dir(1)) == job_id  # the loop died; the job did not

    agentgolf("run", "--budget", "1", "--executor", "slurm", "--resume", cwd=ws.root, check=True)
    with sqlite3.connect(ws.state / "ledger.db") as db:
        rows = db.execute("SELECT id, status, val_bpb, manifest FROM experiments").fetchall()
    assert len(rows) == 1 and rows[0][1] == "ok" and rows[0][2] > 0, rows
    manifest = json.loads(rows[0][3])
    assert manifest["slurm_job_id"] == job_id and manifest["slurm_queue_wait_s"] >= 0
    assert [p.name for p in (ws.run_dir(1) / "slurm").glob("*_submitted.pkl")] == [f"{job_id}_submitted.pkl"]


def test_cancel_command_cancels_the_runs_jobs(tmp_path, tiny_dataset):
    ws, job_id = _orphaned_slurm_run(tmp_path, tiny_dataset, iterations=200, started=False)
    out = agentgolf("cancel", cwd=ws.root, check=True).stdout
    assert "cancelled 1 experiment(s)" in out
    _wait_for("CANCELLED", job_id, seconds=30)
    with sqlite3.connect(ws.state / "ledger.db") as db:
        assert db.execute("SELECT status, reason FROM experiments").fetchall() == [
            ("interrupted", "cancelled by the user")
        ]
        assert db.execute("SELECT status FROM runs").fetchall() == [("cancelled",)]


def test_an_unreachable_controller_is_not_the_end_of_a_job(tmp_path, monkeypatch):
    """A stand-in `scontrol` (a script on PATH, since the real controller cannot be taken down mid-suite)
    that fails as a controller outage does: the job is still alive, not forgotten and not finished."""
    fake = tmp_path / "bin" / "scontrol"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert slurm.job_state("12345", tries=2, pause=0.01) == "UNREACHABLE"
    assert "UNREACHABLE" in slurm.ALIVE
    fake.write_text("#!/bin/sh\necho 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1\n")
    assert slurm.job_state("12345", tries=2, pause=0.01) == "UNKNOWN"  # forgotten: the run folder tells
