"""What one sandboxed experiment produced: a status from a fixed taxonomy, the numbers, and why."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import BaseModel


class Status(str, Enum):
    ok = "ok"
    crash = "crash"  # the trainer exited non-zero or wrote no artifact
    oom = "oom"  # out of host or GPU memory
    nan = "nan"  # non-finite loss or logits
    timeout = "timeout"  # a phase ran past its wall-clock (or CPU-clock) limit and was killed
    over_time = "over_time"  # training finished past train_seconds + its overhead allowance, on its clock
    over_size = "over_size"  # code + model bytes above the size budget
    metric_mismatch = (
        "metric_mismatch"  # the trainer's printed score beats the harness's by more than tolerance
    )
    violation = "violation"  # broke a rule: non-causal model, process limit, forbidden access
    infra_error = "infra_error"  # the machine failed, not the idea: retry without charging it

    @property
    def charges_idea(self) -> bool:
        return self is not Status.infra_error


class DataSpec(BaseModel):
    """Where the data lives on the host; the sandbox decides what each phase may see."""

    train_files: list[Path]
    val_files: list[Path]
    tokenizer: Path
    vocab_size: int


class SandboxResult(BaseModel):
    status: Status
    reason: str = ""
    val_bpb: float | None = None  # the harness's score: the only one the ledger trusts
    val_loss: float | None = None
    self_val_bpb: float | None = None  # what the trainer printed, for comparison
    artifact_bytes: int | None = None  # code + model
    code_bytes: int | None = None
    trainer_sha256: str | None = None  # of the trainer file the sandbox read and ran (runner.py)
    model_bytes: int | None = None
    train_seconds: float | None = None  # wall time of the training phase
    train_clock: str = "wall"  # the clock its training budget was on: "wall", or "cpu" (sandbox/cpu.py)
    train_cpu_seconds: float | None = None  # CPU seconds of the training phase's tree (CPU clock only)
    train_threads: int | None = None  # the thread count its CPU budget was figured for (CPU clock only)
    score_seconds: float | None = None  # the scoring worker, from start to exit
    verify_seconds: float | None = None  # what verification adds after scoring: its requests and exit
    load_seconds: float | None = None  # the scoring worker from its start to ready (load_model done)
    predict_seconds: float | None = (
        None  # the scoring worker's predict requests (stream mode: adapt excluded)
    )
    wall_seconds: float = 0.0
    steps: int | None = None
    step_ms: float | None = None  # the trainer's last logged mean step time
    init_hash: str = ""  # the hash of its initial weights the trainer logged (paired rounds compare them)
    val_tokens: int | None = None  # targets the harness scored: every one of the stream's N - 1
    val_bytes: int | None = None  # their bytes, from the harness's ByteTable
    isolation: str = "none"  # "bwrap" or "none"
    # Limits this machine could not enforce, one line each, named first ("memory limit: ..."); also in reason.
    limits_not_enforced: list[str] = []
    trust: str = "harness"  # "harness" or "self_reported"
    log_tail: str = ""
    run_dir: Path | None = None
    verification: dict | None = None  # sandbox.verify.Verification: the cross-check's numbers
    eval_mode: dict | None = (
        None  # sandbox.layout.EvalMode: the eval mode the model declared and was scored by
    )

    def clock_facts(self) -> dict:
        """How its training was clocked, for the manifest: the clock, and on the CPU clock its CPU figures."""
        return {
            "train_clock": self.train_clock,
            "cpu_seconds": self.train_cpu_seconds,
            "threads": self.train_threads,
        }

    @property
    def train_clock_seconds(self) -> float | None:
        """The training phase on its own clock, in train_seconds' unit: its wall seconds, or on the CPU clock
        its CPU seconds over its threads (what it would have taken on its threads with the machine to itself)."""
        if self.train_clock == "cpu" and self.train_cpu_seconds is not None and self.train_threads:
            return self.train_cpu_seconds / self.train_threads
        return self.train_seconds
