"""CLI coding-agent presets for the `command` proposer: each agent's documented non-interactive invocation,
and how its output reports what it cost.

- codex: `codex exec --json --full-auto --skip-git-repo-check -` reads the prompt on stdin and prints JSON
  Lines; each `turn.completed` event carries `usage` (input, cached input and output tokens), no dollars,
  so the cost is priced from CommandConfig's per-token prices.
- claude: `claude -p --output-format json --permission-mode acceptEdits "..."` prints one `result` object
  with `total_cost_usd` and `usage`.
- aider: `aider --message-file FILE --yes-always --no-auto-commits ... train_gpt.py` prints no JSON; its
  `Tokens: 2.4k sent, 251 received. Cost: $0.01 message, $0.02 session.` lines are read instead.

The prompt is written to `.agentgolf/prompt.md` in the worktree (a folder the workspace's git excludes,
removed again before the change is committed) and given to each agent the way it documents.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel

from agentgolf.agent.proposers.proposal import ProposalError, Usage

PROMPT_FILE = Path(".agentgolf") / "prompt.md"  # relative to the worktree
NAMES = ("codex", "claude", "aider")
LEFTOVERS = {"aider": (".aider*",)}  # files an agent leaves in the folder that are not part of the change
INSTRUCTION = f"Your task is described in the file {PROMPT_FILE} in this folder (also on stdin): do it."
AIDER_COST = re.compile(
    r"Tokens: ([\d.]+)(k?) sent, (?:.*?, )?([\d.]+)(k?) received\. Cost: \$([\d.]+) message, \$([\d.]+) session"
)


class AgentReport(BaseModel):
    """What an agent said it spent; `usd` None when it reports tokens only."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float | None = None
    turns: int = 0


def argv(name: str, tree: Path, scratch: Path, trainer: str, model: str | None) -> list[str]:
    """The command line of a preset, run in the worktree `tree`."""
    if name == "codex":
        return ["codex", "exec", "--json", "--full-auto", "--skip-git-repo-check", *_opt("-m", model), "-"]
    if name == "claude":
        fixed = ["claude", "-p", "--output-format", "json", "--permission-mode", "acceptEdits"]
        return [*fixed, *_opt("--model", model), INSTRUCTION]
    if name == "aider":
        return [
            "aider",
            "--message-file",
            str(PROMPT_FILE),
            "--yes-always",
            "--no-auto-commits",
            "--no-stream",
            "--no-pretty",
            "--no-gitignore",
            "--no-check-update",
            "--analytics-disable",
            "--chat-history-file",
            str(scratch / "aider.chat.history.md"),
            "--input-history-file",
            str(scratch / "aider.input.history"),
            *_opt("--model", model),
            trainer,
        ]
    raise ProposalError(f"unknown agent preset {name!r}; available: {', '.join(NAMES)}")


def _opt(flag: str, value: str | None) -> list[str]:
    return [flag, value] if value else []


def parse_report(name: str, output: str) -> AgentReport:
    """Read an agent's cost and tokens from what it printed; an error it reports is a ProposalError."""
    if name == "codex":
        return _codex(output)
    if name == "claude":
        return _claude(output)
    return _aider(output)


def _json_lines(output: str) -> list[dict]:
    events = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
    return events


def _codex(output: str) -> AgentReport:
    report = AgentReport()
    for event in _json_lines(output):
        kind = event.get("type")
        if kind == "turn.completed":
            usage = event.get("usage") or {}
            report.prompt_tokens += int(usage.get("input_tokens") or 0)
            report.completion_tokens += int(usage.get("output_tokens") or 0)
            report.turns += 1
        elif kind in ("turn.failed", "error"):
            error = event.get("error") or {}
            message = error.get("message") if isinstance(error, dict) else None
            raise ProposalError(f"codex reported an error: {(message or event.get('message') or kind)[:300]}")
    return report


def _claude(output: str) -> AgentReport:
    results = [e for e in _json_lines(output) if e.get("type") == "result"]
    if not results:
        try:
            whole = json.loads(output)
        except json.JSONDecodeError:
            return AgentReport()
        results = [whole] if isinstance(whole, dict) else []
    if not results:
        return AgentReport()
    result = results[-1]
    if result.get("is_error"):
        raise ProposalError(
            f"claude reported an error: {str(result.get('result') or result.get('subtype'))[:300]}"
        )
    usage = result.get("usage") or {}
    prompt = sum(
        int(usage.get(k) or 0)
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    cost = result.get("total_cost_usd", result.get("cost_usd"))
    return AgentReport(
        prompt_tokens=prompt,
        completion_tokens=int(usage.get("output_tokens") or 0),
        usd=float(cost) if cost is not None else None,
        turns=int(result.get("num_turns") or 0),
    )


def _tokens(number: str, k: str) -> int:
    return round(float(number) * (1000 if k else 1))


def _aider(output: str) -> AgentReport:
    report = AgentReport()
    for m in AIDER_COST.finditer(output):
        report.prompt_tokens += _tokens(m[1], m[2])
        report.completion_tokens += _tokens(m[3], m[4])
        report.usd = float(m[6])  # the session's running total
        report.turns += 1
    return report


def usage_of(report: AgentReport, usd_per_mtok_in: float, usd_per_mtok_out: float) -> Usage:
    """The proposal's cost: the agent's own dollars where it reports them, else its tokens priced."""
    usd = report.usd
    if usd is None:
        usd = (report.prompt_tokens * usd_per_mtok_in + report.completion_tokens * usd_per_mtok_out) / 1e6
    return Usage(prompt_tokens=report.prompt_tokens, completion_tokens=report.completion_tokens, usd=usd)
