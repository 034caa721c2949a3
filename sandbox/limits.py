"""The limits a phase runs under: a wall clock for the whole tree, and rlimits inherited by every child.

rlimits are applied in the child before exec, so they bind everything the candidate starts. As root,
RLIMIT_NPROC is not enforced (the kernel exempts uid 0, also inside a user namespace), so when running as
root the process limit comes from a pids cgroup (sandbox/cgroup.py); without one it is not enforced and we
say so.
"""

from __future__ import annotations

import functools
import os
import resource
import uuid
from collections.abc import Callable

from pydantic import BaseModel, Field

from agentgolf.sandbox.cgroup import PidsCgroup


class Limits(BaseModel):
    """Limits applied from outside: a wall clock for the whole tree, and rlimits inherited by every child."""

    wall_seconds: float = Field(gt=0)
    max_file_bytes: int = Field(gt=0)
    memory_bytes: int | None = None  # RLIMIT_AS; leave None on GPU runs (CUDA reserves huge address space)
    max_processes: int = Field(gt=0)


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
    probe = PidsCgroup.create(f"agentgolf-probe-{uuid.uuid4().hex}", 1)
    if probe is None:
        return False
    probe.remove()
    return True


def make_preexec(limits: Limits, cgroup: PidsCgroup | None) -> Callable[[], None]:
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
