"""The limits a phase runs under, all enforced from outside the candidate:

- a wall clock for the whole tree (sandbox/process.py kills it);
- rlimits applied in the child before exec, so they bind everything the candidate starts: the core size,
  the largest file (RLIMIT_FSIZE), the task count (RLIMIT_NPROC) and, on CPU runs, each process's address
  space (RLIMIT_AS). As root, RLIMIT_NPROC is not enforced (the kernel exempts uid 0, also inside a user
  namespace), so when running as root the process limit comes from a pids cgroup (sandbox/cgroup.py);
- the memory of the whole phase, its tmpfs pages included, from a memory cgroup (sandbox/cgroup.py);
- the bytes the phase writes in all (its writable folders plus the sandbox's /tmp and /dev/shm), measured
  from outside while it runs (`written_bytes`; the watcher in sandbox/process.py kills it past the cap).

A limit that cannot be enforced on this machine is named in the result (SandboxResult.limits_not_enforced).
"""

from __future__ import annotations

import functools
import os
import resource
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from agentgolf.sandbox.cgroup import PhaseCgroup


class Limits(BaseModel):
    """Limits applied from outside: a wall clock for the whole tree, and rlimits inherited by every child."""

    wall_seconds: float = Field(gt=0)
    max_file_bytes: int = Field(gt=0)
    memory_bytes: int | None = None  # RLIMIT_AS; leave None on GPU runs (CUDA reserves huge address space)
    max_processes: int = Field(gt=0)
    phase_memory_bytes: int | None = Field(None, gt=0)  # the whole phase, tmpfs included (memory cgroup)
    disk_bytes: int | None = Field(None, gt=0)  # bytes written in all: writable folders, /tmp, /dev/shm


def count_user_tasks(uid: int) -> int:
    """Tasks (processes and threads) this uid owns now: RLIMIT_NPROC counts them all."""
    n = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                n += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            continue
    return n


@functools.lru_cache(maxsize=1)
def process_limit_enforced() -> bool:
    """RLIMIT_NPROC binds every uid but root; root needs a pids cgroup we are allowed to create."""
    if os.getuid() != 0:
        return True
    probe = PhaseCgroup.create(f"agentgolf-probe-{uuid.uuid4().hex}", 1, None)
    made = probe.pids_dir is not None
    probe.remove()
    return made


def make_preexec(limits: Limits, cgroup: PhaseCgroup | None) -> Callable[[], None]:
    """rlimits and cgroup membership, applied in the child before exec so every descendant inherits them."""
    nproc = count_user_tasks(os.getuid()) + limits.max_processes

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if limits.memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        if cgroup is not None:
            cgroup.enter()

    return preexec


MIN_ENTRY_BYTES = 4096  # a file or folder costs at least a block and an inode, even when empty


def written_bytes(folders: list[Path], stop_above: int | None = None) -> int:
    """What the files under `folders` take on disk: allocated blocks (a sparse file costs what it holds),
    each inode once (hard links), every entry at least MIN_ENTRY_BYTES (so a flood of empty files counts).
    Links are not followed; a folder locked against us is unlocked (we own the run folder, as in
    RunSetup.reclaim). Stops counting once above `stop_above`."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(f) for f in folders]
    while stack:
        folder = stack.pop()
        try:
            entries = os.scandir(folder)
        except PermissionError:  # a folder the candidate locked (chmod 000) hides nothing: open it again
            try:
                os.chmod(folder, stat.S_IMODE(os.lstat(folder).st_mode) | stat.S_IRWXU)
                entries = os.scandir(folder)
            except OSError:
                continue
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += max(st.st_blocks * 512, MIN_ENTRY_BYTES)
                if stop_above is not None and total > stop_above:
                    return total
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return total


def filesystem_used_bytes(path: str) -> int:
    """The bytes in use on the filesystem at `path` (a tmpfs: what its files hold); raises OSError."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize
