"""A sandbox for an external coding agent (the `command` proposer): it may use the network, to reach its LLM,
and write its worktree, and nothing else: no data, no ledger, no other runs, no home folder, no secrets.

Without it, an agent with the user's credentials on the host filesystem could read the validation shards and
bake them into its patch, which no scoring sandbox can see afterwards. Inside: the system read-only, a private
/tmp as HOME, the worktree (writable) and the repository's .git (read-only, so git works in the worktree) at
their own paths, the scratch folder for the prompt and the proposal, and only the environment variables the
user lists in `command.env_pass`. Without bubblewrap it runs unsandboxed and says so.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import BaseModel

from agentgolf.sandbox.isolation.bwrap import MINIMAL_PATH, SANDBOX_HOME, resolve_isolation
from agentgolf.sandbox.isolation.limits import Limits
from agentgolf.sandbox.isolation.process import SandboxedProcess
from agentgolf.sandbox.phase import PhaseSpec

AGENT_LOG = "agent.log"
AGENT_MAX_PROCESSES = 4096  # node, language servers, git: an agent is a busy process tree
AGENT_MAX_FILE_BYTES = 4 * 2**30
AGENT_LOG_BYTES = 4 * 2**20


class AgentRun(BaseModel):
    returncode: int | None
    timed_out: bool
    output: str  # stdout and stderr, as the agent wrote them
    isolation: str  # "bwrap", or "none" where bubblewrap is missing


def run_agent(
    command: str | list[str],
    tree: Path,
    git_dir: Path,
    scratch: Path,
    env: dict[str, str],
    hidden: list[Path],
    timeout: float,
    extra_ro: list[Path] | None = None,
) -> AgentRun:
    """Run `command` in `tree` with `env` (already reduced to what the user passes) and the prompt file
    $AGENTGOLF_PROMPT on stdin; returns its output once it exits or is killed at `timeout`."""
    mode, _ = resolve_isolation()
    shell = command if isinstance(command, str) else " ".join(_quote(a) for a in command)
    inner_env = {
        "PATH": f"{Path(sys.executable).parent}:{MINIMAL_PATH}",
        "HOME": SANDBOX_HOME if mode == "bwrap" else str(scratch),
        "TMPDIR": SANDBOX_HOME if mode == "bwrap" else str(scratch),
        "LANG": "C.UTF-8",
        **env,
        "AGENTGOLF_AGENT_CMD": shell,
    }
    spec = PhaseSpec(
        argv=["/bin/sh", "-c", 'exec /bin/sh -c "$AGENTGOLF_AGENT_CMD" < "$AGENTGOLF_PROMPT"'],
        cwd=tree,
        env=inner_env,
        ro_binds=[(git_dir, git_dir), *((p, p) for p in extra_ro or [])] if mode == "bwrap" else [],
        rw_binds=[(tree, tree), (scratch, scratch)] if mode == "bwrap" else [],
        limits=Limits(
            wall_seconds=timeout,
            max_file_bytes=AGENT_MAX_FILE_BYTES,
            memory_bytes=None,
            max_processes=AGENT_MAX_PROCESSES,
        ),
        log_path=scratch / AGENT_LOG,
        log_bytes=AGENT_LOG_BYTES,
        hidden=hidden,
        network=True,
    )
    proc = SandboxedProcess(spec, mode)
    outcome = proc.run()
    text = proc.capture.text() if proc.capture else ""
    ready = text.find("\n")  # the launcher's readiness line comes first
    return AgentRun(
        returncode=outcome.returncode,
        timed_out=outcome.timed_out,
        output=text[ready + 1 :] if ready >= 0 else text,
        isolation=mode,
    )


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def passed_env(names: list[str]) -> dict[str, str]:
    """The user's environment reduced to the names they chose to pass to their agent."""
    return {k: os.environ[k] for k in names if k in os.environ}
