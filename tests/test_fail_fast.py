"""Fail before the first training, and loud (issue 23): each mistake a user can make when starting a run ends
in one line and a non-zero exit before anything trains (no run, no ledger row), or stops the run where it
shows, with a non-zero exit. The real CLI in a subprocess, a real workspace on tiny data, real git and
SQLite; a real HTTP server on 127.0.0.1 stands in for the LLM endpoint."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import git
import pytest

from agentgolf.agent.controller.preflight import check_endpoint
from agentgolf.agent.proposers.llm.proposer import LLMConfig
from tests.tiny import make_workspace, training_row


def agentgolf(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    return subprocess.run(
        [sys.executable, "-m", "agentgolf.agent.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def refused(proc: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit 2, one line on stderr saying each of `expected`, no traceback; returns the line."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for words in expected:
        assert words in lines[0], lines[0]
    return lines[0]


def nothing_ran(ws: Path) -> None:
    """No run was started and no row recorded: nothing trained."""
    with sqlite3.connect(ws / ".agentgolf" / "ledger.db") as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM experiments").fetchone()[0] == 0
    assert not (ws / ".agentgolf" / "runs").exists() or not any((ws / ".agentgolf" / "runs").iterdir())


def rows(ws: Path) -> list[dict]:
    proc = agentgolf("ledger", "--json", cwd=ws)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def workspace(tmp_path: Path, tiny_dataset) -> Path:
    return make_workspace(tmp_path / "ws", tiny_dataset).root


class Endpoint:
    """An HTTP server that answers GET /v1/models and POST /v1/chat/completions as scripted: each a (status,
    body) pair, or a number of seconds to stall. Requests are logged as (method, path)."""

    def __init__(self, models=(200, {"object": "list", "data": []}), chat=(200, {})):
        self.routes = {"GET": models, "POST": chat}
        self.log: list[tuple[str, str]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                endpoint.log.append((self.command, self.path))
                step = endpoint.routes[self.command]
                if isinstance(step, float):
                    time.sleep(step)
                    step = (500, {"error": {"message": "late"}})
                status, body = step
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def models(*names: str) -> tuple[int, dict]:
    return 200, {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "me"} for n in names]}


def chat_reply() -> tuple[int, dict]:
    message = {"role": "assistant", "content": "OK"}
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    choice = {"index": 0, "message": message, "finish_reason": "length"}
    return 200, {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [choice],
        "usage": usage,
    }


def failure(status: int, message: str) -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": "invalid_request_error", "code": None}}


# --- the LLM endpoint -------------------------------------------------------------------------------


def test_an_llm_endpoint_that_does_not_answer_or_refuses_the_key_is_refused_before_the_baseline(workspace):
    key = {"OPENAI_API_KEY": "sk-test"}
    start = time.monotonic()
    proc = agentgolf(
        "run",
        "--budget",
        "2",
        "--proposer",
        "openai",
        "--base-url",
        "http://127.0.0.1:9/v1",
        cwd=workspace,
        env=key,
    )
    refused(proc, "the LLM endpoint http://127.0.0.1:9/v1 does not answer", "Connection refused")
    assert time.monotonic() - start < 60  # not after 75 s of retries
    nothing_ran(workspace)

    wrong_key = Endpoint(models=failure(401, "Incorrect API key provided"), chat=failure(401, "no"))
    try:
        proc = agentgolf(
            "run",
            "--budget",
            "1",
            "--proposer",
            "openai",
            "--base-url",
            wrong_key.url,
            cwd=workspace,
            env=key,
        )
        refused(proc, f"the LLM endpoint {wrong_key.url} refuses the key in $OPENAI_API_KEY (HTTP 401)")
        assert wrong_key.log == [("GET", "/v1/models")]  # one look, no retries
    finally:
        wrong_key.close()

    no_such_model = Endpoint(
        models=models("qwen3-32b"), chat=failure(404, "The model `gpt-4.1` does not exist")
    )
    try:
        proc = agentgolf(
            "run",
            "--budget",
            "1",
            "--proposer",
            "openai",
            "--base-url",
            no_such_model.url,
            cwd=workspace,
            env=key,
        )
        refused(proc, "does not serve model 'gpt-4.1' (it lists: qwen3-32b): set --model")
    finally:
        no_such_model.close()
    nothing_ran(workspace)


def test_the_endpoint_check_passes_a_working_endpoint_and_times_out_a_silent_one(monkeypatch):
    """The positive controls: a listed model passes on the list alone; an endpoint with no model list passes
    on a one-token call; one that holds the connection is refused after the setting's timeout."""
    monkeypatch.setenv("TEST_KEY", "sk-test")
    listed = Endpoint(models=models("test-model"))
    unlisted = Endpoint(models=failure(404, "Not Found"), chat=chat_reply())
    silent = Endpoint(models=5.0)
    try:
        check_endpoint(LLMConfig(model="test-model", base_url=listed.url, api_key_env="TEST_KEY"), 2.0)
        assert listed.log == [("GET", "/v1/models")]  # nothing spent
        check_endpoint(LLMConfig(model="test-model", base_url=unlisted.url, api_key_env="TEST_KEY"), 2.0)
        assert unlisted.log == [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]
        start = time.monotonic()
        with pytest.raises(Exception, match=r"does not answer within 0.5 s \(fail_fast.endpoint_timeout_s\)"):
            check_endpoint(LLMConfig(model="m", base_url=silent.url, api_key_env="TEST_KEY"), 0.5)
        assert time.monotonic() - start < 4
    finally:
        for server in (listed, unlisted, silent):
            server.close()


# --- a CLI agent that is not there, and a proposer that keeps failing -----------------------------------


def test_a_cli_agent_not_on_path_is_refused_before_the_baseline(workspace):
    bare = {"PATH": "/usr/bin:/bin"}  # git is there; no coding agent is
    refused(
        agentgolf("run", "--budget", "3", "--agent", "codex", cwd=workspace, env=bare),
        "--agent codex: its program 'codex' is not on PATH",
    )
    refused(
        agentgolf("run", "--budget", "3", "--agent-cmd", "no-such-agent --yes", cwd=workspace),
        "--agent-cmd: its program 'no-such-agent' is not on PATH",
    )
    refused(
        agentgolf("run", "--budget", "3", "--agent-cmd", "./agents/run.sh", cwd=workspace),
        "'./agents/run.sh' is not an executable file",
    )
    nothing_ran(workspace)


@pytest.mark.slow
def test_a_proposer_that_keeps_failing_stops_the_run_non_zero(workspace):
    """An agent whose program the shell cannot find (exit 127) stops the run at its first proposal; one that
    fails the same way N times in a row stops it after N; both say "proposer failed" and exit 1. The trainer
    here has an uncommitted edit: --allow-dirty runs from the commit, and says so."""
    trainer = workspace / "train_gpt.py"
    trainer.write_text(trainer.read_text() + "\n# an edit not committed\n")
    head = git.Repo(workspace).head.commit.hexsha
    no_isolation = {"AGENTGOLF_ISOLATION": "none"}
    proc = agentgolf(
        "run",
        "--budget",
        "5",
        "--allow-dirty",
        "--agent-cmd",
        "sh -c no-such-agent",
        cwd=workspace,
        env=no_isolation,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert (
        f"--allow-dirty: the run uses commit {head[:10]}; the uncommitted edits to train_gpt.py are not in it"
        in proc.stderr
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: run ")
        and "stopped: proposer failed: the agent command exited with code 127" in last
    ), last
    assert "(the shell could not find it)" in last
    assert [(r["kind"], r["status"]) for r in rows(workspace)] == [("baseline", "ok")]  # no reject spent
    assert rows(workspace)[0]["commit"] == head

    config = workspace / ".agentgolf" / "config.json"
    settings = json.loads(config.read_text())
    settings["fail_fast"] = {"same_proposer_failures": 2}
    config.write_text(json.dumps(settings))
    proc = agentgolf(
        "run",
        "--budget",
        "5",
        "--allow-dirty",
        "--agent-cmd",
        "sh -c 'echo broken >&2; exit 3'",
        cwd=workspace,
        env=no_isolation,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        "proposer failed: 2 proposals in a row failed the same way" in last
        and "exited with code 3: broken" in last
    )
    run = rows(workspace)[1]["run_id"]
    assert [(r["kind"], r["status"]) for r in rows(workspace) if r["run_id"] == run] == [
        ("baseline", "ok"),
        ("proposal", "rejected"),
    ]


# --- one loop per workspace --------------------------------------------------------------------------


@pytest.fixture
def slow_workspace(workspace: Path) -> Path:
    config = workspace / ".agentgolf" / "config.json"
    settings = json.loads(config.read_text())
    settings["trainer_env"]["ITERATIONS"] = "60"  # long enough to be caught mid-flight
    config.write_text(json.dumps(settings))
    return workspace


@pytest.mark.slow
def test_a_second_loop_is_refused_and_status_reports_the_live_run(slow_workspace):
    ws = slow_workspace
    loop = subprocess.Popen(
        [sys.executable, "-m", "agentgolf.agent.cli.main", "run", "--budget", "2"],
        cwd=ws,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert training_row(ws) is not None, "the first loop's baseline never trained"
        (run,) = {r["run_id"] for r in rows(ws)}
        second = agentgolf("run", "--budget", "1", cwd=ws)
        refused(
            second, f"a loop is already running in this workspace: run {run} is live in process {loop.pid}"
        )
        assert {r["run_id"] for r in rows(ws)} == {run}  # the refused loop wrote nothing
        replay = agentgolf("replay", "1", cwd=ws)  # a replay beside the loop would move both scores
        refused(
            replay, f"a loop is already running in this workspace: run {run} is live in process {loop.pid}"
        )
        assert {r["run_id"] for r in rows(ws)} == {run}

        # A newer run in the ledger (a loop that died, say) does not hide the live one from `status`.
        from agentgolf.agent.workspace import Workspace
        from agentgolf.experiments.ledger import Run

        ledger = Workspace(ws).ledger()
        ledger.add_run(
            Run(id="99990101-000000", created_at=time.time() + 60, base_commit="0" * 40, settings={})
        )
        ledger.close()
        shown = agentgolf("status", "--json", cwd=ws)
        assert shown.returncode == 0 and shown.stdout.strip(), (shown.returncode, shown.stderr)
        status = json.loads(shown.stdout)
        assert status["run_id"] == run and status["live"] and status["pid"] == loop.pid
        assert agentgolf("cancel", run, cwd=ws).returncode == 0
        loop.wait(timeout=120)
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()


@pytest.mark.slow
def test_ctrl_c_marks_in_flight_rows_interrupted_and_resume_trains_them(slow_workspace):
    ws = slow_workspace
    loop = subprocess.Popen(
        [sys.executable, "-m", "agentgolf.agent.cli.main", "run", "--budget", "1"],
        cwd=ws,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        victim = training_row(ws)
        assert victim is not None, "no experiment reached its second training step in time"
        loop.send_signal(signal.SIGINT)
        _, err = loop.communicate(timeout=120)
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    assert loop.returncode == 130 and "Traceback" not in err, err
    (row,) = rows(ws)
    assert row["id"] == victim and row["status"] == "interrupted" and "Ctrl-C" in row["reason"], row
    shown = agentgolf("status", "--json", cwd=ws)
    assert shown.returncode == 0 and shown.stdout.strip(), (shown.returncode, shown.stderr)
    status = json.loads(shown.stdout)
    assert status["status"] == "interrupted" and not status["live"] and status["in_flight"] == []

    config = ws / ".agentgolf" / "config.json"
    settings = json.loads(config.read_text())
    settings["trainer_env"]["ITERATIONS"] = "6"
    config.write_text(json.dumps(settings))
    resumed = agentgolf("run", "--resume", cwd=ws)
    assert resumed.returncode == 0, resumed.stderr
    (row,) = rows(ws)
    assert row["id"] == victim and row["status"] == "ok" and row["val_bpb"], (
        row
    )  # nothing lost, nothing twice


# --- the config, the flags, the ledger ----------------------------------------------------------------


def test_unknown_config_keys_and_bad_values_are_each_named_in_plain_words(workspace):
    config = workspace / ".agentgolf" / "config.json"
    settings = json.loads(config.read_text())
    settings.update(noise_seed=5, budjet=3)
    settings["budget"]["train_second"] = 60
    settings["acceptance"]["noise_seeds"] = "ten"
    config.write_text(json.dumps(settings))
    line = refused(
        agentgolf("run", "--budget", "1", cwd=workspace),
        "noise_seed: unknown key (did you mean acceptance.noise_seeds?)",
        "budjet: unknown key (did you mean budget?)",
        "budget.train_second: unknown key (did you mean budget.train_seconds?)",
        'acceptance.noise_seeds: Input should be a valid integer, unable to parse string as an integer (got "ten")',
    )
    assert "errors.pydantic.dev" not in line and "type=" not in line and "validation error" not in line
    refused(agentgolf("status", cwd=workspace), "noise_seed: unknown key")
    nothing_ran(workspace)


def test_flags_that_cannot_apply_are_refused(workspace):
    cases = [
        (("--gpus-per-experiment", "8"), "--gpus-per-experiment 8: this workspace has no GPUs"),
        (("--partition", "gpu"), "--partition applies to SLURM only"),
        (("--max-concurrent", "4"), "--max-concurrent applies to SLURM only"),
        (("--model", "gpt-4.1"), "--model applies to --proposer openai, not search"),
        (("--proposer", "search", "--agent", "codex"), "--agent applies to --proposer command, not search"),
        (("--agent", "codex", "--agent-cmd", "x"), "give --agent or --agent-cmd, not both"),
    ]
    for flags, expected in cases:
        refused(agentgolf("run", "--budget", "2", *flags, cwd=workspace), expected)
    nothing_ran(workspace)


def test_a_dirty_trainer_is_refused_naming_the_commit(workspace):
    trainer = workspace / "train_gpt.py"
    trainer.write_text(trainer.read_text() + "\nX = 1\n")
    head = git.Repo(workspace).head.commit.hexsha
    refused(
        agentgolf("run", "--budget", "1", cwd=workspace),
        f"the run uses commit {head[:10]}; the uncommitted edits to train_gpt.py are not in it",
        "--allow-dirty",
    )
    nothing_ran(workspace)


def test_ledger_status_filter_lists_the_statuses(workspace):
    line = refused(
        agentgolf("ledger", "--status", "bogus", cwd=workspace), "--status 'bogus' is not a status"
    )
    for status in ("ok", "crash", "rejected", "interrupted", "over_size", "infra_error"):
        assert status in line
    assert agentgolf("ledger", "--status", "crash", cwd=workspace).returncode == 0


def test_a_corrupt_ledger_is_copied_aside_once(workspace):
    ledger = workspace / ".agentgolf" / "ledger.db"
    for name in ("ledger.db-wal", "ledger.db-shm"):
        (workspace / ".agentgolf" / name).unlink(missing_ok=True)
    ledger.write_bytes(b"garbage" * 500)
    for command in (("ledger",), ("status",), ("run", "--budget", "1")):
        refused(agentgolf(*command, cwd=workspace), "is not a readable SQLite database")
        time.sleep(1.1)  # a copy per command would get a new name each second
    copies = list(ledger.parent.glob("ledger.db.corrupt-*"))
    assert len(copies) == 1 and copies[0].read_bytes() == b"garbage" * 500
    ledger.write_bytes(b"other garbage" * 500)  # a new corruption is a new copy
    refused(agentgolf("ledger", cwd=workspace), "is not a readable SQLite database")
    assert len(list(ledger.parent.glob("ledger.db.corrupt-*"))) == 2


# --- pick says what it did ------------------------------------------------------------------------------


def test_pick_says_where_a_new_branch_starts_and_that_a_branch_already_holds_the_change(workspace):
    from agentgolf.experiments.ledger import Ledger, Run

    repo = git.Repo(workspace)
    base = repo.head.commit.hexsha
    main = repo.active_branch.name
    trainer = workspace / "train_gpt.py"
    repo.git.checkout("-b", "side")
    trainer.write_text(trainer.read_text() + "\n# a change\n")
    repo.index.add(["train_gpt.py"])
    change = repo.index.commit("a change").hexsha
    repo.git.checkout(main)
    ledger = Ledger(workspace / ".agentgolf" / "ledger.db")
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit=base))
    exp = ledger.add_experiment(
        run_id="r1", kind="proposal", status="ok", commit_sha=change, created_at=time.time(), kept=True
    )
    ledger.close()

    first = agentgolf("pick", str(exp.id), "--onto", "winner", cwd=workspace)
    assert first.returncode == 0, first.stderr
    head = repo.commit("winner").hexsha
    assert first.stdout.strip() == (
        f"new branch winner from {main} at {base[:10]}; picked 1 commit(s) onto winner: now at {head[:10]}"
    )
    again = agentgolf("pick", str(exp.id), "--onto", "winner", cwd=workspace)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert again.stdout.strip() == (
        f"winner already holds experiment {exp.id}'s change; nothing to pick (it is at {head[:10]})"
    )
    assert repo.commit("winner").hexsha == head  # nothing added

    # The same change applied by hand on the current branch: held too, and the checkout is untouched.
    trainer.write_text(trainer.read_text() + "\n# a change\n")
    repo.index.add(["train_gpt.py"])
    repo.index.commit("the same change, by hand")
    # The baseline (or a best that never moved): an empty chain, done as asked, exit 0, no branch made.
    ledger = Ledger(workspace / ".agentgolf" / "ledger.db")
    baseline = ledger.add_experiment(
        run_id="r1", kind="baseline", status="ok", commit_sha=base, created_at=time.time(), kept=True
    )
    ledger.close()
    empty = agentgolf("pick", str(baseline.id), "--onto", "nowhere", cwd=workspace)
    assert empty.returncode == 0 and "Traceback" not in empty.stderr, empty.stderr
    assert empty.stdout.strip().endswith("nothing to pick; no branch made"), empty.stdout
    assert f"experiment {baseline.id} makes no change over its run's base commit" in empty.stdout
    assert "nowhere" not in [h.name for h in repo.heads]

    by_hand = agentgolf("pick", str(exp.id), cwd=workspace)
    assert by_hand.returncode == 0 and f"{main} already holds experiment {exp.id}'s change" in by_hand.stdout
