"""One experiment's evidence beyond its ledger row: its diff, its log tail and its training curve.

The report's per-experiment sections and `agentgolf compare` read them the way `agentgolf show` does: the
diff is git's between the recorded commits (experiments/worktree.py), the curve is the trainer's step lines
in the run folder's `train.log` (sandbox/metrics.py). Nothing here fails a report: a commit the repository
lacks, or a run folder that is gone, is said in a note and the rest is shown.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import git
from pydantic import BaseModel, Field

from agentgolf.errors import AgentgolfError
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import Experiment
from agentgolf.sandbox.metrics import CurvePoint, parse_train_curve
from agentgolf.sandbox.run_setup import TRAIN_LOG

LOG_TAIL_LINES = 25
"""The last lines of a run's log a report section shows: its last steps, the size lines and the final
score, or the error it died of. Only what the page shows; no result depends on it."""
MAX_DIFF_LINES = 400
"""A diff longer than this is cut in the report's page (`agentgolf show ID` prints it whole), so one
rewrite of the trainer cannot bury the rest of the page. Only what the page shows."""
LOG_READ_BYTES = 8 * 2**20  # more than the sandbox's default log cap (4 MiB): the whole log


class Evidence(BaseModel):
    """What the report shows of one experiment besides its row."""

    exp_id: int
    diff: str = ""  # git's diff against the parent's commit, cut at MAX_DIFF_LINES
    diff_note: str = ""  # why there is no diff, or that it was cut
    log_tail: str = ""
    log_source: str = ""  # the file the tail is from: train.log, else the ledger's log_tail
    curve: list[CurvePoint] = Field(default_factory=list)


def read_log(folder: Path) -> str:
    """The run folder's train.log, or "" when there is none."""
    try:
        with open(folder / TRAIN_LOG, "rb") as f:
            return f.read(LOG_READ_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


def curve_of(log_text: str) -> list[CurvePoint]:
    """The logged training steps with a finite loss (a diverged step is not a point on a chart)."""
    return [p for p in parse_train_curve(log_text) if math.isfinite(p.train_loss)]


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def open_repo(root: Path | None) -> git.Repo | None:
    """The workspace's repository, or None where there is none (a ledger read outside its workspace)."""
    if root is None:
        return None
    try:
        return wt.open_repo(root)
    except AgentgolfError:  # not a repository: no diffs, never a failed report
        return None


def git_diff(repo: git.Repo | None, old: str, new: str) -> tuple[str, str]:
    """(diff, note): git's diff between two commits, or "" and the reason there is none."""
    if not old or not new:
        return "", "no commit recorded"
    if old == new:
        return "", "the same commit: no change"
    if repo is None:
        return "", "no git repository beside the ledger"
    try:
        return wt.diff(repo, old, new), ""
    except git.GitCommandError:
        return "", f"commit {old[:10]} or {new[:10]} is not in the repository"


def cut_diff(diff: str, limit: int = MAX_DIFF_LINES) -> tuple[str, str]:
    lines = diff.splitlines()
    if len(lines) <= limit:
        return diff, ""
    return "\n".join(lines[:limit]), f"{len(lines) - limit} more lines: `agentgolf show` prints them"


def gather(
    experiments: list[Experiment], folder_of: Callable[[int], Path], repo: git.Repo | None
) -> dict[int, Evidence]:
    """Each row's evidence: its diff against its parent's commit (one git call per distinct pair of
    commits), its log tail and its curve."""
    diffs: dict[tuple[str, str], tuple[str, str]] = {}
    found = {}
    for e in experiments:
        pair = (e.parent_commit, e.commit_sha)
        if pair not in diffs:
            diffs[pair] = _diff_of(repo, e)
        diff, note = diffs[pair]
        log = read_log(folder_of(e.id))
        found[e.id] = Evidence(
            exp_id=e.id,
            diff=diff,
            diff_note=note,
            log_tail=tail(log or e.log_tail),
            log_source=TRAIN_LOG if log else ("the ledger's log tail" if e.log_tail else ""),
            curve=curve_of(log),
        )
    return found


def _diff_of(repo: git.Repo | None, e: Experiment) -> tuple[str, str]:
    if not e.parent_commit and e.parent_id is None:
        return "", "the run's base commit: no change"
    diff, note = git_diff(repo, e.parent_commit, e.commit_sha)
    if diff:
        return cut_diff(diff)
    return "", note or "no change against its parent"
