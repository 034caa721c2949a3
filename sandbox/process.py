"""The sandboxed process: one untrusted process tree, started under limits it cannot change, killed whole.

Two modes. "bwrap": the process runs inside bubblewrap (sandbox/bwrap.py); killing the outer bwrap kills
the namespace's init and with it every process inside. "none": the same limits and the same kill, but no
filesystem or network isolation; stragglers that left the process group are found by a per-run marker in
their environment. In both modes each phase also gets its own pids and memory cgroups when they can be made
(they cap the task count and the phase's RAM, tmpfs included, and list every member for the kill;
sandbox/cgroup.py), and rlimits are applied before exec, so they are inherited by everything the candidate
starts (sandbox/limits.py). Its output goes to a capped log (sandbox/logs.py).

A watcher thread polls the phase while it runs: when the kernel's OOM killer has killed a member for the
memory cgroup's limit, or the bytes written (its writable host folders plus the sandbox's /tmp and /dev/shm,
measured from outside through /proc/<pid>/root) pass limits.disk_bytes, it kills the whole tree, and the
outcome says which (PhaseOutcome.oom_killed, .written_bytes). What could not be enforced here is appended to
`notes` (`unenforced`).

The host folders alone have a second, lower cap where the disk is short: the space free on their filesystem
when the phase starts, less limits.disk_reserve_bytes (`_plan_disk`). A candidate that fills the disk thus
passes its own limit before the harness's log or result.json meet a full disk; and if the harness's log write
still fails (the candidate wrote faster than the watcher looks), the candidate had passed that limit, and the
outcome says so (written_bytes set beside log_error: violation, not infra_error; sandbox/classify.py). Files
it deleted but holds open count as written. What a phase wrote to its host folders past a cap is deleted once
it is dead, so it cannot leave the disk full for the runs after it.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from agentgolf.sandbox.bwrap import MINIMAL_PATH, TMPFS_MOUNTS, IsolationError, bwrap_command, find_bwrap
from agentgolf.sandbox.cgroup import KILL_ROUND_SLEEP, KILL_ROUNDS, PhaseCgroup
from agentgolf.sandbox.limits import (
    empty_folders,
    filesystem_used_bytes,
    free_bytes,
    held_deleted_bytes,
    make_preexec,
    written_bytes,
)
from agentgolf.sandbox.logs import READY_LINE, LogCapture
from agentgolf.sandbox.phase import PhaseOutcome, PhaseSpec

log = logging.getLogger(__name__)

MARKER_ENV = "AGENTGOLF_RUN_MARKER"  # set in every sandboxed process; lets a sweep of /proc find stragglers
LAUNCHER = f'echo "{READY_LINE}" >&2 && exec "$@"'
CGROUP_OVERHEAD_TASKS = 4  # bwrap (outer + init) and the launcher shell, on top of the candidate's budget
WATCH_SECONDS = 0.1  # how often the watcher looks at the memory cgroup's OOM count and the bytes written
UNMEASURED_LOOKS = 20  # looks in a row without a view of the sandbox's tmpfs before the result says so
# The phase's processes are searched for deleted files they hold only when the filesystem has filled by more
# than this (plus the log's cap) beyond what its folders list, so an honest phase costs a statvfs or two a
# look. Past it, those files count: a candidate can hide at most this much.
UNLISTED_SLACK_BYTES = 8 * 2**20
# Searches between two reads of the phase's memory maps (for deleted files it holds only mapped): reading
# /proc/<pid>/maps takes each process's mmap lock, too dear for every look at a large trainer.
MAPPINGS_EVERY = 10
DISK_MIN_ROOM_BYTES = 64 * 2**20
"""The least a phase with a disk cap must be able to write beyond the reserve: with less free space at its start
the machine's disk is full before the candidate has done anything, and the phase is not started (OSError,
which the runner reports as infra_error). 64 MiB: room for an artifact at the 16 MB limit and then some."""


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
        self.written_over: int | None = None  # bytes written when the disk cap was passed
        self.disk_limit: int | None = None  # the cap it passed (the host folders' or disk_bytes)
        self.host_over = False  # the cap it passed was the host folders' own
        self.host_cap: int | None = None  # the host folders' cap: min(disk_bytes, baseline + free - reserve)
        self.host_cap_from_free = False  # that cap is the free space's, lower than disk_bytes
        self.disk_free: int | None = None  # free bytes on the host folders' filesystem at the start
        self._disk_devices: set[int] = set()  # the host folders' filesystems (for deleted files held open)
        self._host_start = 0  # what the host folders held at the start (the trainer's copy)
        self._searches = 0  # searches for deleted files held open
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
        self._plan_disk()
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
        )
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
        if self.cgroup.memory_dir is not None or spec.limits.disk_bytes is not None:
            self._watcher = threading.Thread(target=self._watch, name=f"watch:{self.marker}", daemon=True)
            self._watcher.start()
        return self.proc.pid

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def _plan_disk(self) -> None:
        """The host folders' cap: disk_bytes, or less where the disk is short (the free space on their
        filesystem now, less the reserve, plus what they already hold). Raises OSError when even the reserve
        plus DISK_MIN_ROOM_BYTES is not free: a full machine, before the candidate has run."""
        spec, limits = self.spec, self.spec.limits
        if limits.disk_bytes is None or not spec.disk_paths:
            return
        free = free_bytes(self._disk_fs_paths())
        room = free - limits.disk_reserve_bytes
        if room < DISK_MIN_ROOM_BYTES:
            raise OSError(
                errno.ENOSPC,
                f"the run folder's disk is full: {free:,} bytes free, less than the {limits.disk_reserve_bytes:,} "
                f"kept for the harness plus {DISK_MIN_ROOM_BYTES:,} for the phase; nothing was run",
            )
        held = written_bytes(spec.disk_paths)  # the trainer's copy: counted, and already off the free space
        self.disk_free = free
        self.host_cap = min(limits.disk_bytes, held + room)
        self.host_cap_from_free = held + room < limits.disk_bytes
        self._host_start = held
        self._disk_devices = {os.stat(p).st_dev for p in spec.disk_paths if os.path.exists(p)}

    def _watch(self) -> None:
        """Kill the tree once the kernel OOM-killed a member, or once it has written more than a disk cap."""
        cap = self.spec.limits.disk_bytes
        while not self._watch_stop.wait(WATCH_SECONDS):
            if self.cgroup is not None and self.cgroup.oom_kills():
                self.oom_killed = True
                self.kill()
                return
            if cap is not None and self._past_disk_cap(cap):
                self.kill()
                return

    def _past_disk_cap(self, cap: int, final: bool = False) -> bool:
        """One look at what the phase has written; True, with the figures kept, once it is past a cap: its host
        folders (with the deleted files it holds) past theirs, or those plus the sandbox's tmpfs past
        disk_bytes. `final`: after the tree is dead, only the host folders are left to count."""
        host_cap = self.host_cap if self.host_cap is not None else cap
        host = written_bytes(self.spec.disk_paths, stop_above=host_cap)
        if not final and host <= host_cap and self._unlisted(host):
            self._searches += 1
            mappings = self._searches % MAPPINGS_EVERY == 1
            host += held_deleted_bytes(self._phase_pids(), self._disk_devices, mappings)
        if host > host_cap:
            self.written_over, self.disk_limit, self.host_over = host, host_cap, True
            return True
        total = host if final else host + self._scratch_bytes()
        if total > cap:
            self.written_over, self.disk_limit = total, cap
            return True
        return False

    def _unlisted(self, host: int) -> bool:
        """The host folders' filesystem has filled by more than what they list has grown (plus slack): something
        holds files no folder lists, deleted while open, maybe the phase's."""
        if not self._disk_devices or self.disk_free is None:
            return False
        try:
            free = free_bytes(self._disk_fs_paths())
        except OSError:
            return True
        harness = self.spec.log_bytes + UNLISTED_SLACK_BYTES  # its log may be on the same filesystem
        return self.disk_free - free > host - self._host_start + harness

    def _disk_fs_paths(self) -> list[Path]:
        """Where the free space is measured: the log's folder (the harness's writes) and the host folders."""
        return [self.spec.log_path.parent, *self.spec.disk_paths]

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
        """(bwrap) What the sandbox's /tmp and /dev/shm hold, measured through /proc/<pid>/root; 0 elsewhere."""
        if self.isolation != "bwrap" or not (self.capture and self.capture.saw_ready):
            return 0  # before READY the sandbox's mounts may not be in place: nothing to measure yet
        for pid in self._inside_pids():
            try:
                used = sum(filesystem_used_bytes(f"/proc/{pid}/root{m}") for m in TMPFS_MOUNTS)
            except OSError:
                continue
            self._unmeasured = 0
            return used
        self._unmeasured += (
            1  # once is the sandbox ending between two looks; a while is a machine that hides it
        )
        if self._unmeasured == UNMEASURED_LOOKS and self.proc is not None and self.proc.poll() is None:
            self._note(TMPFS_UNMEASURED)
        return 0

    def _inside_pids(self) -> list[int]:
        """Processes of this phase that live in the sandbox's own mount namespace: bwrap's init first."""
        if self.proc is None:
            return []
        try:
            ours = os.stat("/proc/self/ns/mnt").st_ino
        except OSError:
            return []
        found, frontier = [], [self.proc.pid]
        for _ in range(3):  # outer bwrap -> its init -> the launcher / candidate
            children = []
            for pid in frontier:
                children += _children(pid)
            for pid in children:
                try:
                    if os.stat(f"/proc/{pid}/ns/mnt").st_ino != ours:
                        found.append(pid)
                except OSError:
                    continue
            frontier = children
        return found

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
        cap = self.spec.limits.disk_bytes
        if cap is not None and self.written_over is None:  # what it wrote after the last look
            self._past_disk_cap(cap, final=True)
        if self.host_over:
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
            signal=_signal_of(rc, self.isolation),
            limit_hit=limit_hit,
            survivors=survivors,
            oom_killed=self.oom_killed,
            memory_limit_bytes=self.spec.limits.phase_memory_bytes,
            written_bytes=self.written_over,
            disk_limit_bytes=self.disk_limit if self.disk_limit is not None else cap,
            disk_limit_from_free=self.host_over and self.host_cap_from_free,
            disk_free_bytes=self.disk_free,
            disk_reserve_bytes=self.spec.limits.disk_reserve_bytes if self.disk_free is not None else None,
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


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        return []


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
