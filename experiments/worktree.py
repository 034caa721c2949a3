"""Git plumbing for experiments: one branch and one worktree per experiment; the user's checkout is never touched.

Each experiment's branch `agentgolf/<run>/<id>-<slug>` starts at its parent's commit, so the chain of
kept ideas is simply the git ancestry between the run's base commit and the experiment's commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import git

from agentgolf.errors import AgentgolfError

BRANCH_PREFIX = "agentgolf"
SLUG_MAX = 40
EMPTY_SLUG = "change"  # a branch's slug when its title has no letter or digit
AUTHOR = git.Actor("agentgolf", "agentgolf@localhost")


def open_repo(root: Path) -> git.Repo:
    try:
        return with_identity(git.Repo(root))
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise AgentgolfError(f"{root} is not a git repository") from exc


def repo_here(root: Path) -> git.Repo:
    """The repository whose top folder is `root`, made there if there is none (a folder inside another
    repository gets its own: a workspace never commits into the repository around it)."""
    try:
        repo = git.Repo(root)
        if Path(repo.working_tree_dir).resolve() == root.resolve():
            return repo
    except git.InvalidGitRepositoryError:
        pass
    return git.Repo.init(root)


def with_identity(repo: git.Repo) -> git.Repo:
    """Let git commands that commit (cherry-pick) work on machines with no user.name/email configured."""
    try:
        repo.git.config("--get", "user.name")
        repo.git.config("--get", "user.email")
    except git.GitCommandError:  # asked of git itself: it knows every config file that applies
        repo.git.update_environment(
            GIT_AUTHOR_NAME=AUTHOR.name,
            GIT_AUTHOR_EMAIL=AUTHOR.email,
            GIT_COMMITTER_NAME=AUTHOR.name,
            GIT_COMMITTER_EMAIL=AUTHOR.email,
        )
    return repo


def slugify(text: str, max_len: int = SLUG_MAX) -> str:
    """The one slug rule, for branch and records-folder names: lower-case letters and digits joined by '-'.

    At most `max_len` characters; empty when `text` has no letter or digit.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-")


def branch_name(run_id: str, exp_id: int, title: str) -> str:
    return f"{BRANCH_PREFIX}/{run_id}/{exp_id}-{slugify(title) or EMPTY_SLUG}"


def best_branch(run_id: str) -> str:
    return f"{BRANCH_PREFIX}/{run_id}/best"


def head_commit(repo: git.Repo) -> str:
    try:
        return repo.head.commit.hexsha
    except ValueError as exc:
        raise AgentgolfError(
            f"{repo.working_tree_dir} has no commits yet; commit your trainer first"
        ) from exc


@contextlib.contextmanager
def worktrees_locked(repo: git.Repo) -> Iterator[None]:
    """Hold the repository's worktree list for one add or remove.

    `git worktree prune` deletes an entry whose gitdir file is not written yet, so a prune beside another
    worktree's `add` (two proposals prepared at once) breaks that add. flock serializes threads and
    processes alike; the lock file lives in the common git folder, shared by every worktree.
    """
    lock_path = (
        Path(repo.git.rev_parse("--path-format=absolute", "--git-common-dir")) / "agentgolf-worktrees.lock"
    )
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def add_worktree(repo: git.Repo, path: Path, branch: str | None, start: str) -> Path:
    """Check out `start` in its own folder, on a new branch or detached (a stale folder is replaced)."""
    with worktrees_locked(repo):
        _remove_worktree(repo, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        where = ["-B", branch] if branch else ["--detach"]
        repo.git.worktree("add", "--force", *where, str(path), start)
    return path


def remove_worktree(repo: git.Repo, path: Path) -> None:
    with worktrees_locked(repo):
        _remove_worktree(repo, path)


def _remove_worktree(repo: git.Repo, path: Path) -> None:
    if path.exists():
        try:
            repo.git.worktree("remove", "--force", str(path))
        except git.GitCommandError:
            shutil.rmtree(path, ignore_errors=True)
    repo.git.worktree("prune")


def commit_all(worktree: Path, message: str) -> str:
    """Commit everything changed in `worktree`; returns the new commit (or HEAD if nothing changed)."""
    repo = with_identity(git.Repo(worktree))
    repo.git.add("-A")
    if not repo.is_dirty(index=True, working_tree=False, untracked_files=False):
        return repo.head.commit.hexsha
    # git itself, not GitPython's index.commit: that passes the message through the repository's common
    # .git/COMMIT_EDITMSG, which a commit in another worktree (a proposal prepared beside this one) deletes.
    # No hooks and no signing: an experiment's commit is the harness's record, not a user's commit.
    identity = {
        "GIT_AUTHOR_NAME": AUTHOR.name,
        "GIT_AUTHOR_EMAIL": AUTHOR.email,
        "GIT_COMMITTER_NAME": AUTHOR.name,
        "GIT_COMMITTER_EMAIL": AUTHOR.email,
    }
    repo.git.execute(
        [
            "git",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "--no-verify",
            "--cleanup=verbatim",
            "-m",
            message,
        ],
        env=identity,
    )
    return repo.head.commit.hexsha


def set_branch(repo: git.Repo, branch: str, commit: str) -> None:
    repo.git.branch("-f", branch, commit)


def diff(repo: git.Repo, parent: str, commit: str) -> str:
    if not parent or not commit or parent == commit:
        return ""
    return repo.git.diff(parent, commit)


def chain(repo: git.Repo, base: str, tip: str) -> list[str]:
    """Commits from `base` (exclusive) to `tip` (inclusive), oldest first: the kept ideas under `tip`."""
    out = repo.git.rev_list("--reverse", f"{base}..{tip}")
    return out.split() if out else []


def pick(repo: git.Repo, commits: list[str], onto: str | None) -> tuple[str, str]:
    """Cherry-pick `commits` onto branch `onto` (default: the current branch) as clean commits.

    Refuses on a dirty tree and on a conflict, leaving the checkout exactly as it was.
    Returns (branch, new head commit).
    """
    if not commits:
        raise AgentgolfError("nothing to pick: the experiment makes no change over its run's base commit")
    repo = with_identity(repo)
    current = None if repo.head.is_detached else repo.active_branch.name
    target = onto or current
    if target is None:
        raise AgentgolfError("HEAD is detached: name the branch to pick onto with --onto BRANCH")
    if target == current:
        if repo.is_dirty(untracked_files=False):
            raise AgentgolfError(
                "your working tree has uncommitted changes; commit or stash them before picking"
            )
        before = repo.head.commit.hexsha
        try:
            repo.git.cherry_pick(*commits)
        except git.GitCommandError as exc:
            repo.git.cherry_pick("--abort")
            repo.git.reset("--hard", before)
            raise AgentgolfError(
                f"pick stopped on a conflict in {target}; nothing was changed ({_first_line(exc)})"
            ) from exc
        return target, repo.head.commit.hexsha
    # Another branch: do the work in a throwaway worktree so the user's checkout stays as it is.
    if target not in [h.name for h in repo.heads]:
        if repo.git.check_ref_format("--branch", target, with_exceptions=False) != target:
            raise AgentgolfError(f"{target!r} is not a valid git branch name")
        repo.git.branch(target, repo.head.commit.hexsha)
    scratch = Path(tempfile.mkdtemp(prefix="agentgolf-pick-"))
    try:
        with worktrees_locked(repo):
            repo.git.worktree("add", str(scratch / "tree"), target)
        tree = with_identity(git.Repo(scratch / "tree"))
        try:
            tree.git.cherry_pick(*commits)
        except git.GitCommandError as exc:
            tree.git.cherry_pick("--abort")
            raise AgentgolfError(
                f"pick stopped on a conflict in {target}; nothing was changed ({_first_line(exc)})"
            ) from exc
        return target, tree.head.commit.hexsha
    finally:
        remove_worktree(repo, scratch / "tree")
        shutil.rmtree(scratch, ignore_errors=True)


def rebase_change(repo: git.Repo, parent: str, commit: str, onto: str, scratch: Path) -> str | None:
    """Replay the whole change `parent..commit` (every commit of it, oldest first) on top of `onto`; the
    new tip, or None on a conflict. A commit that `onto` already holds is kept as an empty one, so the
    caller can tell "already there" (no diff from `onto`) from a conflict."""
    if parent == onto:
        return commit
    add_worktree(repo, scratch, None, onto)
    try:
        tree = with_identity(git.Repo(scratch))
        try:
            tree.git.cherry_pick("--allow-empty", "--keep-redundant-commits", f"{parent}..{commit}")
        except git.GitCommandError:
            tree.git.cherry_pick("--abort")
            return None
        return tree.git.rev_parse("HEAD")
    finally:
        remove_worktree(repo, scratch)


def _first_line(exc: git.GitCommandError) -> str:
    text = (exc.stderr or exc.stdout or str(exc)).strip()
    for line in text.splitlines():
        line = line.strip().removeprefix("stderr: '").strip()
        if line.startswith(("error", "CONFLICT")):
            return line
    return text.splitlines()[0] if text else "git cherry-pick failed"
