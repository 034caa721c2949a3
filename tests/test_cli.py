"""The `agentgolf` command as a user runs it: real subprocesses, real git, real SQLite, real sandbox."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import git
import pytest

from tests.tiny import make_workspace, phase_pids, training_row, wait_dead


def agentgolf(
    *args: str, cwd: Path, check: bool = False, timeout: float = 600
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "agentgolf.agent.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"agentgolf {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def one_line_error(proc: subprocess.CompletedProcess, expected: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], proc.stderr


@pytest.fixture
def workspace(tmp_path: Path, tiny_dataset) -> Path:
    return make_workspace(tmp_path / "ws", tiny_dataset).root


def test_help_lists_every_command(tmp_path):
    proc = agentgolf("--help", cwd=tmp_path, check=True)
    for command in ("init", "run", "ledger", "show", "pick", "replay", "sandbox", "report", "data"):
        assert command in proc.stdout


def test_bad_input_gives_one_line_errors(tmp_path, workspace):
    one_line_error(agentgolf("run", "--budget", "3", cwd=tmp_path), "not inside an agentgolf workspace")
    one_line_error(agentgolf("show", "999", cwd=workspace), "no experiment with id 999")
    one_line_error(agentgolf("replay", "42", cwd=workspace), "no experiment with id 42")
    one_line_error(agentgolf("sandbox", "missing_trainer.py", cwd=workspace), "does not exist")
    one_line_error(agentgolf("run", "--budget", "0", cwd=workspace), "at least 1")
    one_line_error(
        agentgolf("run", "--budget", "2", "--proposer", "magic", cwd=workspace), "unknown proposer"
    )
    one_line_error(
        agentgolf("run", "--budget", "2", "--time-budget", "-5", cwd=workspace),
        "--time-budget: must be a positive number",
    )
    one_line_error(agentgolf("init", str(workspace), cwd=tmp_path), "already an agentgolf workspace")
    one_line_error(agentgolf("report", cwd=workspace), "no runs yet")


def test_bad_arguments_and_negative_budgets_are_one_line(workspace):
    """argparse's own errors (a word for a number, an unknown choice) and every negative or zero budget:
    one line naming the argument, exit 2, and no run started."""
    cases = [
        (("run", "--budget", "-3"), "at least 1"),
        (("run", "--budget", "abc"), "argument --budget: invalid int value: 'abc'"),
        (("run", "--budget", "2", "--max-gpu-hours", "-1"), "argument --max-gpu-hours: must be a positive"),
        (("run", "--budget", "2", "--max-usd", "-2"), "argument --max-usd: must be a positive number"),
        (("run", "--budget", "2", "--max-usd", "nan"), "argument --max-usd: must be a positive number"),
        (
            ("run", "--budget", "2", "--gpus-per-experiment", "-1"),
            "--gpus-per-experiment: must be at least 1",
        ),
        (("run", "--budget", "2", "--max-concurrent", "0"), "--max-concurrent: must be at least 1"),
        (("run", "--budget", "2", "--time-budget", "-5"), "--time-budget: must be a positive number"),
        (("run", "--budget", "2", "--size-budget", "-1"), "--size-budget: must be at least 1"),
        (("run", "--budget", "2", "--executor", "cloud"), "argument --executor: invalid choice"),
        (("replay", "x"), "argument id: 'x' is not an experiment id (a number, or `best`)"),
        (("replay", "1", "--seeds", "0"), "--seeds: must be at least 1"),
        (("sandbox", "t.py", "--time-budget", "0"), "--time-budget: must be a positive number"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
    ]
    for args, expected in cases:
        one_line_error(agentgolf(*args, cwd=workspace), expected)
    assert not (workspace / ".agentgolf" / "runs").exists() or not any(
        (workspace / ".agentgolf" / "runs").iterdir()
    )
    assert agentgolf("ledger", "--json", cwd=workspace, check=True).stdout.strip() == "[]"


def test_a_config_with_wrong_types_or_negative_values_is_one_line(workspace):
    """Each names the field and what is wrong with it (not pydantic's documentation link)."""
    config = workspace / ".agentgolf" / "config.json"
    good = json.loads(config.read_text())
    cases = [
        ({"budget": {**good["budget"], "train_seconds": -5}}, "budget.train_seconds"),
        ({"budget": {**good["budget"], "disk_bytes": -1}}, "budget.disk_bytes"),
        ({"budget": "big"}, "budget"),
        ({"gpus": "all"}, "gpus"),
        ({"acceptance": {**good["acceptance"], "noise_seeds": "ten"}}, "acceptance.noise_seeds"),
    ]
    for change, field in cases:
        config.write_text(json.dumps({**good, **change}))
        proc = agentgolf("run", "--budget", "1", cwd=workspace)
        one_line_error(proc, field)
        assert "errors.pydantic.dev" not in proc.stderr
    config.write_text("[1, 2]")
    one_line_error(agentgolf("ledger", cwd=workspace), "workspace config")
    config.write_text(json.dumps(good))
    proc = agentgolf("run", "--budget", "1", "--size-budget", "0", cwd=workspace)
    one_line_error(proc, "--size-budget: must be at least 1")


def test_a_ledger_locked_by_another_process_is_one_line(workspace):
    """Another process holds the ledger (sqlite3 in exclusive mode, mid-write): after the busy timeout,
    one line saying so, exit 2, and the ledger unchanged."""
    db = workspace / ".agentgolf" / "ledger.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"db = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "db.execute('PRAGMA locking_mode=EXCLUSIVE'); db.execute('BEGIN EXCLUSIVE')\n"
            "db.execute('UPDATE runs SET status = status')\n"
            "print('holding', flush=True); sys.stdin.readline()\n",  # held until the test is done
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        for args in (("ledger",), ("run", "--budget", "1")):
            one_line_error(agentgolf(*args, cwd=workspace, timeout=120), "is locked by another process")
        assert holder.poll() is None  # the lock was held all along
    finally:
        holder.kill()
        holder.wait()
    assert agentgolf("ledger", "--json", cwd=workspace, check=True).stdout.strip() == "[]"


def test_a_branch_name_git_refuses_is_one_line(workspace):
    """`pick --onto` with names git will not take: one line each, exit 2, no branch made; a good name works."""
    import time as clock

    from agentgolf.experiments.ledger import Ledger, Run

    repo = git.Repo(workspace)
    base = repo.head.commit.hexsha
    trainer = workspace / "train_gpt.py"
    repo.git.checkout("-b", "side")
    trainer.write_text(trainer.read_text() + "\n# a change\n")
    repo.index.add(["train_gpt.py"])
    change = repo.index.commit("a change").hexsha
    repo.git.checkout("-")
    ledger = Ledger(workspace / ".agentgolf" / "ledger.db")
    ledger.add_run(Run(id="r1", created_at=clock.time(), base_commit=base))
    exp = ledger.add_experiment(
        run_id="r1", kind="proposal", status="ok", commit_sha=change, created_at=clock.time(), kept=True
    )
    ledger.close()
    before = {h.name for h in repo.heads}
    for bad in ("my branch", "a..b", "x.lock", "-dash", "end/", "ref~1"):
        one_line_error(
            agentgolf("pick", str(exp.id), f"--onto={bad}", cwd=workspace), "not a valid git branch"
        )
    assert {h.name for h in repo.heads} == before
    agentgolf("pick", str(exp.id), "--onto", "winner", cwd=workspace, check=True)
    assert "# a change" in repo.commit("winner").tree["train_gpt.py"].data_stream.read().decode()


def test_corrupt_ledger_is_reported_and_left_alone(workspace):
    ledger = workspace / ".agentgolf" / "ledger.db"
    ledger.write_bytes(b"garbage" * 500)
    one_line_error(agentgolf("ledger", cwd=workspace), "not a readable SQLite database")
    one_line_error(agentgolf("run", "--budget", "1", cwd=workspace), "not a readable SQLite database")
    assert ledger.read_bytes() == b"garbage" * 500


def test_broken_config_is_reported(workspace):
    (workspace / ".agentgolf" / "config.json").write_text('{"budget": {"train_seconds": "soon"}}')
    one_line_error(agentgolf("ledger", cwd=workspace), "workspace config")


def test_an_unexpected_error_is_one_line_and_a_traceback_file(workspace, tmp_path, monkeypatch):
    """A bug (here: a hand-damaged manifest that no code path expects) must not print a traceback."""
    db = sqlite3.connect(workspace / ".agentgolf" / "ledger.db")
    db.execute(
        "INSERT INTO experiments (kind, status, manifest, created_at) VALUES ('baseline', 'ok', '{oops', 0)"
    )
    db.commit()
    db.close()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    proc = agentgolf("show", "1", cwd=workspace)
    one_line_error(proc, "unexpected JSONDecodeError")
    log = Path(proc.stderr.split("traceback in ")[1].strip().rstrip(")"))
    assert log.parent == tmp_path / "state" / "agentgolf" and "Traceback" in log.read_text()


@pytest.mark.slow
def test_whole_loop_run_ledger_show_pick_replay_report(workspace):
    """The foundation's path end to end: 3 experiments, 3 branches, then every morning-after command."""
    agentgolf("run", "--budget", "3", cwd=workspace, check=True)
    listed = json.loads(agentgolf("ledger", "--json", cwd=workspace, check=True).stdout)
    rows = [r for r in listed if r["kind"] != "control"]  # each proposal ran beside a control of its parent
    assert len(rows) == 3 and len(listed) == 5
    for key in (
        "id",
        "parent_id",
        "status",
        "val_bpb",
        "delta_bpb",
        "artifact_bytes",
        "branch",
        "commit",
        "title",
    ):
        assert all(key in row for row in rows)
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"], rows
    assert all(0 < r["val_bpb"] < 9 for r in rows)  # real scores: below the ~8 bpb of an untrained model
    assert rows[0]["title"] == "Baseline" and rows[1]["parent_id"] == 1
    assert rows[1]["delta_bpb"] == pytest.approx(rows[1]["val_bpb"] - rows[0]["val_bpb"])
    repo = git.Repo(workspace)
    branches = {h.name for h in repo.heads}
    assert {r["branch"] for r in rows} <= branches
    assert len({r["branch"] for r in rows}) == 3
    run_id = rows[0]["branch"].split("/")[1]
    assert f"agentgolf/{run_id}/best" in branches
    assert repo.active_branch.name in ("master", "main") and not repo.is_dirty(untracked_files=True)
    for row in rows[1:]:  # a proposal's commit holds its change to the trainer and nothing else
        assert set(repo.commit(row["commit"]).stats.files) == {"train_gpt.py"}

    table = agentgolf("ledger", cwd=workspace, check=True).stdout
    assert "Baseline" in table and "Lower learning rates" in table
    tsv = agentgolf("ledger", "--tsv", cwd=workspace, check=True).stdout.splitlines()
    assert tsv[0].split("\t")[:5] == ["commit", "val_bpb", "memory_gb", "status", "description"]
    assert len(tsv) == 1 + len(listed)
    assert tsv[1].split("\t")[0] == rows[0]["commit"][:7] and tsv[1].split("\t")[4:7] == [
        "Baseline",
        "1",
        "full",
    ]

    shown = agentgolf("show", "2", cwd=workspace, check=True).stdout
    assert "Lower learning rates" in shown and "diff vs parent" in shown and "MATRIX_LR" in shown
    assert "Total submission size int8+zlib" in shown  # the log tail
    assert '"trainer_sha256"' not in shown and "agentgolf show 2 --manifest" in shown  # behind a flag
    shown = agentgolf("show", "2", "--manifest", cwd=workspace, check=True).stdout
    assert '"trainer_sha256"' in shown and '"torch"' in shown  # the manifest

    best = [r for r in rows if r["kept"]][-1]  # the last promotion: pick takes only the kept chain
    replay = agentgolf("replay", "1", cwd=workspace, check=True).stdout
    assert "reproduced exactly" in replay, replay  # the CPU trainer is deterministic
    assert "settings drift: none" in replay

    submitted = agentgolf(
        "submit",
        "1",
        "--author",
        "Test",
        "--github-id",
        "test",
        "--name",
        "Tiny baseline",
        "--out",
        "records",
        "--force",  # a CPU run on tiny data, of one seed: not a challenge result (test_submit_guard.py)
        cwd=workspace,
        check=True,
    )
    assert "WARNING: --force: #1 ran on the CPU" in submitted.stderr, submitted.stderr
    folder = Path(submitted.stdout.split("submission folder:")[1].strip())
    meta = json.loads((folder / "submission.json").read_text())
    from agentgolf.agent.results.bake import bake
    from tests.tiny import TINY_ENV

    scored = repo.commit(rows[0]["commit"]).tree["train_gpt.py"].data_stream.read()
    code = (folder / "train_gpt.py").read_bytes()  # the commit's trainer, its trainer_env baked in
    baked = dict(sorted(TINY_ENV.items()))
    assert code == bake(scored, baked) and meta["agentgolf"]["baked_env"] == baked
    assert meta["val_bpb"] == pytest.approx(rows[0]["val_bpb"])
    assert meta["bytes_total"] == rows[0]["artifact_bytes"] + len(code) - len(scored)

    report = agentgolf("report", cwd=workspace, check=True)
    assert "Best chain" in report.stdout
    png = workspace / ".agentgolf" / "reports" / run_id / "progress.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    if best["id"] != 1:
        one_line_error(
            agentgolf("pick", str(best["id"]), "--onto", "my branch", cwd=workspace), "not a valid git branch"
        )
        agentgolf("pick", str(best["id"]), "--onto", "winner", cwd=workspace, check=True)
        picked = repo.commit("winner").tree["train_gpt.py"].data_stream.read()
        assert picked == repo.commit(best["commit"]).tree["train_gpt.py"].data_stream.read()
    else:
        empty = agentgolf(
            "pick", "1", "--onto", "winner", cwd=workspace, check=True
        )  # the README's `pick best`
        assert "nothing to pick" in empty.stdout and "winner" not in [h.name for h in repo.heads]


@pytest.mark.slow
def test_resume_after_kill_9_mid_experiment(workspace):
    """kill -9 the loop while an experiment trains: no trainer survives, --resume re-runs it in place."""
    cfg_path = workspace / ".agentgolf" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["trainer_env"]["ITERATIONS"] = "40"  # long enough to be caught mid-flight
    cfg_path.write_text(json.dumps(cfg))
    loop = subprocess.Popen(
        [sys.executable, "-m", "agentgolf.agent.cli.main", "run", "--budget", "1"],
        cwd=workspace,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    victim = training_row(workspace)
    assert victim is not None, "no experiment reached its second training step in time"
    pids = phase_pids(workspace, victim)
    loop.send_signal(signal.SIGKILL)
    loop.wait()
    # bubblewrap's --die-with-parent takes the whole sandbox down with the loop
    assert not wait_dead(pids, 10)

    # The budget is already spent by the row in flight: resume must still finish it, in place.
    agentgolf("run", "--budget", "1", "--resume", cwd=workspace, check=True)
    rows = json.loads(agentgolf("ledger", "--json", cwd=workspace, check=True).stdout)
    assert len(rows) == 1 and rows[0]["id"] == victim, rows
    assert rows[0]["status"] == "ok" and rows[0]["val_bpb"], rows


def test_data_build_and_fetch_commands(tmp_path, tiny_dataset):
    docs = tmp_path / "docs.jsonl"
    texts = [
        f"Document number {i}. " + "The quick brown fox jumps over the lazy dog. " * (i + 3)
        for i in range(30)
    ]
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    built = agentgolf(
        "data",
        "build",
        str(docs),
        "--out",
        str(tmp_path / "official"),
        "--name",
        "fineweb10B_sp1024",
        "--tokenizer",
        str(tiny_dataset.tokenizer),
        "--val-docs",
        "3",
        cwd=tmp_path,
        check=True,
    )
    assert "27 train docs" in built.stdout and "3 val docs" in built.stdout
    shards = tmp_path / "official" / "datasets" / "fineweb10B_sp1024"
    assert (shards / "fineweb_val_000000.bin").is_file()
    # `fetch` from a local folder laid out like the published dataset (this machine has no internet)
    tokenizers = tmp_path / "official" / "tokenizers"
    (tokenizers / "fineweb_1024_bpe.model").write_bytes((tokenizers / "fineweb10B_sp1024.model").read_bytes())
    fetched = agentgolf(
        "data",
        "fetch",
        "--out",
        str(tmp_path / "copy"),
        "--source",
        str(tmp_path / "official"),
        cwd=tmp_path,
        check=True,
    )
    assert "1 train shard(s), 1 val shard(s)" in fetched.stdout
    copied = tmp_path / "copy" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000000.bin"
    assert copied.read_bytes() == (shards / "fineweb_train_000000.bin").read_bytes()
    one_line_error(agentgolf("data", "build", "missing.jsonl", cwd=tmp_path), "does not exist")
    one_line_error(agentgolf("data", "fetch", "--variant", "mini", cwd=tmp_path), "unsupported variant")
    nowhere = str(tmp_path / "nowhere")
    one_line_error(
        agentgolf("data", "fetch", "--source", nowhere, "--out", str(tmp_path / "x"), cwd=tmp_path), ""
    )


def test_sandbox_command_scores_a_trainer_file(workspace, tmp_path):
    trainer = tmp_path / "candidate.py"
    trainer.write_bytes((workspace / "train_gpt.py").read_bytes())
    proc = agentgolf("sandbox", str(trainer), "--time-budget", "30", "--json", cwd=workspace, check=True)
    result = json.loads(proc.stdout)
    for key in ("status", "val_bpb", "artifact_bytes", "train_seconds", "wall_seconds"):
        assert key in result
    assert result["status"] == "ok" and 0 < result["val_bpb"] < 9, result
    assert result["isolation"] == "bwrap" and result["trust"] == "harness"
    assert result["artifact_bytes"] == result["code_bytes"] + result["model_bytes"]
    assert result["code_bytes"] == len(trainer.read_bytes())


def test_bad_data_is_one_line_before_any_run(tmp_path, tiny_dataset):
    """A truncated shard, and a tokenizer larger than data.vocab_size: one line each, exit 2, nothing run."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset.root, data)
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    ws.config.data.dataset_dir = data / tiny_dataset.dataset_dir.relative_to(tiny_dataset.root)
    ws.config.data.tokenizer = data / tiny_dataset.tokenizer.relative_to(tiny_dataset.root)
    ws.config.data.vocab_size = 100
    from agentgolf.agent.workspace import save_config

    save_config(ws.config_path, ws.config)
    one_line_error(
        agentgolf("run", "--budget", "1", cwd=ws.root), "has 256 pieces but data.vocab_size is 100"
    )
    ws.config.data.vocab_size = tiny_dataset.vocab_size
    save_config(ws.config_path, ws.config)
    shard = sorted(ws.config.data.dataset_dir.glob("fineweb_val_*.bin"))[0]
    shard.write_bytes(shard.read_bytes()[:-7])
    one_line_error(agentgolf("run", "--budget", "1", cwd=ws.root), shard.name)
    assert not (ws.state / "runs").exists() or not any((ws.state / "runs").iterdir())
