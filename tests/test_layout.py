"""The shape of the code: one-way imports between layers, modules a person can read, each saying what it is."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "import_graph.py"
FOLDERS = ("agentgolf", "agent", "experiments", "sandbox", "baseline", "prompts")
MAX_LINES = 420  # "about 400"
TRAINER = ROOT / "baseline" / "train_gpt.py"
TRAINER_MAX_LINES = 1500


def modules() -> list[Path]:
    return [p for f in FOLDERS for p in sorted((ROOT / f).rglob("*.py")) if "__pycache__" not in p.parts]


def _graph(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--root", str(root)], capture_output=True, text=True
    )


def test_no_import_goes_against_the_flow():
    proc = _graph(ROOT)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("module", "line", "complaint"),
    [
        (
            "sandbox/scoring/score.py",
            "from agentgolf.experiments.ledger import Ledger",
            "sandbox/ may not import from experiments/",
        ),
        (
            "experiments/ledger.py",
            "from agentgolf.agent import acceptance",
            "experiments/ may not import from agent/",
        ),
        ("sandbox/runner.py", "from agentgolf.baseline.corpus import read_docs", "only the shard format"),
        ("baseline/train_gpt.py", "from agentgolf.errors import AgentgolfError", "must stand alone"),
        (
            "agentgolf/challenge.py",
            "import agentgolf.sandbox.budget",
            "agentgolf/ may not import from sandbox/",
        ),
    ],
)
def test_the_check_catches_an_edge_against_the_flow(tmp_path, module, line, complaint):
    """The positive control: the same tree with one bad import added fails the check, and says where."""
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}\n")
    proc = _graph(tmp_path)
    assert proc.returncode == 1 and complaint in proc.stderr, proc.stderr


def test_a_type_checking_import_is_not_an_edge(tmp_path):
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "sandbox" / "result.py"
    target.write_text(
        target.read_text() + "\nif TYPE_CHECKING:\n    from agentgolf.agent.controller.lab import Lab\n"
    )
    assert _graph(tmp_path).returncode == 0


def test_modules_stay_readable():
    long = {
        str(p.relative_to(ROOT)): n
        for p in modules()
        if p != TRAINER and (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
    assert len(TRAINER.read_text().splitlines()) <= TRAINER_MAX_LINES


def test_each_module_says_what_it_is():
    silent = [
        str(p.relative_to(ROOT))
        for p in modules()
        if not (ast.get_docstring(ast.parse(p.read_text())) or "").strip()
    ]
    assert not silent, f"modules without a first docstring line: {silent}"


MAX_MODULES = 12  # "past a dozen modules, group them by concept in a sub-package"


def test_no_folder_holds_more_than_a_dozen_modules():
    crowded = {}
    for folder in FOLDERS:
        for d in [ROOT / folder, *(p for p in (ROOT / folder).rglob("*") if p.is_dir())]:
            n = sum(1 for p in d.glob("*.py") if p.name != "__init__.py")
            if "__pycache__" not in d.parts and n > MAX_MODULES:
                crowded[str(d.relative_to(ROOT))] = n
    assert not crowded, f"folders past {MAX_MODULES} modules (group them in sub-packages): {crowded}"
