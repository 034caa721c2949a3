"""kill -9 at random moments, resume after each: nothing lost, nothing doubled (a short bench/kill_soak.py)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "bench" / "kill_soak.py"


def _soak_module():
    spec = importlib.util.spec_from_file_location("kill_soak", SOAK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_five_kills_and_resumes_break_no_invariant(tmp_path):
    soak = _soak_module()
    ws = soak.make_workspace(tmp_path)
    said: list[str] = []
    out = soak.soak(ws, kills=5, budget=3, rng=random.Random(7), log=said.append)
    assert out["problems"] == [], (out, said)
    assert out["kills"] >= 3, said  # the run outlived most kills (it may finish before the last ones)


def test_the_invariant_check_can_fail(tmp_path):
    """The positive control: a ledger with a row left running and a doubled change is reported broken."""
    import sqlite3

    soak = _soak_module()
    ws = soak.make_workspace(tmp_path)
    from agentgolf.agent.workspace import Workspace

    ledger = Workspace(ws).ledger()
    for status in ("running", "ok"):
        ledger.add_experiment(kind="proposal", status=status, fingerprint="same change")
    ledger.close()
    problems = soak.check(ws, budget=2)
    assert any("rows left running" in p for p in problems)
    assert any("trained twice" in p for p in problems)
    with sqlite3.connect(ws / ".agentgolf" / "ledger.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
