"""Process bookkeeping for phases the loop started: pid files, the leftover kill, and cancel.

Each phase's leader pid is written to its run folder with the kernel's start time, so a restarted loop
(or `agentgolf cancel`) kills exactly the processes it started, even after the pid was reused.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

PID_FILE = "pids"  # in the run folder: one "pid start-time" line per phase leader


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of a pid: with the pid it identifies one process, even after pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def record_pid(run_dir: Path, pid: int) -> None:
    """Called as each phase starts, before it can do anything worth killing."""
    with open(run_dir / PID_FILE, "a") as f:
        f.write(f"{pid} {process_start_time(pid)}\n")


def kill_leftovers(run_dir: Path) -> int:
    """Kill the phase processes recorded for a run folder (pid + start time) that are still alive."""
    pid_file = run_dir / PID_FILE
    if not pid_file.is_file():
        return 0
    killed = 0
    for line in pid_file.read_text().splitlines():
        pid, started = int(line.split()[0]), line.split()[1]
        if process_start_time(pid) != started:
            continue  # gone, or the pid now belongs to someone else
        try:
            os.killpg(pid, signal.SIGKILL)  # phases lead their own process group
        except OSError:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
        killed += 1
    pid_file.unlink()
    return killed
