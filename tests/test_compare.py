"""`agentgolf compare A B` (issue 23): two experiments side by side in at most 100 columns: scores, Δ vs parent
as it stands, decision, the settings that differ, git's diff between their commits, and their curves.

A real workspace (git repository with each experiment's commit, SQLite ledger, run folders holding train.log
files) built as in test_report.py; nothing trains. The command itself runs as a user runs it.
"""

from __future__ import annotations

import json
import statistics

import pytest
from rich.console import Console

from agentgolf.agent.cli.compare import load
from agentgolf.agent.report.compare import Comparison, compare_lines
from tests.test_cli import one_line_error
from tests.test_morning_view import cli
from tests.test_report import LONG_LINE, PNG_SIGNATURE, loss_at, run_workspace

WIDTH = 100


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return run_workspace(tmp_path_factory.mktemp("compare") / "ws")


def _render(view: Comparison) -> list[str]:
    console = Console(width=WIDTH, record=True)
    for item in compare_lines(view, WIDTH):
        console.print(item)
    return console.export_text().splitlines()


def test_two_experiments_side_by_side_in_100_columns(ws):
    lines = _render(load(ws, 4, 5))  # the kept idea, and a screen-rung idea on top of it
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= WIDTH, text
    assert "#4 Lower LR" in lines[0] and "#5 Wider MLP" in lines[0]
    row = {line.split()[0]: line.split()[1:] for line in lines if line.strip()}
    assert row["val_bpb"] == ["1.1000", "1.2000", "+0.1000"]
    assert row["rung"] == ["full", "screen"] and row["steps"] == ["200", "60"]
    assert row["env.MATRIX_LR"] == ["0.02", "0.04"]  # the setting that differs
    assert "budget.train_seconds" not in row  # the same on both: counted, not listed
    assert "+WIDER_MARK = 3" in lines  # git's diff from #4's commit to #5's
    cut = next(line for line in lines if line.startswith("+WIDE_SETTING"))
    assert len(cut) == WIDTH and cut.endswith("…") and len(LONG_LINE) > WIDTH
    steps = {int(line.split()[0]): line.split()[1:] for line in lines if line.split()[:1] in (["1"], ["60"])}
    assert steps[60] == [f"{loss_at(60, -0.2):.4f}", f"{loss_at(60, -0.1):.4f}", "+0.1000"]
    assert "#4 ends at step 200" in text and "#5 ends at step 60" in text


def test_best_and_the_delta_as_show_prints_it(ws):
    view = load(ws, "best", 6)
    assert (view.a.exp.id, view.b.exp.id) == (4, 6)  # best: the run's last promotion
    lines = _render(view)
    row = {line.split()[0]: line.split()[1:] for line in lines if line.strip()}
    # #4's runs against every run of its parent's commit (the baseline and its two seeds), not as recorded
    expected = 1.10 - statistics.fmean([1.30, 1.32, 1.27])
    assert row["Δ"][:3] == ["vs", "parent", f"{expected:+.4f}"] and f"{expected:+.4f}" != "-0.2000"
    assert row["status"] == ["ok", "(kept)", "crash"]
    assert "none: no step lines" in "\n".join(lines)  # #6 crashed before its first step


def test_bad_ids_are_one_line_and_the_command_prints_100_columns(ws, tmp_path):
    one_line_error(cli("compare", "4", "999", cwd=ws.root), "no experiment with id 999")
    one_line_error(cli("compare", "4", "four", cwd=ws.root), "'four' is not an experiment id")
    one_line_error(cli("compare", "best", "4", cwd=ws.root), "two different experiments")
    plot = tmp_path / "both.png"
    done = cli("compare", "4", "7", "--plot", str(plot), cwd=ws.root)
    assert done.returncode == 0, done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) <= WIDTH, done.stdout
    assert "+DEEPER_MARK = 12" in done.stdout and done.stdout.splitlines()[-1] == f"plot: {plot}"
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    data = json.loads(cli("compare", "7", "4", "--json", cwd=ws.root).stdout)
    assert data["a"]["exp"]["id"] == 7 and data["b"]["exp"]["val_bpb"] == 1.10
    assert ["env.MATRIX_LR", "0.04", "0.02"] in data["settings"] and "-DEEPER_MARK = 12" in data["diff"]
