"""The leaderboard's techniques as tested patches: a catalogue of our own implementations of the
records' ideas (parameter-golf-facts.md §5), each a small unified diff against the baseline trainer.

The search treats each technique as one categorical move and an LLM sees the list as known options;
the reported effect is what the records measured at full scale, not a promise for this workspace.
Patches ship as package data in `technique_patches/<name>.patch` and apply with `git apply`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from pydantic import BaseModel

from agentgolf.agent.proposers.proposal import Proposal, ProposalError
from agentgolf.challenge import TRAINER_FILE

PATCH_FOLDER = "technique_patches"


class Technique(BaseModel):
    name: str  # slug, also the patch file's stem
    title: str  # short, used as the proposal title
    category: str  # one of proposal.CATEGORIES
    hypothesis: str  # why it should help here
    reported_effect: str  # what the records measured, or a negative result
    reported_bpb: float | None = None  # signed reported delta in bpb (negative = better), if one is given


TECHNIQUES: list[Technique] = []


def catalogue() -> list[Technique]:
    """Every technique whose patch ships with the package."""
    return [t for t in TECHNIQUES if _patch_file(t.name).is_file()]


def _patch_file(name: str):
    return resources.files("agentgolf.agent.proposers").joinpath(PATCH_FOLDER, f"{name}.patch")


def patch_text(t: Technique) -> str:
    """The unified diff against the baseline trainer, paths a/train_gpt.py and b/train_gpt.py."""
    return _patch_file(t.name).read_text()


def apply_technique(tree: Path, t: Technique) -> None:
    """Apply the patch to tree/train_gpt.py, or raise ProposalError with a one-line reason."""
    if not (tree / TRAINER_FILE).is_file():
        raise ProposalError(f"technique {t.name}: {TRAINER_FILE} is missing from the tree")
    patch = patch_text(t)
    with tempfile.TemporaryDirectory() as scratch:  # outside any repository: git apply acts as patch(1)
        work = Path(scratch) / TRAINER_FILE
        shutil.copyfile(tree / TRAINER_FILE, work)
        done = subprocess.run(
            ["git", "apply", "--whitespace=nowarn", "-"],
            cwd=scratch,
            input=patch,
            capture_output=True,
            text=True,
            env={**os.environ, "GIT_CEILING_DIRECTORIES": scratch},
        )
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["git apply failed"])[0]
            raise ProposalError(f"technique {t.name} does not apply to this trainer: {reason}")
        shutil.copyfile(work, tree / TRAINER_FILE)


def to_proposal(t: Technique) -> Proposal:
    """The proposal that records this technique in the ledger: the patch is applied to the tree separately."""
    return Proposal(
        title=t.title,
        hypothesis=f"{t.hypothesis} Reported: {t.reported_effect}.",
        category=t.category,
        expected_effect=t.reported_effect,
    )
