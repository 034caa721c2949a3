"""Checks before a run trains anything: every mistake found here costs seconds, not a baseline.

`agentgolf run` calls `preflight` before the first ledger write. Each check ends in one AgentgolfError
(one line, exit 2) naming what is wrong and what to do:

- flags that cannot apply here (`--gpus-per-experiment` without GPUs, `--partition` without SLURM, an
  `--agent` beside `--proposer openai`);
- a trainer with uncommitted edits, which the run would silently leave out (`--allow-dirty` runs anyway,
  and says which commit it uses);
- the proposer's outside world: a CLI agent whose program is not on PATH, and an LLM endpoint that does
  not answer or refuses the key (its model list, else a one-token call, each within
  `FailFastConfig.endpoint_timeout_s`).
- a dashboard (`--track`) whose library is not installed (agent/tracking/config.py).

A second loop in the same workspace is refused by the workspace's lock (processes.workspace_lock).
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from agentgolf.agent.tracking.config import check_libraries
from agentgolf.errors import AgentgolfError, first_line

if TYPE_CHECKING:
    from agentgolf.agent.proposers.command import CommandConfig
    from agentgolf.agent.proposers.llm.proposer import LLMConfig
    from agentgolf.agent.workspace import Workspace


class FailFastConfig(BaseModel):
    """How hard a run checks its outside world before it trains, and when a failing proposer stops it."""

    endpoint_timeout_s: float = Field(
        10.0, gt=0, description="how long the LLM endpoint's check before a run waits for an answer"
    )
    same_proposer_failures: int = Field(
        3,
        ge=1,
        description="proposals in a row that fail with the same error stop the run as 'proposer failed' "
        "(an agent command that exits 126 or 127, cannot run or is not found, stops it at once)",
    )


# Words a shell runs itself: an --agent-cmd starting with one names no program to look for.
SHELL_WORDS = frozenset(
    "! [ [[ { ( . : alias builtin case cd command eval exec export for if set source time until while".split()
)


class RunFlags(BaseModel):
    """The command-line flags whose sense depends on the workspace (loop.RunOptions' subset)."""

    proposer: str
    executor: str
    gpus_per_experiment: int | None = None
    partition: str | None = None
    max_concurrent: int | None = None
    model: str | None = None
    base_url: str | None = None
    agent_cmd: str | None = None
    agent: str | None = None


def preflight(
    ws: Workspace, flags: RunFlags, *, new_run: bool, allow_dirty: bool, say: Callable[[str], None]
) -> None:
    """Every check, cheapest first; raises AgentgolfError on the first mistake."""
    check_flags(ws, flags)
    check_libraries(ws.config.track)
    if new_run:
        check_trainer_committed(ws, allow_dirty, say)
    if flags.proposer == "command":
        check_agent_command(ws, ws.config.command)
    elif flags.proposer == "openai":
        check_endpoint(ws.config.llm, ws.config.fail_fast.endpoint_timeout_s)


def check_flags(ws: Workspace, flags: RunFlags) -> None:
    """Flags that would be ignored here are refused, so that what the user asked for is what runs."""
    slurm = flags.executor == "slurm"
    if flags.gpus_per_experiment and not slurm and not ws.config.gpus:
        raise AgentgolfError(
            f"--gpus-per-experiment {flags.gpus_per_experiment}: this workspace has no GPUs (`gpus` is "
            f"empty in {ws.config_path}; on this machine experiments run on CPU slots); set `gpus`, or "
            "drop the flag"
        )
    for name, value in (("--partition", flags.partition), ("--max-concurrent", flags.max_concurrent)):
        if value is not None and not slurm:
            raise AgentgolfError(f"{name} applies to SLURM only: add --executor slurm, or drop it")
    for name, value in (("--model", flags.model), ("--base-url", flags.base_url)):
        if value is not None and flags.proposer != "openai":
            raise AgentgolfError(
                f"{name} applies to --proposer openai, not {flags.proposer} (a CLI agent's model is "
                "command.model in the config)"
            )
    for name, value in (("--agent-cmd", flags.agent_cmd), ("--agent", flags.agent)):
        if value is not None and flags.proposer != "command":
            raise AgentgolfError(f"{name} applies to --proposer command, not {flags.proposer}")
    if flags.agent_cmd and flags.agent:
        raise AgentgolfError("give --agent or --agent-cmd, not both")


def check_trainer_committed(ws: Workspace, allow_dirty: bool, say: Callable[[str], None]) -> None:
    """A run trains the trainer as committed: uncommitted edits would be silently left out."""
    import git

    trainer = ws.config.trainer
    try:
        repo = git.Repo(ws.root)
        head = repo.head.commit.hexsha
        pending = repo.git.status("--porcelain", "--", trainer)
    except (git.GitError, ValueError) as exc:
        raise AgentgolfError(f"cannot read the workspace's git history: {first_line(exc)}") from exc
    finally:
        if "repo" in locals():
            repo.close()
    if not pending.strip() or pending.startswith("??"):
        return  # clean (an untracked trainer is refused later: the commit has none)
    said = f"the run uses commit {head[:10]}; the uncommitted edits to {trainer} are not in it"
    if not allow_dirty:
        raise AgentgolfError(f"{said}: commit them (git commit {trainer}), or pass --allow-dirty")
    say(f"--allow-dirty: {said}")


def check_agent_command(ws: Workspace, cfg: CommandConfig) -> None:
    """The agent's program must exist here, or every proposal fails the same way after the baseline."""
    if cfg.agent:
        from agentgolf.agent.proposers import agents

        program = agents.argv(cfg.agent, ws.root, ws.root, ws.config.trainer, cfg.model)[0]
        if shutil.which(program) is None:
            raise AgentgolfError(
                f"--agent {cfg.agent}: its program {program!r} is not on PATH; install it, or choose "
                "another --agent or --proposer"
            )
        return
    if not cfg.cmd:
        return  # the proposer itself says what it needs
    try:
        words = shlex.split(cfg.cmd)
    except ValueError as exc:
        raise AgentgolfError(f"--agent-cmd {cfg.cmd!r} cannot be read as a command: {exc}") from exc
    words = [w for w in words if not _assignment(w)]
    if not words or words[0] in SHELL_WORDS or any(c in words[0] for c in "$`;&|<>(){}"):
        return  # the shell decides; a failure there stops the run early (proposer_guard)
    program = words[0]
    if "/" in program:
        found = any(
            (base / program).is_file() and os.access(base / program, os.X_OK)
            for base in (Path.cwd(), ws.root)
        )
    else:
        found = shutil.which(program) is not None
    if not found:
        where = "is not an executable file" if "/" in program else "is not on PATH"
        raise AgentgolfError(
            f"--agent-cmd: its program {program!r} {where}; install it or fix the command (the agent "
            "runs it in its sandbox with the prompt on stdin)"
        )


def _assignment(word: str) -> bool:
    name, eq, _ = word.partition("=")
    return bool(eq) and name.isidentifier()


def check_endpoint(cfg: LLMConfig, timeout: float) -> None:
    """The LLM endpoint answers and accepts the key: its model list, or a one-token call where it lists
    none or not this model. Rate limits and refused parameters count as answers; nothing is retried."""
    import openai

    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise AgentgolfError(
            f"the openai proposer needs an API key in ${cfg.api_key_env} (or use --proposer search, "
            "the offline default)"
        )
    where = cfg.base_url or "the OpenAI API"
    with openai.OpenAI(api_key=key, base_url=cfg.base_url, timeout=timeout, max_retries=0) as client:
        listed: list[str] | None = None  # None: the endpoint lists no models
        try:
            listed = [m.id for m in client.models.list()]
        except openai.APIStatusError as exc:
            if exc.status_code not in (404, 405, 501):
                _refuse(exc, where, cfg, timeout)
        except openai.APIError as exc:
            _refuse(exc, where, cfg, timeout)
        if listed is not None and cfg.model in listed:
            return
        try:
            client.chat.completions.create(
                model=cfg.model, messages=[{"role": "user", "content": "Say OK."}], max_tokens=1
            )
        except openai.APIStatusError as exc:
            if exc.status_code == 404:
                offered = f" (it lists: {', '.join(listed[:8])})" if listed else ""
                raise AgentgolfError(
                    f"the LLM endpoint {where} does not serve model {cfg.model!r}{offered}: set --model"
                ) from exc
            if exc.status_code not in (400, 422, 429):  # it answered and took the key; real calls adapt
                _refuse(exc, where, cfg, timeout)
        except openai.APIError as exc:
            _refuse(exc, where, cfg, timeout)


def _refuse(exc: Exception, where: str, cfg: LLMConfig, timeout: float) -> None:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        why = f"does not answer within {timeout:g} s (fail_fast.endpoint_timeout_s)"
    elif isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        why = f"does not answer ({first_line(cause) if cause else 'connection failed'})"
    elif isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        why = f"refuses the key in ${cfg.api_key_env} (HTTP {exc.status_code})"
    elif isinstance(exc, openai.APIStatusError):
        why = f"fails (HTTP {exc.status_code}: {first_line(exc)[:160]})"
    else:
        why = f"fails ({type(exc).__name__}: {first_line(exc)[:160]})"
    raise AgentgolfError(
        f"the LLM endpoint {where} {why}; check --base-url, the key and the server, or use --proposer search"
    ) from exc
