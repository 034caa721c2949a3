"""The morning report from a real SQLite ledger: Markdown, the text `report` prints, a self-contained HTML
page, the progress plot and the loss curves.

The curves come from run folders' train.log files in a real workspace (its git repository holds each
experiment's commit, so the page's sections carry real diffs). The headless test opens the page in
Chromium (Debian package `chromium`) and checks that the screenshot shows the plot's running-best line and
the curves chart's kept-idea line.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from agentgolf.agent.judge.acceptance import AcceptanceConfig, judge
from agentgolf.agent.report import evidence
from agentgolf.agent.report.curves import curve_series
from agentgolf.agent.report.plot import CURVE_COLORS, PLOT_COLOR_BEST, progress_series
from agentgolf.agent.report.report import write_report
from agentgolf.agent.report.tables import ledger_json
from agentgolf.agent.workspace import Workspace, init_workspace
from agentgolf.errors import AgentgolfError
from agentgolf.experiments import worktree as wt
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


def _pixels(png_path, color: str) -> int:
    """Pixels within a small distance of a colour (anti-aliasing blurs the edges)."""
    rgb = mpimg.imread(png_path)[..., :3]
    if rgb.dtype == np.uint8:
        rgb = rgb / 255.0
    target = np.array([int(color[i : i + 2], 16) / 255.0 for i in (1, 3, 5)])
    return int((np.abs(rgb - target).max(axis=-1) < 0.08).sum())


def _green_pixels(png_path) -> int:
    return _pixels(png_path, PLOT_COLOR_BEST)


# --- a workspace whose runs left train.logs, and whose git holds each experiment's commit ------------

RUN = "r9"
CRASH_LINE = "RuntimeError: mat1 and mat2 shapes cannot be multiplied (64x128 and 96x128)"
LONG_LINE = "WIDE_SETTING = " + repr("x" * 120)  # a diff line past 100 columns: cut in `compare`


def loss_at(step: int, offset: float) -> float:
    return round(3.0 + 4.0 / (1 + step / 20) + offset, 4)


def train_log(last: int, offset: float, every: int = 10) -> str:
    """A trainer's log in the official shape: settings, step lines (step 1, then every `every`), the end."""
    lines = ["seed:1337", "train_batch_tokens:2048 train_seq_len:64"]
    for s in [1, *range(every, last + 1, every)]:
        lines.append(
            f"step:{s}/{last} train_loss:{loss_at(s, offset):.4f} train_time:{s * 50}ms step_avg:50.00ms"
        )
    lines.append(f"stopping_early: wallclock_cap train_time:{last * 50}ms step:{last}/{last}")
    lines += ["peak memory allocated: 10 MiB reserved: 12 MiB", f"final val_bpb:{1.3 + offset:.4f}"]
    return "\n".join(lines) + "\n"


def _commit(ws: Workspace, start: str, name: str, added: str) -> str:
    """A commit off `start` that adds lines to the trainer, made as the loop makes them (its own worktree)."""
    repo = wt.open_repo(ws.root)
    tree = wt.add_worktree(repo, ws.state / "worktrees" / name, f"agentgolf/{RUN}/{name}", start)
    trainer = tree / ws.config.trainer
    trainer.write_text(trainer.read_text() + added)
    sha = wt.commit_all(tree, f"{name}\n")
    wt.remove_worktree(repo, tree)
    return sha


def run_workspace(root: Path) -> Workspace:
    """Baseline #1 and its seeds #2, #3 (#3 stops early), #4 kept, #5 a screen-rung idea, #6 a crash with no
    step line, #7 a dead end at the full budget; each with its train.log and commit."""
    ws = init_workspace(root, progress=False)
    ledger = ws.ledger()
    base = wt.head_commit(wt.open_repo(ws.root))
    ledger.add_run(Run(id=RUN, created_at=time.time(), base_commit=base, settings={"noise_bpb": 0.01}))
    lower = _commit(ws, base, "4-lower-lr", "LOWER_LR_MARK = 0.02\n")
    wider = _commit(ws, lower, "5-wider", "WIDER_MARK = 3\n" + LONG_LINE + "\n")
    crash = _commit(ws, lower, "6-crash", "CRASH_MARK = 1\n")
    deeper = _commit(ws, lower, "7-deeper", "DEEPER_MARK = 12\n")
    common = dict(run_id=RUN, artifact_bytes=1_000_000, train_seconds=10.0)
    seeds = {"env": {"MATRIX_LR": "0.04"}, "budget": {"train_seconds": 10}}
    add = ledger.add_experiment
    rows = [
        dict(kind="baseline", status="ok", title="Baseline", val_bpb=1.30, kept=True, commit_sha=base, seed=1337,
             steps=200),
        dict(kind="calibration", status="ok", title="Baseline, seed 1338", replay_of=1, val_bpb=1.32,
             commit_sha=base, parent_commit=base, seed=1338, steps=200),
        dict(kind="calibration", status="ok", title="Baseline, seed 1339", replay_of=1, val_bpb=1.27,
             commit_sha=base, parent_commit=base, seed=1339, steps=190),
        dict(kind="proposal", status="ok", title="Lower LR", parent_id=1, val_bpb=1.10, delta_bpb=-0.20, kept=True,
             commit_sha=lower, parent_commit=base, seed=1337, steps=200,
             manifest={**seeds, "env": {"MATRIX_LR": "0.02"}}),
        dict(kind="proposal", status="ok", title="Wider MLP", parent_id=4, val_bpb=1.20, delta_bpb=0.10,
             rung="screen", commit_sha=wider, parent_commit=lower, seed=1337, steps=60, train_seconds=3.0),
        dict(kind="proposal", status="crash", title="Crashes", parent_id=4, reason="exit code 1",
             commit_sha=crash, parent_commit=lower, seed=1337),
        dict(kind="proposal", status="ok", title="Deeper", parent_id=4, val_bpb=1.40, delta_bpb=0.30,
             commit_sha=deeper, parent_commit=lower, seed=1337, steps=200),
    ]  # fmt: skip
    logs = {1: (200, 0.0), 2: (200, 0.02), 3: (190, -0.03), 4: (200, -0.2), 5: (60, -0.1), 7: (200, 0.1)}
    for exp_id, row in enumerate(rows, 1):
        add(**{"manifest": seeds, **common, **row})
        folder = ws.run_dir(exp_id)
        folder.mkdir(parents=True)
        text = (
            train_log(*logs[exp_id])
            if exp_id in logs
            else f"seed:1337\nTraceback (most recent call last):\n{CRASH_LINE}\n"
        )
        (folder / "train.log").write_text(text)
    return ws


@pytest.fixture
def run_ws(tmp_path) -> Workspace:
    return run_workspace(tmp_path / "ws")


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
    srcs = re.findall(r'\bsrc="([^"]*)"', page)  # the two charts, inlined
    assert len(srcs) == 2 and all(src.startswith("data:image/png;base64,") for src in srcs)
    hrefs = re.findall(r'\bhref="([^"]*)"', page)  # only links inside the page: ids to their sections
    assert hrefs and all(re.fullmatch(r"#exp-\d+", h) for h in hrefs), set(hrefs)
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
def test_headless_chromium_shows_the_plot_and_the_curves(run_ws, tmp_path):
    report = write_report(run_ws.ledger(), RUN, tmp_path / "reports")
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
        "--window-size=1200,2000",
        report.html.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
    in_plot = _green_pixels(report.plot)
    in_shot = _green_pixels(shot)
    assert in_shot > 0.5 * in_plot > 250, (in_shot, in_plot)
    # The kept idea's curve is the chart's first colour, which nothing else on the page uses.
    kept = CURVE_COLORS[0]
    assert _pixels(report.plot, kept) == 0
    in_chart, in_shot = _pixels(report.curves, kept), _pixels(shot, kept)
    assert in_shot > 0.5 * in_chart > 250, (in_shot, in_chart)


def test_curve_series_reads_each_run_folder(run_ws):
    rows = run_ws.ledger().experiments(run_id=RUN, full=True)
    points = {i: ev.curve for i, ev in evidence.gather(rows, run_ws.run_dir, None).items()}
    series = curve_series(rows, points)
    drawn = {c.exp_id: (c.style, c.screen) for c in series.curves}
    assert drawn == {
        1: ("seed", False),
        2: ("seed", False),
        3: ("seed", False),
        4: ("labelled", False),
        5: ("faint", True),  # a screen-rung run: dashed
        7: ("faint", False),
    }  # #6 crashed before its first step line: left out
    kept = next(c for c in series.curves if c.exp_id == 4)
    assert kept.label == "#4 Lower LR (kept)" and kept.steps[:3] == [1, 10, 20] and kept.steps[-1] == 200
    assert kept.losses[-1] == loss_at(200, -0.2)
    (band,) = series.bands  # the full budget's seeds; no screen-rung seed
    assert band.rung == "" and band.seeds == [1, 2, 3]
    assert band.steps[0] == 1 and band.steps[-1] == 190  # up to the last step every seed reached
    at = band.steps.index(100)
    assert band.low[at] == pytest.approx(loss_at(100, -0.03)) and band.high[at] == pytest.approx(
        loss_at(100, 0.02)
    )
    fewer = curve_series(rows, points, others=1)
    assert [c.exp_id for c in fewer.curves if c.style == "faint"] == [7]  # the most recent other only
    two = curve_series(rows, points, others=2)
    assert [c.exp_id for c in two.curves if c.style == "faint"] == [5, 7]  # #6 has no curve: not counted
    one_seed = curve_series([e for e in rows if e.id not in (2, 3)], points)
    assert one_seed.bands == [] and {c.exp_id for c in one_seed.curves if c.style == "seed"} == {1}


def test_each_id_links_to_its_diff_and_log_tail(run_ws, tmp_path):
    files = write_report(run_ws.ledger(), RUN, tmp_path / "out")  # git: the workspace the ledger is in
    page = files.html.read_text()
    sections = dict(re.findall(r'<section class="experiment" id="(exp-\d+)">(.*?)</section>', page, re.S))
    assert list(sections) == [f"exp-{i}" for i in range(1, 8)]
    targets = set(re.findall(r'href="#(exp-\d+)"', page))
    assert {"exp-1", "exp-4", "exp-6", "exp-7"} <= targets <= set(sections)
    assert '<td><a href="#exp-4">4</a></td>' in page  # the best chain's id cell
    assert '<a href="#exp-6">#6</a>' in page  # a failure, named in its table
    four = html.unescape(sections["exp-4"])
    assert "diff --git" in four and "+LOWER_LR_MARK = 0.02" in four
    assert f"step:200/200 train_loss:{loss_at(200, -0.2):.4f}" in four and "final val_bpb:1.1000" in four
    assert "seed:1337" not in four  # a tail: the log's first line is past it
    seven = html.unescape(sections["exp-7"])
    assert "+DEEPER_MARK = 12" in seven and "+LOWER_LR_MARK" not in seven  # against its parent, #4
    crash = html.unescape(sections["exp-6"])
    assert "+CRASH_MARK = 1" in crash and CRASH_LINE in crash
    assert "the run's base commit: no change" in html.unescape(sections["exp-1"])
    md = files.markdown.read_text()
    assert "![progress](progress.png)" in md and "![loss curves](curves.png)" in md
    assert files.curves.read_bytes().startswith(PNG_SIGNATURE)
    elsewhere = write_report(run_ws.ledger(), RUN, tmp_path / "again", repo_root=tmp_path)  # no git there
    assert "no git repository beside the ledger" in elsewhere.html.read_text()


def test_the_printed_report_fits_100_columns(report, run_ws, tmp_path):
    assert max(len(line) for line in report.markdown.read_text().splitlines()) > 100  # the file's are longer
    for files in (report, write_report(run_ws.ledger(), RUN, tmp_path / "out")):
        text = files.text.read_text()
        assert max(len(line) for line in text.splitlines()) <= 100, text
        assert "## Best chain" in text and "## Loss curves" in text and "chart: curves.png" in text
    text = report.text.read_text()
    assert re.search(r"^crash\s+2\s+the trainer exited", text, re.M), text  # a table row, laid out
    assert "- #3 Wider" not in text and "**" not in text
    proc = subprocess.run(
        [sys.executable, "-m", "agentgolf.agent.cli.main", "report"],
        cwd=run_ws.root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert proc.returncode == 0, proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= 100, proc.stdout
    assert "## Loss curves" in proc.stdout and "curves.png" in proc.stdout.splitlines()[-1]


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
