"""The `command` proposer: an external coding agent edits the experiment's worktree; its change is the patch.

Either any shell command (`--agent-cmd`), or a preset (`--agent codex|claude|aider`, agents.py) that runs
that agent's documented non-interactive invocation and reads its cost and tokens from its output, so they
count against the run's dollar cap. The prompt (rules, digest, the parent's run facts, notes) arrives on
stdin, in `.agentgolf/prompt.md` in the worktree and in the file named by $AGENTGOLF_PROMPT. The agent
may describe its change by writing JSON ({"title", "hypothesis", "category", "expected_effect"}) to the
file named by $AGENTGOLF_PROPOSAL; otherwise the title is derived from what it changed.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from agentgolf.agent.proposers import agents
from agentgolf.agent.proposers.proposal import Proposal, ProposalContext, ProposalError, Usage
from agentgolf.errors import AgentgolfError
from agentgolf.prompts.render import proposal_prompt
from agentgolf.sandbox.isolation.agent_box import passed_env, run_agent


class CommandConfig(BaseModel):
    """The `command` proposer: an external coding agent run in the experiment's worktree."""

    cmd: str | None = Field(
        None, description="shell command; the prompt arrives on stdin and in $AGENTGOLF_PROMPT"
    )
    agent: Literal["codex", "claude", "aider"] | None = Field(
        None,
        description="a preset instead of cmd: the agent's own non-interactive invocation, cost read back",
    )
    model: str | None = Field(None, description="the preset agent's model (its --model / -m); None: its own")
    usd_per_mtok_in: float = Field(1.25, ge=0, description="prices for an agent that reports tokens only")
    usd_per_mtok_out: float = Field(10.0, ge=0)
    timeout_s: float = Field(1800.0, gt=0)
    env_pass: list[str] = Field(
        default_factory=lambda: [
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
        ],
        description="the only environment variables the sandboxed agent sees (its API keys)",
    )


NAME = "command"
OUTPUT_TAIL = 400


class CommandProposer:
    def __init__(self, config: CommandConfig, hidden: list[Path] | None = None):
        if not config.cmd and not config.agent:
            raise AgentgolfError(
                "the command proposer needs --agent codex|claude|aider or --agent-cmd 'COMMAND' "
                "(or command.agent / command.cmd in the config)"
            )
        self.config = config
        self.hidden = hidden or []  # the workspace's data and state: out of the agent's view

    def __call__(self, ctx: ProposalContext, tree: Path) -> Proposal:
        cfg = self.config
        prompt = proposal_prompt(ctx)
        in_tree = tree / agents.PROMPT_FILE
        with tempfile.TemporaryDirectory(prefix="agentgolf-cmd-") as scratch:
            in_tree.parent.mkdir(exist_ok=True)
            in_tree.write_text(prompt)
            _lab_files(in_tree.parent, ctx)
            proposal_file = Path(scratch) / "proposal.json"
            env = {
                **passed_env(cfg.env_pass),
                "AGENTGOLF_PROMPT": str(in_tree),
                "AGENTGOLF_PROPOSAL": str(proposal_file),
            }
            if cfg.agent:
                command: str | list[str] = agents.argv(cfg.agent, tree, Path(scratch), ctx.trainer, cfg.model)
            else:
                command = cfg.cmd or ""
            try:
                output = self._run(command, tree, env, Path(scratch))
            finally:
                shutil.rmtree(in_tree.parent, ignore_errors=True)  # never part of the change
            described = _read_description(proposal_file)
        usage, session = Usage(), {}
        if cfg.agent:
            report = agents.parse_report(cfg.agent, output)
            usage = agents.usage_of(report, cfg.usd_per_mtok_in, cfg.usd_per_mtok_out)
            session = {
                "mode": f"agent:{cfg.agent}",
                "turns": report.turns,
                "usd_reported": report.usd is not None,
            }
            _remove_untracked(tree, agents.LEFTOVERS.get(cfg.agent, ()))
        changed = _changed_files(tree, ctx.parent.commit_sha)
        if not changed:
            raise ProposalError("the agent command changed no file", usage=usage)
        title = described.get("title") or f"Agent edit of {', '.join(changed[:3])}"
        try:
            proposal = Proposal.model_validate({**described, "title": title[:120], "edits": []})
        except ValidationError as exc:
            raise ProposalError(
                f"the agent's description is invalid: {exc.errors()[0]['msg']}", usage=usage
            ) from exc
        proposal.usage, proposal.session = usage, session
        return proposal

    def _run(self, command: str | list[str], tree: Path, env: dict[str, str], scratch: Path) -> str:
        """Run the agent in its sandbox (sandbox/isolation/agent_box.py): the network and its worktree, nothing else."""
        named = command if isinstance(command, list) else shlex.split(command)
        program = shutil.which(named[0]) if named else None
        if isinstance(command, list) and program is None:
            raise AgentgolfError(f"the agent {command[0]!r} is not installed (not on PATH)")
        # What the command names is visible read-only: its program's folder (on PATH), and the files it names
        # (a script), unless they lie in the workspace's data or state, which stay hidden whatever is named.
        hidden = [h.resolve() for h in self.hidden]
        files = [Path(p).resolve() for p in named[1:] if Path(p).is_file()]
        folders = [Path(program).resolve().parent] if program else []
        visible = sorted({p for p in [*folders, *files] if not any(p == h or h in p.parents for h in hidden)})
        path = [str(p) for p in folders if p in visible]
        env = {**env, "PATH": ":".join([*path, "/usr/local/bin:/usr/bin:/bin"])}
        git_dir = Path(
            subprocess.run(
                ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
                cwd=tree,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        run = run_agent(command, tree, git_dir, scratch, env, self.hidden, self.config.timeout_s, visible)
        if run.timed_out:
            raise ProposalError(f"the agent command ran past {self.config.timeout_s:.0f} s and was stopped")
        if run.returncode == 127 and isinstance(command, list):
            raise AgentgolfError(f"the agent {command[0]!r} could not be started in its sandbox")
        if run.returncode != 0:
            tail = run.output.strip()[-OUTPUT_TAIL:]
            raise ProposalError(f"the agent command exited with code {run.returncode}: {tail}")
        return run.output


def _lab_files(folder: Path, ctx: ProposalContext) -> None:
    """The techniques (each its tested patch, for `git apply`) and the run's notebook, beside the prompt:
    a CLI agent reads files, not tools. The folder is removed after the agent, never part of the change."""
    from agentgolf.agent.proposers.techniques import catalogue, patch_text

    patches = folder / "techniques"
    patches.mkdir(exist_ok=True)
    for t in catalogue():
        (patches / f"{t.name}.patch").write_text(patch_text(t))
    (folder / "notebook.md").write_text(ctx.notebook or "(empty)\n")


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


def _remove_untracked(tree: Path, patterns: tuple[str, ...]) -> None:
    """An agent's own files (aider's caches) are not part of the change."""
    for pattern in patterns:
        for path in tree.glob(pattern):
            tracked = subprocess.run(
                ["git", "ls-files", "--error-unmatch", str(path.relative_to(tree))],
                cwd=tree,
                capture_output=True,
            )
            if tracked.returncode != 0:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
