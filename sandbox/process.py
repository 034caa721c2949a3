"""The sandboxed process: one untrusted process tree, started under limits it cannot change, killed whole.

Two modes. "bwrap": the process runs inside bubblewrap (sandbox/bwrap.py); killing the outer bwrap kills
the namespace's init and with it every process inside. "none": the same limits and the same kill, but no
filesystem or network isolation; stragglers that left the process group are found by a per-run marker in
their environment. In both modes each phase also gets its own pids cgroup when one can be made (it caps the
task count and lists every member for the kill; sandbox/cgroup.py), and rlimits are applied before exec, so
they are inherited by everything the candidate starts (sandbox/limits.py). Its output goes to a capped log
(sandbox/logs.py).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from agentgolf.sandbox.bwrap import MINIMAL_PATH, IsolationError, bwrap_command, find_bwrap
from agentgolf.sandbox.cgroup import KILL_ROUND_SLEEP, KILL_ROUNDS, PidsCgroup
from agentgolf.sandbox.limits import make_preexec
from agentgolf.sandbox.logs import READY_LINE, LogCapture
from agentgolf.sandbox.phase import PhaseOutcome, PhaseSpec

log = logging.getLogger(__name__)

MARKER_ENV = "AGENTGOLF_RUN_MARKER"  # set in every sandboxed process; lets a sweep of /proc find stragglers
LAUNCHER = f'echo "{READY_LINE}" >&2 && exec "$@"'
CGROUP_OVERHEAD_TASKS = 4  # bwrap (outer + init) and the launcher shell, on top of the candidate's budget


def launcher_argv(argv: list[str]) -> list[str]:
    """Wrap argv in a tiny shell step that reports readiness on the log before exec'ing argv."""
    return ["/bin/sh", "-c", LAUNCHER, "sh", *argv]


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries this run's marker (ours, or anyone's when we are root)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def kill_tree(pgid: int | None, marker: str, cgroup: PidsCgroup | None) -> int:
    """SIGKILL the process group, every cgroup member and every marked process, until none is left.

    Returns how many stragglers survived all rounds (0 is the expected answer).
    """
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    left: list[int] = []
    for _ in range(KILL_ROUNDS):
        left = sorted(set(marked_pids(marker)) | set(cgroup.pids() if cgroup else []))
        if not left:
            return 0
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(KILL_ROUND_SLEEP)
    return len(left)


class SandboxedProcess:
    """One phase's process tree: start it, talk to it (protocol mode), wait for it, kill all of it.

    A watchdog kills the whole tree at the wall-clock limit, so blocking reads in the caller also end.
    """

    def __init__(self, spec: PhaseSpec, isolation: str, marker: str | None = None):
        self.spec, self.isolation = spec, isolation
        self.marker = marker or uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None
        self.cgroup: PidsCgroup | None = None
        self.capture: LogCapture | None = None
        self.timed_out = False
        self.aborted = False
        self._timer: threading.Timer | None = None
        self._t0 = 0.0
        self._killed_lock = threading.Lock()

    @property
    def stdin(self):
        return self.proc.stdin if self.proc else None

    @property
    def stdout(self):
        return self.proc.stdout if self.proc else None

    def start(self) -> int:
        """Launch the phase; returns the pid of its top process (bwrap's, or the launcher's)."""
        spec = self.spec
        env = {**spec.env, MARKER_ENV: self.marker}
        argv = launcher_argv(spec.argv)
        cwd: Path | None = spec.cwd
        host_env = env
        if self.isolation == "bwrap":
            bwrap = find_bwrap()
            if bwrap is None:
                raise IsolationError("bubblewrap disappeared between checks")
            argv = bwrap_command(spec.model_copy(update={"env": env}), bwrap) + argv
            host_env = {"PATH": MINIMAL_PATH, MARKER_ENV: self.marker}
            cwd = None
        self.cgroup = PidsCgroup.create(
            f"agentgolf-{self.marker}", spec.limits.max_processes + CGROUP_OVERHEAD_TASKS
        )
        log_r, log_w = os.pipe()
        try:
            self.capture = LogCapture(log_r, spec.log_path, spec.log_bytes)  # drains until the child's EOF
        except OSError:
            os.close(log_r)
            os.close(log_w)
            self._drop_cgroup()
            raise
        pipe = subprocess.PIPE if spec.protocol else subprocess.DEVNULL
        self._t0 = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=host_env,
                stdin=pipe,
                stdout=pipe if spec.protocol else log_w,
                stderr=log_w,
                preexec_fn=make_preexec(spec.limits, self.cgroup),
                start_new_session=True,
            )
        except BaseException:
            self._drop_cgroup()
            raise
        finally:
            os.close(log_w)  # the capture sees EOF once every process holding the write end is gone
        self._timer = threading.Timer(spec.limits.wall_seconds, self._on_deadline)
        self._timer.daemon = True
        self._timer.start()
        return self.proc.pid

    def _drop_cgroup(self) -> None:
        if self.cgroup:
            self.cgroup.remove()
            self.cgroup = None

    def _on_deadline(self) -> None:
        if self.proc is not None and self.proc.poll() is None:  # not if it just exited on its own
            self.timed_out = True
            self.kill()

    def abort(self) -> None:
        """Kill the tree now because the caller is done with it (not a timeout, not the kernel)."""
        self.aborted = True
        self.kill()

    def kill(self) -> int:
        """SIGKILL everything this phase started; safe to call more than once, from any thread."""
        with self._killed_lock:
            pgid = self.proc.pid if self.proc else None
            return kill_tree(pgid, self.marker, self.cgroup)

    def abort_after(self, seconds: float) -> None:
        """Give the top process a moment to exit by itself (so its own exit status is seen), then abort."""
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.abort()

    def run(self, on_start: Callable[[int], None] | None = None) -> PhaseOutcome:
        """start(), report the pid, wait(); if anything here fails (or is interrupted), kill the tree first."""
        pid = self.start()
        try:
            if on_start:
                on_start(pid)
            return self.wait()
        except BaseException:
            self.abort()
            self.wait()
            raise

    def wait(self) -> PhaseOutcome:
        """Wait for the top process, then kill whatever it left behind and finish the log."""
        assert self.proc is not None and self.capture is not None, "start() first"
        try:
            rc = self.proc.wait()
        except BaseException:  # interrupted: never leave the tree running
            self.abort()
            rc = self.proc.wait()
            raise
        wall = time.monotonic() - self._t0
        if self._timer:
            self._timer.cancel()
        survivors = self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.capture.close()
        limit_hit = bool(self.cgroup and self.cgroup.limit_hit())
        self._drop_cgroup()
        if survivors:
            log.error("%d process(es) of run %s survived SIGKILL", survivors, self.marker)
        return PhaseOutcome(
            returncode=rc,
            ready=self.capture.saw_ready,
            timed_out=self.timed_out,
            aborted=self.aborted,
            wall_seconds=wall,
            signal=_signal_of(rc, self.isolation),
            limit_hit=limit_hit,
            survivors=survivors,
            log_error=str(self.capture.error) if self.capture.error else None,
        )


def _signal_of(rc: int | None, isolation: str) -> int | None:
    """The signal that ended the candidate: negative rc directly, or bwrap's 128+N convention."""
    if rc is None:
        return None
    if rc < 0:
        return -rc
    if isolation == "bwrap" and 128 < rc < 128 + 65:
        return rc - 128
    return None
