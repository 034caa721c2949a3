"""Every row shows the steps it trained and its step time, and a candidate whose steps differ from its
control's by more than the share set (experiments/steps.py) is flagged wherever the rows are shown: `agentgolf
ledger` and `agentgolf show` (real subprocesses on a real workspace), the proposer's digest and the report.

The rows are recorded as the loop records them (Lab.record), with the figures of the finding that motivated
the flag: a null change "confirmed" at -0.59 bpb, its runs trained 64 steps while its control trained 30.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agentgolf.agent.controller.lab import Lab
from agentgolf.agent.proposers.briefing.digest import build_digest
from agentgolf.agent.report.report import write_report
from agentgolf.experiments.ledger import Run
from agentgolf.experiments.steps import STEPS_SHARE, pair_flags, steps_flag
from agentgolf.sandbox.result import SandboxResult, Status
from tests.test_cli import agentgolf
from tests.tiny import make_workspace

FLAG = "64 steps vs 30 in #3 (its control): 53% apart, more than 10%"


@pytest.fixture
def recorded(tmp_path: Path, tiny_dataset):
    """A baseline, a candidate that trained 64 steps beside a control that trained 30 (flagged), and one that
    trained 101 beside a control's 100 (not)."""
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    ledger = ws.ledger()
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit="0" * 40))
    lab = Lab(ws, ledger, ws.config.budget)

    def row(kind: str, title: str, bpb: float, steps: int, step_ms: float, **fields):
        exp = ledger.add_experiment(run_id="r1", kind=kind, status="running", title=title, seed=1, **fields)
        result = SandboxResult(
            status=Status.ok, val_bpb=bpb, train_seconds=60.0, steps=steps, step_ms=step_ms
        )
        return lab.record(exp, result, None)

    base = row("baseline", "Baseline", 2.50, 31, 1935.5, kept=True)
    null = row("proposal", "Null change", 1.91, 64, 937.5, parent_id=base.id, kept=True)
    control = row("control", "Control of #2", 2.50, 30, 2000.0, parent_id=base.id, paired_with=[null.id])
    fair = row("proposal", "Fair change", 2.49, 101, 594.1, parent_id=null.id)
    row("control", "Control of #4", 2.49, 100, 600.0, parent_id=null.id, paired_with=[fair.id])
    assert control.id == 3
    return ws, ledger


def test_the_flag_is_a_share_of_the_larger_count(recorded):
    _, ledger = recorded
    rows = ledger.experiments()
    flags = pair_flags(rows)
    assert sorted(flags) == [2, 3] and flags[2][0].startswith(FLAG)
    assert flags[3][0].startswith("30 steps vs 64 in #2 (its candidate): 53% apart")
    assert steps_flag(rows[3], rows[4]) is None  # 101 vs 100: 1% apart
    assert steps_flag(rows[3], rows[4], share=0.005) is not None  # the share is a setting
    assert STEPS_SHARE == 0.10


def test_ledger_and_show_print_the_steps_and_the_flag(recorded):
    ws, _ = recorded
    table = agentgolf("ledger", cwd=ws.root, check=True).stdout
    assert "steps" in table and "ms/step" in table
    null_line = next(line for line in table.splitlines() if "Null change" in line)
    assert "64 !" in null_line and "937.5" in null_line
    fair_line = next(line for line in table.splitlines() if "Fair change" in line)
    assert "101" in fair_line and "!" not in fair_line
    assert f"! #2: {FLAG}" in table

    shown = agentgolf("show", "2", cwd=ws.root, check=True).stdout
    assert "steps: 64 steps, 937.5 ms/step" in shown
    assert f"! {FLAG}" in shown
    fair = agentgolf("show", "4", cwd=ws.root, check=True).stdout
    assert "steps: 101 steps, 594.1 ms/step" in fair and "! " not in fair

    records = json.loads(agentgolf("ledger", "--json", cwd=ws.root, check=True).stdout)
    assert {r["id"]: r["steps"] for r in records} == {1: 31, 2: 64, 3: 30, 4: 101, 5: 100}


def test_the_digest_and_the_report_show_them(recorded, tmp_path):
    ws, ledger = recorded
    history = ledger.experiments()
    digest = build_digest(history, parent=ledger.get(2))
    null_line = next(line for line in digest.splitlines() if "Null change" in line)
    assert "64 steps, 937.5 ms/step" in null_line and f"steps flag: {FLAG}" in null_line

    report = write_report(ledger, "r1", tmp_path / "report").markdown.read_text()
    assert "Training steps" in report and FLAG in report
