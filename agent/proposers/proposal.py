"""A proposal: what a proposer wants to try, as exact search/replace edits, and the checks it must pass
before it may spend any training time."""

from __future__ import annotations

import difflib
import hashlib
import py_compile
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from agentgolf.challenge import TRAINER_FILE
from agentgolf.errors import AgentgolfError
from agentgolf.experiments.ledger import Experiment
from agentgolf.sandbox.budget import Budget

CLOSEST_LINES = 8  # lines of the file shown when a search text is not found
CATEGORIES = ("opt", "sched", "arch", "quant", "data", "eval", "size", "sys", "other")


class ProposalError(AgentgolfError):
    """The proposal cannot be tried as it is; the message is fed back to the proposer verbatim."""

    def __init__(self, message: str, usage: Usage | None = None, title: str = ""):
        super().__init__(message)
        self.usage = usage
        self.title = title


class Edit(BaseModel):
    path: str = TRAINER_FILE
    search: str = Field(min_length=1, description="exact text to find; must occur exactly once")
    replace: str


class Usage(BaseModel):
    """What a proposal cost the LLM account."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, those the endpoint served from its prefix cache
    usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            usd=self.usd + other.usd,
        )


class Proposal(BaseModel):
    title: str = Field(min_length=3, max_length=120)
    hypothesis: str = ""
    category: str = "other"
    expected_effect: str = ""
    edits: list[Edit] = Field(default_factory=list, description="empty when the proposer edited files itself")
    set: dict[str, float | int | str] = Field(
        default_factory=dict, description="settings to change where they are in force (knobs.set_edits)"
    )
    usage: Usage = Field(default_factory=Usage, exclude=True)
    session: dict = Field(default_factory=dict, exclude=True)  # how it was made: API mode, turns, tool calls

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        return value if value in CATEGORIES else "other"

    def commit_message(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.set.items())
        parts = (self.hypothesis, self.expected_effect, f"set: {settings}" if settings else "")
        body = "\n\n".join(part for part in parts if part)
        return f"{self.title}\n\n{body}".strip() + "\n"


class ProposalContext(BaseModel):
    """Everything a proposer may look at: the parent's source, the ledger and its digest, the budget,
    the parent's run facts, what else is in flight, and the person's notes (context.build_context)."""

    source: str
    trainer: str
    parent: Experiment
    history: list[Experiment]
    digest: str
    trainer_env: dict[str, str]
    budget: Budget
    facts: str = ""  # the parent's run, a fixed-size block (facts.parent_block)
    in_flight: str = ""  # which parent the change lands on, and what is still training
    notes: str = ""  # `agentgolf note`: what the person running this wants every proposal to know
    root: Path | None = None  # the workspace (git repository), for tools that show past experiments
    runs_dir: Path | None = None  # the experiments' run folders
    rules: str = ""  # how the idea will be measured, with the run's noise and budget (rules.py)
    data: str = ""  # what the text is, from the dataset's manifest (data_facts.py)
    techniques: str = ""  # the leaderboard's techniques, each with its outcome here (techniques.py)
    notebook: str = ""  # what earlier sessions of the run noted for later ones (notebook.py)
    name: str = ""  # this preparation's name on the board of preparations in flight (board.py)
    outline_over_lines: int = 0  # a trainer longer than this is sent as an outline (0: always whole)
    desk: Any = Field(None, exclude=True)  # the session's live access to the lab (research.Desk), if any


# A proposer makes its change in `tree` (a worktree at the parent's commit) and describes it;
# None means it has nothing new to try.
Proposer = Callable[[ProposalContext, Path], "Proposal | None"]


def apply_edits(root: Path, edits: list[Edit]) -> list[Path]:
    """Apply every edit or none: all are checked against the current files before anything is written."""
    pending: dict[Path, str] = {}
    for number, edit in enumerate(edits, 1):
        path = (root / edit.path).resolve()
        if root.resolve() not in path.parents:
            raise ProposalError(f"edit {number}: path {edit.path!r} is outside the trainer's folder")
        if path not in pending:
            if not path.is_file():
                raise ProposalError(f"edit {number}: file {edit.path!r} does not exist")
            pending[path] = path.read_text()
        text = pending[path]
        count = text.count(edit.search)
        if count != 1:
            raise ProposalError(f"edit {number}: {why_no_match(text, edit.search, edit.path, count)}")
        pending[path] = text.replace(edit.search, edit.replace)
    for path, text in pending.items():
        path.write_text(text)
    return list(pending)


def why_no_match(text: str, search: str, path: str, count: int) -> str:
    """Why a search text does not pick out one place, with the file's closest lines, numbered, to copy."""
    lines = text.splitlines()
    if count > 1:
        at = [text[: m.start()].count("\n") + 1 for m in re.finditer(re.escape(search), text)][:6]
        return (
            f"search text found {count} times in {path} (lines {', '.join(map(str, at))}); it must be "
            f"unique: include a neighbouring line. Search text: {search[:80]!r}"
        )
    wanted = search.strip("\n").splitlines() or [search]
    if " ".join(search.split()) in " ".join(text.split()):
        cause = "it differs from the file only in whitespace or indentation"
    else:
        cause = "no such text"
    start, size = _closest_window(lines, wanted)
    shown = "\n".join(f"{i + 1:>5}: {lines[i]}" for i in range(start, min(len(lines), start + size)))
    return (
        f"search text not found in {path} ({cause}): {search[:80]!r}. The closest lines in the file, "
        f"with their numbers (copy the text exactly, without the numbers):\n{shown}"
    )


def _closest_window(lines: list[str], wanted: list[str]) -> tuple[int, int]:
    """Where the file is most like `wanted`: the line most like its longest line, aligned, one line of
    context either side; returns (first line index, how many lines)."""
    size = min(len(wanted), CLOSEST_LINES)
    target = [w.strip() for w in wanted[:size]]
    at = max(range(size), key=lambda k: len(target[k]))
    best_i, best = 0, -1.0
    for i, line in enumerate(lines):
        match = difflib.SequenceMatcher(None, target[at], line.strip())
        if match.real_quick_ratio() <= best or match.quick_ratio() <= best:
            continue
        if (ratio := match.ratio()) > best:
            best_i, best = i, ratio
    start = max(0, best_i - at - 1)
    return start, size + 2


def check_trainer(path: Path, budget: Budget, work_dir: Path) -> None:
    """Byte-compile, then import it in the sandbox: catches errors before any training time is spent."""
    from agentgolf.sandbox.import_check import check_import

    if not path.is_file():
        raise ProposalError(f"the trainer {path.name} is missing")
    check_compiles([path])
    problem = check_import(path, work_dir, budget)
    if problem:
        raise ProposalError(problem)


def check_compiles(paths: list[Path]) -> None:
    with tempfile.TemporaryDirectory() as scratch:  # never leave bytecode in the worktree
        for path in paths:
            if path.suffix != ".py":
                continue
            try:
                py_compile.compile(str(path), doraise=True, cfile=str(Path(scratch) / "check.pyc"))
            except py_compile.PyCompileError as exc:
                reason = exc.msg.strip().splitlines()[-1]
                raise ProposalError(f"{path.name} no longer compiles: {reason}") from exc


def diff_fingerprint(diff: str) -> str:
    """Same change, same fingerprint: ignores git's headers, hunk offsets and whitespace-only differences."""
    kept = []
    for line in diff.splitlines():
        if line[:1] not in ("+", "-") or line.startswith(("+++", "---")):
            continue
        text = re.sub(r"\s+", " ", line[1:]).strip()
        if text:
            kept.append(line[0] + text)
    return hashlib.sha256("\n".join(sorted(kept)).encode()).hexdigest()[:16]
