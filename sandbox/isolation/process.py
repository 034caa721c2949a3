"""The sandboxed process: one untrusted process tree, started under limits it cannot change, killed whole.

Two modes. "bwrap": the process runs inside bubblewrap (sandbox/isolation/bwrap.py); killing the outer bwrap kills
the namespace's init and with it every process inside. "none": the same limits and the same kill, but no
filesystem or network isolation; stragglers that left the process group are found by a per-run marker in
their environment. In both modes each phase also gets its own pids and memory cgroups when they can be made
(they cap the task count and the phase's RAM, tmpfs included, and list every member for the kill;
sandbox/isolation/cgroup.py), and rlimits are applied before exec, so they are inherited by everything the candidate
starts (sandbox/isolation/limits.py). Its output goes to a capped log (sandbox/isolation/logs.py).

A watcher thread polls the phase while it runs: when the kernel's OOM killer has killed a member for the
memory cgroup's limit, or the bytes written (its writable host folders plus the sandbox's /tmp and /dev/shm,
measured from outside through /proc/<pid>/root) pass a disk cap (sandbox/isolation/disk.py), or, on a CPU-clocked
phase, its CPU seconds pass limits.cpu_seconds (sandbox/cpu.py), it kills the whole tree, and the outcome says
which (PhaseOutcome.oom_killed, .written_bytes, .cpu_timed_out). What a phase wrote to its host folders past a
cap is deleted once it is dead. What could not be enforced here is appended to `notes` (`unenforced`).
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

from agentgolf.sandbox.cpu import CpuMeter
from agentgolf.sandbox.isolation.bwrap import MINIMAL_PATH, IsolationError, bwrap_command, find_bwrap
from agentgolf.sandbox.isolation.cgroup import KILL_ROUND_SLEEP, KILL_ROUNDS, PhaseCgroup
from agentgolf.sandbox.isolation.disk import DiskWatch, sandbox_tmpfs_bytes
from agentgolf.sandbox.isolation.limits import empty_folders, make_preexec
from agentgolf.sandbox.isolation.logs import READY_LINE, LogCapture
from agentgolf.sandbox.phase import PhaseOutcome, PhaseSpec

log = logging.getLogger(__name__)

MARKER_ENV = "AGENTGOLF_RUN_MARKER"  # set in every sandboxed process; lets a sweep of /proc find stragglers
LAUNCHER = f'echo "{READY_LINE}" >&2 && exec "$@"'
CGROUP_OVERHEAD_TASKS = 4  # bwrap (outer + init) and the launcher shell, on top of the candidate's budget
WATCH_SECONDS = 0.1  # how often the watcher looks at the OOM count, the bytes written and the CPU used
UNMEASURED_LOOKS = 20  # looks in a row without a view of the sandbox's tmpfs before the result says so


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


def unenforced(spec: PhaseSpec, isolation: str, cgroup: PhaseCgroup) -> list[str]:
    """The limits this phase asked for that this machine cannot enforce, one line each, named first."""
    notes = []
    if os.getuid() == 0 and cgroup.pids_dir is None:
        notes.append(
            "process limit: running as root without a writable pids cgroup (RLIMIT_NPROC does not bind root)"
        )
    if spec.limits.phase_memory_bytes is not None and cgroup.memory_dir is None:
        notes.append(
            "memory limit: no writable memory cgroup, so /tmp and /dev/shm are not counted and "
            + ("GPU runs have no host memory limit" if spec.gpus else "each process has only its RLIMIT_AS")
        )
    if spec.limits.disk_bytes is not None and isolation != "bwrap":
        notes.append(
            "disk limit: without bubblewrap only the run folder is counted; the trainer can write anywhere "
            "else on the host"
        )
    if spec.gpus and isolation != "bwrap":
        notes.append(
            "GPU isolation: without bubblewrap every GPU's device node is visible; only "
            "CUDA_VISIBLE_DEVICES, which the trainer can change, keeps it on its slot"
        )
    if spec.limits.cpu_seconds is not None and cgroup.cpu_dir is None:
        notes.append(
            "CPU limit: no writable CPU accounting cgroup, so the phase's CPU is summed over its process tree; "
            "a process that leaves the tree is bounded only by its own RLIMIT_CPU"
        )
    return notes


TMPFS_UNMEASURED = (
    "disk limit: the sandbox's /tmp and /dev/shm could not be measured from outside, so only the run folder "
    "is summed; each of them is still capped at disk_bytes by itself"
)


def kill_tree(pgid: int | None, marker: str, cgroup: PhaseCgroup | None) -> int:
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

    def __init__(
        self, spec: PhaseSpec, isolation: str, marker: str | None = None, notes: list[str] | None = None
    ):
        self.spec, self.isolation = spec, isolation
        self.marker = marker or uuid.uuid4().hex
        self.notes = notes if notes is not None else []  # limits not enforced here (shared with the run)
        self.proc: subprocess.Popen | None = None
        self.cgroup: PhaseCgroup | None = None
        self.capture: LogCapture | None = None
        self.timed_out = False
        self.aborted = False
        self.oom_killed = False
        self.cpu_timed_out = False
        self.disk = DiskWatch(spec)  # its disk caps and what it wrote past one (sandbox/isolation/disk.py)
        self.cpu: CpuMeter | None = None  # its CPU seconds, where it has a CPU limit (sandbox/cpu.py)
        self._timer: threading.Timer | None = None
        self._watcher: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._unmeasured = 0  # looks in a row at which the sandbox's tmpfs could not be measured
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
        self.disk.plan()
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
        self.cgroup = PhaseCgroup.create(
            f"agentgolf-{self.marker}",
            spec.limits.max_processes + CGROUP_OVERHEAD_TASKS,
            spec.limits.phase_memory_bytes,
            cpu=spec.limits.cpu_seconds is not None,
        )
        if spec.limits.cpu_seconds is not None:
            self.cpu = CpuMeter(self.cgroup, self._phase_pids)
        for note in unenforced(spec, self.isolation, self.cgroup):
            self._note(note)
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
        if self.cgroup.memory_dir is not None or spec.limits.disk_bytes is not None or self.cpu is not None:
            self._watcher = threading.Thread(target=self._watch, name=f"watch:{self.marker}", daemon=True)
            self._watcher.start()
        return self.proc.pid

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def _watch(self) -> None:
        """Kill the tree once the kernel OOM-killed a member, once it has written more than a disk cap, or once
        it has used more CPU seconds than its CPU limit."""
        cap = self.spec.limits.disk_bytes
        while not self._watch_stop.wait(WATCH_SECONDS):
            if self.cgroup is not None and self.cgroup.oom_kills():
                self.oom_killed = True
                self.kill()
                return
            if cap is not None and self.disk.past_cap(cap, self._phase_pids, self._scratch_bytes):
                self.kill()
                return
            if self._past_cpu_limit():
                self.kill()
                return

    def _past_cpu_limit(self, extra: list[int] | None = None) -> bool:
        """One look at the CPU the phase has used; True (and cpu_timed_out) once it is past its CPU limit."""
        limit = self.spec.limits.cpu_seconds
        used = self.cpu.read(extra) if self.cpu is not None else None
        if limit is not None and used is not None and used > limit:
            self.cpu_timed_out = self.timed_out = True
        return self.cpu_timed_out

    def _last_cpu_look(self) -> None:
        """Once the top process has ended, and before it is reaped, one last look at the CPU clock: its /proc
        entry still holds what it and every child it reaped used (the tree's whole figure without a cgroup)."""
        try:
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            return  # reaped already (the deadline's poll): the watcher's last look stands
        self._past_cpu_limit(extra=[self.proc.pid])

    def _phase_pids(self) -> list[int]:
        """Every process of the phase: its cgroups' members where it has any, else its process tree."""
        if self.cgroup is not None and self.cgroup.dirs:
            return self.cgroup.pids()
        if self.proc is None:
            return []
        found, frontier = [], [self.proc.pid]
        while frontier and len(found) < 10_000:
            found += frontier
            frontier = [c for pid in frontier for c in _all_children(pid)]
        return found

    def _scratch_bytes(self) -> int:
        """(bwrap) What the sandbox's /tmp and /dev/shm hold (sandbox/isolation/disk.py); 0 elsewhere."""
        if self.isolation != "bwrap" or not (self.capture and self.capture.saw_ready) or self.proc is None:
            return 0  # before READY the sandbox's mounts may not be in place: nothing to measure yet
        used = sandbox_tmpfs_bytes(self.proc.pid)
        if used is not None:
            self._unmeasured = 0
            return used
        self._unmeasured += 1  # once: the sandbox ended between two looks; a while: the machine hides it
        if self._unmeasured == UNMEASURED_LOOKS and self.proc.poll() is None:
            self._note(TMPFS_UNMEASURED)
        return 0

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
            if self.cpu is not None:
                self._last_cpu_look()
            rc = self.proc.wait()
        except BaseException:  # interrupted: never leave the tree running
            self.abort()
            rc = self.proc.wait()
            raise
        wall = time.monotonic() - self._t0
        if self._timer:
            self._timer.cancel()
        self._watch_stop.set()
        if self._watcher is not None:
            self._watcher.join()
        survivors = self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.capture.close()
        limit_hit = bool(self.cgroup and self.cgroup.limit_hit())
        self.oom_killed = self.oom_killed or bool(self.cgroup and self.cgroup.oom_kills())
        if self.cpu is not None and self.cpu.from_cgroup:
            self._past_cpu_limit()  # every process of it, all dead now
        disk, cap = self.disk, self.spec.limits.disk_bytes
        if cap is not None and disk.written_over is None:  # what it wrote after the last look
            disk.past_cap(cap, self._phase_pids, self._scratch_bytes, final=True)
        if disk.host_over:
            empty_folders(self.spec.disk_paths)  # the tree is dead: give the machine its disk back
        self._drop_cgroup()
        if survivors:
            log.error("%d process(es) of run %s survived SIGKILL", survivors, self.marker)
        return PhaseOutcome(
            returncode=rc,
            ready=self.capture.saw_ready,
            timed_out=self.timed_out,
            aborted=self.aborted,
            wall_seconds=wall,
            cpu_seconds=self.cpu.seconds if self.cpu is not None else None,
            cpu_limit_seconds=self.spec.limits.cpu_seconds,
            cpu_timed_out=self.cpu_timed_out,
            signal=_signal_of(rc, self.isolation),
            limit_hit=limit_hit,
            survivors=survivors,
            oom_killed=self.oom_killed,
            memory_limit_bytes=self.spec.limits.phase_memory_bytes,
            written_bytes=disk.written_over,
            disk_limit_bytes=disk.disk_limit if disk.disk_limit is not None else cap,
            disk_limit_from_free=disk.host_over and disk.host_cap_from_free,
            disk_free_bytes=disk.disk_free,
            disk_reserve_bytes=self.spec.limits.disk_reserve_bytes if disk.disk_free is not None else None,
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


def _all_children(pid: int) -> list[int]:
    """The children of every thread of a process (a thread that forks is their parent, not the main one)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except (OSError, ValueError):
        return []
    found = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return found
