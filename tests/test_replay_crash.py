"""A replay of a failed row says whether it failed again the same way (issue 23): the same status and the same
last exception line once the numbers, addresses and paths that differ between two runs of one bug are
normalised; else a different failure, or a score.

The comparison is checked on rows built by hand; then end to end on a real workspace whose baseline is a
trainer that logs a step and raises with the time and an address in its message (so the two runs' lines
differ), run by the real loop in the sandbox and replayed through the real `agentgolf replay`.
"""

from __future__ import annotations

import os
import subprocess
import sys

import git
import pytest
from rich.console import Console

from agentgolf.agent.controller.loop import Loop, RunCaps, error_line, failed_again, same_failure
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import Experiment
from tests.tiny import make_workspace

WIDTH = 100
TRACE = 'Traceback (most recent call last):\n  File "{path}", line 12, in <module>\n'


def _failed(status: str = "crash", line: str = "", reason: str = "", **kw) -> Experiment:
    log = (
        (TRACE.format(path="/sandbox/train/train_gpt.py") + line + "\n")
        if line
        else "step:1/10 train_loss:6.9\n"
    )
    reason = reason or f"training exited with code 1: {line}"
    row = {"id": 1, "kind": "proposal", "created_at": 0.0, **kw}
    return Experiment(status=status, reason=reason, log_tail=log, **row)


BOOM = "RuntimeError: shape mismatch at 0x7f3a2c1b9d30 after 1700000000.125 s in /sandbox/train/blocks/mlp.py"


def test_same_failure_normalises_what_differs_between_two_runs_of_one_bug():
    again = BOOM.replace("0x7f3a2c1b9d30", "0x55d0c8e2a1f0").replace("1700000000.125", "1700000311.5")
    again = again.replace("/sandbox/train/blocks", "/tmp/agentgolf-run-48213/blocks")
    assert again != BOOM and same_failure(_failed(line=BOOM), _failed(line=again))
    assert error_line(_failed(line=BOOM)) == BOOM  # the exception line, not the traceback around it
    hashed = "ValueError: checkpoint 3fa9c2e1b7 does not match its sha256"
    assert same_failure(_failed(line=hashed), _failed(line=hashed.replace("3fa9c2e1b7", "9bd0e4c2a1")))
    # another exception type, the same words
    assert not same_failure(_failed(line=BOOM), _failed(line=BOOM.replace("RuntimeError", "ValueError")))
    # the same type, another message
    other = "RuntimeError: CUDA error: device-side assert triggered"
    assert not same_failure(_failed(line=BOOM), _failed(line=other))
    # the same line, another status
    assert not same_failure(_failed(line=BOOM), _failed(status="oom", line=BOOM))
    # no exception in the log: the harness's own words, compared with their numbers normalised
    slow = _failed(status="timeout", reason="training ran past its 75 s wall-clock limit and was killed")
    slower = slow.model_copy(update={"reason": slow.reason.replace("75", "90")})
    assert error_line(slow) == slow.reason and same_failure(slow, slower)
    hung = slow.model_copy(update={"reason": "scoring ran past its 75 s wall-clock limit and was killed"})
    assert not same_failure(slow, hung)


def test_what_a_replay_of_a_failed_row_says():
    original = _failed(line=BOOM)
    again = _failed(line=BOOM.replace("1700000000.125", "1700000400"), id=9)
    assert failed_again(original, again) == f"crashed again the same way (crash: {error_line(again)})"
    oom = _failed(status="oom", line="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert failed_again(original, oom) == (
        f"failed again, differently: crash: {BOOM} -> oom: torch.OutOfMemoryError: CUDA out of memory. "
        "Tried to allocate 2.00 GiB"
    )
    scored = Experiment(id=9, kind="replay", status="ok", val_bpb=1.23456, created_at=0.0)
    assert (
        failed_again(original, scored)
        == f"did not crash this time: val_bpb 1.2346 (the original crashed: crash: {BOOM})"
    )
    # a failure that has a score "failed", not "crashed"
    big = _failed(
        status="over_size", reason="artifact is 16,000,321 bytes: over the 16,000,000 limit", val_bpb=1.2
    )
    bigger = big.model_copy(update={"reason": big.reason.replace("321", "999")})
    assert failed_again(big, bigger).startswith(
        "failed again the same way (over_size: artifact is 16,000,999"
    )
    assert failed_again(big, scored).startswith(
        "did not fail this time: val_bpb 1.2346 (the original failed:"
    )
    # a row that did not fail: nothing to say; a long line is cut
    assert failed_again(scored, original) == ""
    long = _failed(line="RuntimeError: " + "x" * 400)
    said = failed_again(long, long)
    assert said.endswith("…)") and len(said) < 220


CRASHER = '''"""A trainer that logs a step, then raises with the time and an object's address in its message."""
import os
import time

print("step:1/10 train_loss:6.9000 train_time:5ms step_avg:5.00ms", flush=True)
raise RuntimeError(f"shape mismatch at 0x{id(object()):x} after {time.time():.6f} s (seed {os.environ['SEED']})")
'''


@pytest.mark.slow
def test_agentgolf_replay_of_a_crashed_row_says_it_crashed_again_the_same_way(tmp_path, tiny_dataset):
    ws = make_workspace(tmp_path / "ws", tiny_dataset)
    (ws.root / "train_gpt.py").write_text(CRASHER)
    repo = wt.with_identity(git.Repo(ws.root))
    repo.index.add(["train_gpt.py"])
    repo.index.commit("a trainer that crashes", author=wt.AUTHOR, committer=wt.AUTHOR)
    console = Console(file=open(tmp_path / "run.txt", "w"))
    summary = Loop(ws, ws.ledger(), ws.config.budget, console=console).run(RunCaps(experiments=1))
    base = ws.ledger().get(1)
    assert summary.failed and base.status == "crash" and "RuntimeError: shape mismatch" in base.reason, base

    proc = subprocess.run(
        [sys.executable, "-m", "agentgolf.agent.cli.main", "replay", "1"],
        cwd=ws.root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": str(WIDTH)},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(len(line) <= WIDTH for line in lines), proc.stdout
    copy = ws.ledger().get(2)
    assert copy.replay_of == 1 and copy.status == "crash"
    assert error_line(copy) != error_line(base)  # the time differs: only the normalised lines agree
    said = next(line for line in lines if line.startswith("#2 crashed again"))
    assert said.startswith("#2 crashed again the same way (crash: RuntimeError: shape mismatch at 0x"), said
    assert "replay of experiment 1: Baseline" in proc.stdout and "recorded #1" in proc.stdout
    assert "replay #2" in proc.stdout and "settings drift: none" in proc.stdout
