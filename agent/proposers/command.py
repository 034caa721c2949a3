"""The `command` proposer: an external coding agent edits the experiment's worktree; its change is the patch.

The prompt (rules + ledger digest) arrives on stdin and in the file named by $AGENTGOLF_PROMPT. The agent
may describe its change by writing JSON ({"title", "hypothesis", "category", "expected_effect"}) to the
file named by $AGENTGOLF_PROPOSAL; otherwise the title is derived from what it changed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from agentgolf.agent.proposers.proposal import Proposal, ProposalContext, ProposalError
from agentgolf.errors import AgentgolfError
from agentgolf.prompts.render import proposal_prompt


class CommandConfig(BaseModel):
    """The `command` proposer: an external coding agent run in the experiment's worktree."""

    cmd: str | None = Field(
        None, description="shell command; the prompt arrives on stdin and in $AGENTGOLF_PROMPT"
    )
    timeout_s: float = Field(1800.0, gt=0)


NAME = "command"
OUTPUT_TAIL = 400


class CommandProposer:
    def __init__(self, config: CommandConfig):
        if not config.cmd:
            raise AgentgolfError(
                "the command proposer needs --agent-cmd 'COMMAND' (or command.cmd in the config)"
            )
        self.config = config

    def __call__(self, ctx: ProposalContext, tree: Path) -> Proposal:
        prompt = proposal_prompt(ctx)
        with tempfile.TemporaryDirectory(prefix="agentgolf-cmd-") as scratch:
            prompt_file = Path(scratch) / "prompt.md"
            proposal_file = Path(scratch) / "proposal.json"
            prompt_file.write_text(prompt)
            env = {
                **os.environ,
                "AGENTGOLF_PROMPT": str(prompt_file),
                "AGENTGOLF_PROPOSAL": str(proposal_file),
            }
            proc = subprocess.Popen(
                self.config.cmd,
                shell=True,
                cwd=tree,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            try:
                output, _ = proc.communicate(prompt, timeout=self.config.timeout_s)
            except subprocess.TimeoutExpired as exc:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise ProposalError(
                    f"the agent command ran past {self.config.timeout_s:.0f} s and was stopped"
                ) from exc
            if proc.returncode != 0:
                tail = (output or "").strip()[-OUTPUT_TAIL:]
                raise ProposalError(f"the agent command exited with code {proc.returncode}: {tail}")
            described = _read_description(proposal_file)
        changed = _changed_files(tree, ctx.parent.commit_sha)
        if not changed:
            raise ProposalError("the agent command changed no file")
        title = described.get("title") or f"Agent edit of {', '.join(changed[:3])}"
        try:
            return Proposal.model_validate({**described, "title": title[:120], "edits": []})
        except ValidationError as exc:
            raise ProposalError(f"the agent's description is invalid: {exc.errors()[0]['msg']}") from exc


def _read_description(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    keys = ("title", "hypothesis", "category", "expected_effect")
    return {k: str(data[k]) for k in keys if isinstance(data, dict) and data.get(k)}


def _changed_files(tree: Path, parent_commit: str) -> list[str]:
    """Files the agent changed, committed or not (it may commit despite being asked not to)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True, check=True).stdout

    pending = [
        line[3:]
        for line in git("status", "--porcelain", "--untracked-files=all").splitlines()
        if line.strip()
    ]
    committed = git("diff", "--name-only", parent_commit, "HEAD").split()
    return sorted(set(pending) | set(committed))
