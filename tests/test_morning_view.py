"""The morning view fits 100 columns (issue 23): `ledger` never cuts an id or a val_bpb, and shows the rung
and steps, the title last, cut with an ellipsis; `show` keeps its raw manifest behind `--manifest`; a run's
result lines keep their id, rung and score on their first line; the TSV carries id, rung and steps and leaves
memory empty when it was not measured; `status` and the live view count the budget alike; `best` names the
latest run's best row; `similar` and `replay` fit 100 columns too, cutting only titles.

The commands run as a user runs them (subprocesses with COLUMNS=100) on a real workspace whose ledger rows are
added by hand, as in test_best_chain.py: nothing trains here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from agentgolf.agent.controller.live import LiveView, describe, panel
from agentgolf.agent.controller.loop import failed_again
from agentgolf.agent.controller.run_status import run_status
from agentgolf.agent.controller.scheduler import RunCaps, Scheduler, SchedulerState
from agentgolf.agent.report.tables import TSV_HEADER, ledger_table, ledger_tsv, replay_table, status_lines
from agentgolf.agent.workspace import init_workspace
from agentgolf.experiments.ledger import Experiment, Ledger, Run
from agentgolf.experiments.status import charged

WIDTH = 100
RUN = "20261206-185300"
REPLAY_RUN = "20261206-190412-replay-2-48213"  # as Loop.replay names its own run
LONG = "Lower learning rates for Muon, the scalars and the tied embeddings, with a longer warmdown too"


def cli(*args: str, cwd: Path, columns: int = WIDTH) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agentgolf.agent.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": str(columns)},
    )


def _rows(ledger: Ledger) -> None:
    """A baseline, a screened idea with a long title, its full-budget run, a re-test, a kept proposal, and
    three replays of #2 in a replay's own run (whose long id used to push the id column off the screen)."""
    ledger.add_run(Run(id=RUN, created_at=time.time(), base_commit="b" * 40, settings={"experiments": 3}))
    add = ledger.add_experiment
    common = dict(run_id=RUN, artifact_bytes=15_850_123, train_seconds=600.0, step_ms=48.6, seed=1337)
    base = add(
        kind="baseline", status="ok", title="Baseline", val_bpb=1.2244, kept=True, commit_sha="b" * 40,
        steps=12_345, manifest={"torch": "2.13.0", "trainer_sha256": "f" * 64}, **common,
    )  # fmt: skip
    screen = add(
        kind="proposal", status="ok", parent_id=base.id, title=LONG, val_bpb=1.3101, rung="screen",
        delta_bpb=-0.0042, commit_sha="c" * 40, steps=2_001, reason="the screen favours it", **common,
    )  # fmt: skip
    add(
        kind="proposal", status="inconclusive", parent_id=base.id, title=LONG, val_bpb=1.2231,
        screen_of=screen.id, delta_bpb=-0.0013, commit_sha="c" * 40, steps=12_400, **common,
    )  # fmt: skip
    kept = add(
        kind="proposal", status="ok", parent_id=base.id, title="Wider MLP (3x)", val_bpb=1.2187,
        delta_bpb=-0.0057, kept=True, commit_sha="d" * 40, steps=11_900, **common,
    )  # fmt: skip
    add(
        kind="proposal", status="ok", parent_id=kept.id, title=LONG, val_bpb=1.2179, retest_of=screen.id,
        delta_bpb=-0.0008, commit_sha="e" * 40, steps=11_890, **common,
    )  # fmt: skip
    ledger.add_run(
        Run(id=REPLAY_RUN, created_at=time.time() + 1, base_commit="c" * 40, settings={"replay_of": 2})
    )
    for _ in range(3):
        add(
            **{**common, "run_id": REPLAY_RUN}, kind="replay", status="metric_mismatch", replay_of=screen.id,
            parent_id=base.id, title=LONG, val_bpb=1.3101, rung="screen", commit_sha="c" * 40, steps=2_001,
        )  # fmt: skip


@pytest.fixture
def ws(tmp_path: Path):
    workspace = init_workspace(tmp_path / "ws", progress=False)
    _rows(workspace.ledger())
    return workspace


def _table_lines(text: str) -> dict[int, str]:
    return {int(m.group(1)): line for line in text.splitlines() if (m := re.match(r"^\s*(\d+)\s", line))}


def test_ledger_fits_100_columns_after_a_replay_with_long_titles(ws):
    proc = cli("ledger", cwd=ws.root)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert all(len(line) <= WIDTH for line in text.splitlines()), text
    assert f"run 1: {RUN} · run 2: {REPLAY_RUN}" in text  # several runs: named above, numbered in a column
    lines = _table_lines(text)
    assert sorted(lines) == list(range(1, 9)), text
    expected = {1: ("1.2244", "full"), 2: ("1.3101", "screen"), 3: ("1.2231", "full"), 4: ("1.2187", "full")}
    expected |= {n: ("1.3101", "screen") for n in (6, 7, 8)}
    for exp_id, (bpb, rung) in expected.items():
        cells = lines[exp_id].split()
        assert cells[0] == str(exp_id) and bpb in cells and rung in cells, lines[exp_id]
    assert "12,345" in lines[1] and "2,001" in lines[2]  # steps
    assert lines[2].rstrip().endswith("…") and "Lower learning" in lines[2]  # the title: last, cut
    assert "replay of 2: Lower" in lines[6]  # what a row re-measures comes before its title
    assert "re-test of 2: Lower" in lines[5]
    header = next(line for line in text.splitlines() if line.lstrip().startswith("id "))
    assert header.split()[:3] == ["id", "run", "status"] and header.rstrip().endswith("title"), header


def test_ledger_on_a_wide_terminal_keeps_every_column(ws):
    text = cli("ledger", "--run", RUN, cwd=ws.root, columns=250).stdout
    header = next(line for line in text.splitlines() if line.lstrip().startswith("id "))
    for name in ("parent", "artifact bytes", "train s", "ms/step", "rung", "steps"):
        assert name in header, header
    assert " run " not in header and f"run {RUN}" in text  # one run: named once, no column
    assert LONG in text  # room enough: the whole title


def test_ledger_table_never_cuts_an_id_or_a_val_bpb_on_a_narrow_console(ws):
    rows = ws.ledger().experiments()
    for width in (80, 100, 120):
        console = Console(width=width, record=True)
        for item in ledger_table(rows, width=width):
            console.print(item)
        lines = _table_lines(console.export_text())
        assert lines[2].split()[0] == "2" and "1.3101" in lines[2] and "screen" in lines[2], lines


def test_show_reads_first_and_keeps_the_manifest_behind_a_flag(ws):
    proc = cli("show", "2", cwd=ws.root)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert all(len(line) <= WIDTH for line in text.splitlines()), text
    assert "experiment 2" in text and "val_bpb: 1.310100" in text and "rung: screen" in text
    assert '"torch"' not in text and "`agentgolf show 2 --manifest`" not in text  # #2 has no manifest
    base = cli("show", "1", cwd=ws.root).stdout
    assert '"trainer_sha256"' not in base
    assert base.strip().splitlines()[-1] == (
        "manifest: `agentgolf show 1 --manifest` prints what decided this number"
    )
    full = cli("show", "1", "--manifest", cwd=ws.root).stdout
    assert '"trainer_sha256"' in full and full.index("val_bpb: 1.224400") < full.index('"torch"')


def test_result_lines_keep_id_rung_and_score_on_their_first_line():
    row = Experiment(
        id=12, kind="proposal", status="rejected", title=LONG + " " + LONG, val_bpb=1.3101, rung="screen",
        delta_bpb=-0.0042, reason="the screen does not favour it: " + "x " * 40, created_at=0.0,
    )  # fmt: skip
    console = Console(width=WIDTH, record=True, force_terminal=False)
    view = LiveView(console)
    view.log(describe(row))
    view.started(row.model_copy(update={"id": 13, "seed": 7}))
    lines = console.export_text().splitlines()
    assert all(len(line) <= WIDTH for line in lines), lines
    assert lines[0].startswith("#12 (screen) rejected val_bpb 1.3101 (Δ -0.0042): Lower"), lines[0]
    assert any(line.startswith("#13 (screen) training (seed 7): Lower") for line in lines), lines
    full = describe(row.model_copy(update={"screen_of": 9, "rung": ""}))
    assert full.startswith("#12 (full) "), full


def test_the_tsv_carries_id_rung_steps_and_no_invented_memory(ws):
    ledger = ws.ledger()
    rows = ledger.experiments(full=True)
    assert TSV_HEADER.split("\t")[:5] == ["commit", "val_bpb", "memory_gb", "status", "description"]
    lines = ledger_tsv(rows).splitlines()
    assert lines[0].split("\t") == [*TSV_HEADER.split("\t")]
    first = lines[1].split("\t")
    assert first == ["bbbbbbb", "1.224400", "", "keep", "Baseline", "1", "full", "12345"]
    assert lines[2].split("\t")[5:] == ["2", "screen", "2001"]
    measured = rows[0].model_copy(update={"log_tail": "peak memory allocated: 2048 MiB reserved: 2100 MiB"})
    assert ledger_tsv([measured]).splitlines()[1].split("\t")[2] == "2.0"
    on_cpu = rows[0].model_copy(update={"log_tail": "peak memory allocated: 0 MiB reserved: 0 MiB"})
    assert ledger_tsv([on_cpu]).splitlines()[1].split("\t")[2] == ""  # a CPU trainer's 0: not measured
    proc = cli("ledger", "--tsv", cwd=ws.root)
    assert proc.stdout.splitlines()[1].split("\t") == first


def test_status_and_the_live_view_count_the_budget_alike(ws, tmp_path):
    """Baseline, a screened idea, its full-budget run, a proposal and a re-test: 3 charged, as the scheduler
    stops on; a count that also charged the full-budget run said 4/3."""
    ledger = ws.ledger()
    rows = ledger.experiments(run_id=RUN)
    assert charged(rows) == 3
    assert Scheduler.charged(SimpleNamespace(rows=lambda: rows)) == 3  # the scheduler's own method
    status = run_status(ws.state, ledger, RUN)
    assert "experiments: 3/3 charged" in "\n".join(status_lines(status))
    state = SchedulerState(
        run_id=RUN, caps=RunCaps(experiments=3), charged=3, best_id=4, best_bpb=1.2187, running=[],
        gpu_hours=0.0, usd=0.0,
    )  # fmt: skip
    console = Console(width=WIDTH, record=True)
    console.print(panel(state))
    assert "experiments: 3/3" in console.export_text()


def test_best_names_the_latest_runs_best_row(ws, tmp_path):
    shown = cli("show", "best", cwd=ws.root)
    assert shown.returncode == 0 and "experiment 4: Wider MLP (3x)" in shown.stdout, shown.stderr
    for command in ("pick", "replay", "submit"):
        proc = cli(command, "nonsense", cwd=ws.root)
        assert proc.returncode == 2 and "is not an experiment id (a number, or `best`)" in proc.stderr
    # A row outside the best chain is refused by name; `best` is inside it: pick gets past that check.
    refused = cli("pick", "3", cwd=ws.root)
    assert refused.returncode == 2 and "never kept" in refused.stderr, refused.stderr
    empty = init_workspace(tmp_path / "empty", progress=False)
    empty.ledger().add_run(Run(id="r0", created_at=time.time(), base_commit="b" * 40))
    proc = cli("show", "best", cwd=empty.root)
    assert proc.returncode == 2 and "run r0 has no best row yet" in proc.stderr, proc.stderr


def test_similar_ranks_the_idea_named_in_titles_and_hypotheses_first():
    """The search's own playbook as past proposals, each with the lines its knob edit changes in the trainer:
    `lower the Muon LR` is "Lower learning rates" (its hypothesis: "Halving Muon, scalar and tied-embedding
    LRs"), not "Higher matrix LR", whose title says LR and whose hypothesis says Muon."""
    from agentgolf.agent.proposers.briefing.retrieval import similar_attempts
    from agentgolf.agent.proposers.search.space import LIBRARY

    trainer = (Path(__file__).resolve().parents[1] / "baseline" / "train_gpt.py").read_text().splitlines()

    def diff(move) -> str:
        lines = [
            x.strip() for k in [*move.scale, *move.set] for x in trainer if f'"{k}"' in x and "environ" in x
        ]
        return "\n".join(lines + [x.replace("0.", "0.9") for x in lines])

    past = [
        Experiment(
            id=n,
            kind="proposal",
            status="ok",
            title=m.title,
            hypothesis=m.hypothesis,
            commit_sha=str(n),
            created_at=0.0,
        )  # fmt: skip
        for n, m in enumerate(LIBRARY, 2)
    ]
    diffs = {e.commit_sha: diff(m) for e, m in zip(past, LIBRARY, strict=True)}
    hits = similar_attempts(past, "lower the Muon LR", lambda e: diffs[e.commit_sha], k=3, threshold=0)
    assert hits[0][0].title == "Lower learning rates", hits
    hits = similar_attempts(past, "longer warmdown", lambda e: diffs[e.commit_sha], k=3, threshold=0)
    assert hits[0][0].title == "Longer warmdown", hits


def on_terminal(*args: str, cwd: Path, columns: int = WIDTH) -> str:
    """The command's output on a real pseudo-terminal `columns` wide (what a person sees), escapes removed."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentgolf.agent.cli.main", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        stdout=slave, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    out = b""
    while True:  # read as it writes: a full terminal buffer would block the command
        ready, _, _ = select.select([master], [], [], 60)
        try:
            chunk = os.read(master, 65536) if ready else b""
        except OSError:  # EIO: the command closed its end
            chunk = b""
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, out
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode().replace("\r\n", "\n"))
    return text


def test_similar_fits_100_columns_and_cuts_only_titles(ws):
    text = on_terminal("similar", "lower", "the", "learning", "rates", "for", "Muon", cwd=ws.root)
    lines = text.splitlines()
    assert all(len(line) <= WIDTH for line in lines), text
    heads = {int(m.group(1)): line for line in lines if (m := re.match(r"^- exp (\d+) \(similarity ", line))}
    assert set(heads) == {2, 3, 5}, text  # the proposals with the long title
    assert "val_bpb 1.3101 (Δ -0.0042): Lower learning" in heads[2] and heads[2].endswith("…"), heads[2]
    assert any(line.startswith("  screen rung; 2,001 steps") for line in lines), text  # under it
    # A pipe (a CLI agent reads it): whole lines, nothing cut, whatever COLUMNS says.
    whole = cli("similar", "lower", "Muon", cwd=ws.root)
    assert whole.returncode == 0 and f"(Δ -0.0042): {LONG}\n" in whole.stdout, whole.stdout + whole.stderr


def test_replay_lines_fit_100_columns_whatever_the_seeds(ws):
    """What `agentgolf replay 2 --seeds 3` prints before its verdicts (the crash verdict's own CLI test, with
    a real replay: test_replay_crash.py): one table row per run, the title cut above it."""
    rows = ws.ledger().experiments()
    original, copies = rows[1], rows[5:8]
    console = Console(width=WIDTH, record=True)
    for item in replay_table(original, copies, width=WIDTH):
        console.print(item, soft_wrap=False)
    for copy in copies:
        console.print(describe(copy), soft_wrap=False)
    failed = original.model_copy(
        update={"status": "crash", "val_bpb": None, "reason": "RuntimeError: " + LONG}
    )
    console.print(f"#6 {failed_again(failed, failed)}", markup=False, soft_wrap=False)
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line) <= WIDTH for line in lines), text
    assert lines[0].startswith("replay of experiment 2 (screen): Lower") and lines[0].endswith("…"), lines[0]
    runs = {line.split()[1]: line.split() for line in lines if line.split()[:1] in (["recorded"], ["replay"])}
    assert runs["#2"][:4] == ["recorded", "#2", "1337", "ok"] and "1.31010000" in runs["#2"], runs
    for n in (6, 7, 8):
        assert (
            runs[f"#{n}"][:4] == ["replay", f"#{n}", "1337", "metric_mismatch"] and "2,001" in runs[f"#{n}"]
        )
    assert "#6 crashed again the same way (crash: RuntimeError: Lower learning" in text
