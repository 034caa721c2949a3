"""One sandboxed phase: what it is given to run (PhaseSpec) and how it ended (PhaseOutcome)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from agentgolf.sandbox.isolation.limits import Limits


class PhaseSpec(BaseModel):
    """One sandboxed process: argv and cwd as seen inside, host paths bound in, its whole environment."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    ro_binds: list[tuple[Path, Path]] = []  # (host path, path inside)
    rw_binds: list[tuple[Path, Path]] = []
    gpus: list[int] = []  # the slot's GPUs: only their device nodes are bound in (sandbox/isolation/bwrap.py)
    limits: Limits
    log_path: Path
    log_bytes: int
    protocol: bool = False  # stdin/stdout become pipes to the caller; only stderr goes to the log
    hidden: list[Path] = []  # host paths that must not show through a system bind (data, other runs)
    network: bool = False  # only the command proposer's agent gets one (it calls its LLM API)
    disk_paths: list[Path] = []  # host folders it may write, counted against its disk caps


class PhaseOutcome(BaseModel):
    """How one sandboxed process ended: its exit, whether we killed it, and what it ran into."""

    returncode: int | None
    ready: bool  # the sandbox was set up and the candidate's command started
    timed_out: bool  # killed at its wall-clock limit, or at its CPU limit (cpu_timed_out)
    aborted: bool = False  # killed by the harness before it finished, for a reason already decided
    wall_seconds: float
    cpu_seconds: float | None = None  # CPU seconds of the whole tree, where it had a CPU limit (cpu.py)
    cpu_limit_seconds: float | None = None  # that limit (limits.cpu_seconds)
    cpu_timed_out: bool = False  # it used more than that limit and was killed
    signal: int | None = None  # the signal that ended the candidate's top process, if any
    limit_hit: bool = False  # the pids cgroup refused a fork
    survivors: int = 0  # processes that could not be killed (should be 0)
    oom_killed: bool = False  # the kernel's OOM killer killed a member for the phase's memory cgroup limit
    memory_limit_bytes: int | None = None  # that limit (limits.phase_memory_bytes)
    written_bytes: int | None = None  # set when the phase wrote more than a disk cap: what it had
    disk_limit_bytes: int | None = None  # the cap it passed (else limits.disk_bytes)
    disk_limit_from_free: bool = False  # that cap was the free space at its start less the reserve
    disk_free_bytes: int | None = None  # free on its host folders' filesystem at its start (where measured)
    disk_reserve_bytes: int | None = None  # what of that was kept for the harness (limits.disk_reserve_bytes)
    log_error: str | None = None  # harness-side I/O error while writing the log
