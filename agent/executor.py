"""Where an experiment's two sandboxed phases run: on this machine, or as a SLURM job.

The scheduler sees one interface and never asks which: slots to fill, run one experiment, re-attach
to or release what a previous loop left in flight. `cancel` stops one wherever it runs. `executor_for` picks the implementation
from the workspace's `executor` setting.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

from agentgolf.agent.processes import kill_leftovers, record_pid
from agentgolf.errors import AgentgolfError
from agentgolf.sandbox import slurm
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.result import DataSpec, SandboxResult
from agentgolf.sandbox.runner import run_sandboxed

Slot = list[int] | None  # the GPU ids an experiment holds (None: a CPU slot, or SLURM's choice)


class Executor(Protocol):
    def slots(self, gpus: list[int] | None, per_experiment: int | None) -> list[Slot]:
        """The experiments that may be in flight at once, each with what it holds."""

    def run(
        self, trainer: Path, run_dir: Path, seed: int, env: dict[str, str], slot: Slot, budget: Budget
    ) -> SandboxResult:
        """Train and score one experiment; blocks (in a worker thread) until it has a result."""

    def in_flight(self, run_dir: Path) -> bool:
        """Whether a previous loop's experiment is still running on its own (a queued or running job)."""

    def release(self, run_dir: Path) -> None:
        """The loop goes down with this experiment in flight: stop what must not outlive the loop."""

    def facts(self, run_dir: Path) -> dict[str, Any]:
        """Provenance the executor learned while running it (job id, node, queue wait), for the manifest."""


class LocalConfig(BaseModel):
    """This machine's slots when it has no GPU."""

    cpu_slots: int = Field(
        1,
        ge=1,
        description="experiments in flight at once on a CPU-only machine; each trains with its share of "
        "the cores (OMP_NUM_THREADS), so a slot's result does not depend on how busy the others are",
    )


class LocalExecutor:
    """Both phases as subprocesses of this machine, one experiment per GPU group (or per CPU slot)."""

    def __init__(self, data: DataSpec, config: LocalConfig | None = None):
        self.data, self.config = data, config or LocalConfig()

    def threads(self) -> int:
        """Cores per CPU slot (at least one)."""
        return max(1, (os.cpu_count() or 1) // self.config.cpu_slots)

    def slots(self, gpus: list[int] | None, per_experiment: int | None) -> list[Slot]:
        if not gpus:
            return [None] * self.config.cpu_slots
        k = per_experiment or len(gpus)
        if k < 1 or k > len(gpus) or len(gpus) % k:
            raise AgentgolfError(f"--gpus-per-experiment {k} must divide the {len(gpus)} configured GPU(s)")
        return [gpus[i : i + k] for i in range(0, len(gpus), k)]

    def run(
        self, trainer: Path, run_dir: Path, seed: int, env: dict[str, str], slot: Slot, budget: Budget
    ) -> SandboxResult:
        if slot is None and "OMP_NUM_THREADS" not in env:
            env = {**env, "OMP_NUM_THREADS": str(self.threads())}  # the slot's share of the cores
        return run_sandboxed(
            trainer,
            run_dir,
            self.data,
            budget,
            env=env,
            seed=seed,
            gpus=slot,
            on_start=lambda pid: record_pid(run_dir, pid),
        )

    def in_flight(self, run_dir: Path) -> bool:
        return False  # local phases die with the loop (or are killed by `release` on resume)

    def release(self, run_dir: Path) -> None:
        kill_leftovers(run_dir)

    def facts(self, run_dir: Path) -> dict[str, Any]:
        return {}


class SlurmExecutor:
    """Each experiment as a SLURM job running the same sandboxed phases on a node; jobs outlive the loop."""

    def __init__(self, data: DataSpec, config: slurm.SlurmConfig, stopping: threading.Event):
        self.data, self.config, self.stopping = data, config, stopping

    def slots(self, gpus: list[int] | None, per_experiment: int | None) -> list[Slot]:
        return [None] * self.config.max_concurrent  # SLURM places each job; we bound how many are in flight

    def run(
        self, trainer: Path, run_dir: Path, seed: int, env: dict[str, str], slot: Slot, budget: Budget
    ) -> SandboxResult:
        job = slurm.reusable_job(run_dir) or slurm.submit(
            trainer, run_dir, self.data, budget, env, seed, self.config
        )
        return slurm.wait(job, run_dir, self.stopping, self.config)

    def in_flight(self, run_dir: Path) -> bool:
        return slurm.live_job(run_dir) is not None

    def release(self, run_dir: Path) -> None:
        if not (run_dir / slurm.JOB_FILE).exists():  # submitted jobs live on; --resume re-attaches
            kill_leftovers(run_dir)

    def facts(self, run_dir: Path) -> dict[str, Any]:
        return slurm.queue_facts(run_dir)


def cancel(run_dir: Path) -> None:
    """The user cancels an experiment: its SLURM job if it has a live one, else its local phases."""
    job = slurm.live_job(run_dir)
    if job:
        slurm.cancel([job])
    else:
        kill_leftovers(run_dir)


def executor_for(
    kind: str,
    data: DataSpec,
    config: slurm.SlurmConfig,
    stopping: threading.Event,
    local: LocalConfig | None = None,
) -> Executor:
    if kind == "slurm":
        return SlurmExecutor(data, config, stopping)
    return LocalExecutor(data, local)
