"""bench/acceptance_power.py at tiny sizes: both designs over nights, the table and goals, the JSON, the old bench.

The first night of every paired cell asks `paired.decide` over the whole ledger for each verdict and asserts
it agrees with the bench's `paired.judge` on its incrementally pooled sigma_d, so a run is also that check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "acceptance_power.py"


def bench(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_nights_json_has_every_design_drift_and_goal():
    rows = json.loads(bench("--nights", "3", "--per-night", "6", "--json"))
    assert [(r["design"], r["drift"], r["f"]) for r in rows] == [
        (design, drift, f)
        for design in ("current", "paired")
        for drift, f in (("none", 0.5), ("linear 2σ", 0.5), ("linear 6σ", 0.5), ("step 2σ", 0.5), ("none", 0))
    ]
    for r in rows:
        assert set(r["gains"]) == {"0", "1", "2"}
        for cell in r["gains"].values():
            assert 0 <= cell["promoted"] <= 1 and cell["promoted_se"] >= 0
            assert 0 <= cell["nights_with_any"] <= 1
            assert cell["trainings_per_candidate"] >= (2 if r["design"] == "paired" else 1)
        assert r["gains"]["0"]["nights"] == (3 if r["design"] == "paired" else 1)
        assert ("goals" in r) == (r["design"] == "paired")
    goals = rows[-1]["goals"]
    assert set(goals) == {"null promoted", "nights with a false promotion", "2σ promoted", "1σ promoted"}
    assert all(isinstance(g["pass"], bool) for g in goals.values())


def test_table_and_goals_are_printed():
    out = bench("--nights", "2", "--per-night", "5", "--designs", "paired", "--drifts", "none,step2")
    assert "| design | drift | f | false promotions per null" in out
    assert "| paired | step 2σ | 0.5 |" in out and "| paired | none | 0 |" in out
    assert "goals, paired design:" in out
    assert "of 3 paired rows meet every goal" in out


def test_the_old_bench_still_runs():
    rows = json.loads(bench("--candidates", "40", "--per-run", "10", "--json"))
    assert [r["gain_sigma"] for r in rows] == [0.0, 0.5, 1.0, 2.0, 3.0]
    assert all(r["mean_runs"] >= 1 for r in rows)
