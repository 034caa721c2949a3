"""The limits one experiment runs under, enforced from outside the candidate's process."""

from __future__ import annotations

from pydantic import BaseModel, Field

from agentgolf.challenge import SIZE_LIMIT_BYTES, TRAIN_SECONDS
from agentgolf.sandbox.verify import VerifyConfig


class Budget(BaseModel):
    """Every number the sandbox enforces. The candidate's code never sees or sets these."""

    train_seconds: float = Field(TRAIN_SECONDS, gt=0, description="training window given to the trainer")
    train_grace_seconds: float = Field(
        120.0,
        ge=0,
        description="how long past train_seconds the training phase is killed (at least the overhead)",
    )
    train_overhead_seconds: float | None = Field(
        60.0,
        ge=0,
        description="how far past train_seconds a finished training phase may run before it is over_time "
        "(start-up, compile, export); None: the whole grace. The loop lowers it to the baseline's own "
        "measured overhead plus overhead_margin_seconds",
    )
    overhead_margin_seconds: float = Field(
        10.0, ge=0, description="margin on top of the baseline's measured overhead"
    )
    score_seconds: float = Field(600.0, gt=0, description="wall-clock limit of the scoring phase")
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

    @property
    def train_kill_seconds(self) -> float:
        return self.train_seconds + self.train_grace_seconds

    @property
    def train_allowed_seconds(self) -> float:
        """The longest a training phase may take and still count: the kill comes later, so it shows numbers."""
        overhead = (
            self.train_grace_seconds if self.train_overhead_seconds is None else self.train_overhead_seconds
        )
        return self.train_seconds + min(overhead, self.train_grace_seconds)

    def with_measured_overhead(self, baseline_phase_seconds: float) -> Budget:
        """The allowance cut to what the baseline needed beyond train_seconds, plus a margin. A baseline that
        stopped before its wall-clock cap (a step-capped CPU run) measured nothing, and changes nothing."""
        measured = baseline_phase_seconds - self.train_seconds
        if measured <= 0:
            return self
        allowed = min(
            self.train_allowed_seconds - self.train_seconds, measured + self.overhead_margin_seconds
        )
        return self.model_copy(update={"train_overhead_seconds": allowed})
