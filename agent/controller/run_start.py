"""`agentgolf run`: the command line's overrides applied to the workspace's settings, the checks that must
pass before anything trains, then the loop.

The order is the user's time: the workspace's lock first (a second loop would share the machine and move
both runs' scores), then the caps, the flags, the trainer's commit and the proposer's outside world
(preflight.py), and a new run's data (data_gate.py: its findings one line each). Only then does the loop
write its first ledger row. Each refusal is one AgentgolfError.
"""

from __future__ import annotations

from pydantic import BaseModel
from rich.console import Console

from agentgolf.agent.controller.loop import Loop, RunSummary, latest_run_id
from agentgolf.agent.controller.preflight import RunFlags, preflight
from agentgolf.agent.controller.processes import workspace_lock
from agentgolf.agent.controller.scheduler import RunCaps
from agentgolf.agent.trainer.data_gate import gate_run
from agentgolf.agent.workspace import Workspace
from agentgolf.errors import AgentgolfError


class RunOptions(BaseModel):
    """What `agentgolf run` may override for one run; None keeps the workspace's setting."""

    budget: int | None = None  # experiments; a resume without it keeps the run's recorded caps
    max_gpu_hours: float | None = None
    max_usd: float | None = None
    resume: str | None = None
    gpus_per_experiment: int | None = None
    executor: str | None = None
    partition: str | None = None
    max_concurrent: int | None = None
    time_budget: float | None = None
    size_budget: int | None = None
    proposer: str | None = None
    model: str | None = None
    base_url: str | None = None
    agent_cmd: str | None = None
    agent: str | None = None  # a CLI-agent preset: codex, claude or aider
    allow_dirty: bool = False  # run from the commit although the trainer has uncommitted edits
    allow_data_warnings: bool = False  # run although the data check failed (recorded in each manifest)
    track: list[str] | None = None  # dashboards (`--track tensorboard,wandb`; [] is `--track none`)


def start_run(ws: Workspace, options: RunOptions, console: Console) -> RunSummary:
    """Apply the command line's overrides to a copy of the workspace's settings, check, then run."""
    cfg = ws.config
    llm = cfg.llm.model_copy(update=_given(model=options.model, base_url=options.base_url))
    command = cfg.command.model_copy(update=_given(cmd=options.agent_cmd, agent=options.agent))
    executor = options.executor or cfg.executor
    per_experiment = options.gpus_per_experiment
    slurm_changes = _given(partition=options.partition, max_concurrent=options.max_concurrent or None)
    if executor == "slurm" and per_experiment:  # SLURM: GPUs per job, not a split of local GPUs
        slurm_changes["gpus_per_experiment"], per_experiment = per_experiment, None
    ws.config = cfg.model_copy(
        update={
            "llm": llm,
            "command": command,
            "executor": executor,
            "slurm": cfg.slurm.model_copy(update=slurm_changes),
            "track": cfg.track.model_copy(update=_given(backends=options.track)),
        }
    )
    proposer = options.proposer or ("command" if options.agent_cmd or options.agent else cfg.proposer)
    flags = RunFlags(
        proposer=proposer,
        executor=executor,
        **options.model_dump(
            include={
                "gpus_per_experiment",
                "partition",
                "max_concurrent",
                "model",
                "base_url",
                "agent_cmd",
                "agent",
            }
        ),
    )
    with workspace_lock(ws.state / "locks"):
        caps, note, recorded = _caps(ws, options)
        if options.track is None and "track" in recorded:  # a resume tracks as its run did
            ws.config.track = ws.config.track.model_copy(update={"backends": recorded["track"]})
        preflight(
            ws,
            flags,
            new_run=not options.resume,
            allow_dirty=options.allow_dirty,
            say=lambda line: console.print(line, markup=False),
        )
        if not options.resume:  # the data, before the baseline spends the night on it (data_gate.py)
            gate_run(
                ws, allow=options.allow_data_warnings, say=lambda line: console.print(line, markup=False)
            )
        loop = Loop(ws, ws.ledger(), ws.budget(options.time_budget, options.size_budget), console=console)
        return loop.run(caps, proposer, resume=options.resume, gpus_per_experiment=per_experiment, note=note)


def _caps(ws: Workspace, options: RunOptions) -> tuple[RunCaps, str, dict]:
    """The command line's caps; a resume continues under the run's recorded ones where none are given.
    Also the resumed run's recorded settings ({} for a new run)."""
    if not options.resume:
        if options.budget is None:
            raise AgentgolfError("a new run needs --budget N (experiments, the baseline included)")
        if options.budget < 1:
            raise AgentgolfError("--budget must be at least 1 (the first experiment is the baseline)")
        return (
            RunCaps(experiments=options.budget, gpu_hours=options.max_gpu_hours, usd=options.max_usd),
            "",
            {},
        )
    ledger = ws.ledger()
    run = ledger.get_run(latest_run_id(ledger) if options.resume == "latest" else options.resume)
    recorded = run.settings
    caps = RunCaps(
        experiments=options.budget if options.budget is not None else recorded.get("experiments", 0),
        gpu_hours=options.max_gpu_hours if options.max_gpu_hours is not None else recorded.get("gpu_hours"),
        usd=options.max_usd if options.max_usd is not None else recorded.get("usd"),
    )
    note = (
        f"resuming with caps: {caps.experiments} experiment(s)"
        + (f", {caps.gpu_hours} GPU-hours" if caps.gpu_hours is not None else "")
        + (f", ${caps.usd}" if caps.usd is not None else "")
        + (" (as recorded)" if options.budget is None else "")
    )
    return caps, note, recorded


def _given(**values: object) -> dict[str, object]:
    return {k: v for k, v in values.items() if v is not None}
