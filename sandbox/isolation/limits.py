"""The limits a phase runs under, all enforced from outside the candidate:

- a wall clock for the whole tree (sandbox/isolation/process.py kills it);
- on a CPU-clocked training phase, the CPU seconds of the whole tree (sandbox/cpu.py: measured from outside,
  the watcher kills it past the limit; RLIMIT_CPU at the same limit binds each process by itself);
- rlimits applied in the child before exec, so they bind everything the candidate starts: the core size,
  the largest file (RLIMIT_FSIZE), the task count (RLIMIT_NPROC) and, on CPU runs, each process's address
  space (RLIMIT_AS). As root, RLIMIT_NPROC is not enforced (the kernel exempts uid 0, also inside a user
  namespace), so when running as root the process limit comes from a pids cgroup (sandbox/isolation/cgroup.py);
- the memory of the whole phase, its tmpfs pages included, from a memory cgroup (sandbox/isolation/cgroup.py);
- the bytes the phase writes in all (its writable folders plus the sandbox's /tmp and /dev/shm), measured
  from outside while it runs (`written_bytes`; the watcher in sandbox/isolation/process.py kills it past the cap);
- the bytes it writes to its host folders, also capped at the space free on their filesystem when the phase
  starts, less a reserve the harness keeps for its own writes (`harness_disk_reserve`), so that a candidate
  that fills the disk meets its own limit (`violation`) before the harness meets a full disk. Files it deleted
  but still holds open or mapped count too (`held_deleted_bytes`): no folder lists them, yet they fill the disk.

A limit that cannot be enforced on this machine is named in the result (SandboxResult.limits_not_enforced).
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel, Field

from agentgolf.sandbox.cpu import rlimit_cpu
from agentgolf.sandbox.isolation.cgroup import PhaseCgroup

DISK_RESERVE_BYTES = 64 * 2**20
"""The least room a run keeps free for the harness on its run folder's filesystem, out of reach of the
candidate's disk cap. What the harness still writes there once training has started: the training log and,
after it, the scoring and verifying logs (Budget.log_bytes each, 4 MiB by default), a copy of the trainer and
the artifact in each scoring worker's folder (under Budget.size_bytes each, 16 MB), and result.json (tens of
KiB): about 45 MiB with the default budget, so 64 MiB leaves a third again for block rounding and metadata.
A budget with larger logs or artifacts gets a larger reserve (`harness_disk_reserve`)."""

RESERVE_SLACK_BYTES = 4 * 2**20  # on top of the figured writes: worker scripts, folders, result.json


def harness_disk_reserve(log_bytes: int, size_bytes: int) -> int:
    """The reserve for a run under a budget: three phase logs and two artifact copies (DISK_RESERVE_BYTES says
    what they are) plus slack, never less than DISK_RESERVE_BYTES."""
    return max(DISK_RESERVE_BYTES, 3 * log_bytes + 2 * size_bytes + RESERVE_SLACK_BYTES)


class Limits(BaseModel):
    """Limits applied from outside: a wall clock (and maybe a CPU clock) for the whole tree, and rlimits
    inherited by every child."""

    wall_seconds: float = Field(gt=0)
    cpu_seconds: float | None = Field(None, gt=0)  # CPU seconds of the whole tree (None: no CPU limit)
    max_file_bytes: int = Field(gt=0)
    memory_bytes: int | None = None  # RLIMIT_AS; leave None on GPU runs (CUDA reserves huge address space)
    max_processes: int = Field(gt=0)
    phase_memory_bytes: int | None = Field(None, gt=0)  # the whole phase, tmpfs included (memory cgroup)
    disk_bytes: int | None = Field(None, gt=0)  # bytes written in all: writable folders, /tmp, /dev/shm
    # Kept free on the host folders' filesystem for the harness (see DISK_RESERVE_BYTES): the phase's cap on
    # its host folders is at most the free space at its start less this. Only where disk_bytes is set.
    disk_reserve_bytes: int = Field(DISK_RESERVE_BYTES, ge=0)


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
    cpu = rlimit_cpu(limits.cpu_seconds) if limits.cpu_seconds is not None else None

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if limits.memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        if cpu is not None:
            resource.setrlimit(resource.RLIMIT_CPU, cpu)
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


def free_bytes(paths: Iterable[Path]) -> int:
    """The bytes an unprivileged writer may still write on the filesystems of `paths` (the least of them):
    f_bavail, not f_bfree, so that a cap taken from it is met before either side runs out of blocks, also
    where root may dip into the filesystem's reserved blocks. Raises OSError."""
    free = []
    for path in paths:
        st = os.statvfs(path)
        free.append(st.f_bavail * st.f_frsize)
    if not free:
        raise ValueError("free_bytes: no path given")
    return min(free)


DELETED = " (deleted)"  # how /proc shows a link to a file that no folder lists any more


def held_deleted_bytes(pids: Iterable[int], devices: set[int], mappings: bool = True) -> int:
    """What the files these processes deleted but still hold take on the filesystems `devices`: a file unlinked
    while open (or mapped) keeps its blocks until its last holder lets go, and no folder lists it, so
    `written_bytes` cannot see it. Each inode once; a file still linked somewhere is left to `written_bytes`.
    Read from outside, through /proc/<pid>/fd and (as root) /proc/<pid>/map_files; processes that end
    meanwhile are skipped."""
    if not devices:
        return 0
    seen: set[tuple[int, int]] = set()
    total = 0
    for pid in pids:
        for link in _held_deleted(pid, mappings):
            try:
                st = os.stat(link)  # follows the magic link to the file itself, deleted or not
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink or st.st_dev not in devices or not stat.S_ISREG(st.st_mode) or key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total


def _held_deleted(pid: int, mappings: bool) -> list[str]:
    """The /proc links to the deleted files one process holds: its descriptors and its file mappings."""
    found = []
    fds = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fds)
    except OSError:
        names = []
    for name in names:
        try:
            if os.readlink(f"{fds}/{name}").endswith(DELETED):
                found.append(f"{fds}/{name}")
        except OSError:
            continue
    if mappings:
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    if line.endswith(DELETED + "\n"):
                        found.append(f"/proc/{pid}/map_files/{line.split(' ', 1)[0]}")
        except OSError:
            pass
    return found


def empty_folders(folders: Iterable[Path]) -> None:
    """Delete everything under `folders`, keeping the folders: what a phase wrote past its disk cap is given back
    to the machine. A folder the candidate locked is unlocked first (we own the run folder, as in
    RunSetup.reclaim); links are removed, never followed."""
    for folder in folders:
        try:
            os.chmod(folder, stat.S_IRWXU)
        except OSError:
            continue
        for parent, dirs, _ in os.walk(folder, onerror=lambda e: None):  # top-down: unlock before descending
            for name in dirs:
                path = os.path.join(parent, name)
                try:
                    if not os.path.islink(path):
                        os.chmod(path, stat.S_IRWXU)
                except OSError:
                    continue
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue


def filesystem_used_bytes(path: str) -> int:
    """The bytes in use on the filesystem at `path` (a tmpfs: what its files hold); raises OSError."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize
