"""Preparing a proposal: a detached worktree, the proposer's change, the import check, one commit.

This runs in the proposer's thread while experiments train, so it touches no ledger row: what it
produces is a `Prepared` that the scheduler registers (or rejects) on its own thread.
"""

from __future__ import annotations

from pydantic import BaseModel

from agentgolf.agent.lab import Lab
from agentgolf.agent.proposers.context import build_context
from agentgolf.agent.proposers.proposal import (
    Proposal,
    ProposalError,
    Proposer,
    Usage,
    check_trainer,
)
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import Experiment


class Prepared(BaseModel):
    """A proposal committed on a detached worktree, waiting for a slot."""

    parent_id: int
    proposal: Proposal | None = None  # None: the proposer has nothing new to try
    commit: str = ""
    error: str = ""  # why it cannot run (the change does not apply, does not import, ...)
    usage: Usage = Usage()


def prepare_proposal(lab: Lab, parent: Experiment, history: list[Experiment], propose: Proposer) -> Prepared:
    ws = lab.ws
    ctx = build_context(lab, parent, history)
    tree = ws.state / "worktrees" / f"pending-{parent.id}-{len(history)}"
    wt.add_worktree(lab.repo, tree, None, parent.commit_sha)
    proposal = None
    try:
        proposal = propose(ctx, tree)
        if proposal is None:
            return Prepared(parent_id=parent.id)
        check_trainer(tree / ws.config.trainer, lab.budget, ws.state / "import-check")
        commit = wt.commit_all(tree, proposal.commit_message())
        return Prepared(parent_id=parent.id, proposal=proposal, commit=commit, usage=proposal.usage)
    except ProposalError as exc:
        title = exc.title if len(exc.title) >= 3 else "(no usable proposal)"
        described = proposal or Proposal(title=title)
        return Prepared(
            parent_id=parent.id, proposal=described, error=str(exc), usage=exc.usage or described.usage
        )
    finally:
        wt.remove_worktree(lab.repo, tree)
