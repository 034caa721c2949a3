"""The limits one experiment runs under, enforced from outside the candidate's process."""

from __future__ import annotations

from pydantic import BaseModel, Field

from agentgolf.challenge import SIZE_LIMIT_BYTES, TRAIN_SECONDS


class Budget(BaseModel):
    """Every number the sandbox enforces. The candidate's code never sees or sets these."""

    train_seconds: float = Field(TRAIN_SECONDS, gt=0, description="training window given to the trainer")
    train_grace_seconds: float = Field(
        120.0,
        ge=0,
        description="start-up, compile and export allowance on top of train_seconds before the kill",
    )
    score_seconds: float = Field(600.0, gt=0, description="wall-clock limit of the scoring phase")
    size_bytes: int = Field(SIZE_LIMIT_BYTES, gt=0, description="artifact limit: code bytes + model bytes")
    memory_bytes: int | None = Field(
        32 * 2**30, description="address-space limit per process (None: unlimited; ignored on GPU runs)"
    )
    # Tasks, i.e. processes and threads: 8 torchrun ranks with CUDA, NCCL and inductor compile workers
    # use several hundred; a fork bomb is still stopped long before the machine suffers.
    max_processes: int = Field(2048, gt=0, description="extra processes/threads the candidate may start")
    max_file_bytes: int = Field(4 * 2**30, gt=0, description="largest single file the candidate may write")
    log_bytes: int = Field(4 * 2**20, gt=0, description="cap on captured stdout+stderr per phase")
    metric_tolerance_bpb: float = Field(
        0.002, ge=0, description="self-reported score may beat the harness score by at most this much"
    )

    @property
    def train_kill_seconds(self) -> float:
        return self.train_seconds + self.train_grace_seconds
