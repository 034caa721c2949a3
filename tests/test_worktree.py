"""Branches, worktrees and pick on real git repositories."""

from __future__ import annotations

from pathlib import Path

import git
import pytest

from agentgolf.errors import AgentgolfError
from agentgolf.experiments import worktree as wt


@pytest.fixture
def repo(tmp_path: Path) -> git.Repo:
    repo = git.Repo.init(tmp_path / "repo", initial_branch="main")
    (tmp_path / "repo" / "train_gpt.py").write_text("lr = 0.04\nlayers = 9\nwidth = 512\n")
    repo.index.add(["train_gpt.py"])
    repo.index.commit("baseline", author=wt.AUTHOR, committer=wt.AUTHOR)
    return repo


def _experiment(repo: git.Repo, tmp_path: Path, start: str, name: str, old: str, new: str) -> str:
    tree = wt.add_worktree(repo, tmp_path / "trees" / name, f"agentgolf/r1/{name}", start)
    path = tree / "train_gpt.py"
    path.write_text(path.read_text().replace(old, new))
    sha = wt.commit_all(tree, f"{name}\n\nwhy {name}\n")
    wt.remove_worktree(repo, tree)
    return sha


def test_branch_names_are_git_safe():
    assert (
        wt.branch_name("20261122-1300", 7, "Lower LRs: 0.02 / 0.03!")
        == "agentgolf/20261122-1300/7-lower-lrs-0-02-0-03"
    )
    assert wt.branch_name("r", 1, "???") == "agentgolf/r/1-change"
    assert wt.slugify("x" * 100) == "x" * wt.SLUG_MAX
    assert git.Git().check_ref_format("--branch", wt.branch_name("r", 3, "a..b/c~d^e:f"))


def test_worktree_commit_leaves_user_checkout_untouched(repo, tmp_path):
    base = repo.head.commit.hexsha
    sha = _experiment(repo, tmp_path, base, "1-lower-lr", "lr = 0.04", "lr = 0.02")
    assert (Path(repo.working_tree_dir) / "train_gpt.py").read_text().startswith("lr = 0.04")
    assert repo.active_branch.name == "main" and not repo.is_dirty(untracked_files=True)
    assert repo.commit(sha).parents[0].hexsha == base
    assert "agentgolf/r1/1-lower-lr" in [h.name for h in repo.heads]
    assert not (tmp_path / "trees" / "1-lower-lr").exists()
    assert "-lr = 0.04" in wt.diff(repo, base, sha) and "+lr = 0.02" in wt.diff(repo, base, sha)


def test_pick_chain_onto_current_branch(repo, tmp_path):
    base = repo.head.commit.hexsha
    first = _experiment(repo, tmp_path, base, "1-lr", "lr = 0.04", "lr = 0.02")
    second = _experiment(repo, tmp_path, first, "2-layers", "layers = 9", "layers = 10")
    commits = wt.chain(repo, base, second)
    assert commits == [first, second]
    branch, head = wt.pick(repo, commits, None)
    assert branch == "main"
    text = (Path(repo.working_tree_dir) / "train_gpt.py").read_text()
    assert text == "lr = 0.02\nlayers = 10\nwidth = 512\n"
    messages = [c.message.splitlines()[0] for c in repo.iter_commits("main", max_count=3)]
    assert messages == ["2-layers", "1-lr", "baseline"]
    assert head == repo.head.commit.hexsha


def test_pick_onto_other_branch_keeps_checkout(repo, tmp_path):
    base = repo.head.commit.hexsha
    first = _experiment(repo, tmp_path, base, "1-lr", "lr = 0.04", "lr = 0.02")
    branch, head = wt.pick(repo, wt.chain(repo, base, first), "winner")
    assert branch == "winner" and repo.active_branch.name == "main"
    assert repo.head.commit.hexsha == base
    assert repo.commit(head).tree["train_gpt.py"].data_stream.read().startswith(b"lr = 0.02")


def test_pick_conflict_leaves_tree_as_it_was(repo, tmp_path):
    base = repo.head.commit.hexsha
    first = _experiment(repo, tmp_path, base, "1-lr", "lr = 0.04", "lr = 0.02")
    path = Path(repo.working_tree_dir) / "train_gpt.py"
    path.write_text("lr = 0.1\nlayers = 9\nwidth = 512\n")
    repo.index.add(["train_gpt.py"])
    mine = repo.index.commit("my own lr", author=wt.AUTHOR, committer=wt.AUTHOR).hexsha
    with pytest.raises(AgentgolfError, match="conflict"):
        wt.pick(repo, [first], None)
    assert repo.head.commit.hexsha == mine
    assert path.read_text().startswith("lr = 0.1")
    assert not repo.is_dirty(untracked_files=True)


def test_pick_conflict_on_other_branch(repo, tmp_path):
    base = repo.head.commit.hexsha
    first = _experiment(repo, tmp_path, base, "1-lr", "lr = 0.04", "lr = 0.02")
    other = _experiment(repo, tmp_path, base, "other", "lr = 0.04", "lr = 0.5")
    repo.git.branch("target", other)
    with pytest.raises(AgentgolfError, match="conflict"):
        wt.pick(repo, [first], "target")
    assert repo.commit("target").hexsha == other
    assert repo.active_branch.name == "main" and repo.head.commit.hexsha == base
    assert len(repo.git.worktree("list").splitlines()) == 1


def test_pick_refuses_dirty_tree(repo, tmp_path):
    base = repo.head.commit.hexsha
    first = _experiment(repo, tmp_path, base, "1-lr", "lr = 0.04", "lr = 0.02")
    path = Path(repo.working_tree_dir) / "train_gpt.py"
    path.write_text("lr = 0.04\nlayers = 9\nwidth = 512\n# my notes\n")
    with pytest.raises(AgentgolfError, match="uncommitted"):
        wt.pick(repo, [first], None)
    assert path.read_text().endswith("# my notes\n")
    assert repo.head.commit.hexsha == base


def test_worktrees_of_one_repository_commit_at_once(repo, tmp_path):
    """Proposals are prepared side by side, each committing in its own worktree of the one repository.
    GitPython's index.commit passes the message through the common .git/COMMIT_EDITMSG, which one commit
    deleted under another (FileNotFoundError on CI); every commit must land, each on its own tree."""
    import threading

    trees = [
        wt.add_worktree(repo, tmp_path / "wt" / f"p{i}", None, repo.head.commit.hexsha) for i in range(4)
    ]
    made: dict[int, list[str]] = {i: [] for i in range(len(trees))}
    errors: list[BaseException] = []
    start = threading.Barrier(len(trees))

    def work(i: int, tree: Path) -> None:
        try:
            start.wait()
            for k in range(8):
                (tree / f"file{i}.txt").write_text(f"{i} {k}\n")
                made[i].append(wt.commit_all(tree, f"tree {i} change {k}\n\nA longer message body.\n"))
        except BaseException as e:  # reported below, with the rest
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, t)) for i, t in enumerate(trees)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for i, commits in made.items():
        assert len(set(commits)) == 8
        tip = repo.commit(commits[-1])
        assert tip.message.startswith(f"tree {i} change 7") and tip.author.name
        assert tip.tree[f"file{i}.txt"].data_stream.read() == f"{i} 7\n".encode()


def test_worktrees_added_and_removed_at_once(repo, tmp_path):
    """Two proposals prepared at once: one's `git worktree prune` deleted the other's half-made entry
    (".git/worktrees/pending-b/gitdir: No such file or directory" on CI). Adds beside removes (each
    remove prunes) from several threads must all land, and every tree must be a working checkout."""
    import threading

    head = repo.head.commit.hexsha
    errors: list[BaseException] = []
    start = threading.Barrier(6)
    adding = threading.Event()

    def add(i: int) -> None:
        try:
            start.wait()
            for k in range(25):
                tree = wt.add_worktree(repo, tmp_path / "wt" / f"p{i}-{k}", None, head)
                assert git.Repo(tree).head.commit.hexsha == head
        except BaseException as e:  # reported below, with the rest
            errors.append(e)

    def prune(i: int) -> None:
        start.wait()
        while not adding.is_set():
            wt.remove_worktree(repo, tmp_path / "gone" / str(i))

    adders = [threading.Thread(target=add, args=(i,)) for i in range(3)]
    pruners = [threading.Thread(target=prune, args=(i,)) for i in range(3)]
    for t in adders + pruners:
        t.start()
    for t in adders:
        t.join(300)
    adding.set()
    for t in pruners:
        t.join(60)
    assert not errors, errors[0]
    assert repo.git.worktree("list").count("\n") == 3 * 25  # the main checkout and every tree added
