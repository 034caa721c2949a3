"""Preparing a proposal: a detached worktree, the proposer's change, the import check, one commit.

This runs in the proposer's thread while experiments train, so it touches no ledger row: what it
produces is a `Prepared` that the scheduler registers (or rejects) on its own thread.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel

from agentgolf.agent.controller.lab import Lab
from agentgolf.agent.proposers.briefing import board
from agentgolf.agent.proposers.briefing.context import build_context, change_summary
from agentgolf.agent.proposers.proposal import (
    Proposal,
    ProposalContext,
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


def prepare_proposal(
    lab: Lab, parent: Experiment, history: list[Experiment], propose: Proposer, name: str = ""
) -> Prepared:
    """Make, check and commit one proposal on `parent`, in a worktree of its own.

    Several run at once (one per proposal in flight), so each has its own names: the worktree and the
    import check's folder are named by `name` (unique per preparation; the scheduler numbers them), and
    git is driven through a `git.Repo` of its own, never the scheduler's `lab.repo`, whose GitPython
    object pipes are not thread-safe.
    """
    ws = lab.ws
    name = name or f"pending-{parent.id}-{len(history)}"
    board.open_entry(ws.root, name, parent.id)  # the pipeline opens it first, before any prompt is built
    prepared = None
    repo = wt.open_repo(ws.root)
    try:
        ctx = build_context(lab, parent, history, name)
        tree = ws.state / "worktrees" / name
        wt.add_worktree(repo, tree, None, parent.commit_sha)
        try:
            prepared = _make(lab, parent, ctx, tree, propose, name)
            return prepared
        finally:
            wt.remove_worktree(repo, tree)
            shutil.rmtree(ws.state / "import-check" / name, ignore_errors=True)
    finally:
        repo.close()
        if prepared is None or prepared.error or prepared.proposal is None:
            board.close_entry(ws.root, name)  # nothing to run: it leaves the board
        else:  # it waits for a slot: the board shows its title and change until the ledger holds it
            change = change_summary(ws.root, parent.commit_sha, prepared.commit)
            board.submitted(
                ws.root, name, prepared.proposal.title, change, _fingerprint(ws.root, parent, prepared)
            )


def _fingerprint(root: Path, parent: Experiment, prepared: Prepared) -> str:
    from agentgolf.agent.proposers.proposal import diff_fingerprint

    repo = wt.open_repo(root)
    try:
        return diff_fingerprint(wt.diff(repo, parent.commit_sha, prepared.commit))
    finally:
        repo.close()


def _make(
    lab: Lab, parent: Experiment, ctx: ProposalContext, tree: Path, propose: Proposer, name: str
) -> Prepared:
    proposal = None
    try:
        proposal = propose(ctx, tree)
        if proposal is None:
            return Prepared(parent_id=parent.id)
        check_trainer(tree / lab.ws.config.trainer, lab.budget, lab.ws.state / "import-check" / name)
        commit = wt.commit_all(tree, proposal.commit_message())
        return Prepared(parent_id=parent.id, proposal=proposal, commit=commit, usage=proposal.usage)
    except ProposalError as exc:
        title = exc.title if len(exc.title) >= 3 else "(no usable proposal)"
        described = proposal or Proposal(title=title)
        return Prepared(
            parent_id=parent.id, proposal=described, error=str(exc), usage=exc.usage or described.usage
        )
