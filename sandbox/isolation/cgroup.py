"""The per-phase cgroups: a pids cgroup (caps the task count, lists every member for the final kill), a
memory cgroup (caps the RAM of the whole phase, including the pages it writes to its /tmp and /dev/shm) and,
for a CPU-clocked training phase, CPU accounting (the CPU seconds of every process it ever had; sandbox/cpu.py).

/tmp and /dev/shm in the sandbox are tmpfs, that is host RAM, and the kernel charges a tmpfs page to the
memory cgroup of the process that wrote it; so a phase that fills them runs into its memory limit like one
that allocates. Where the limit is reached and nothing can be reclaimed, the kernel's OOM killer kills a
member, which the cgroup counts (v1 memory.oom_control, v2 memory.events: "oom_kill N"); the harness sees
the count and kills the rest of the phase (sandbox/isolation/process.py).

cgroup v1 (or a hybrid host): one folder per controller, CGROUP_ROOT/pids/<name>, CGROUP_ROOT/memory/<name> and
CGROUP_ROOT/cpuacct/<name> (cpuacct.usage). cgroup v2: one folder CGROUP_ROOT/<name> with both controllers,
where the root enables them; its cpu.stat (usage_usec) is there whatever the controllers. A cgroup is made
only where we may write (in practice as root); where it cannot be made, its limit is not enforced and the
phase says so (`PhaseCgroup.not_enforced`, carried into SandboxResult.limits_not_enforced).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

KILL_ROUNDS = 20  # sweeps of the cgroup / marker before giving up on a process that keeps forking
KILL_ROUND_SLEEP = 0.05

# Where the cgroup filesystems are mounted. Tests point it at a folder that is not a cgroup filesystem, to
# stand in for a machine where no cgroup can be made (as root, file modes cannot stand in for that).
CGROUP_ROOT = Path("/sys/fs/cgroup")
PREFIX = "agentgolf-"
STALE_SECONDS = 600.0  # an empty phase cgroup this old was left by a harness that was killed (kill -9)


def _v1(controller: str) -> Path:
    return CGROUP_ROOT / controller


def _v2_controllers() -> set[str]:
    """The controllers the v2 root hands to its children ("" on v1 and hybrid hosts, where it is no cgroup2)."""
    return set(_read(CGROUP_ROOT / "cgroup.subtree_control").split())


def _writable(base: Path) -> bool:
    return (base / "cgroup.procs").exists() and os.access(base, os.W_OK)


class PhaseCgroup:
    """One phase's cgroups (a pids, a memory and a CPU accounting one; on v2 a single folder holding all).

    `pids_dir` / `memory_dir` / `cpu_dir` are None where that cgroup could not be made; `create` never fails.
    """

    def __init__(self) -> None:
        self.pids_dir: Path | None = None
        self.memory_dir: Path | None = None
        self.cpu_dir: Path | None = None
        self.memory_v2 = False
        self.cpu_v2 = False
        self._procs: list[str] = []  # computed here: enter() runs between fork and exec

    @property
    def dirs(self) -> list[Path]:
        dirs = (self.pids_dir, self.memory_dir, self.cpu_dir)
        return list(dict.fromkeys(d for d in dirs if d is not None))

    @classmethod
    def create(cls, name: str, max_tasks: int, memory_bytes: int | None, cpu: bool = False) -> PhaseCgroup:
        """Make the phase's cgroups with these limits, where we may (memory_bytes None: no memory cgroup;
        cpu: count the phase's CPU seconds)."""
        cg = cls()
        if _writable(_v1("pids")):
            cg.pids_dir = _make(_v1("pids") / name, {"pids.max": str(max_tasks)})
        if memory_bytes is not None and _writable(_v1("memory")):
            cg.memory_dir = _make(_v1("memory") / name, *_v1_memory(memory_bytes))
        if cpu and _writable(_v1("cpuacct")):
            cg.cpu_dir = _make(_v1("cpuacct") / name, {})
        v2 = _v2_controllers() if _writable(CGROUP_ROOT) else set()
        required: dict[str, str] = {}
        optional: dict[str, str] = {}
        if cg.pids_dir is None and "pids" in v2:
            required["pids.max"] = str(max_tasks)
        if memory_bytes is not None and cg.memory_dir is None and "memory" in v2:
            required["memory.max"] = str(memory_bytes)
            optional = {"memory.swap.max": "0", "memory.oom.group": "1"}  # no swap; OOM kills the whole phase
        v2_root = _writable(CGROUP_ROOT) and (CGROUP_ROOT / "cgroup.subtree_control").exists()
        want_cpu = cpu and cg.cpu_dir is None and v2_root
        path = _make(CGROUP_ROOT / name, required, optional) if required or want_cpu else None
        if path is not None:
            if "pids.max" in required:
                cg.pids_dir = path
            if "memory.max" in required:
                cg.memory_dir, cg.memory_v2 = path, True
            if want_cpu:
                cg.cpu_dir, cg.cpu_v2 = path, True
        cg._procs = [str(d / "cgroup.procs") for d in cg.dirs]
        return cg

    def enter(self) -> None:
        """Move the calling process in (called in the child between fork and exec)."""
        for procs in self._procs:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def pids(self) -> list[int]:
        return sorted({int(p) for d in self.dirs for p in _read(d / "cgroup.procs").split()})

    def limit_hit(self) -> bool:
        """The kernel counts refused forks in pids.events ("max N")."""
        if self.pids_dir is None:
            return False
        return _counter(self.pids_dir / "pids.events", "max") > 0

    def oom_kills(self) -> int:
        """How many of the phase's processes the kernel's OOM killer killed for the memory limit."""
        if self.memory_dir is None:
            return 0
        if self.memory_v2:
            return _counter(self.memory_dir / "memory.events", "oom_kill")
        return _counter(self.memory_dir / "memory.oom_control", "oom_kill")

    def cpu_seconds(self) -> float | None:
        """The CPU seconds every process of the phase has used so far (None: no CPU accounting here)."""
        if self.cpu_dir is None:
            return None
        if self.cpu_v2:
            stat = _read(self.cpu_dir / "cpu.stat")
            return _counter(self.cpu_dir / "cpu.stat", "usage_usec") / 1e6 if "usage_usec" in stat else None
        text = _read(self.cpu_dir / "cpuacct.usage").strip()
        return int(text) / 1e9 if text.isdigit() else None

    def remove(self) -> None:
        """rmdir, retried: the kernel may still be tearing down tasks we just killed (EBUSY)."""
        for path in self.dirs:
            _remove(path)
        self.pids_dir = self.memory_dir = self.cpu_dir = None


def _v1_memory(memory_bytes: int) -> tuple[dict[str, str], dict[str, str]]:
    """v1: the limit, then (where swap is accounted) RAM + swap at the same figure, so that tmpfs pages cannot
    leave the limit by being swapped out; swappiness 0 where it is not."""
    value = str(memory_bytes)
    return {"memory.limit_in_bytes": value}, {"memory.memsw.limit_in_bytes": value, "memory.swappiness": "0"}


def _make(path: Path, required: dict[str, str], optional: dict[str, str] | None = None) -> Path | None:
    """mkdir and write the settings; if a required one fails the folder is removed again (None)."""
    _sweep_stale(path.parent)
    try:
        path.mkdir()
    except OSError:
        return None
    for key, value in required.items():
        try:
            (path / key).write_text(value)
        except OSError:
            _remove(path)
            return None
    for key, value in (optional or {}).items():
        with contextlib.suppress(OSError):
            (path / key).write_text(value)
    return path


def _sweep_stale(base: Path) -> None:
    """Remove empty phase cgroups left behind by a harness that was killed before it could (kill -9)."""
    now = time.time()
    try:
        entries = [
            e for e in os.scandir(base) if e.name.startswith(PREFIX) and e.is_dir(follow_symlinks=False)
        ]
    except OSError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            if (
                now - entry.stat().st_mtime > STALE_SECONDS
                and not _read(Path(entry.path) / "cgroup.procs").strip()
            ):
                os.rmdir(entry.path)


def _remove(path: Path) -> None:
    for _ in range(KILL_ROUNDS):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(KILL_ROUND_SLEEP)
    log.warning("could not remove cgroup %s", path)


def _counter(path: Path, key: str) -> int:
    for line in _read(path).splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value.strip())
            except ValueError:
                return 0
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
