"""The third attack suite, aimed at the verified-scoring protocol itself: stream mode, the harness's own
failures, the scoring phase's time, and what a declaration may change.

Each attack is the toy bigram trainer with a few hostile lines appended (tests/sandbox_trainers/), run
through the real sandbox (bubblewrap) on real subprocesses, with the honest toy as its positive control.
"""

from __future__ import annotations

import math
import re
import tracemalloc
from pathlib import Path

import pytest

from agentgolf.sandbox.budget import Timing
from agentgolf.sandbox.isolation.bwrap import find_bwrap
from agentgolf.sandbox.result import Status
from agentgolf.sandbox.runner import run_sandboxed
from agentgolf.sandbox.scoring.verify import VerifyConfig
from tests.sandbox_support import THOROUGH, TOY, compose, data_spec, declaring

pytestmark = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")

BUDGET = THOROUGH
STREAM = {"eval_mode": "stream", "eval_stride": 16, "eval_context": 32}


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return data_spec(tiny_dataset)


@pytest.fixture(scope="module")
def honest(data, tmp_path_factory):
    result = run_sandboxed(TOY, tmp_path_factory.mktemp("honest"), data, BUDGET)
    assert result.status is Status.ok, result.reason
    return result


@pytest.fixture(scope="module")
def honest_stream(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("honest-stream")
    trainer = declaring(compose("ttt.py", folder), **STREAM)
    result = run_sandboxed(trainer, folder / "run", data, BUDGET, env={"EVAL_MODE": "stream"})
    assert result.status is Status.ok, result.reason
    return result


def _forged(result) -> None:
    assert result.status is Status.violation, (result.status, result.reason)
    assert "unverifiable score" in result.reason and "fresh process" in result.reason, result.reason
    assert result.val_bpb is None


def test_stream_mode_is_verified_by_a_fresh_replay(honest_stream, honest):
    """The positive control: score-first TTT replayed by a fresh worker gives the same numbers, and it is
    checked on as many positions as windows mode would be."""
    v = honest_stream.verification
    assert v["positions"] == min(300, math.ceil(honest.val_tokens / 16)) and v["max_gap_nats"] <= 1e-9
    assert honest_stream.val_tokens == honest.val_tokens and honest_stream.val_bpb < honest.val_bpb


@pytest.mark.parametrize("attack", ["memo.py", "worker_patch.py", "noncausal.py"])
def test_stream_mode_forgeries_are_violations(data, tmp_path, attack):
    """Peek on first sight and remember the answer per prefix; patch the worker to report NLL 0 with logits
    forged to match; peek outright. Each declares stream mode, which used to switch the fresh process off."""
    result = run_sandboxed(declaring(compose(attack, tmp_path), **STREAM), tmp_path / "run", data, BUDGET)
    assert result.eval_mode is None or result.eval_mode["mode"] == "stream"
    if result.status is Status.violation and "the same call's logits give" in result.reason:
        return  # the scorer's own check caught it first (the patched worker's NLL is not its logits')
    _forged(result)


@pytest.mark.parametrize("run", range(3))
def test_crashing_the_harness_on_a_probe_is_a_violation_every_time(data, tmp_path, run):
    """A sparse peeker that answers a narrow frame whenever its peeked position is asked for: before, that
    made the harness raise (an uncharged retry). Now each such answer is the candidate's violation."""
    result = run_sandboxed(compose("crash_on_probe.py", tmp_path), tmp_path / "run", data, BUDGET)
    assert result.status is Status.violation, (result.status, result.reason)
    assert "logits answer" in result.reason or "unverifiable score" in result.reason, result.reason


def test_a_narrow_logits_frame_is_a_violation(data, tmp_path, honest):
    result = run_sandboxed(compose("narrow_frame.py", tmp_path), tmp_path / "run", data, BUDGET)
    assert result.status is Status.violation, (result.status, result.reason)
    assert "one column per token of the vocabulary" in result.reason


def test_a_huge_frame_is_refused_before_it_is_read(data, tmp_path, honest):
    """A 256 MiB logits answer: refused from its header; the harness allocates a few MiB at most."""
    tracemalloc.start()
    try:
        result = run_sandboxed(compose("huge_frame.py", tmp_path), tmp_path / "run", data, BUDGET)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status is Status.violation and "frame too large" in result.reason, result.reason
    assert peak < 32 * 2**20, f"the harness allocated {peak / 2**20:.0f} MiB"


def _budget_measured_on(result, margin: float):
    budget = BUDGET.model_copy(update={"scoring_margin_seconds": margin, "scoring_margin_fraction": 0.5})
    return budget.with_measured(Timing.of(result))


def test_training_while_loading_is_over_time(data, tmp_path, honest):
    """The artifact carries training tokens and load_model trains on them for 8 s: a second, unbudgeted
    training run. Against the baseline's own load time plus the margin it is over_time, with its numbers."""
    budget = _budget_measured_on(honest, margin=3.0)
    result = run_sandboxed(compose("load_train.py", tmp_path), tmp_path / "run", data, budget)
    assert result.status is Status.over_time, (result.status, result.reason)
    assert re.search(r"loading the model took [\d.]+ s: more than the [\d.]+ s allowed", result.reason)
    assert result.load_seconds > 8.0 and result.val_bpb is not None  # scored and shown, never kept
    control = run_sandboxed(TOY, tmp_path / "control", data, budget)
    assert control.status is Status.ok, control.reason


def test_load_model_runs_without_autograd(data, tmp_path):
    """Loading is not training: without turning autograd back on, load-time training cannot even start."""
    trainer = compose("load_train.py", tmp_path)
    trainer.write_text(trainer.read_text().replace("with torch.enable_grad():", "if True:"))
    result = run_sandboxed(trainer, tmp_path / "run", data, BUDGET, env={"LOAD_TRAIN_SECONDS": "1"})
    assert result.status is Status.crash and "RuntimeError" in result.reason, (result.status, result.reason)


def test_long_declared_rows_do_not_lower_the_number_checked(data, tmp_path, honest):
    """Sliding rows four seq_lens long (the most allowed) are checked on as many positions as windows: m is
    10% of the scored seq_len windows either way (no minimum here, so that the share decides)."""
    share = BUDGET.model_copy(update={"verify": VerifyConfig(min_positions=0)})
    trainer = declaring(
        compose("context_copy.py", tmp_path), eval_mode="sliding", eval_stride=128, eval_context=128
    )
    result = run_sandboxed(trainer, tmp_path / "run", data, share, env={"EVAL_MODE": "sliding"})
    windows = run_sandboxed(compose("context_copy.py", tmp_path), tmp_path / "windows", data, share)
    assert result.status is Status.ok and windows.status is Status.ok, (result.reason, windows.reason)
    assert (
        result.verification["positions"]
        == windows.verification["positions"]
        == math.ceil(0.1 * honest.val_tokens / 32)
    )
    assert result.verification["escape_at_1pct"] == pytest.approx(0.99 ** result.verification["positions"])


def test_a_context_past_the_cap_cannot_be_declared(data, tmp_path):
    trainer = declaring(
        compose("context_copy.py", tmp_path), eval_mode="sliding", eval_stride=64, eval_context=1 << 20
    )
    result = run_sandboxed(trainer, tmp_path / "run", data, BUDGET, env={"EVAL_MODE": "sliding"})
    assert result.status is Status.crash and "eval_context" in result.reason, (result.status, result.reason)


def test_a_stride_of_one_is_scored_not_a_harness_crash(data, tmp_path, honest):
    """One-token rows at the stream's start: before, the harness raised on them (an uncharged infra_error)."""
    trainer = declaring(
        compose("context_copy.py", tmp_path), eval_mode="sliding", eval_stride=1, eval_context=32
    )
    result = run_sandboxed(trainer, tmp_path / "run", data, BUDGET, env={"EVAL_MODE": "sliding"})
    assert result.status is Status.ok, (result.status, result.reason)
    assert result.val_tokens == honest.val_tokens


def test_the_declared_seq_len_does_not_choose_the_targets(data, tmp_path, honest):
    """Windows of half the stream plus one: every target is still scored (the last window is partial)."""
    half = honest.val_tokens // 2 + 1
    result = run_sandboxed(
        declaring(compose("context_copy.py", tmp_path), seq_len=half), tmp_path / "run", data, BUDGET
    )
    assert result.status is Status.ok, result.reason
    assert result.val_tokens == honest.val_tokens and result.val_bytes == honest.val_bytes


def test_the_two_workers_cannot_tell_which_they_are(data, tmp_path):
    """The spy logs, from inside each worker, what could tell them apart: the same host folder, files just
    made, the same first-request shape and positions asked, the first request as soon as it is ready."""
    run = tmp_path / "run"
    result = run_sandboxed(compose("tell.py", tmp_path), run, data, BUDGET)
    assert result.status is Status.ok, result.reason
    scorer, verifier = (_tells(run / name) for name in ("score.log", "verify.log"))
    assert scorer["mount"] == verifier["mount"]
    assert scorer["at"] == verifier["at"] == "last+one" and scorer["length"] == verifier["length"]
    for tell in (scorer, verifier):
        assert float(tell["age"]) < 5.0 and float(tell["since_start"]) < 10.0, tell


def _tells(log: Path) -> dict[str, str]:
    return dict(
        re.findall(r"(\w+)=(\S+)", " ".join(ln for ln in log.read_text().splitlines() if "TELL" in ln))
    )
