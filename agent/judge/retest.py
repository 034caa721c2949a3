"""Rebase-and-retest: a win is not thrown away because the best moved on while it was measured.

With several slots, a candidate branched from the best of its day is often decided after another one
has been promoted. Its win was over a parent that is no longer the best, so it cannot simply be kept;
instead its whole change (every commit from its parent's commit to its own) is rebased onto the new
best, checked like a new proposal (compiles, imports in the sandbox), and, when that works, registered
as a new proposal row linked to it (`retest_of`), with the new best as its parent. That row is measured
and decided against the new best like any proposal (confirmations included), and is itself carried
forward if the best moves on again, at most `SchedulerConfig.carry_forward` times per change.

A re-test does not count against --budget: it is the same idea measured on a newer parent, not a new
one, and the proposer spent nothing on it. It costs training time, so it counts against the GPU-hour cap.
The rebase and its check (a sandboxed import, a few seconds) run on the scheduler's thread, only when a
win's parent is no longer the best.

The original row keeps its own evidence (the `decision` that promoted it over its old parent), becomes
`inconclusive`, and its reason says where its change went: "re-tested there as experiment N", or why it
could not be (a conflict, a failed check, the change already in the new best, the limit reached).
"""

from __future__ import annotations

from collections.abc import Sequence

from agentgolf.agent.controller.lab import Lab
from agentgolf.agent.proposers.proposal import diff_fingerprint
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import Experiment, Run
from agentgolf.experiments.status import Kind, RowStatus


def carry(
    lab: Lab, run: Run, rows: Sequence[Experiment], exp: Experiment, best: Experiment, limit: int
) -> tuple[Experiment | None, str]:
    """Carry `exp`'s change onto `best`: (the re-test row, what to add to `exp`'s reason) or (None, why not)."""
    again = next((e for e in rows if e.retest_of == exp.id), None)
    if again is not None:  # a kill came between registering the re-test and deciding the original
        return again, f": re-tested there as experiment {again.id}"
    hops = times_carried(rows, exp)
    if hops >= limit:
        return None, f"; not carried over: its change was carried forward {hops} time(s) already (the limit)"
    moved = lab.rebase(exp.commit_sha, exp.parent_commit, best.commit_sha, name=f"retest-{exp.id}")
    if not moved.commit:
        return None, f"; not carried over: {moved.reason}"
    row = lab.ledger.add_experiment(
        run_id=run.id,
        kind=Kind.proposal,
        status=RowStatus.running,
        parent_id=best.id,
        parent_commit=best.commit_sha,
        commit_sha=moved.commit,
        title=exp.title,
        hypothesis=exp.hypothesis,
        category=exp.category,
        proposer=exp.proposer,
        seed=lab.ws.config.seed,
        retest_of=exp.id,
        fingerprint=diff_fingerprint(wt.diff(lab.repo, best.commit_sha, moved.commit)),
    )
    branch = wt.branch_name(run.id, row.id, exp.title)
    wt.set_branch(lab.repo, branch, moved.commit)
    return lab.ledger.update(row.id, branch=branch), f": re-tested there as experiment {row.id}"


def times_carried(rows: Sequence[Experiment], exp: Experiment) -> int:
    """How many re-tests lie between `exp` and the proposal it carries (its `retest_of` links)."""
    by_id = {e.id: e for e in rows}
    hops, seen = 0, {exp.id}
    while exp.retest_of is not None and exp.retest_of in by_id and exp.retest_of not in seen:
        exp = by_id[exp.retest_of]
        seen.add(exp.id)
        hops += 1
    return hops
