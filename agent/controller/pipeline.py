"""Proposals in flight: several prepared at once while experiments train, each registered when a slot takes it.

How many: one proposal in preparation (or prepared and waiting) for each slot that will want one, i.e. every
slot of the run except those a re-measurement already claims (a confirmation or a carried-forward win
waiting to start); at least one, at most `SchedulerConfig.max_pending_proposals` (the concurrent proposer
calls: LLM requests, agent sessions), and never more than the experiments left in --budget. So when a slot
frees, its next proposal is usually ready, and eight one-GPU slots do not wait on one LLM call at a time.

Each preparation runs in a thread of its own with its own worktree, import-check folder and `git.Repo`
(`prepare.prepare_proposal`), and knows its parent: the best when it was asked for. When a slot takes it
and the best has moved on meanwhile, its whole change is rebased onto the new best and checked again
(`Lab.rebase`); if it no longer applies there, it runs on the parent it was made for. Registration
happens on the scheduler's thread, the ledger's only writer; a change the ledger already holds (two
proposals in flight that made the same change, say) is rejected as a repeat.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from agentgolf.agent.controller.lab import Lab
from agentgolf.agent.proposers.briefing import board
from agentgolf.agent.proposers.prepare import Prepared, prepare_proposal
from agentgolf.agent.proposers.proposal import Proposer, diff_fingerprint
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import Experiment, Run
from agentgolf.experiments.status import Kind, RowStatus

# Numbers preparations apart across every pipeline of the process: a thread a closed pipeline left running
# must not share its worktree's name with a new run's preparation (whose add would delete that tree).
_NUMBERS = itertools.count(1)


class Pipeline:
    """The proposals being prepared for one run, in the order they were asked for."""

    def __init__(self, lab: Lab, propose: Proposer, workers: int):
        self.lab, self.propose = lab, propose
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="proposer")
        self.futures: list[Future] = []
        self.names: dict[Future, str] = {}  # each preparation's board entry and worktree

    def __len__(self) -> int:
        return len(self.futures)

    def fill(self, parent: Experiment, want: int, history: Callable[[], list[Experiment]]) -> None:
        """Ask for proposals on `parent` until `want` are in the pipeline (`history`: the ledger's rows)."""
        if len(self.futures) >= want:
            return
        rows = history()
        while len(self.futures) < want:
            name = f"pending-{parent.id}-{len(rows)}-{next(_NUMBERS)}"
            board.open_entry(self.lab.ws.root, name, parent.id)  # before any prompt: each sees the others
            future = self.pool.submit(self._prepare, parent, rows, name)
            self.futures.append(future)
            self.names[future] = name

    def _prepare(self, parent: Experiment, rows: list[Experiment], name: str) -> Prepared:
        """prepare_proposal, whose board entry also goes when it raises before its own cleanup."""
        try:
            return prepare_proposal(self.lab, parent, rows, self.propose, name)
        except BaseException:
            board.close_entry(self.lab.ws.root, name)
            raise

    def ready(self) -> Future | None:
        """The oldest finished preparation, taken out of the pipeline; None while none has finished."""
        for future in self.futures:
            if future.done():
                self.futures.remove(future)
                self.names.pop(future, None)
                return future
        return None

    def unfinished(self) -> list[Future]:
        return [f for f in self.futures if not f.done()]

    def close(self) -> None:
        """Drop what was not taken (nothing was charged for it); running proposer calls are not waited for.

        Each dropped preparation leaves the board: a cancelled one never reaches prepare_proposal's cleanup,
        and a finished or running one would wait there for a ledger row that never comes (a later loop in
        this process would list them, and count them as proposals in flight)."""
        root = self.lab.ws.root
        for future in self.futures:
            future.cancel()
            name = self.names[future]
            future.add_done_callback(lambda _, name=name: board.close_entry(root, name))  # now, or when done
        self.futures, self.names = [], {}
        self.pool.shutdown(wait=False, cancel_futures=True)

    def register(
        self,
        prepared: Prepared,
        run: Run,
        proposer: str,
        best: Experiment | None,
        log: Callable[[str], None],
        rung: str = "",
    ) -> tuple[Experiment, str]:
        """The prepared proposal as a ledger row: (row, "") ready to train, or (row, why) rejected. `rung`:
        a screen's name when new proposals are screened first (screening.py)."""
        lab, ledger, proposal = self.lab, self.lab.ledger, prepared.proposal
        if not prepared.error and best is not None and prepared.parent_id != best.id:
            # The best moved on while this was prepared: carry the whole change over if it still applies.
            made_on = ledger.get(prepared.parent_id)
            moved = lab.rebase(prepared.commit, made_on.commit_sha, best.commit_sha)
            if moved.commit:
                prepared = prepared.model_copy(update={"commit": moved.commit, "parent_id": best.id})
            else:
                log(
                    f"{proposal.title}: not moved onto the new best #{best.id} ({moved.reason}); "
                    f"it runs on #{made_on.id}, the parent it was made for"
                )
        parent = ledger.get(prepared.parent_id)
        exp = ledger.add_experiment(
            run_id=run.id,
            kind=Kind.proposal,
            status=RowStatus.running,
            rung=rung,
            parent_id=parent.id,
            parent_commit=parent.commit_sha,
            title=proposal.title,
            hypothesis=proposal.hypothesis,
            category=proposal.category,
            proposer=proposer,
            seed=lab.ws.config.seed,
            tokens=prepared.usage.prompt_tokens + prepared.usage.completion_tokens,
            usd=prepared.usage.usd,
            manifest={"proposer_session": proposal.session} if proposal.session else {},  # mode, turns, tools
        )
        reason = prepared.error
        if not reason:
            branch = wt.branch_name(run.id, exp.id, proposal.title)
            wt.set_branch(lab.repo, branch, prepared.commit)
            change = diff_fingerprint(wt.diff(lab.repo, parent.commit_sha, prepared.commit))
            exp = ledger.update(exp.id, branch=branch, commit_sha=prepared.commit, fingerprint=change)
            if prepared.commit == parent.commit_sha:
                reason = "the proposal changed nothing"
            elif (repeat := repeat_of(ledger.experiments(), exp)) is not None:
                reason = f"repeat of experiment {repeat.id} ({repeat.title}): same change"
        if reason:
            exp = ledger.update(exp.id, status=RowStatus.rejected, reason=reason, finished_at=time.time())
        return exp, reason


def repeat_of(rows: list[Experiment], exp: Experiment) -> Experiment | None:
    """An earlier proposal with the same change as `exp` (its fingerprint), whatever became of it."""
    return next(
        (
            e
            for e in rows
            if e.id != exp.id
            and e.kind == Kind.proposal
            and e.fingerprint == exp.fingerprint
            and e.status != RowStatus.infra_error
        ),
        None,
    )
