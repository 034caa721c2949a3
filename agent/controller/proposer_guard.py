"""A proposer that keeps failing the same way stops the run, instead of spending its budget on rejects.

`guarded` wraps any proposer. A failure of the proposer itself (its ProposalError) is a rejected row, as
before, until it is clearly not about the idea: an agent command that exits 126 or 127 (the shell could
not run or find it), or `FailFastConfig.same_proposer_failures` failures in a row with the same message.
Then it raises ProposerFailed, an AgentgolfError: the scheduler finishes what is in flight and the run
stops as "proposer failed: ..." (`agentgolf run` exits non-zero). A proposal that succeeds resets the count.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from agentgolf.agent.proposers.proposal import Proposal, ProposalContext, ProposalError, Proposer
from agentgolf.errors import AgentgolfError

# The command proposer's message for an agent that exited non-zero (proposers/command.py).
CANNOT_RUN = re.compile(r"exited with code (126|127)\b")
CODE_MEANS = {"126": "the shell could not execute it", "127": "the shell could not find it"}


class ProposerFailed(AgentgolfError):
    """The proposer cannot work in this run: stop it, lose nothing."""


class Guarded:
    """`propose`, counting its failures; thread-safe, since proposals are prepared in parallel."""

    def __init__(self, propose: Proposer, same_failures: int):
        self.propose, self.limit = propose, same_failures
        self.lock = threading.Lock()
        self.last, self.streak = "", 0

    def __call__(self, ctx: ProposalContext, tree: Path) -> Proposal | None:
        try:
            proposal = self.propose(ctx, tree)
        except ProposalError as exc:
            self._failed(str(exc))
            raise
        with self.lock:
            self.last, self.streak = "", 0
        return proposal

    def _failed(self, message: str) -> None:
        if code := CANNOT_RUN.search(message):
            raise ProposerFailed(f"{message.strip()[:300]} ({CODE_MEANS[code.group(1)]})")
        with self.lock:
            self.streak = self.streak + 1 if message == self.last else 1
            self.last, streak = message, self.streak
        if streak >= self.limit:
            raise ProposerFailed(
                f"{streak} proposals in a row failed the same way (fail_fast.same_proposer_failures): "
                f"{message.strip()[:300]}"
            )


def guarded(propose: Proposer, same_failures: int) -> Proposer:
    return Guarded(propose, same_failures)
