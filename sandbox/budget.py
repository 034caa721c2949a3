"""The limits one experiment runs under, enforced from outside the candidate's process."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from agentgolf.challenge import SIZE_LIMIT_BYTES, TRAIN_SECONDS
from agentgolf.sandbox.result import SandboxResult
from agentgolf.sandbox.scoring.verify import VerifyConfig


class Budget(BaseModel):
    """Every number the sandbox enforces. The candidate's code never sees or sets these."""

    train_seconds: float = Field(TRAIN_SECONDS, gt=0, description="training window given to the trainer")
    train_clock: Literal["auto", "wall", "cpu"] = Field(
        "auto",
        description="what training time is counted on. 'wall': the challenge's wall clock. 'cpu': CPU seconds "
        "of the training phase's whole process tree, train_seconds x the run's threads (OMP_NUM_THREADS, else "
        "the cores it may run on), which the load of a shared machine cannot move (sandbox/cpu.py); the kill "
        "and the overhead allowance scale the same way, and a wall-clock kill stays behind them "
        "(cpu_wall_factor). 'auto': 'cpu' for a CPU run given a thread count (every CPU slot of the local "
        "executor), else 'wall'. GPU runs always keep the wall clock",
    )
    train_grace_seconds: float | None = Field(
        None,
        ge=0,
        description="how long past train_seconds the training phase is killed (timeout): the only limit the "
        "baseline and its calibration seeds are judged by, and the bound of every overhead allowance. None: "
        "cpu_grace_seconds, or gpu_grace_seconds when the run uses GPUs (for_gpus)",
    )
    cpu_grace_seconds: float = Field(120.0, ge=0, description="the grace of a CPU run, where none is set")
    gpu_grace_seconds: float = Field(
        300.0,
        ge=0,
        description="the grace of a GPU run, where none is set: a cold compile there costs 100-130 s "
        "before training and after it (an H100), so a 120 s grace kills the baseline itself",
    )
    cpu_wall_factor: float = Field(
        3.0,
        ge=1.0,
        description="on the CPU clock, the wall-clock kill behind the CPU limit comes at this many times "
        "train_seconds + train_grace_seconds: load stretches such a run's wall time, not its CPU time, so only a "
        "run stuck or starved that long is killed (timeout)",
    )
    train_overhead_seconds: float | None = Field(
        60.0,
        ge=0,
        description="how far past train_seconds a finished training phase may run before it is over_time "
        "(start-up, compile, export); None: the whole grace. Only the default: a run sets it, per rung, to "
        "what its baseline runs measured plus overhead_margin_seconds, up or down (never past the grace)",
    )
    overhead_margin_seconds: float = Field(
        10.0, ge=0, description="margin on top of the baseline runs' measured overhead"
    )
    score_seconds: float = Field(600.0, gt=0, description="wall-clock limit of the scoring phase")
    load_allowance_seconds: float | None = Field(
        None,
        ge=0,
        description="how long a scoring worker may take from its start to ready (load_model) before the "
        "result is over_time; None: only score_seconds bounds it. Set from the baseline's own load time",
    )
    predict_allowance_seconds_per_token: float | None = Field(
        None,
        ge=0,
        description="scoring time per validation token (predict requests; stream mode's adapt excluded) past "
        "which the result is over_time; None: only score_seconds bounds it. Set from the baseline's",
    )
    scoring_margin_fraction: float = Field(
        0.5, ge=0, description="share added to the baseline's load and predict times for the allowances"
    )
    scoring_margin_seconds: float = Field(
        5.0, ge=0, description="seconds added to the baseline's load and predict times for the allowances"
    )
    size_bytes: int = Field(SIZE_LIMIT_BYTES, gt=0, description="artifact limit: code bytes + model bytes")
    memory_bytes: int | None = Field(
        32 * 2**30, description="address-space limit per process (None: unlimited; ignored on GPU runs)"
    )
    phase_memory_bytes: int | None = Field(
        64 * 2**30,
        gt=0,
        description="RAM of a whole phase, GPU runs included: all its processes plus the files it writes to "
        "/tmp and /dev/shm, which are RAM (a memory cgroup; None: no limit). Past it the kernel kills: oom",
    )
    disk_bytes: int = Field(
        16 * 2**30,
        gt=0,
        description="bytes a phase may write in all: its run folder plus /tmp and /dev/shm (each of those two "
        "is also capped at this by itself). Past it the phase is stopped: violation",
    )
    # Tasks, i.e. processes and threads: 8 torchrun ranks with CUDA, NCCL and inductor compile workers
    # use several hundred; a fork bomb is still stopped long before the machine suffers.
    max_processes: int = Field(2048, gt=0, description="extra processes/threads the candidate may start")
    max_file_bytes: int = Field(4 * 2**30, gt=0, description="largest single file the candidate may write")
    log_bytes: int = Field(4 * 2**20, gt=0, description="cap on captured stdout+stderr per phase")
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="how the score is cross-checked")
    metric_tolerance_bpb: float = Field(
        0.002, ge=0, description="self-reported score may beat the harness score by at most this much"
    )

    def for_gpus(self, gpus: bool) -> Budget:
        """This budget on a run's devices: an unset grace becomes gpu_grace_seconds (GPUs) or
        cpu_grace_seconds; a set one stays."""
        if self.train_grace_seconds is not None:
            return self
        grace = self.gpu_grace_seconds if gpus else self.cpu_grace_seconds
        return self.model_copy(update={"train_grace_seconds": grace})

    @property
    def grace_seconds(self) -> float:
        """The grace in force (a budget never given its devices counts as a CPU one's)."""
        return self.cpu_grace_seconds if self.train_grace_seconds is None else self.train_grace_seconds

    @property
    def train_kill_seconds(self) -> float:
        return self.train_seconds + self.grace_seconds

    def wall_kill_seconds(self, cpu_clock: bool) -> float:
        """When the training phase is killed by the wall clock: train_kill_seconds, or on the CPU clock
        cpu_wall_factor times that, behind its CPU limit."""
        return self.train_kill_seconds * (self.cpu_wall_factor if cpu_clock else 1.0)

    @property
    def train_allowed_seconds(self) -> float:
        """The longest a training phase may take and still count: the kill comes later, so it shows numbers."""
        grace = self.grace_seconds
        overhead = grace if self.train_overhead_seconds is None else self.train_overhead_seconds
        return self.train_seconds + min(overhead, grace)

    def cpu_seconds(self, seconds: float, threads: int) -> float:
        """A CPU-clocked run's figure for a wall-clock one (train_seconds, the kill, the allowance): the CPU
        seconds its `threads` would use in that time with the machine to themselves (sandbox/cpu.py)."""
        return seconds * threads

    def limits_only(self) -> Budget:
        """The budget a baseline run is judged by, before and while it measures the allowances: the kill
        limits only (the grace, score_seconds), no overhead, load or predict allowance."""
        return self.model_copy(
            update={
                "train_overhead_seconds": None,
                "load_allowance_seconds": None,
                "predict_allowance_seconds_per_token": None,
            }
        )

    def with_measured_overhead(self, baseline_phase_seconds: float) -> Budget:
        """The allowance set to what the baseline needed beyond train_seconds, plus a margin: up or down
        from the default, never past the grace (train_allowed_seconds). A baseline that stopped before its
        wall-clock cap (a step-capped CPU run) measured nothing, and changes nothing."""
        measured = baseline_phase_seconds - self.train_seconds
        if measured <= 0:
            return self
        return self.model_copy(update={"train_overhead_seconds": measured + self.overhead_margin_seconds})

    def with_measured(self, timing: Timing) -> Budget:
        """Every allowance set from what the baseline itself needed, plus the margins: no candidate may buy
        training in the start-up allowance, nor train while it loads, nor spend more eval than it may."""
        b = (
            self
            if timing.train_phase_seconds is None
            else self.with_measured_overhead(timing.train_phase_seconds)
        )
        grow = 1.0 + self.scoring_margin_fraction
        update: dict[str, float] = {}
        if timing.load_seconds is not None:
            update["load_allowance_seconds"] = timing.load_seconds * grow + self.scoring_margin_seconds
        if timing.predict_seconds is not None and timing.val_tokens:
            update["predict_allowance_seconds_per_token"] = timing.predict_seconds * grow / timing.val_tokens
        return b.model_copy(update=update)

    def predict_allowed_seconds(self, val_tokens: int) -> float | None:
        """The scoring time (predict requests) allowed for `val_tokens` targets, or None: no bound."""
        per_token = self.predict_allowance_seconds_per_token
        return None if per_token is None else per_token * val_tokens + self.scoring_margin_seconds


class Timing(BaseModel):
    """What one run measured of itself: a baseline's becomes the yardstick of the allowances above."""

    train_phase_seconds: float | None = None  # the training phase on its clock (train_clock_seconds)
    load_seconds: float | None = None  # the scoring worker, start to ready (load_model done)
    predict_seconds: float | None = None  # the scoring worker's predict requests, adapt excluded
    val_tokens: int | None = None  # the targets those predictions scored

    @classmethod
    def of(cls, result: SandboxResult) -> Timing:
        return cls(
            train_phase_seconds=result.train_clock_seconds,
            load_seconds=result.load_seconds,
            predict_seconds=result.predict_seconds,
            val_tokens=result.val_tokens,
        )
