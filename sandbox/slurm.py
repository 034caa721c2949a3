"""Run one experiment as a SLURM job through submitit: the same two sandboxed phases, on a cluster node.

The job calls `run_sandboxed` on the node, so budgets, statuses and the ledger row are the same as on
this machine; the training clock starts when the job starts, so queue wait never counts against it.
The job's id is written to the run folder (on the shared filesystem) as soon as it is submitted, so
a restarted loop re-attaches to a job still queued or running instead of submitting it twice.

Job states are read from `scontrol`/`squeue`, which need no accounting database; submitit submits the
job and carries its result back.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agentgolf.errors import AgentgolfError
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.isolation import bwrap
from agentgolf.sandbox.result import DataSpec, SandboxResult, Status

JOB_FILE = "slurm_job.json"  # {"job_id", "submitted_at"}, written right after submission
STARTED_FILE = "slurm_started"  # written by the job when it starts on its node
ALIVE = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "RESIZING",
    "UNREACHABLE",
}
RESULT_FILE = "result.json"  # written by run_sandboxed on the node, into the shared run folder
JOB_GPU_VARS = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS")  # where a node lists the job's GPUs, first wins


class SlurmConfig(BaseModel):
    """Where and how experiments are submitted; the workspace config holds one of these."""

    partition: str | None = None
    gpus_per_experiment: int = Field(0, ge=0, description="GPUs per job (0: a CPU job)")
    cpus_per_experiment: int = Field(1, ge=1)
    mem_gb: int | None = Field(None, ge=1)
    max_concurrent: int = Field(1, ge=1, description="experiments in flight at once")
    extra: dict[str, Any] = Field(default_factory=dict, description="more submitit slurm_* parameters")
    poll_seconds: float = Field(2.0, gt=0, description="how often a job's state is read from SLURM")
    grace_seconds: float = Field(
        300.0, ge=0, description="job time limit beyond the phases' budgets: start-up and result hand-back"
    )
    result_wait_seconds: float = Field(
        30.0, ge=0, description="how long a shared filesystem may take to show a finished job's result"
    )


class JobGpuError(AgentgolfError, RuntimeError):
    """The node's list of the job's GPUs cannot be turned into device indices: the machine's fault."""


def job_gpus(environ: dict[str, str] | None = None) -> list[int]:
    """The GPUs SLURM gave this job, as nvidia-smi's indices on this node (what a slot names).

    Read from CUDA_VISIBLE_DEVICES, else SLURM_JOB_GPUS. Indices are taken as they are; GPU UUIDs ("GPU-...",
    which some nodes list instead) are mapped through nvidia-smi (sandbox/isolation/bwrap.py: nvidia_smi_gpus). A MIG
    instance ("MIG-...") cannot be a slot: the sandbox gives a slot whole GPUs. Raises JobGpuError, one
    line, when the list is empty or an id cannot be mapped: the job must not train on the CPU instead."""
    env = os.environ if environ is None else environ
    source = next((k for k in JOB_GPU_VARS if env.get(k, "").strip()), None)
    if source is None:
        raise JobGpuError(f"the job asked for GPUs but {' and '.join(JOB_GPU_VARS)} list none")
    ids = [d.strip() for d in env[source].split(",") if d.strip()]
    if all(d.isdigit() for d in ids):
        return [int(d) for d in ids]
    mig = [d for d in ids if d.startswith("MIG-")]
    if mig:
        raise JobGpuError(f"{source} lists MIG instance(s) ({mig[0]}): slots of whole GPUs only, no MIG")
    table = bwrap.nvidia_smi_gpus()
    by_uuid = {dev.uuid: index for index, dev in table.items() if dev.uuid}
    devices = []
    for d in ids:
        if d.isdigit():
            devices.append(int(d))
        elif d in by_uuid:
            devices.append(by_uuid[d])
        else:
            known = "nvidia-smi lists none" if not table else f"nvidia-smi lists {len(table)} other GPU(s)"
            raise JobGpuError(f"{source} names GPU {d!r}, which this node cannot map to an index ({known})")
    return devices


def job_entry(trainer: str, run_dir: str, data: dict, budget: dict, env: dict, seed: int, gpus: int) -> dict:
    """What runs on the node: note the start, then the ordinary sandboxed experiment on this node's GPUs.
    GPUs the node lists in a form that cannot be mapped end the job `infra_error` before any training."""
    from agentgolf.sandbox.runner import run_sandboxed

    with open(Path(run_dir) / STARTED_FILE, "a") as f:  # appended: a requeued job shows each start
        f.write(f"{time.time()} {os.uname().nodename}\n")
    try:
        devices = job_gpus() if gpus else None
    except JobGpuError as e:
        failed = SandboxResult(status=Status.infra_error, reason=str(e))
        (Path(run_dir) / RESULT_FILE).write_text(failed.model_dump_json(indent=2) + "\n")
        return failed.model_dump(mode="json")
    result = run_sandboxed(
        Path(trainer),
        Path(run_dir),
        DataSpec.model_validate(data),
        Budget.model_validate(budget),
        env=env,
        seed=seed,
        gpus=devices,
    )
    return result.model_dump(mode="json")


def submit(
    trainer: Path,
    run_dir: Path,
    data: DataSpec,
    budget: Budget,
    env: dict[str, str],
    seed: int,
    cfg: SlurmConfig,
) -> str:
    import submitit

    (run_dir / RESULT_FILE).unlink(missing_ok=True)  # only this job's own result may be read back
    executor = submitit.AutoExecutor(folder=run_dir / "slurm", cluster="slurm")
    # a CPU-clocked run (sandbox/cpu.py) may take longer than its wall clock's kill: its own kill is later
    clocked = budget.train_clock != "wall" and ("OMP_NUM_THREADS" in env or budget.train_clock == "cpu")
    train_kill = budget.wall_kill_seconds(cpu_clock=clocked and not cfg.gpus_per_experiment)
    params: dict[str, Any] = {
        "timeout_min": int((train_kill + budget.score_seconds + cfg.grace_seconds) / 60) + 1,
        "slurm_job_name": f"agentgolf-{run_dir.name}",
        "cpus_per_task": cfg.cpus_per_experiment,
        "nodes": 1,
        "tasks_per_node": 1,
        **({"slurm_partition": cfg.partition} if cfg.partition else {}),
        **({"gpus_per_node": cfg.gpus_per_experiment} if cfg.gpus_per_experiment else {}),
        **({"mem_gb": cfg.mem_gb} if cfg.mem_gb else {}),
        **cfg.extra,
    }
    executor.update_parameters(**params)
    job = executor.submit(
        job_entry,
        str(trainer),
        str(run_dir),
        data.model_dump(mode="json"),
        budget.model_dump(mode="json"),
        env,
        seed,
        cfg.gpus_per_experiment,
    )
    record = {"job_id": str(job.job_id), "submitted_at": time.time(), "gpus": cfg.gpus_per_experiment}
    (run_dir / JOB_FILE).write_text(json.dumps(record))
    return str(job.job_id)


def job_state(job_id: str, tries: int = 3, pause: float = 2.0) -> str:
    """SLURM's state of a job ('RUNNING', 'COMPLETED', 'CANCELLED', ...); 'UNKNOWN' once SLURM has forgotten
    it; 'UNREACHABLE' when the controller does not answer (a brief outage is not the end of a job)."""
    for attempt in range(tries):
        proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
        for field in proc.stdout.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        if "Invalid job id" in proc.stderr:
            return "UNKNOWN"
        if attempt + 1 < tries:
            time.sleep(pause)
    return "UNREACHABLE"


def live_job(run_dir: Path) -> str | None:
    """The id of this run folder's job if SLURM still has it queued or running (for --resume)."""
    try:
        job_id = json.loads((run_dir / JOB_FILE).read_text())["job_id"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None
    return job_id if job_state(job_id) in ALIVE else None


def reusable_job(run_dir: Path) -> str | None:
    """The run folder's job if it is still queued or running, or finished cleanly with its result on disk:
    a restarted loop waits on (or reads) it instead of submitting the experiment again."""
    try:
        job_id = json.loads((run_dir / JOB_FILE).read_text())["job_id"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None
    state = job_state(job_id)
    if state in ALIVE:
        return job_id
    finished = state in ("COMPLETED", "UNKNOWN")  # UNKNOWN: SLURM forgot it (MinJobAge); the file tells
    return job_id if finished and (run_dir / RESULT_FILE).exists() else None


def wait(
    job_id: str, run_dir: Path, stop: threading.Event | None = None, cfg: SlurmConfig | None = None
) -> SandboxResult:
    """Block until the job ends; a job SLURM killed (scancel, preemption, node failure, time limit) is an
    infra error, retried without charging the idea. `stop` set: the loop is going down; the job keeps
    running and `agentgolf run --resume` re-attaches to it."""
    cfg = cfg or SlurmConfig()
    while (state := job_state(job_id)) in ALIVE:
        if stop is not None and stop.wait(cfg.poll_seconds):
            return SandboxResult(
                status=Status.infra_error, reason=f"left SLURM job {job_id} running: the loop stopped"
            )
        if stop is None:
            time.sleep(cfg.poll_seconds)
    if state not in ("COMPLETED", "UNKNOWN"):  # SLURM ended it: even a result written while dying is void
        return SandboxResult(status=Status.infra_error, reason=f"SLURM job {job_id} ended {state}")
    result = _read_result(run_dir, job_id, cfg)
    if result is not None:
        result.reason = (result.reason + f" [slurm job {job_id}]").strip()
        return result
    return SandboxResult(
        status=Status.infra_error, reason=f"SLURM job {job_id} ended without a result ({state})"
    )


def _read_result(run_dir: Path, job_id: str, cfg: SlurmConfig) -> SandboxResult | None:
    """The job's result.json, parsed as data: never unpickled, since on a node without bubblewrap a
    candidate's leftover process could have rewritten anything in the shared run folder."""
    path = run_dir / RESULT_FILE
    deadline = time.monotonic() + cfg.result_wait_seconds  # shared filesystems can show the file late
    while not path.exists() and time.monotonic() < deadline and job_state(job_id) == "COMPLETED":
        time.sleep(cfg.poll_seconds)
    try:
        return SandboxResult.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def queue_facts(run_dir: Path) -> dict[str, Any]:
    """Job id, node and queue wait, for the experiment's manifest."""
    facts: dict[str, Any] = {}
    try:
        job = json.loads((run_dir / JOB_FILE).read_text())
        facts["slurm_job_id"] = job["job_id"]
        started, node = (run_dir / STARTED_FILE).read_text().splitlines()[-1].split()
        facts["slurm_node"] = node
        facts["slurm_queue_wait_s"] = round(float(started) - float(job["submitted_at"]), 3)
        facts["slurm_gpus"] = int(job.get("gpus", 0))
    except (FileNotFoundError, ValueError, KeyError):
        pass
    return facts


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True)
