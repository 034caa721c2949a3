"""Steering a live run from outside: `agentgolf note` reaches every later prompt until it is cleared, and
`agentgolf status --json` tells a script what the run is doing. A real `agentgolf run` in a subprocess, the
real trainer in the sandbox, and a small Python program as the coding agent (it records each prompt it is
given, and waits on a file so that the test knows which prompts were built before and after each note)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentgolf.agent.proposers.command import CommandConfig
from agentgolf.agent.workspace import save_config
from tests.tiny import make_workspace

AGENT = """
import os, pathlib, time
out = pathlib.Path(os.environ["PROMPTS_DIR"])
n = len(list(out.glob("prompt-*.md"))) + 1
(out / f"prompt-{n}.md").write_text(open(os.environ["AGENTGOLF_PROMPT"]).read())
deadline = time.time() + 120
while n == 1 and not (out / "go").exists() and time.time() < deadline:
    time.sleep(0.1)
text = open("train_gpt.py").read().replace('"TIED_EMBED_LR", 0.05', f'"TIED_EMBED_LR", 0.0{n + 1}')
open("train_gpt.py", "w").write(text)
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "agentgolf.agent.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _status(cwd: Path) -> dict:
    """The live run's state; {} until the run has its ledger row (status says so, in one line, before)."""
    proc = subprocess.run(
        [sys.executable, "-m", "agentgolf.agent.cli.main", "status", "--json"],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    if proc.returncode == 2 and "no runs yet" in proc.stderr:
        return {}
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _wait(what, timeout: float = 240.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if found := what():
            return found
        time.sleep(0.3)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_note_and_status_on_a_live_run(tmp_path, tiny_dataset):
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (tmp_path / "agent.py").write_text(AGENT)
    # The agent records its prompts in tmp_path, outside what the agent's sandbox shows: it runs unsandboxed
    # here (tests/test_command_proposer.py checks the sandbox), with PROMPTS_DIR passed like an API key.
    ws.config.command = CommandConfig(
        cmd=f"{sys.executable} {tmp_path / 'agent.py'}", env_pass=["PROMPTS_DIR"]
    )
    save_config(ws.config_path, ws.config)
    run = subprocess.Popen(
        [sys.executable, "-m", "agentgolf.agent.cli.main", "run", "--budget", "3", "--proposer", "command"],
        cwd=ws.root,
        env={**os.environ, "PROMPTS_DIR": str(prompts), "AGENTGOLF_ISOLATION": "none"},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "run.err", "w"),
    )
    try:
        # While the baseline trains: the run is live, the baseline is in flight, nothing is kept yet.
        live = _wait(lambda: (s := _status(ws.root)).get("in_flight") and s)
        assert live["live"] and live["pid"] == run.pid and live["status"] == "running"
        assert live["proposer"] == "command" and live["caps"]["experiments"] == 3
        assert [e["kind"] for e in live["in_flight"]] == ["baseline"] and live["best"] is None
        _cli("note", "try shorter warmdown; the width changes are done", cwd=ws.root)
        assert "note 1" in _cli("status", cwd=ws.root).stdout

        # The first proposal is prepared after the baseline: its prompt carries the note.
        first = _wait(lambda: (prompts / "prompt-1.md").is_file() and (prompts / "prompt-1.md").read_text())
        assert "# Notes from the person running this search (follow them)" in first
        assert "- try shorter warmdown; the width changes are done" in first
        _cli("note", "--clear", cwd=ws.root)
        (prompts / "go").touch()

        # The second is prepared while the first trains: no note any more, and the first is in flight.
        second = _wait(lambda: (prompts / "prompt-2.md").is_file() and (prompts / "prompt-2.md").read_text())
        assert "try shorter warmdown" not in second
        assert "exp 2 on experiment 1 (training)" in second and '"TIED_EMBED_LR", 0.02' in second
        assert "Your change will be applied to experiment 1 (Baseline" in second
        assert run.wait(timeout=300) == 0, (tmp_path / "run.err").read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()

    # The parent's facts, read from the baseline's real run folder, reached both prompts.
    for prompt in (first, second):
        assert "# The parent's run" in prompt and "ran all 6 planned steps" in prompt
        assert "trainer_env in force (wins over the file): PRESET=cpu, NUM_LAYERS=2" in prompt
        assert "PRESET=cpu sets (over the Hyperparameters defaults): WARMDOWN_ITERS=" in prompt
        assert "the trainer printed its settings as: " in prompt and "iterations=6" in prompt
        assert "hardware: CPU only" in prompt and "bytes of headroom" in prompt

    done = _status(ws.root)
    assert not done["live"] and done["pid"] is None and done["status"] == "finished"
    assert done["stop_reason"] == "budget spent" and done["in_flight"] == [] and done["notes"] == []
    # 3 experiments; 5 rows finished: each proposal ran beside a control of its parent (test_paired.py)
    assert done["experiments"] == 3 and done["finished"] == 5 and done["best"]["id"] >= 1
    assert done["spend"]["device_hours"] > 0

    # A CLI agent looks an idea up: the agent's changes are found by their diffs (their titles say nothing).
    found = _cli("similar", "lower", "the", "TIED_EMBED_LR", cwd=ws.root).stdout
    assert found.startswith("- exp ") and "Agent edit of train_gpt.py" in found and "(similarity " in found
    assert "nothing tried so far" in _cli("similar", "a new tokenizer", cwd=ws.root).stdout
