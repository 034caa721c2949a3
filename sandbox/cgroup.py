"""The per-phase pids cgroup: caps one phase's task count and lists every member for the final kill.

Made under the v1 pids hierarchy or the v2 root where we may write there (in practice as root); where we may
not, a phase has none and its process limit rests on RLIMIT_NPROC alone (sandbox/limits.py).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

KILL_ROUNDS = 20  # sweeps of the cgroup / marker before giving up on a process that keeps forking
KILL_ROUND_SLEEP = 0.05

CGROUP_V1_PIDS = Path("/sys/fs/cgroup/pids")
CGROUP_V2_ROOT = Path("/sys/fs/cgroup")


class PidsCgroup:
    """A pids cgroup holding one phase: caps its task count and lists every member for the final kill."""

    def __init__(self, path: Path):
        self.path = path
        self._procs = str(path / "cgroup.procs")  # computed here: enter() runs between fork and exec

    @classmethod
    def create(cls, name: str, max_tasks: int) -> PidsCgroup | None:
        """Make one under the v1 pids hierarchy or the v2 root, or return None where we may not."""
        for base in (CGROUP_V1_PIDS, CGROUP_V2_ROOT):
            if base == CGROUP_V2_ROOT and "pids" not in _read(base / "cgroup.subtree_control"):
                continue
            if not (base / "cgroup.procs").exists() or not os.access(base, os.W_OK):
                continue
            path = base / name
            try:
                path.mkdir()
                (path / "pids.max").write_text(str(max_tasks))
            except OSError:
                _rmdir_quiet(path)
                continue
            return cls(path)
        return None

    def enter(self) -> None:
        """Move the calling process in (called in the child between fork and exec)."""
        fd = os.open(self._procs, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    def pids(self) -> list[int]:
        return [int(p) for p in _read(self.path / "cgroup.procs").split()]

    def limit_hit(self) -> bool:
        """The kernel counts refused forks in pids.events ("max N")."""
        for line in _read(self.path / "pids.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "max" and value.strip() not in ("", "0"):
                return True
        return False

    def remove(self) -> None:
        """rmdir, retried: the kernel may still be tearing down tasks we just killed (EBUSY)."""
        for _ in range(KILL_ROUNDS):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(KILL_ROUND_SLEEP)
        log.warning("could not remove cgroup %s", self.path)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _rmdir_quiet(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
