"""A phase's disk caps, planned at its start and looked at while it runs (sandbox/isolation/process.py's watcher).

Its own module because it is one concern with its own state, apart from starting and killing the tree: what
the phase's writable host folders may hold, how full their filesystem is, and what the phase has written.

The host folders have a second, lower cap where the disk is short: the space free on their filesystem when
the phase starts, less limits.disk_reserve_bytes (`DiskWatch.plan`). A candidate that fills the disk thus
passes its own limit before the harness's log or result.json meet a full disk; and if the harness's log write
still fails (the candidate wrote faster than the watcher looks), the candidate had passed that limit, and the
outcome says so (written_bytes set beside log_error: violation, not infra_error; sandbox/classify.py). Files
it deleted but holds open count as written. What it wrote past its host cap is deleted once it is dead.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from agentgolf.sandbox.isolation.bwrap import TMPFS_MOUNTS
from agentgolf.sandbox.isolation.limits import (
    filesystem_used_bytes,
    free_bytes,
    held_deleted_bytes,
    written_bytes,
)
from agentgolf.sandbox.phase import PhaseSpec

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


class DiskWatch:
    """One phase's disk caps and, once it passed one, the figures that say so."""

    def __init__(self, spec: PhaseSpec):
        self.spec = spec
        self.written_over: int | None = None  # bytes written when a cap was passed
        self.disk_limit: int | None = None  # the cap it passed (the host folders' or disk_bytes)
        self.host_over = False  # the cap it passed was the host folders' own
        self.host_cap: int | None = None  # the host folders' cap: min(disk_bytes, baseline + free - reserve)
        self.host_cap_from_free = False  # that cap is the free space's, lower than disk_bytes
        self.disk_free: int | None = None  # free bytes on the host folders' filesystem at the start
        self._devices: set[int] = set()  # the host folders' filesystems (for deleted files held open)
        self._host_start = 0  # what the host folders held at the start (the trainer's copy)
        self._searches = 0  # searches for deleted files held open

    def plan(self) -> None:
        """The host folders' cap: disk_bytes, or less where the disk is short (the free space on their
        filesystem now, less the reserve, plus what they already hold). Raises OSError when even the reserve
        plus DISK_MIN_ROOM_BYTES is not free: a full machine, before the candidate has run."""
        spec, limits = self.spec, self.spec.limits
        if limits.disk_bytes is None or not spec.disk_paths:
            return
        free = free_bytes(self._fs_paths())
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
        self._devices = {os.stat(p).st_dev for p in spec.disk_paths if os.path.exists(p)}

    def past_cap(
        self, cap: int, pids: Callable[[], list[int]], scratch: Callable[[], int], final: bool = False
    ) -> bool:
        """One look at what the phase has written; True, with the figures kept, once it is past a cap: its host
        folders (with the deleted files its processes `pids` hold) past theirs, or those plus the sandbox's
        tmpfs (`scratch`) past disk_bytes. `final`: after the tree is dead, only the host folders are left."""
        host_cap = self.host_cap if self.host_cap is not None else cap
        host = written_bytes(self.spec.disk_paths, stop_above=host_cap)
        if not final and host <= host_cap and self._unlisted(host):
            self._searches += 1
            mappings = self._searches % MAPPINGS_EVERY == 1
            host += held_deleted_bytes(pids(), self._devices, mappings)
        if host > host_cap:
            self.written_over, self.disk_limit, self.host_over = host, host_cap, True
            return True
        total = host if final else host + scratch()
        if total > cap:
            self.written_over, self.disk_limit = total, cap
            return True
        return False

    def _unlisted(self, host: int) -> bool:
        """The host folders' filesystem has filled by more than what they list has grown (plus slack): something
        holds files no folder lists, deleted while open, maybe the phase's."""
        if not self._devices or self.disk_free is None:
            return False
        try:
            free = free_bytes(self._fs_paths())
        except OSError:
            return True
        harness = self.spec.log_bytes + UNLISTED_SLACK_BYTES  # its log may be on the same filesystem
        return self.disk_free - free > host - self._host_start + harness

    def _fs_paths(self) -> list[Path]:
        """Where the free space is measured: the log's folder (the harness's writes) and the host folders."""
        return [self.spec.log_path.parent, *self.spec.disk_paths]


def sandbox_tmpfs_bytes(top_pid: int) -> int | None:
    """(bwrap) What the sandbox's /tmp and /dev/shm hold, measured from outside through /proc/<pid>/root of a
    process inside its mount namespace; None when none could be measured."""
    for pid in _inside_pids(top_pid):
        try:
            return sum(filesystem_used_bytes(f"/proc/{pid}/root{m}") for m in TMPFS_MOUNTS)
        except OSError:
            continue
    return None


def _inside_pids(top_pid: int) -> list[int]:
    """Processes of this phase that live in the sandbox's own mount namespace: bwrap's init first."""
    try:
        ours = os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        return []
    found, frontier = [], [top_pid]
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


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        return []
