"""Verified scoring under attack: one small hostile trainer per class of forgery, and the honest controls.

Each attack is the toy bigram trainer with a few hostile lines appended (tests/sandbox_trainers/). They run
the real sandbox (bubblewrap) on real subprocesses. A forged score must end `violation` with the forged and
the verified numbers in the reason; a closed channel must give the attacker nothing.
"""

from __future__ import annotations

import math
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from agentgolf.sandbox import run_setup
from agentgolf.sandbox.isolation.bwrap import find_bwrap, masks
from agentgolf.sandbox.result import DataSpec, Status
from agentgolf.sandbox.runner import run_sandboxed
from agentgolf.sandbox.scoring.layout import EvalMode, build_layout
from agentgolf.sandbox.scoring.verify import (
    VerifyConfig,
    detectable_fraction,
    requests,
    sample_count,
    sample_positions,
)
from tests.sandbox_support import THOROUGH, TOY, compose, data_spec

pytestmark = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return data_spec(tiny_dataset)


@pytest.fixture(scope="module")
def honest(data, tmp_path_factory):
    result = run_sandboxed(TOY, tmp_path_factory.mktemp("honest"), data, THOROUGH)
    assert result.status is Status.ok, result.reason
    return result


def _forged(result) -> None:
    """A violation whose one-line reason shows both what the scoring process said and what was verified."""
    assert result.status is Status.violation, (result.status, result.reason)
    assert "\n" not in result.reason and "unverifiable score" in result.reason, result.reason
    assert "the scoring process reported" in result.reason and "fresh process" in result.reason
    assert result.val_bpb is None  # an unverified score is no score


def test_the_honest_model_verifies_exactly(honest):
    v, rows = honest.verification, math.ceil(honest.val_tokens / 32)  # one checked position per row at most
    assert v["positions"] == min(300, rows) and v["max_gap_nats"] <= 1e-9  # the same model, the same numbers
    assert v["reported_mean_nats"] == pytest.approx(v["verified_mean_nats"], abs=1e-9)
    assert v["detectable_fraction"] == pytest.approx(detectable_fraction(v["positions"]))
    assert v["escape_at_1pct"] == pytest.approx(0.99 ** v["positions"])


@pytest.mark.parametrize(
    "attack",
    [
        "shape_peek.py",  # peeks only in batches larger than a probe's
        "memo.py",  # peeks once per prefix and replays that answer to every later probe
        "worker_patch.py",  # patches the worker's frame writer: NLL 0, logits forged to match
        "noncausal.py",  # peeks everywhere
        "sparse_peek.py",  # peeks in one window in ten
    ],
)
def test_a_forged_score_is_a_violation(data, tmp_path, honest, attack):
    result = run_sandboxed(compose(attack, tmp_path), tmp_path / "run", data, THOROUGH)
    _forged(result)


def test_a_small_bias_at_every_position_is_caught_by_the_mean(data, tmp_path):
    result = run_sandboxed(compose("small_bias.py", tmp_path), tmp_path / "run", data, THOROUGH)
    _forged(result)
    assert "systematically better while scored than when verified" in result.reason


@pytest.mark.parametrize("mode", ["windows", "sliding"])
def test_no_row_of_a_request_holds_another_rows_last_target(mode):
    """Rows are strided across requests, in the scorer's and the verifier's alike, so a row's continuation is
    never in its own request."""
    layout = build_layout(EvalMode(mode=mode, seq_len=32, stride=8 if mode == "sliding" else None), 4001, 256)
    rng = np.random.default_rng(0)

    def leaks(batch) -> bool:
        return any(layout.start[j] <= layout.end[i] < layout.end[j] for i in batch for j in batch)

    assert not any(leaks(batch) for batch in layout.batches(rng)), mode
    probes = sample_positions(layout, VerifyConfig(min_positions=200), rng)
    assert not any(leaks(batch) for batch in requests(layout, probes, rng)), mode
    contiguous = [list(range(j, min(j + layout.per_batch, layout.rows))) for j in range(0, layout.rows, 8)]
    assert any(leaks(batch) for batch in contiguous)  # control: consecutive rows would leak


def test_the_next_row_holds_no_continuation_to_peek_at(data, tmp_path, honest):
    """The cross-row attack boosts the next row's first token at each window's last position; with strided
    batches that token is not the continuation, so it can only lose (a verifier miss here costs nothing)."""
    result = run_sandboxed(compose("cross_row.py", tmp_path), tmp_path / "run", data, THOROUGH)
    assert result.status in (Status.ok, Status.violation), result.reason
    assert result.status is Status.violation or result.val_bpb > honest.val_bpb


def test_no_last_target_is_left_in_the_worker(data, tmp_path, honest):
    """The storage and gc attack finds no last target to peek at: it gains nothing over the honest model (with
    the targets it would gain about 50 nats at every last position)."""
    result = run_sandboxed(compose("storage_peek.py", tmp_path), tmp_path / "run", data, THOROUGH)
    assert result.status in (Status.ok, Status.violation), result.reason
    assert result.status is Status.violation or result.val_bpb >= honest.val_bpb - 1e-12


def test_training_into_the_allowance_is_over_time_and_shows_its_numbers(data, tmp_path):
    budget = THOROUGH.model_copy(
        update={"train_seconds": 2.0, "train_overhead_seconds": 3.0, "train_grace_seconds": 30.0}
    )
    result = run_sandboxed(compose("overtime.py", tmp_path), tmp_path / "run", data, budget)
    assert result.status is Status.over_time, result.reason
    assert "more than train_seconds 2 s plus its 3 s overhead allowance" in result.reason
    assert result.train_seconds > 5.0 and math.isfinite(result.val_bpb)  # shown, with its numbers


def test_the_honest_trainer_is_within_its_allowance(data, tmp_path):
    budget = THOROUGH.model_copy(
        update={"train_seconds": 2.0, "train_overhead_seconds": 20.0, "train_grace_seconds": 30.0}
    )
    result = run_sandboxed(TOY, tmp_path / "run", data, budget)
    assert result.status is Status.ok, result.reason


def test_a_locked_run_folder_is_the_candidates_failure(data, tmp_path):
    result = run_sandboxed(compose("lock_folder.py", tmp_path), tmp_path / "run", data, THOROUGH)
    assert result.status is Status.crash, (result.status, result.reason)
    assert "no artifact" in result.reason or "could not be read" in result.reason


@pytest.fixture
def data_under_opt(tiny_dataset):
    """The tiny dataset copied under /opt, a path the sandbox binds read-only for system software."""
    root = Path("/opt") / f"agentgolf-test-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(tiny_dataset.root, root)
    except OSError:
        pytest.skip("/opt is not writable here")
    rel = lambda p: root / Path(p).relative_to(tiny_dataset.root)  # noqa: E731
    yield DataSpec(
        train_files=[rel(f) for f in tiny_dataset.train_files],
        val_files=[rel(f) for f in tiny_dataset.val_files],
        tokenizer=rel(tiny_dataset.tokenizer),
        vocab_size=tiny_dataset.vocab_size,
    )
    shutil.rmtree(root, ignore_errors=True)


def test_data_under_a_system_path_is_masked(data_under_opt, tmp_path, monkeypatch):
    exposed = {p.parent for p in data_under_opt.val_files}
    assert exposed <= set(masks(sorted(exposed)))  # it would show through the /opt bind
    result = run_sandboxed(compose("find_val.py", tmp_path), tmp_path / "run", data_under_opt, THOROUGH)
    assert result.status is Status.ok, result.reason
    assert "FOUND" not in (tmp_path / "run" / "train.log").read_text()
    # The positive control: the same attack, with the mask switched off, does find them.
    monkeypatch.setattr(run_setup.RunSetup, "hidden", lambda self: [])
    bare = run_sandboxed(compose("find_val.py", tmp_path), tmp_path / "bare", data_under_opt, THOROUGH)
    assert (
        bare.status is Status.crash
        and "FOUND validation shards" in (tmp_path / "bare" / "train.log").read_text()
    )


def test_the_guarantee_in_numbers():
    """The README's statements: 921 checked positions catch a 0.5% forger with 99% probability; on the full
    FineWeb sp1024 validation stream (63,779,840 targets, seq_len 1,024) m is 6,229 whatever the rows."""
    assert detectable_fraction(921) <= 0.005 < detectable_fraction(900)
    assert 1 - (1 - 0.005) ** 921 >= 0.99
    cfg, n = VerifyConfig(), 63_779_841
    for mode in (EvalMode(seq_len=1024), EvalMode(mode="sliding", seq_len=1024, stride=4096, context=4096)):
        assert sample_count(build_layout(mode, n, 32768), cfg) == 6229
    assert 0.99**6229 < 1e-27 and detectable_fraction(6229) < 0.00075


@pytest.mark.parametrize("mode", ["windows", "sliding"])
def test_the_honest_model_verifies_in_every_mode(data, tmp_path, mode):
    result = run_sandboxed(
        compose("context_copy.py", tmp_path), tmp_path / mode, data, THOROUGH, env={"EVAL_MODE": mode}
    )
    assert result.status is Status.ok, result.reason
    assert result.eval_mode["mode"] == mode and result.verification["max_gap_nats"] <= 1e-6


def test_sliding_windows_score_the_same_targets_with_more_context(data, tmp_path):
    """The same artifact (the toy is deterministic given SEED) scored both ways: sliding sees more left
    context for the same targets, so a model that uses context does better, and the byte count is equal."""
    runs = {
        mode: run_sandboxed(
            compose("context_copy.py", tmp_path), tmp_path / mode, data, THOROUGH, env={"EVAL_MODE": mode}
        )
        for mode in ("windows", "sliding")
    }
    assert all(r.status is Status.ok for r in runs.values()), {m: r.reason for m, r in runs.items()}
    windows, sliding = runs["windows"], runs["sliding"]
    assert sliding.val_tokens == windows.val_tokens and sliding.val_bytes == windows.val_bytes
    assert sliding.eval_mode == {"mode": "sliding", "seq_len": 32, "stride": 4, "context": 32}
    assert sliding.val_bpb < windows.val_bpb - 0.01, (sliding.val_bpb, windows.val_bpb)


def test_a_peek_in_sliding_mode_is_caught(data, tmp_path):
    trainer = compose("noncausal.py", tmp_path)  # the peeker, declaring sliding windows
    trainer.write_text(
        trainer.read_text().replace(
            'if __name__ == "__main__":',
            "_peek_load = load_model\n\n\ndef load_model(path, device='cpu'):\n"
            "    model = _peek_load(path, device)\n"
            "    model.eval_mode, model.eval_stride, model.eval_context = 'sliding', 4, SEQ_LEN\n"
            "    return model\n\n\n"
            'if __name__ == "__main__":',
        )
    )
    result = run_sandboxed(trainer, tmp_path / "run", data, THOROUGH)
    _forged(result)


def _ttt(data, tmp_path, mode: str, ttt: str = "legal"):
    trainer = compose("ttt.py", tmp_path)
    return run_sandboxed(
        trainer, tmp_path / f"{mode}-{ttt}", data, THOROUGH, env={"EVAL_MODE": mode, "TTT": ttt}
    )


def test_score_first_ttt_is_legal_and_gains_in_stream_mode(data, tmp_path):
    stream, windows = _ttt(data, tmp_path, "stream"), _ttt(data, tmp_path, "windows")
    assert stream.status is Status.ok and windows.status is Status.ok, (stream.reason, windows.reason)
    assert stream.eval_mode["mode"] == "stream" and stream.verification["positions"] > 0  # replayed
    assert stream.val_tokens == windows.val_tokens and stream.val_bytes == windows.val_bytes
    assert stream.val_bpb < windows.val_bpb - 0.01, (stream.val_bpb, windows.val_bpb)


def test_stream_mode_without_adaptation_scores_as_sliding(data, tmp_path):
    """The positive control: the same rows in order, no state change, give sliding's number exactly."""
    frozen, sliding = _ttt(data, tmp_path, "stream", "off"), _ttt(data, tmp_path, "sliding", "off")
    assert frozen.status is Status.ok and sliding.status is Status.ok, (frozen.reason, sliding.reason)
    assert frozen.val_bpb == pytest.approx(sliding.val_bpb, rel=1e-9)


def test_adapting_before_predicting_is_a_violation(data, tmp_path):
    """Adapting inside forward_logits on the tokens it predicts: the replay's spliced copy trains it on other
    text, so its prediction at the checked position differs from the scorer's."""
    _forged(_ttt(data, tmp_path, "stream", "illegal"))


@pytest.mark.slow
def test_the_baseline_trainer_scores_ok_in_every_mode(data, tmp_path):
    """The positive control on the real trainer (baseline/train_gpt.py, the tiny model of tests/tiny.py)."""
    from tests.tiny import TINY_ENV

    trainer = Path(__file__).resolve().parent.parent / "baseline" / "train_gpt.py"
    far = THOROUGH.model_copy(
        update={"train_seconds": 600.0, "train_grace_seconds": 60.0, "score_seconds": 120.0}
    )
    runs = {}  # a far wall-clock cap: the trainer's time-based warmdown stays off, so each run is the same model
    for mode in ("windows", "sliding", "stream"):
        env = {**TINY_ENV, "EVAL_MODE": mode, "EVAL_STRIDE": "16"}
        runs[mode] = run_sandboxed(trainer, tmp_path / mode, data, far, env=env)
        assert runs[mode].status is Status.ok, (mode, runs[mode].reason)
        assert runs[mode].eval_mode["mode"] == mode
    assert runs["stream"].val_bpb == pytest.approx(runs["sliding"].val_bpb, rel=1e-6)  # it never adapts
    assert runs["sliding"].val_tokens == runs["windows"].val_tokens


def test_a_byte_sidecar_is_what_the_score_divides_by(honest, tiny_dataset, tmp_path):
    """CaseOps-style data ships the bytes of each validation token beside its shard: the harness counts those,
    not the tokenizer's. A sidecar of twice the true counts halves val_bpb; the model's NLL is the same."""
    from agentgolf.baseline.shards import read_shard, write_shard
    from agentgolf.sandbox.scoring.bpb import VAL_BYTES_PREFIX, VAL_PREFIX, ByteTable

    table = ByteTable.from_model(Path(tiny_dataset.tokenizer), tiny_dataset.vocab_size)
    val_files = []
    for shard in tiny_dataset.val_files:
        copy = tmp_path / Path(shard).name
        shutil.copyfile(shard, copy)
        tokens = read_shard(copy).astype(np.int64)
        counts = np.zeros(tokens.size, dtype=np.int64)
        counts[1:] = 2 * table.count(
            tokens[:-1], tokens[1:]
        )  # each target's bytes, after the token before it
        write_shard(
            copy.with_name(copy.name.replace(VAL_PREFIX, VAL_BYTES_PREFIX, 1)), counts.astype(np.uint16)
        )
        val_files.append(copy)
    spec = data_spec(tiny_dataset).model_copy(update={"val_files": val_files})
    result = run_sandboxed(TOY, tmp_path / "run", spec, THOROUGH)
    assert result.status is Status.ok, result.reason
    assert result.val_bpb == pytest.approx(honest.val_bpb / 2, rel=1e-6)
