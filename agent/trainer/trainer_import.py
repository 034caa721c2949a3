"""`agentgolf init DIR --trainer PATH`: a researcher's own trainer as the workspace's baseline, checked first.

PATH is a trainer file, or a records folder (its train_gpt.py with the README, logs and extra files beside
it, as the challenge's records ship). Every file is committed, the trainer as train_gpt.py, so the loop
patches and replays it like our own; but the sandbox runs the trainer file alone, so a trainer that imports
a module from its folder is refused (all counted code lives in the one file, as the challenge asks).

The trainer is refused before anything is written when its source misses a contract point, and after the
workspace is made when its check run does (its config is then taken away, so the folder is no workspace and
`init` can be run again once the trainer is fixed; the commit stays in git's history).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agentgolf.agent.trainer.check import CheckReport, check_trainer
from agentgolf.agent.trainer.contract import read_source, static_points
from agentgolf.challenge import SIZE_LIMIT_BYTES, TRAINER_FILE
from agentgolf.errors import AgentgolfError

SKIPPED = {".git", "__pycache__", ".agentgolf", "data"}
MAX_FILE_BYTES = 64 * 2**20  # a records folder's logs are small; a checkpoint is no part of a trainer


class Import:
    """What PATH brings: the trainer's file, every file to commit by its name in the workspace, and the
    module names the trainer could import from its folder."""

    def __init__(self, path: Path):
        path = path.expanduser().resolve()
        if not path.exists():
            raise AgentgolfError(f"--trainer {path} does not exist")
        if path.is_file():
            self.trainer, self.files, self.siblings = path, {TRAINER_FILE: path}, set()
            return
        self.trainer = _trainer_in(path)
        self.files = {TRAINER_FILE: self.trainer}
        for file in sorted(path.rglob("*")):
            rel = file.relative_to(path)
            if file == self.trainer or not file.is_file() or SKIPPED & set(rel.parts):
                continue
            if file.stat().st_size > MAX_FILE_BYTES:
                raise AgentgolfError(
                    f"{file} is {file.stat().st_size:,} bytes: not part of a trainer; move it out"
                )
            self.files[str(rel)] = file
        self.siblings = {
            rel.split("/")[0].removesuffix(".py")
            for rel in self.files
            if rel != TRAINER_FILE and (rel.endswith(".py") or "/" in rel)
        }


def _trainer_in(folder: Path) -> Path:
    """The records folder's trainer: its train_gpt.py, else its only Python file."""
    if (folder / TRAINER_FILE).is_file():
        return folder / TRAINER_FILE
    found = sorted(folder.glob("*.py"))
    if len(found) == 1:
        return found[0]
    names = ", ".join(p.name for p in found) or "none"
    raise AgentgolfError(
        f"{folder} has no {TRAINER_FILE} and not exactly one .py file ({names}): pass the file"
    )


def init_with_trainer(
    root: Path, path: Path, *, demo: bool = False, say: Callable[[str], None] = print
) -> tuple[object, CheckReport]:
    """Make the workspace with PATH's trainer as its baseline and check it; refuse a trainer that fails."""
    from agentgolf.agent.workspace import CONFIG_FILE, LEDGER_FILE, STATE_DIR, init_workspace

    root = root.resolve()
    if (root / STATE_DIR / CONFIG_FILE).exists():
        raise AgentgolfError(f"{root} is already an agentgolf workspace")
    found = Import(path)
    static = static_points(read_source(found.trainer), SIZE_LIMIT_BYTES, found.siblings)
    refuse(found.trainer, [p for p in static if p.state == "missed"], "nothing was written")
    commit_files(root, found, path)
    ws = init_workspace(root, demo=demo, progress=demo)
    report = check_trainer(ws.trainer_path, ws, siblings=found.siblings, say=say)
    for point in report.points:
        say(point.line())
    if report.missed:
        for name in (CONFIG_FILE, LEDGER_FILE):
            (ws.state / name).unlink(missing_ok=True)
        refuse(found.trainer, report.missed, f"{root} is not a workspace; fix the trainer and run init again")
    return ws, report


def refuse(trainer: Path, missed: list, after: str) -> None:
    if missed:
        reasons = "; ".join(f"{p.name}: {p.detail}" for p in missed)
        raise AgentgolfError(f"refused {trainer}: it misses the trainer contract ({reasons}); {after}")


def commit_files(root: Path, found: Import, origin: Path) -> None:
    """Write PATH's files into the repository and commit them; never over a user's uncommitted file."""

    from agentgolf.experiments.worktree import AUTHOR, repo_here

    root.mkdir(parents=True, exist_ok=True)
    repo = repo_here(root)
    untracked = set(repo.untracked_files)
    for name, source in found.files.items():
        target = root / name
        if target.exists() and target.read_bytes() != source.read_bytes():
            dirty = name in untracked or (repo.head.is_valid() and repo.is_dirty(path=name))
            if dirty:
                raise AgentgolfError(f"{target} has uncommitted changes that --trainer would overwrite")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    repo.index.add(list(found.files))
    if not repo.head.is_valid() or repo.index.diff("HEAD"):
        message = f"agentgolf: baseline trainer from {origin.name}\n"
        repo.index.commit(message, author=AUTHOR, committer=AUTHOR)
