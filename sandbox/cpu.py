"""A CPU run's clock: the CPU seconds its training phase has used, which the machine's load cannot move.

On dedicated GPUs the challenge's wall clock is fair; on a shared CPU it hands the machine's load to the score
(a run that shares its cores trains fewer steps in the same wall time). So a run on a CPU slot is given its
budget in CPU seconds of the training phase's whole process tree: train_seconds x its threads (its
OMP_NUM_THREADS; RunSetup.cpu_threads, Budget.train_clock), what those threads use in train_seconds with the
machine to themselves; the kill and the overhead allowance are scaled alike. The trainer stops itself on that
clock (TRAIN_CLOCK=cpu, MAX_CPU_SECONDS), and the harness measures the same clock from outside here, to stop
a trainer that ignores it (sandbox/isolation/process.py's watcher) and to judge over_time (sandbox/runner.py).

Measured, best first: the phase's CPU accounting cgroup (v1 cpuacct.usage, v2 cpu.stat usage_usec;
sandbox/isolation/cgroup.py), which counts every process the phase ever had; else its process tree read from /proc,
each process's user and system time (all its threads) plus what its waited-for children used, the largest sum
seen kept. Without the cgroup a process that leaves the tree is not counted once it has ended: every process of
the phase also gets RLIMIT_CPU at the phase's CPU limit (`rlimit_cpu`), which the kernel enforces by itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

from agentgolf.sandbox.isolation.cgroup import PhaseCgroup

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of /proc/<pid>/stat's times
# Past the phase's CPU limit, the kernel's own stop (RLIMIT_CPU): the watcher, which looks every tenth of a
# second, should always be first; SIGXCPU at the soft limit, SIGKILL a second later.
RLIMIT_SLACK_SECONDS = 2


def rlimit_cpu(limit_seconds: float) -> tuple[int, int]:
    """RLIMIT_CPU (soft, hard) for every process of a phase whose whole tree may use `limit_seconds`."""
    soft = math.ceil(limit_seconds) + RLIMIT_SLACK_SECONDS
    return soft, soft + 1


def process_cpu_seconds(pid: int) -> float:
    """One process's CPU seconds: user and system time of all its threads, and of its children it has waited
    for (/proc/<pid>/stat fields 14-17; also readable while it is a zombie). Raises OSError when it is gone."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces; fields[0] is #3
    try:
        return sum(int(t) for t in fields[11:15]) / CLOCK_TICKS
    except (ValueError, IndexError) as e:
        raise OSError(f"unreadable /proc/{pid}/stat") from e


def tree_cpu_seconds(pids: list[int]) -> float:
    """The CPU seconds of these processes (a phase's living tree) and of the children they reaped."""
    total = 0.0
    for pid in pids:
        try:
            total += process_cpu_seconds(pid)
        except OSError:
            continue  # ended between the listing and the read: its time is in its reaper's
    return total


class CpuMeter:
    """A phase's CPU seconds so far: from its cgroup where it has a CPU accounting one, else its process tree
    (`pids` lists it). Never goes down: a process that ends and is reaped outside the tree leaves the sum."""

    def __init__(self, cgroup: PhaseCgroup | None, pids: Callable[[], list[int]]):
        self.cgroup, self.pids = cgroup, pids
        self.seconds: float | None = None

    @property
    def from_cgroup(self) -> bool:
        return self.cgroup is not None and self.cgroup.cpu_dir is not None

    def read(self, extra: list[int] | None = None) -> float | None:
        """Look once (with `extra` processes, e.g. the top one as a zombie); the largest figure so far."""
        if self.from_cgroup:
            now = self.cgroup.cpu_seconds()
        else:
            now = tree_cpu_seconds(sorted(set(self.pids()) | set(extra or [])))
        if now is not None and (self.seconds is None or now > self.seconds):
            self.seconds = now
        return self.seconds
