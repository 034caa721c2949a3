"""Process bookkeeping: who owns a run (its lock), the phases a loop started (pid files), and killing them.

Each phase's leader pid is written to its run folder with the kernel's start time, so a restarted loop
(or `agentgolf cancel`) kills exactly the processes it started, even after the pid was reused. A live loop
holds its run's lock file the same way, so a second `--resume` refuses and `cancel` can ask it to stop,
and the workspace's lock, so a second loop in the same workspace refuses and names the live run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from agentgolf.errors import AgentgolfError

PID_FILE = "pids"  # in the run folder: one "pid start-time" line per phase leader
WORKSPACE_LOCK = "workspace.loop"  # in the locks folder, beside the runs' <run id>.lock files


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
    pid_file.unlink(missing_ok=True)  # a phase's own start may be killing it too
    return killed


class Owner(BaseModel):
    """Who holds a run: the live loop's pid, with the kernel's start time that makes it unique."""

    pid: int
    started: str | None
    since: float
    command: str = ""


def lock_owner(lock: Path) -> Owner | None:
    """The live process holding `lock`, or None if nobody does (no file, or its process is gone)."""
    try:
        owner = Owner.model_validate_json(lock.read_text())
    except (OSError, ValueError):
        return None
    alive = owner.started is not None and process_start_time(owner.pid) == owner.started
    return owner if alive else None


@contextmanager
def run_lock(lock: Path, run_id: str) -> Iterator[Owner]:
    """Hold run `run_id` for this process: one live loop per run, and a clear refusal naming the other."""

    def refusal(holder: Owner) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder.since))
        return (
            f"run {run_id} is live in process {holder.pid} (since {when}); stop it first, or "
            f"`agentgolf cancel {run_id}`"
        )

    with _hold(lock, refusal, f"run {run_id}") as me:
        yield me


@contextmanager
def workspace_lock(locks: Path) -> Iterator[Owner]:
    """One loop per workspace: two would share the machine and move each other's scores. The refusal names
    the live run and its process (its run lock, taken just after this one)."""

    def refusal(holder: Owner) -> str:
        live = live_runs(locks)
        if not live:
            return f"another loop or replay holds this workspace (process {holder.pid}); wait for it"
        run_id, owner = live[0]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(owner.since))
        return (
            f"a loop is already running in this workspace: run {run_id} is live in process {owner.pid} "
            f"(since {when}); wait for it, or stop it with `agentgolf cancel {run_id}`"
        )

    with _hold(locks / WORKSPACE_LOCK, refusal, "this workspace") as me:
        yield me


def live_runs(locks: Path) -> list[tuple[str, Owner]]:
    """The runs a live loop holds now (their lock files), newest first."""
    found = [(lock.stem, owner) for lock in locks.glob("*.lock") if (owner := lock_owner(lock))]
    return sorted(found, key=lambda item: item[1].since, reverse=True)


@contextmanager
def _hold(lock: Path, refusal: Callable[[Owner], str], what: str) -> Iterator[Owner]:
    """Create `lock` naming this process; a live holder is refused with `refusal(holder)`."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = Owner(
        pid=os.getpid(),
        started=process_start_time(os.getpid()),
        since=time.time(),
        command=" ".join(sys.argv),
    )
    with _takers_serialized(lock.parent):
        if not _create_whole(lock, me.model_dump_json()):
            holder = lock_owner(lock)
            if holder is not None:
                raise AgentgolfError(refusal(holder))
            lock.unlink(missing_ok=True)  # stale: its process died (only its owner removes it but us)
            if not _create_whole(lock, me.model_dump_json()):
                raise AgentgolfError(
                    f"{what}: could not take its lock {lock}; another process is starting it"
                )
    try:
        yield me
    finally:
        if lock_owner(lock) == me:
            lock.unlink()


@contextmanager
def _takers_serialized(folder: Path) -> Iterator[None]:
    """Take locks in `folder` one process (and thread) at a time: a flock on the folder, which the kernel
    drops if we die. Two loops that found the same stale lock each removed "it" and made their own; the
    second's removal could be of the first's new lock, and both then held the workspace."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the flock


def _create_whole(lock: Path, text: str) -> bool:
    """Create `lock` holding `text`; False if it exists. The file appears already written (a hard link to a
    full temp file): one created empty and written after was read in between as ownerless, taken as stale,
    and then two loops held one workspace."""
    fd, tmp = tempfile.mkstemp(prefix=f".{lock.name}.", dir=lock.parent)  # not *.lock: live_runs skips it
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.link(tmp, lock)  # atomic, and never over an existing lock
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def stop_owner(lock: Path, timeout: float) -> bool:
    """Ask the live loop holding `lock` to stop (SIGTERM: it marks its rows and exits); True once it has."""
    owner = lock_owner(lock)
    if owner is None:
        return True
    with contextlib.suppress(OSError):
        os.kill(owner.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock_owner(lock) is None:
            return True
        time.sleep(0.2)
    return False
