"""The morning report from a real SQLite ledger: Markdown, a self-contained HTML page and the plot.

The last test opens the page in headless Chromium (Debian package `chromium`) and checks that the
screenshot shows the plot's running-best line.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
from matplotlib import image as mpimg

from agentgolf.agent.judge.acceptance import AcceptanceConfig, judge
from agentgolf.agent.report.plot import PLOT_COLOR_BEST, progress_series
from agentgolf.agent.report.report import write_report
from agentgolf.agent.report.tables import ledger_json
from agentgolf.errors import AgentgolfError
from agentgolf.experiments.ledger import Ledger, Run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GPU2 = {"gpus": [0, 1]}  # two GPUs: training seconds count twice as GPU time


def _ledger(tmp_path, settings=None) -> Ledger:
    """A run with a win chain, a replay, a dead end, an inconclusive win and one failure of several kinds."""
    ledger = Ledger(tmp_path / "ledger.db", create=True)
    ledger.add_run(
        Run(id="r1", created_at=time.time(), base_commit="0123456789abcdef", settings=settings or {})
    )
    add = ledger.add_experiment
    base = add(
        run_id="r1",
        kind="baseline",
        status="ok",
        title="Baseline",
        val_bpb=1.30,
        kept=True,
        train_seconds=1800,
        wall_seconds=1900,
        manifest=GPU2,
        isolation="bwrap",
        branch="ag/r1/1",
    )
    win = add(
        run_id="r1",
        kind="proposal",
        status="ok",
        parent_id=base.id,
        title="Longer warmdown",
        category="schedule",
        val_bpb=1.28,
        self_val_bpb=1.2801,
        delta_bpb=-0.02,
        kept=True,
        train_seconds=1800,
        wall_seconds=1900,
        manifest=GPU2,
        tokens=1000,
        usd=0.5,
        isolation="bwrap",
    )
    add(
        run_id="r1",
        kind="replay",
        status="ok",
        parent_id=base.id,
        replay_of=win.id,
        title="Longer warmdown",
        category="schedule",
        val_bpb=1.2812,
        delta_bpb=-0.0188,
        isolation="bwrap",
    )
    add(
        run_id="r1",
        kind="proposal",
        status="ok",
        parent_id=win.id,
        title="Higher LR | x2",
        category="optimizer",
        val_bpb=1.29,
        delta_bpb=0.01,
        train_seconds=3600,
        tokens=2000,
        usd=1.0,
        isolation="bwrap",
    )
    add(
        run_id="r1",
        kind="proposal",
        status="inconclusive",
        parent_id=win.id,
        title="<b>Wider MLP</b>",
        category="arch",
        val_bpb=1.278,
        delta_bpb=-0.002,
        tokens=500,
        usd=0.25,
        isolation="bwrap",
    )
    for title, status, category, reason in [
        ("QAT", "crash", "quant", "exit code 1"),
        ("Deeper", "crash", "arch", "exit code 1"),
        ("Huge batch", "oom", "arch", "CUDA out of memory"),
        ("Edit failed", "rejected", "optimizer", "the edit did not apply"),
        ("Slow", "timeout", "schedule", "killed after 720 s"),
    ]:
        add(
            run_id="r1",
            kind="proposal",
            status=status,
            parent_id=win.id,
            title=title,
            category=category,
            reason=reason,
        )
    add(
        run_id="r1",
        kind="proposal",
        status="metric_mismatch",
        parent_id=win.id,
        title="Own eval",
        category="eval",
        val_bpb=1.27,
        self_val_bpb=1.10,
        reason="self-reported 1.10 vs harness 1.27",
    )
    add(
        run_id="r1",
        kind="proposal",
        status="ok",
        parent_id=win.id,
        title="Sliding window eval",
        category="eval",
        val_bpb=1.20,
        delta_bpb=-0.08,
        kept=True,
        isolation="none",
        branch="ag/r1/12",
    )
    # Loop v2 rows: a calibration seed of the baseline, a confirmation seed of #2, a win awaiting confirmation.
    add(
        run_id="r1",
        kind="calibration",
        status="ok",
        replay_of=base.id,
        title="Baseline, seed 1338",
        val_bpb=1.302,
    )
    add(
        run_id="r1",
        kind="confirm",
        status="ok",
        replay_of=win.id,
        parent_id=base.id,
        val_bpb=1.2795,
        title="Longer warmdown (confirmation)",
        category="schedule",
        delta_bpb=-0.0205,
        gpu_seconds=3600,
    )
    add(
        run_id="r1",
        kind="proposal",
        status="confirming",
        parent_id=win.id,
        title="Tied embeddings",
        category="arch",
        val_bpb=1.26,
        delta_bpb=-0.02,
        reason="looks better: confirming with another seed",
    )
    return ledger


def _green_pixels(png_path) -> int:
    """Pixels within a small distance of the running-best colour (anti-aliasing blurs the edges)."""
    rgb = mpimg.imread(png_path)[..., :3]
    if rgb.dtype == np.uint8:
        rgb = rgb / 255.0
    target = np.array([int(PLOT_COLOR_BEST[i : i + 2], 16) / 255.0 for i in (1, 3, 5)])
    return int((np.abs(rgb - target).max(axis=-1) < 0.08).sum())


@pytest.fixture
def report(tmp_path):
    ledger = _ledger(tmp_path, settings={"noise_bpb": 0.005})
    files = write_report(ledger, None, tmp_path / "reports")
    return files


def test_files_and_backward_compatible_return(report, tmp_path):
    md, png = report  # the CLI unpacks two paths
    assert md == tmp_path / "reports" / "r1" / "report.md"
    assert report.html == md.with_name("report.html") and report.html.is_file()
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    height, width = mpimg.imread(png).shape[:2]
    assert (width, height) == (990, 495)
    assert _green_pixels(png) > 500  # the running best and the kept points are drawn


def test_progress_series(tmp_path):
    series = progress_series(_ledger(tmp_path).experiments(run_id="r1"))
    assert [x for x, _ in series.points] == [1, 2, 4, 5, 11, 12, 15]  # re-runs (#3, #13, #14) are not points
    # Each score is the mean of the row's runs: the baseline and its seed, #2 and its confirmation (the
    # replay #3 is not one of its runs).
    assert series.kept == [(1, pytest.approx(1.301)), (2, pytest.approx(1.27975)), (12, 1.20)]
    best = dict(series.running_best)
    assert best[1] == pytest.approx(1.301) and best[12] == 1.20
    assert best[4] == best[5] == pytest.approx(1.27975)  # inconclusive #5 ignored
    assert list(best) == [1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15] and best[15] == 1.20
    assert series.no_score == [6, 7, 8, 9, 10]


def test_markdown_sections(report):
    md = report.markdown.read_text()
    chain = md.split("## Best chain")[1].split("##")[0]
    ids = re.findall(r"^\| (\d+) \|", chain, re.MULTILINE)
    assert ids == ["1", "2", "12"]
    # Means over each row's runs: the baseline 1.301 (1.30 and its seed 1.302), #2 1.27975 (1.28 and its
    # confirmation 1.2795); Δ vs parent against the parent's mean, not its first run.
    assert "| 2 | Longer warmdown | schedule | 1.2797 | 2 | -0.0213 | -0.0213 |" in chain
    assert "| 12 | Sliding window eval | eval | 1.2000 | 1 | -0.0797 | -0.1010 |" in chain
    assert "best: #12 Sliding window eval, val_bpb **1.2000** (1 run; -0.1010 vs baseline 1.3010)" in md
    wins = md.split("## Confirmed wins")[1].split("##")[0]
    assert "| 2 | Longer warmdown | schedule | 1.2797 | -0.0213 | 1.2812, 1.2795 |" in wins
    assert "| 12 | Sliding window eval" in wins
    inconclusive = md.split("## Inconclusive wins")[1].split("##")[0]
    assert "| 5 | <b>Wider MLP</b> | arch | 1.2780 | -0.0017 | inconclusive |" in inconclusive
    assert "| 15 | Tied embeddings | arch | 1.2600 | -0.0197 | confirming | looks better" in inconclusive
    assert "Wider" not in wins and "Tied" not in wins
    dead = md.split("## Dead ends")[1].split("##")[0]
    assert "Higher LR \\| x2" in dead  # a pipe in a title does not break the table
    assert "wins: 2 confirmed, 2 inconclusive; 1 dead ends; 6 failures" in md
    assert "experiments: 12 (+3 re-runs)" in md


def test_failures_by_cause(report):
    md = report.markdown.read_text()
    failures = md.split("## Failures by cause")[1].split("##")[0]
    rows = {m[0]: int(m[1]) for m in re.findall(r"^\| (\w+) \| (\d+) \|", failures, re.MULTILINE)}
    assert rows == {"crash": 2, "oom": 1, "timeout": 1, "metric_mismatch": 1, "rejected": 1}
    assert list(rows) == ["crash", "oom", "timeout", "metric_mismatch", "rejected"]  # taxonomy order
    assert (
        "| crash | 2 | the trainer exited non-zero or wrote no artifact | #6, #7 | exit code 1 |" in failures
    )
    assert "inconclusive" not in failures and "confirming" not in failures


def test_spend(report):
    md = report.markdown.read_text()
    spend = md.split("## Spend")[1].split("##")[0]
    assert "| device hours held (the --gpu-hours cap) | 1.00 |" in spend  # the ledger's gpu_seconds
    assert "| GPU hours (training) | 2.00 |" in spend  # 2 x 1800 s on 2 GPUs
    assert "| CPU hours (training) | 1.00 |" in spend  # 3600 s without GPUs
    assert "| sandbox wall hours | 1.06 |" in spend
    assert "| LLM tokens | 3,500 |" in spend and "| LLM cost (USD) | 1.75 |" in spend


def test_anomalies(report):
    md = report.markdown.read_text()
    anomalies = md.split("## Anomalies")[1].split("##")[0]
    found = re.findall(r"^\| (\w+) \| #(\d+) \|", anomalies, re.MULTILINE)
    # 5 x noise 0.005 = 0.025: the -0.08 jump is flagged, the -0.02 win is not.
    assert sorted(found) == [("metric_mismatch", "11"), ("suspicious_jump", "12"), ("unsandboxed", "12")]
    assert "trainer says 1.1000, harness 1.2700 (0.1700 better than the harness)" in anomalies
    assert "**anomalies: metric_mismatch 1, suspicious_jump 1, unsandboxed 1**" in md


def test_jump_threshold_from_calibration_seeds(tmp_path):
    """Without noise_bpb in the settings the floor is the run's pooled seed noise: the baseline's seeds
    (1.300, 1.302) and #2's runs (1.28, 1.2795), sqrt((2e-6 + 1.25e-7) / 2) = 0.00103 on 2 dof."""
    md = write_report(_ledger(tmp_path), "r1", tmp_path / "out").markdown.read_text()
    anomalies = md.split("## Anomalies")[1].split("##")[0]
    assert "a gain above 0.0052 bpb in one step; noise floor 0.0010 bpb" in anomalies
    jumps = re.findall(r"^\| suspicious_jump \| #(\d+) \|", anomalies, re.MULTILINE)
    assert jumps == ["2", "12", "15"]  # proposals only: the confirmation row (#14) is not a new jump


def test_jump_threshold_without_noise_floor(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db", create=True)
    ledger.add_run(Run(id="r2", created_at=time.time(), base_commit="abc"))
    base = ledger.add_experiment(run_id="r2", kind="baseline", status="ok", val_bpb=1.3, kept=True)
    for delta in (-0.04, -0.06):
        ledger.add_experiment(
            run_id="r2", kind="proposal", status="ok", parent_id=base.id, val_bpb=1.3 + delta, delta_bpb=delta
        )
    md = write_report(ledger, "r2", tmp_path / "out").markdown.read_text()
    anomalies = md.split("## Anomalies")[1]
    assert "a gain above 0.0500 bpb in one step; no measured noise floor" in anomalies
    assert re.findall(r"^\| suspicious_jump \| #(\d+) \|", anomalies, re.MULTILINE) == ["3"]


def test_category_win_rates(report):
    md = report.markdown.read_text()
    table = md.split("## Win rate by category")[1]
    rows = {
        m[0]: m[1:]
        for m in re.findall(
            r"^\| (\w+) \| (\d+) \| (\d+) \| (\d+) \| .*? \| ([\d%–]+) \|$", table, re.MULTILINE
        )
    }
    assert rows["schedule"] == ("2", "2", "1", "50%")  # a win and a timeout
    assert rows["eval"] == ("2", "2", "1", "50%")
    assert rows["arch"] == ("3", "3", "0", "0%")  # inconclusive, crash, oom
    assert rows["optimizer"] == ("2", "1", "0", "0%")  # the rejected edit does not count as run
    assert rows["quant"] == ("1", "1", "0", "0%")


def test_html_is_self_contained(report):
    page = report.html.read_text()
    assert "http://" not in page and "https://" not in page
    assert re.findall(r'\b(?:src|href)="([^"]*)"', page) == [page.split('src="')[1].split('"')[0]]
    assert 'src="data:image/png;base64,' in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "<script" not in page.lower()
    assert "&lt;b&gt;Wider MLP&lt;/b&gt;" in page  # titles are escaped, not rendered
    assert "<td>crash</td><td>2</td>" in page
    assert "<strong>1.2000</strong>" in page


def test_empty_run_and_missing_run(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db", create=True)
    with pytest.raises(AgentgolfError, match="no runs yet"):
        write_report(ledger, None, tmp_path / "out")
    ledger.add_run(Run(id="r0", created_at=time.time(), base_commit="abc"))
    files = write_report(ledger, None, tmp_path / "out")
    md = files.markdown.read_text()
    assert "No experiment produced a score." in md
    assert files.plot.read_bytes().startswith(PNG_SIGNATURE) and files.html.is_file()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_headless_chromium_shows_the_plot(report, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        report.html.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
    in_plot = _green_pixels(report.plot)
    in_shot = _green_pixels(shot)
    assert in_shot > 0.5 * in_plot > 250, (in_shot, in_plot)


def test_each_decision_shows_its_evidence(tmp_path):
    """The report and `ledger --json` say why a candidate was kept or dropped: runs, sigma, dof, p-value."""
    ledger = Ledger(tmp_path / "ledger.db", create=True)
    ledger.add_run(Run(id="r3", created_at=time.time(), base_commit="abc"))
    add = ledger.add_experiment
    base = add(run_id="r3", kind="baseline", status="ok", title="Baseline", val_bpb=1.30, kept=True)
    add(run_id="r3", kind="calibration", status="ok", replay_of=base.id, val_bpb=1.302)
    cfg = AcceptanceConfig()
    kept = judge([1.28, 1.2795], [1.30, 1.302], 0.001, 2, cfg)
    dropped = judge([1.3015], [1.30, 1.302], 0.001, 2, cfg)
    assert (kept.decision, dropped.decision) == ("promote", "dead_end")
    win = add(
        run_id="r3",
        kind="proposal",
        status="ok",
        parent_id=base.id,
        title="Wider",
        val_bpb=1.28,
        kept=True,
        delta_bpb=-0.0205,
        decision=kept.record(),
    )
    add(run_id="r3", kind="confirm", status="ok", replay_of=win.id, parent_id=base.id, val_bpb=1.2795)
    add(
        run_id="r3",
        kind="proposal",
        status="ok",
        parent_id=win.id,
        title="Deeper",
        val_bpb=1.3015,
        delta_bpb=0.0215,
        decision=dropped.record(),
    )
    md = write_report(ledger, "r3", tmp_path / "out").markdown.read_text()
    decisions = md.split("## Decisions")[1].split("##")[0]
    assert (
        f"- #3 Wider: promoted after 2/8 runs (1.2800, 1.2795) vs 2 parent runs: Δ -0.0213 bpb; "
        f"σ 0.0010 (pooled, 2 dof); t = 21.25, p = {kept.p_value:.3g} (promote ≤ " in decisions
    )
    assert "- #5 Deeper: dead end after 1/8 runs (1.3015) vs 2 parent runs: Δ +0.0005 bpb" in decisions
    rows = {r["id"]: r for r in json.loads(ledger_json(ledger.experiments(run_id="r3")))}
    assert rows[3]["decision"]["p_value"] == pytest.approx(kept.p_value)
    assert rows[3]["decision"]["dof"] == 2 and rows[3]["decision"]["samples"] == [1.28, 1.2795]
    assert rows[1]["decision"] == {}
