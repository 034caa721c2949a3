"""`agentgolf pick`: an experiment's kept chain (its run's base commit to it) as clean commits on a branch.

It says what it did in every case: how many commits it picked and where the branch now is; for a branch it
creates, which commit it starts from; for a branch that already holds the change (picked before, or applied
by hand), that nothing needed picking. The cherry-picks themselves are `worktree.pick`, which refuses a dirty
checkout or a conflict and leaves everything as it was.
"""

from __future__ import annotations

from pydantic import BaseModel

from agentgolf.agent.results import kept
from agentgolf.agent.workspace import Workspace
from agentgolf.errors import AgentgolfError
from agentgolf.experiments import worktree as wt


class Picked(BaseModel):
    commits: int  # cherry-picked now (0: the branch already held the change)
    branch: str
    head: str  # the branch's commit after the pick
    started_from: str = ""  # a branch made by this pick: the branch (or commit) it starts from
    empty: bool = False  # the experiment is its run's base commit (a baseline, a best that never moved)

    def line(self, exp_id: int) -> str:
        if self.empty:
            return (
                f"experiment {exp_id} makes no change over its run's base commit (nothing was kept over it): "
                "nothing to pick; " + (f"{self.branch} is unchanged" if self.branch else "no branch made")
            )
        if not self.commits:
            return (
                f"{self.branch} already holds experiment {exp_id}'s change; nothing to pick "
                f"(it is at {self.head[:10]})"
            )
        made = f"new branch {self.branch} from {self.started_from}; " if self.started_from else ""
        return f"{made}picked {self.commits} commit(s) onto {self.branch}: now at {self.head[:10]}"


def pick_experiment(ws: Workspace, exp_id: int, onto: str | None, force: bool = False) -> Picked:
    """The kept chain under an experiment onto `onto` (default: the current branch). A row that was never
    kept, or a screen-rung row, is refused unless `force` (kept.py)."""
    ledger = ws.ledger()
    e = ledger.get(exp_id)
    if not e.commit_sha or e.run_id is None:
        raise AgentgolfError(f"experiment {e.id} has no commit to pick (status {e.status})")
    kept.check(e, ledger.find, "pick", force)
    repo = wt.open_repo(ws.root)
    base = ledger.get_run(e.run_id).base_commit
    commits = wt.chain(repo, base, e.commit_sha)
    current = None if repo.head.is_detached else repo.active_branch.name
    target = onto or current
    exists = target is not None and target in [h.name for h in repo.heads]
    if not commits:  # an empty chain: done as asked, and no branch made for it
        head = repo.commit(target).hexsha if exists else repo.head.commit.hexsha
        return Picked(commits=0, branch=target if exists else "", head=head, empty=True)
    if commits and exists:
        todo = missing(repo, target, base, e.commit_sha)  # those picked before are not picked twice
        if not todo or holds(repo, target, base, e.commit_sha):
            return Picked(commits=0, branch=target, head=repo.commit(target).hexsha)
        commits = todo
    started_from = "" if exists else f"{current or 'HEAD'} at {repo.head.commit.hexsha[:10]}"
    branch, head = wt.pick(repo, commits, onto)
    return Picked(commits=len(commits), branch=branch, head=head, started_from=started_from)


def holds(repo, branch: str, base: str, tip: str) -> bool:
    """Whether `branch` already has every file the chain base..tip changes exactly as `tip` has it."""
    changed = repo.git.diff("--name-only", base, tip).split()
    return bool(changed) and not repo.git.diff("--name-only", branch, tip, "--", *changed).strip()


def missing(repo, branch: str, base: str, tip: str) -> list[str]:
    """The chain's commits whose change `branch` lacks (`git cherry`: the same patch is the same change)."""
    lines = repo.git.cherry(branch, tip, base).splitlines()
    return [line.split()[1] for line in lines if line.startswith("+")]
