"""`run --track tensorboard,wandb`: each experiment's curve, result and decision in TensorBoard and offline
W&B, read back with each library's own reader (TensorBoard's EventAccumulator, `wandb-core leet inspect`).

W&B runs offline here, as in the product: no account, no key, its server address pointed at a closed local
port, and its cache, config and data folders in the test's tmp folder, so nothing lands in ~.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agentgolf.agent.tracking import wandb_run
from agentgolf.agent.tracking.card import Card, Outcome
from agentgolf.agent.tracking.config import TrackConfig, missing_libraries, parse_backends
from agentgolf.agent.tracking.feed import Feed
from agentgolf.agent.tracking.follow import LogFollower
from agentgolf.agent.tracking.hub import Tracking
from agentgolf.agent.workspace import init_workspace
from agentgolf.experiments.ledger import Run
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.metrics import parse_train_curve
from agentgolf.sandbox.run_setup import RunSetup
from tests.test_cli import one_line_error
from tests.test_fail_fast import agentgolf
from tests.tiny import make_workspace

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = ROOT / "bench" / "import_blocker"


def step_line(step: int, loss: float, ms: int) -> str:
    """A training line as the trainer prints it."""
    return f"step:{step}/100 train_loss:{loss:.4f} train_time:{ms}ms step_avg:{ms / step:.2f}ms\n"


# --- the log follower ---------------------------------------------------------------------------------


def test_the_follower_reads_complete_lines_once_as_the_log_grows(tmp_path):
    log = tmp_path / "train.log"
    follower = LogFollower(log)
    assert follower.poll() == []  # not started yet
    log.write_text("[agentgolf] sandbox ready\n" + step_line(1, 6.5, 100) + "step:2/100 train_loss:6.4")
    assert [(p.step, p.train_loss, p.seconds) for p in follower.poll()] == [(1, 6.5, 0.1)]
    assert follower.poll() == []  # nothing new: nothing again
    with log.open("a") as f:  # the cut line completes: its loss is 6.4321, not the 6.4 read so far
        f.write("321 train_time:200ms step_avg:100.00ms\n" + step_line(3, 6.3, 300) + "val_loss:1")
    assert [(p.step, p.train_loss, p.step_ms) for p in follower.poll()] == [
        (2, 6.4321, 100.0),
        (3, 6.3, 100.0),
    ]
    log.write_text(step_line(1, 7.0, 90))  # written anew (trained again in place): followed from its start
    assert [(p.step, p.train_loss) for p in follower.poll()] == [(1, 7.0)]


def test_the_follower_drops_the_line_the_log_cap_cut(tmp_path):
    """Past its byte cap the sandbox stops writing and appends a note (sandbox/isolation/logs.py), whose
    newline would complete the cut line with a wrong loss; the lines before the cap all count."""
    log = tmp_path / "train.log"
    lines = [step_line(s, 5.0 - s / 100, 100 * s) for s in range(1, 6)]
    cap = sum(len(x) for x in lines[:3]) + 23  # inside line 4, after "step:4/100 train_loss:4"
    log.write_bytes("".join(lines).encode()[:cap] + b"\n[agentgolf: log truncated at N bytes; M dropped]\n")
    capped = LogFollower(log, cap=cap)
    assert [p.step for p in capped.poll()] == [1, 2, 3]
    uncapped = LogFollower(log)  # the control: without the cap the cut line is read, with a wrong loss
    assert [(p.step, p.train_loss) for p in uncapped.poll()][-1] == (4, 4.0)
    exact = tmp_path / "exact.log"  # a cap that falls right after a newline keeps that line
    exact.write_text("".join(lines[:2]) + "\n[agentgolf: log truncated at N bytes; M dropped]\n")
    assert [p.step for p in LogFollower(exact, cap=len("".join(lines[:2]))).poll()] == [1, 2]


# --- the flag -----------------------------------------------------------------------------------------


def test_the_flag_parses_a_comma_list_and_none():
    assert parse_backends("tensorboard,wandb") == ["tensorboard", "wandb"]
    assert parse_backends(" WandB , wandb ") == ["wandb"]
    assert parse_backends("none") == []
    for bad in ("mlflow", "tensorboard,mlflow", ",", "none,wandb"):
        with pytest.raises(ValueError, match="choose tensorboard and/or wandb"):
            parse_backends(bad)
    assert TrackConfig(backends=["wandb", "wandb"]).backends == ["wandb"]


def test_an_unknown_backend_is_one_line_and_exit_2(tmp_path):
    proc = agentgolf("run", "--budget", "1", "--track", "mlflow", cwd=tmp_path, timeout=120)
    one_line_error(proc, "argument --track: unknown backend 'mlflow': choose tensorboard and/or wandb")


def test_a_missing_library_is_refused_before_anything_trains(tmp_path, tiny_dataset):
    """The refused case under the import blocker (wandb missing, as on a machine without the extra); the
    control: here, unblocked, nothing is missing."""
    assert missing_libraries(["tensorboard", "wandb"]) == []
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    env = {"PYTHONPATH": str(BLOCKER), "AGENTGOLF_BLOCK_IMPORTS": "wandb"}
    proc = agentgolf("run", "--budget", "1", "--track", "wandb", cwd=ws.root, env=env, timeout=120)
    one_line_error(proc, "--track wandb: wandb not installed; pip install 'agentgolf[track]'")
    assert not (ws.state / "runs").exists() and ws.ledger().latest_run() is None

    # `run --resume` tracks as its run did: the run's recorded backends are checked before it goes on.
    ledger = ws.ledger()
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit="0" * 40, settings={"track": ["wandb"]}))
    ledger.close()
    proc = agentgolf("run", "--resume", cwd=ws.root, env=env, timeout=120)
    one_line_error(proc, "--track wandb: wandb not installed")


# --- a failing backend --------------------------------------------------------------------------------


def test_a_failing_backend_is_one_warning_and_the_others_go_on(tmp_path, wandb_offline):
    """TensorBoard cannot write (its folder is a file): one warning for the run, TensorBoard off, while
    W&B takes every experiment's points and outcome."""
    ws = init_workspace(tmp_path / "ws")
    folder = tmp_path / "track"
    folder.mkdir()
    (folder / "tensorboard").write_text("not a folder")
    ws.config.track = TrackConfig(backends=["tensorboard", "wandb"], folder=folder, poll_seconds=0.05)
    said: list[str] = []
    tracking = Tracking(ws)
    with tracking.on("run-1", said.append):
        for exp_id in (1, 2):
            log = tmp_path / f"{exp_id}.log"
            log.write_text("".join(step_line(s, 6.0 - s / 10, 100 * s) for s in range(1, 5)))
            card = Card(
                exp_id=exp_id,
                name=tracking.claim(f"{exp_id}-idea"),
                group="run-1",
                kind="proposal",
                config={"seed": 7},
                hypothesis="wider is better",
                diff="",
            )
            feed = Feed(card, LogFollower(log), ["tensorboard", "wandb"], tracking.open, tracking, 0.05)
            feed.close(Outcome(status="ok", val_bpb=2.5 + exp_id, decision="dead_end"))
            assert feed.join(60)
            assert feed.points == 4
        # wandb's service leaves WANDB_SERVICE in the loop's environment; no phase's environment carries it
        assert "WANDB_SERVICE" in os.environ
        phase = RunSetup(b"", tmp_path / "run", None, Budget(), {}, 1, None, False, [], None, "none")
        assert not [k for k in phase.base_env(tmp_path / "home") if k.startswith("WANDB")]
    warnings = [line for line in said if "failed" in line]
    assert len(warnings) == 1 and warnings[0].startswith("tracking: tensorboard failed (")
    assert "off for the rest of this run" in warnings[0]
    runs = sorted(map(read_wandb, (folder / "wandb").glob("offline-run-*")), key=lambda r: r["name"])
    assert [r["name"] for r in runs] == ["1-idea", "2-idea"]
    assert [len(r["history"]) for r in runs] == [4, 4]
    assert [r["summary"]["val_bpb"] for r in runs] == [3.5, 4.5]


def test_a_name_is_taken_once_per_run_so_a_resume_never_writes_into_a_curve(tmp_path):
    ws = init_workspace(tmp_path / "ws")
    ws.config.track = TrackConfig(folder=tmp_path / "track")
    first, again = Tracking(ws), Tracking(ws)  # the first loop, then the resumed one
    first.folder = again.folder = tmp_path / "track"
    first.run_id = again.run_id = "run-1"
    assert first.claim("3-idea") == "3-idea"
    assert again.claim("3-idea") == "3-idea-2" and again.claim("3-idea") == "3-idea-3"
    again.run_id = "run-2"
    assert again.claim("3-idea") == "3-idea"  # another run: its own names


# --- a real run, read back ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_tracked_run_is_read_back_by_tensorboard_and_wandb(tmp_path, tiny_dataset, wandb_offline):
    """A real run (the baseline, one proposal of the offline search beside a control of its parent), with
    both backends: each trained row is a TensorBoard run and an offline W&B run whose curve has a point
    per step line of its train.log, whose val_bpb is the ledger's, and whose decision is the row's."""
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    cmd = [sys.executable, "-m", "agentgolf.agent.cli.main", "run", "--budget", "2"]
    proc = subprocess.run(
        [*cmd, "--track", "tensorboard,wandb"],
        cwd=ws.root,
        env={**wandb_offline, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tracking: TensorBoard in .agentgolf/track/tensorboard/" in proc.stderr, proc.stderr
    assert "upload later: wandb sync -p agentgolf .agentgolf/track/wandb/offline-run-*" in proc.stderr
    assert "failed (" not in proc.stderr and "is not tracked" not in proc.stderr, proc.stderr
    ledger = ws.ledger()
    # get(): each float as stored; the listing's SQLite JSON keeps 15 significant digits
    rows = [ledger.get(r.id) for r in ledger.experiments()]
    run_id = rows[0].run_id
    assert ledger.get_run(run_id).settings["track"] == ["tensorboard", "wandb"]  # what --resume tracks
    assert [r.kind for r in rows] == ["baseline", "proposal", "control"] and rows[1].decision, rows
    track = ws.state / "track"
    boards = {int(p.name.split("-")[0]): p for p in (track / "tensorboard" / run_id).iterdir()}
    runs = {r["config"]["id"]: r for r in map(read_wandb, (track / "wandb").glob("offline-run-*"))}
    assert sorted(boards) == sorted(runs) == [r.id for r in rows]
    for row in rows:
        curve = parse_train_curve((ws.run_dir(row.id) / "train.log").read_text())
        assert len(curve) >= 5, row  # the tiny trainer logs each of its first steps

        board = read_tensorboard(boards[row.id])
        assert [step for step, _ in board["scalars"]["train/loss"]] == [p.step for p in curve]
        assert [v for _, v in board["scalars"]["train/loss"]] == [np.float32(p.train_loss) for p in curve]
        assert board["scalars"]["result/val_bpb"][-1][1] == np.float32(row.val_bpb)
        assert board["scalars"]["result/artifact_bytes"][-1][1] == np.float32(row.artifact_bytes)
        assert len(board["scalars"]["train/step_ms"]) == len(curve)
        assert board["hparams"]["seed"] == row.seed and board["hparams"]["status"] == row.status
        assert board["hparams"]["trainer_env.ITERATIONS"] == "6"

        run = runs[row.id]
        assert run["group"] == run_id and run["name"] == boards[row.id].name and run["exit_code"] == 0
        assert run["notes"] == row.hypothesis and run["job_type"] == row.kind
        assert [h["_step"] for h in run["history"]] == [p.step for p in curve]
        assert [h["train/loss"] for h in run["history"]] == [p.train_loss for p in curve]
        assert [h["train/seconds"] for h in run["history"]] == [p.seconds for p in curve]
        assert run["summary"]["val_bpb"] == row.val_bpb and run["summary"]["status"] == row.status
        assert run["summary"]["artifact_bytes"] == row.artifact_bytes
        assert run["config"]["seed"] == row.seed and run["config"]["parent_id"] == row.parent_id

    proposal = rows[1]
    decision = "kept" if proposal.kept else proposal.decision["decision"]
    assert runs[proposal.id]["summary"]["decision"] == decision  # landed after the row was recorded
    assert read_tensorboard(boards[proposal.id])["hparams"]["decision"] == decision
    texts = read_tensorboard(boards[proposal.id])["texts"]
    assert texts["hypothesis/text_summary"] == [proposal.hypothesis]
    diff = texts["diff/text_summary"][0]
    assert "    +++ b/train_gpt.py" in diff and all(line.startswith("    ") for line in diff.splitlines())
    assert "diff.patch" in runs[proposal.id]["files"] and "hypothesis.md" in runs[proposal.id]["files"]
    assert runs[proposal.id]["config"]["knobs"], runs[proposal.id]["config"]  # the trainer's knobs in force


# --- fixtures and readers -----------------------------------------------------------------------------


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch) -> dict[str, str]:
    """wandb's folders in tmp, its server a closed port, no key; the environment, for subprocesses too.
    Its service, started in this process by a test, is stopped after it."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    for name in ("CACHE", "CONFIG", "DATA", "ARTIFACT"):
        monkeypatch.setenv(f"WANDB_{name}_DIR", str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing answers
    yield dict(os.environ)
    wandb_run.shutdown()


def read_tensorboard(folder: Path) -> dict:
    """Scalars {tag: [(step, value)]}, texts {tag: [str]} and the HParams row of one TensorBoard run,
    read by TensorBoard's own EventAccumulator."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    texts = {
        tag: [tensor_util.make_ndarray(e.tensor_proto).item().decode() for e in acc.Tensors(tag)]
        for tag in acc.PluginTagToContent("text")
    }
    hparams = {}
    for content in acc.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            for name, value in data.session_start_info.hparams.items():
                hparams[name] = getattr(value, value.WhichOneof("kind"))
    return {"scalars": scalars, "texts": texts, "hparams": hparams}


def read_wandb(folder: Path) -> dict:
    """One offline W&B run as wandb's own reader sees it (`wandb-core leet inspect --json`, one record a
    line): its name, group, notes, config, history rows, summary, saved files and exit code."""
    from wandb.util import get_core_path

    (log,) = folder.glob("run-*.wandb")
    argv = [get_core_path(), "leet", "inspect", "--json", "--no-observability", "--run-file", str(log)]
    out = subprocess.run([*argv, str(folder.parent)], capture_output=True, text=True, timeout=120, check=True)
    run: dict = {"config": {}, "history": [], "summary": {}, "files": [], "exit_code": None}
    for record in map(json.loads, out.stdout.splitlines()):
        body = record.get(record["type"]) or {}
        if record["type"] == "run":
            run |= {k: body.get(k) for k in ("display_name", "run_group", "notes", "job_type")}
            run["config"] |= body.get("config", {}).get("update", {})
        elif record["type"] == "config":
            run["config"] |= body.get("update", {})
        elif record["type"] == "history":
            run["history"].append(body["item"])
        elif record["type"] == "summary":
            run["summary"] |= body.get("update", {})
        elif record["type"] == "files":
            run["files"] += [f["path"] for f in body.get("files", [])]
        elif record["type"] == "exit":
            run["exit_code"] = body.get("exit_code", 0)
    run["config"].pop("_wandb", None)
    run["name"], run["group"] = run.pop("display_name"), run.pop("run_group")
    return run
