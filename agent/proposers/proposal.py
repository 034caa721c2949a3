"""A proposal: what a proposer wants to try, as exact search/replace edits, and the checks it must pass
before it may spend any training time."""

from __future__ import annotations

import hashlib
import py_compile
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from agentgolf.challenge import TRAINER_FILE
from agentgolf.errors import AgentgolfError
from agentgolf.experiments.ledger import Experiment
from agentgolf.sandbox.budget import Budget

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
    usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            usd=self.usd + other.usd,
        )


class Proposal(BaseModel):
    title: str = Field(min_length=3, max_length=120)
    hypothesis: str = ""
    category: str = "other"
    expected_effect: str = ""
    edits: list[Edit] = Field(default_factory=list, description="empty when the proposer edited files itself")
    usage: Usage = Field(default_factory=Usage, exclude=True)

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        return value if value in CATEGORIES else "other"

    def commit_message(self) -> str:
        body = "\n\n".join(part for part in (self.hypothesis, self.expected_effect) if part)
        return f"{self.title}\n\n{body}".strip() + "\n"


class ProposalContext(BaseModel):
    """Everything a proposer may look at: the parent's source, the ledger and its digest, the budget."""

    source: str
    trainer: str
    parent: Experiment
    history: list[Experiment]
    digest: str
    trainer_env: dict[str, str]
    budget: Budget


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
            where = "not found" if count == 0 else f"found {count} times (must be unique)"
            raise ProposalError(f"edit {number}: search text {where} in {edit.path}: {edit.search[:80]!r}")
        pending[path] = text.replace(edit.search, edit.replace)
    for path, text in pending.items():
        path.write_text(text)
    return list(pending)


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
