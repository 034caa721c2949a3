"""The proposers by name: the command line's `--proposer` and the workspace's `proposer` setting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentgolf.agent.proposers.proposal import Proposer
from agentgolf.agent.proposers.search import proposer as search
from agentgolf.errors import AgentgolfError

if TYPE_CHECKING:
    from agentgolf.agent.workspace import Workspace

NAMES = (search.NAME, "openai", "command")


def make_proposer(name: str, ws: Workspace) -> Proposer:
    """The proposer named, configured from the workspace; the LLM client is loaded only when asked for."""
    if name in (search.NAME, *search.ALIASES):
        return search.SearchProposer(ws.config.search, ws.config.seed)  # one per run: it remembers
    if name == "openai":
        from agentgolf.agent.proposers.llm.proposer import LLMProposer

        return LLMProposer(ws.config.llm)
    if name == "command":
        from agentgolf.agent.proposers.command import CommandProposer

        data = ws.config.data
        hidden = [ws.state, ws.resolve(data.dataset_dir), ws.resolve(data.tokenizer).parent]
        return CommandProposer(ws.config.command, hidden)
    raise AgentgolfError(f"unknown proposer {name!r}; available: {', '.join(NAMES)}")
