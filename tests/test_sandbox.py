"""The sandbox on legitimate trainers: real bubblewrap, real subprocesses, the tiny real dataset."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

from agentgolf.baseline.shards import read_shard
from agentgolf.sandbox.classify import classify_phase
from agentgolf.sandbox.isolation.bwrap import bwrap_works, find_bwrap, resolve_isolation
from agentgolf.sandbox.isolation.limits import Limits
from agentgolf.sandbox.isolation.logs import READY_LINE, LogCapture
from agentgolf.sandbox.isolation.process import SandboxedProcess
from agentgolf.sandbox.metrics import (
    MetricPatternError,
    compile_patterns,
    parse_self_report,
    parse_steps,
    parse_train_curve,
)
from agentgolf.sandbox.phase import PhaseSpec
from agentgolf.sandbox.result import SandboxResult, Status
from agentgolf.sandbox.runner import SandboxInputError, TrainerNotFoundError, run_sandboxed
from agentgolf.sandbox.scoring.score_worker import FrameError, read_frame, write_frame
from tests.sandbox_support import TEST_BUDGET, TOY, TRAINERS, compose, data_spec

needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return data_spec(tiny_dataset)


@pytest.fixture(scope="module")
def toy_run(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("toy_run")
    started: list[int] = []
    result = run_sandboxed(TOY, run_dir, data, TEST_BUDGET, on_start=started.append, isolation="bwrap")
    return result, run_dir, started


# --------------------------------------------------------------------------------------------------
# End to end


@needs_bwrap
def test_toy_run_is_ok_with_files_written(toy_run):
    result, run_dir, started = toy_run
    assert result.status is Status.ok, result.reason
    assert result.isolation == "bwrap" and result.trust == "harness"
    assert math.isfinite(result.val_bpb) and 0 < result.val_bpb < 10
    assert result.code_bytes == len(TOY.read_bytes())
    assert result.model_bytes == (run_dir / "train" / "final_model.int8.ptz").stat().st_size
    assert result.artifact_bytes == result.code_bytes + result.model_bytes
    assert result.steps == 80 and result.self_val_bpb is None  # the toy sees no val shards, prints no score
    assert len(started) == 3  # on_start: one pid per phase (training, scoring, verification)
    saved = SandboxResult.model_validate(json.loads((run_dir / "result.json").read_text()))
    assert saved.val_bpb == result.val_bpb and saved.status is Status.ok
    assert "no validation shards" in (run_dir / "train.log").read_text()
    assert (run_dir / "score" / "train_gpt.py").read_bytes() == TOY.read_bytes()


def _independent_bpb(artifact: Path, val_files: list[Path], tokenizer: Path, vocab: int) -> tuple[float, int]:
    """Recompute val_bpb here: the toy's own load_model, torch NLL, a byte table built from scratch."""
    spec = importlib.util.spec_from_file_location("toy_for_test", TOY)
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    model = toy.load_model(str(artifact), "cpu")
    val = np.concatenate([read_shard(f) for f in val_files]).astype(np.int64)
    t, total = model.seq_len, val.size - 1  # every target: windows of seq_len, the last one partial
    nll = 0.0
    for a in range(0, total, t):
        x, y = torch.from_numpy(val[a : a + t][None]), torch.from_numpy(val[a + 1 : a + t + 1][None])
        x = x[:, : min(t, total - a)]
        with torch.no_grad():
            logp = torch.log_softmax(model.forward_logits(x).double(), dim=-1)
        nll += float(-logp.gather(-1, y.unsqueeze(-1)).sum())
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    n_bytes = 0
    for prev, tok in zip(val[:total].tolist(), val[1:].tolist(), strict=True):
        if sp.is_control(tok) or sp.is_unknown(tok) or sp.is_unused(tok):
            continue
        if sp.is_byte(tok):
            n_bytes += 1
            continue
        piece = sp.id_to_piece(tok)
        prev_is_boundary = sp.is_control(prev) or sp.is_unknown(prev) or sp.is_unused(prev)
        if piece.startswith("\u2581"):
            n_bytes += len(piece[1:].encode()) + (0 if prev_is_boundary else 1)
        else:
            n_bytes += len(piece.encode())
    return nll / (math.log(2) * n_bytes), total


@needs_bwrap
def test_toy_score_equals_independent_recomputation(toy_run, data):
    result, run_dir, _ = toy_run
    expected, n_tokens = _independent_bpb(
        run_dir / "score" / "final_model.int8.ptz", data.val_files, data.tokenizer, data.vocab_size
    )
    assert result.val_tokens == n_tokens
    assert result.val_bpb == pytest.approx(expected, rel=1e-9)


@needs_bwrap
def test_self_reported_mode_sees_val_and_takes_the_log_score(toy_run, data, tmp_path):
    """The toy prints the official line when val is visible; its score (same seed) matches the harness's."""
    result = run_sandboxed(TOY, tmp_path, data, TEST_BUDGET, self_reported=True, isolation="bwrap")
    assert result.status is Status.ok, result.reason
    assert result.trust == "self_reported" and "not re-scored" in result.reason
    assert result.val_bpb == result.self_val_bpb
    # The toy prints the official layout's score (whole windows); the harness scores every target.
    assert result.val_bpb == pytest.approx(toy_run[0].val_bpb, abs=0.01)
    assert not (tmp_path / "score.log").exists()


def test_isolation_none_is_labelled(data, tmp_path, caplog):
    result = run_sandboxed(TOY, tmp_path, data, TEST_BUDGET, isolation="none")
    assert result.status is Status.ok, result.reason
    assert result.isolation == "none"
    assert "NO ISOLATION" in result.reason
    assert any("NO ISOLATION" in r.getMessage() for r in caplog.records)
    assert math.isfinite(result.val_bpb)


def test_isolation_env_var_selects_none(monkeypatch):
    monkeypatch.setenv("AGENTGOLF_ISOLATION", "none")
    mode, warning = resolve_isolation(None)
    assert mode == "none" and "NO ISOLATION" in warning
    assert resolve_isolation("bwrap")[0] == ("bwrap" if find_bwrap() else "none")


@needs_bwrap
def test_environment_is_cleared_and_harness_keys_win(data, tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTGOLF_TEST_SECRET", "hunter2")
    env = {"DATA_PATH": "/etc", "MAX_WALLCLOCK_SECONDS": "99999", "SEED": "7", "MY_SETTING": "42"}
    result = run_sandboxed(TRAINERS / "print_env.py", tmp_path, data, TEST_BUDGET, env=env, seed=5)
    assert result.status is Status.crash and "no artifact" in result.reason
    seen = dict(
        line[4:].split("=", 1)
        for line in (tmp_path / "train.log").read_text().splitlines()
        if line.startswith("ENV ")
    )
    assert seen["MY_SETTING"] == "42"
    assert seen["DATA_PATH"] == "/data/shards" and seen["SEED"] == "5"
    assert seen["MAX_WALLCLOCK_SECONDS"] == f"{TEST_BUDGET.train_seconds:g}"
    assert seen["ARTIFACT_PATH"] == "/sandbox/train/final_model.int8.ptz"
    assert seen["CUDA_VISIBLE_DEVICES"] == "" and seen["HOME"] == "/tmp"
    assert "AGENTGOLF_TEST_SECRET" not in seen


@needs_bwrap
def test_model_that_cannot_load_is_crash_with_its_error(data, tmp_path):
    result = run_sandboxed(compose("broken_load.py", tmp_path), tmp_path / "run", data, TEST_BUDGET)
    assert result.status is Status.crash
    assert "the scoring worker raised ValueError" in result.reason
    assert "cannot rebuild" not in result.reason  # the candidate's words stay in the log, out of prompts
    assert "Traceback" in (tmp_path / "run" / "score.log").read_text()


def test_unusable_bwrap_is_detected():
    assert bwrap_works("/bin/false") != ""
    if find_bwrap():
        assert bwrap_works(find_bwrap()) == ""


def test_missing_trainer_is_a_clear_error(data, tmp_path):
    with pytest.raises(TrainerNotFoundError, match="trainer file not found: .*nope.py"):
        run_sandboxed(tmp_path / "nope.py", tmp_path / "run", data, TEST_BUDGET)


def test_bad_inputs_raise(data, tmp_path):
    with pytest.raises(SandboxInputError, match="val_bpb"):
        run_sandboxed(TOY, tmp_path, data, TEST_BUDGET, metric_patterns=["score:(\\d+)"])
    with pytest.raises(SandboxInputError, match="invalid environment variable name"):
        run_sandboxed(TOY, tmp_path, data, TEST_BUDGET, env={"BAD NAME": "1"})
    with pytest.raises(SandboxInputError, match="unknown isolation"):
        run_sandboxed(TOY, tmp_path, data, TEST_BUDGET, isolation="docker")


def test_missing_data_file_is_infra_error(data, tmp_path):
    broken = data.model_copy(update={"val_files": [tmp_path / "fineweb_val_000009.bin"]})
    result = run_sandboxed(TOY, tmp_path / "run", broken, TEST_BUDGET)
    assert result.status is Status.infra_error and "missing data file" in result.reason
    assert not result.status.charges_idea
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "infra_error"


@needs_bwrap
def test_log_is_capped_and_tail_kept(data, tmp_path):
    budget = TEST_BUDGET.model_copy(update={"log_bytes": 10_000})
    result = run_sandboxed(TRAINERS / "chatty.py", tmp_path, data, budget)
    assert result.status is Status.crash and "code 3" in result.reason
    log_text = (tmp_path / "train.log").read_text()
    assert len(log_text.encode()) < 10_000 + 200
    assert "log truncated at 10000 bytes" in log_text
    assert "END-MARKER" in result.log_tail and "END-MARKER" not in log_text


# --------------------------------------------------------------------------------------------------
# Pieces


@needs_bwrap
def test_sandbox_that_fails_to_start_is_infra_error(tmp_path):
    spec = PhaseSpec(
        argv=[sys.executable, "-c", "print('ran')"],
        cwd=Path("/sandbox/x"),
        env={"PATH": "/usr/bin"},
        ro_binds=[(tmp_path / "does-not-exist", Path("/sandbox/x"))],
        limits=Limits(wall_seconds=10, max_file_bytes=2**20, max_processes=16),
        log_path=tmp_path / "x.log",
        log_bytes=10_000,
    )
    proc = SandboxedProcess(spec, "bwrap")
    proc.start()
    phase = proc.wait()
    assert not phase.ready and phase.returncode != 0
    status, reason = classify_phase(
        phase, proc.capture.text(), name="training", limit_seconds=10, max_processes=16
    )
    assert status is Status.infra_error and "failed to start" in reason and "does-not-exist" in reason


def test_printing_the_ready_line_cannot_fake_a_start_failure(tmp_path):
    """A started process always has the ready line first; classification never yields infra_error."""
    spec = PhaseSpec(
        argv=[sys.executable, "-c", "print('bwrap: fake setup failure'); raise SystemExit(1)"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin"},
        limits=Limits(wall_seconds=10, max_file_bytes=2**20, max_processes=16),
        log_path=tmp_path / "x.log",
        log_bytes=10_000,
    )
    proc = SandboxedProcess(spec, "none")
    proc.start()
    phase = proc.wait()
    assert phase.ready and (tmp_path / "x.log").read_text().startswith(READY_LINE)
    status, _ = classify_phase(
        phase, proc.capture.text(), name="training", limit_seconds=10, max_processes=16
    )
    assert status is Status.crash


def test_log_capture_drains_past_the_cap(tmp_path):
    r, w = os.pipe()
    capture = LogCapture(r, tmp_path / "log", cap=100)
    for i in range(1000):
        os.write(w, f"{i:05d}\n".encode())
    os.close(w)
    capture.close()
    assert capture.truncated and capture.written == 100 and capture.dropped == 6000 - 100
    assert capture.tail().endswith("00999\n")
    assert (tmp_path / "log").read_text().startswith("00000\n")


def test_frames_round_trip_and_reject_lies():
    buf = io.BytesIO()
    write_frame(buf, "nll", np.arange(6, dtype=np.float64).reshape(2, 3), extra=1)
    buf.seek(0)
    header, array = read_frame(buf, max_payload=48)
    assert header["kind"] == "nll" and header["extra"] == 1 and array.shape == (2, 3) and array[1, 2] == 5
    buf.seek(0)
    with pytest.raises(FrameError, match="too large"):
        read_frame(buf, max_payload=47)
    bad = io.BytesIO()
    write_frame(bad, "nll", np.zeros(2, dtype=np.complex64))
    bad.seek(0)
    with pytest.raises(FrameError, match="bad array description"):
        read_frame(bad, max_payload=1000)
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(b"AGF1"), max_payload=10)


def test_metric_parsing_defaults_and_custom():
    patterns = compile_patterns(None)
    official = (
        "step:100/200 val_loss:2.1000 val_bpb:1.3000 train_time:1ms step_avg:1.00ms\n"
        "final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1ms\n"
        "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570\n"
    )
    report = parse_self_report(official, patterns)
    assert report.val_bpb == 1.2243657 and report.val_loss == 2.07269931
    record = "4945/20000 val_loss: 2.3539 val_bpb: 1.0756\nquantized_ttt_phased val_loss:2.77 val_bpb:1.0611 eval_time:5ms\n"
    assert parse_self_report(record, patterns).val_bpb == 1.0611
    assert (
        parse_self_report("step:1/2 val_loss:1 val_bpb:1\n4945/20000 val_loss: 2.3 val_bpb: 1.07\n", patterns)
        is None
    )
    assert math.isnan(
        parse_self_report("final_int8_zlib_roundtrip_exact val_loss:nan val_bpb:nan\n", patterns).val_bpb
    )
    custom = compile_patterns([r"^my_score bpb=(?P<val_bpb>\S+)"])
    assert parse_self_report("my_score bpb=0.9\n", custom).val_bpb == 0.9
    with pytest.raises(MetricPatternError):
        compile_patterns(["(unclosed"])
    assert (
        parse_steps("step:1/20 train_loss:1\nstopping_early: wallclock_cap train_time:9ms step:7/20\n") == 7
    )


def test_a_bare_phase_runs_and_is_reaped(tmp_path):
    """A trivial process runs in the sandbox and exits 0 (bench/sandbox_overhead.py measures its cost)."""
    spec = PhaseSpec(
        argv=[sys.executable, "-c", "pass"],
        cwd=Path("/sandbox/w") if find_bwrap() else tmp_path,
        env={"PATH": "/usr/bin"},
        rw_binds=[(tmp_path, Path("/sandbox/w"))] if find_bwrap() else [],
        limits=Limits(wall_seconds=10, max_file_bytes=2**20, max_processes=16),
        log_path=tmp_path / "x.log",
        log_bytes=10_000,
    )
    proc = SandboxedProcess(spec, "bwrap" if find_bwrap() else "none")
    proc.start()
    phase = proc.wait()
    assert phase.returncode == 0 and not phase.timed_out and phase.survivors == 0


def test_the_training_curve_is_read_from_the_official_line_shape():
    """Train lines in order; validation lines, other text and a line cut off mid-write are not points."""
    log = (
        "step:0/20 val_loss:6.9 val_bpb:4.1\n"
        "step:1/20 train_loss:6.9000 train_time:120ms step_avg:120.00ms\n"
        "warmup done\n"
        "step:2/20 train_loss:6.5000 train_time:250ms step_avg:125.00ms\n"
        "step:3/20 train_lo"
    )
    curve = parse_train_curve(log)
    assert [(p.step, p.total_steps, p.train_loss, p.seconds, p.step_ms) for p in curve] == [
        (1, 20, 6.9, 0.12, 120.0),
        (2, 20, 6.5, 0.25, 125.0),
    ]
    assert parse_train_curve("no steps here") == []
