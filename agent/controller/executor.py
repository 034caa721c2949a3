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

from agentgolf.agent.controller.processes import kill_leftovers, record_pid
from agentgolf.errors import AgentgolfError
from agentgolf.sandbox import slurm
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.isolation.compile_cache import CompileCache
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
    """This machine's slots: how many when it has no GPU, and what each GPU slot is given."""

    cpu_slots: int = Field(
        1,
        ge=1,
        description="experiments in flight at once on a CPU-only machine; each trains with its share of "
        "the cores (OMP_NUM_THREADS), so a slot's result does not depend on how busy the others are",
    )
    compile_cache: bool = Field(
        True,
        description="train with a warm compile cache: built once from the baseline's own training "
        "(.agentgolf/compile-cache/<torch version>), a private copy in each training phase "
        "(sandbox/isolation/compile_cache.py). A trainer that compiles nothing (the CPU preset) leaves none",
    )


# Set for every GPU rank to its share of the cores, unless trainer_env sets them: OMP's pools and Inductor's
# compile workers otherwise start one per core in every rank of every slot at once.
GPU_THREAD_VARS = ("OMP_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS")


class LocalExecutor:
    """Both phases as subprocesses of this machine, one experiment per GPU group (or per CPU slot)."""

    def __init__(
        self,
        data: DataSpec,
        config: LocalConfig | None = None,
        cache: CompileCache | None = None,
        stopping: threading.Event | None = None,
    ):
        self.data, self.config = data, config or LocalConfig()
        self.cache = cache if self.config.compile_cache else None
        self.stopping = stopping  # set when the loop goes down: a phase starting after that is killed at once
        self.gpu_slots = 1  # how many GPU slots share this machine's cores (set by `slots`)

    def threads(self) -> int:
        """Cores per CPU slot (at least one)."""
        return max(1, (os.cpu_count() or 1) // self.config.cpu_slots)

    def gpu_threads(self, slot: list[int]) -> int:
        """Cores per rank of a GPU slot: the cores ÷ the GPU slots, split among the slot's ranks (at least one)."""
        return max(1, (os.cpu_count() or 1) // (self.gpu_slots * max(1, len(slot))))

    def slots(self, gpus: list[int] | None, per_experiment: int | None) -> list[Slot]:
        if not gpus:
            return [None] * self.config.cpu_slots
        k = per_experiment or len(gpus)
        if k < 1 or k > len(gpus) or len(gpus) % k:
            raise AgentgolfError(f"--gpus-per-experiment {k} must divide the {len(gpus)} configured GPU(s)")
        self.gpu_slots = len(gpus) // k
        return [gpus[i : i + k] for i in range(0, len(gpus), k)]

    def run(
        self, trainer: Path, run_dir: Path, seed: int, env: dict[str, str], slot: Slot, budget: Budget
    ) -> SandboxResult:
        if slot is None and "OMP_NUM_THREADS" not in env:
            env = {**env, "OMP_NUM_THREADS": str(self.threads())}  # the slot's share of the cores
        if slot:
            share = str(self.gpu_threads(slot))
            env = {**{key: share for key in GPU_THREAD_VARS}, **env}  # trainer_env wins
        use = self.cache.use_for(Path(trainer).read_bytes()) if self.cache else None
        result = run_sandboxed(
            trainer,
            run_dir,
            self.data,
            budget,
            env=env,
            seed=seed,
            gpus=slot,
            on_start=lambda pid: self._started(run_dir, pid),
            compile_cache=use,
        )
        if self.cache is not None:
            self.cache.finish(use, result)  # a trusted build that ended well becomes the template
        return result

    def _started(self, run_dir: Path, pid: int) -> None:
        """A phase is up: recorded for `release`; and killed now if the loop is already going down (its
        kills ran before this phase began: a scoring phase after a training that had just ended, say)."""
        record_pid(run_dir, pid)
        if self.stopping is not None and self.stopping.is_set():
            kill_leftovers(run_dir)

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
    cache: CompileCache | None = None,
) -> Executor:
    """`cache`: the workspace's compile cache, for the local executor (LocalConfig.compile_cache)."""
    if kind == "slurm":
        return SlurmExecutor(data, config, stopping)
    return LocalExecutor(data, local, cache, stopping)
