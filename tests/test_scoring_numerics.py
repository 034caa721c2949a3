"""The eval numerics a model declares (`eval_autocast`), applied alike by the scoring worker and the verifier.

Real components throughout: the real trainer (baseline/train_gpt.py) trains a tiny model once, and the harness
scores that one artifact through `score_artifact` (a sandboxed scoring worker, then a fresh verifying worker)
under fp32 and under bf16 autocast. The verification gap bf16 leaves is measured against `tolerance_nats`;
a forger that declares bf16 is still caught, and what cannot be run is refused in the harness's own words.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from agentgolf.sandbox.isolation.bwrap import find_bwrap, resolve_isolation
from agentgolf.sandbox.metrics import compile_patterns
from agentgolf.sandbox.result import SandboxResult, Status
from agentgolf.sandbox.run_setup import RunSetup
from agentgolf.sandbox.runner import run_sandboxed
from agentgolf.sandbox.scoring import score_worker
from agentgolf.sandbox.scoring.layout import EvalMode
from agentgolf.sandbox.scoring.score_phase import score_artifact
from tests.sandbox_support import THOROUGH, compose, data_spec, declaring
from tests.test_trainer import TRAINER, import_trainer, train_tiny

needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")
# Peeks at every position by a little more than bias_nats allows on average (0.002), far under the 0.02
# tolerance at any one position: only the mean over the checked positions can show it, bf16 noise included.
PEEK = """
_honest_load = load_model


def load_model(path, device="cpu"):
    model = _honest_load(path, device)
    honest = model.forward_logits

    def peek(idx):
        logits = honest(idx)
        return logits + 0.008 * F.one_hot(torch.roll(idx, -1, 1), logits.shape[-1]).float()

    model.forward_logits = peek
    return model


"""


def test_declared_numerics_are_validated():
    assert EvalMode(seq_len=32, autocast="bf16").autocast == "bf16"
    assert EvalMode(seq_len=32, autocast="fp32").autocast is None  # fp32 is no autocast
    assert EvalMode(seq_len=32, autocast="fp32") == EvalMode(seq_len=32)
    # the verifier's check that it was declared the same numerics as the scorer compares these
    assert EvalMode(seq_len=32, autocast="bf16") != EvalMode(seq_len=32)
    for bad in ("int4", "<unknown>", "bfloat16", 3):
        with pytest.raises(ValidationError, match="eval_autocast must be one of fp32, bf16, fp16"):
            EvalMode(seq_len=32, autocast=bad)
    dump = EvalMode(seq_len=32, autocast="bf16").model_dump(exclude_none=True)
    assert dump == {"mode": "windows", "seq_len": 32, "stride": 32, "context": 32, "autocast": "bf16"}


def test_the_worker_names_what_a_model_declares():
    class Model:
        pass

    model = Model()
    assert score_worker.declared_autocast(model, torch) is None
    for value, name in [
        ("bf16", "bf16"),
        (torch.bfloat16, "bf16"),
        (torch.float16, "fp16"),
        (torch.int8, "<dtype>"),
    ]:
        model.eval_autocast = value
        assert score_worker.declared_autocast(model, torch) == name
    model.eval_autocast = ["bf16"]
    assert score_worker.declared_autocast(model, torch) == "<unknown>"  # refused by the harness, not applied


def test_autocast_runs_on_the_cpu_and_is_off_unless_declared():
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    with score_worker.autocast("bf16", "cpu", torch):
        assert layer(x).dtype == torch.bfloat16
    for off in (None, "fp32", "<unknown>"):
        with score_worker.autocast(off, "cpu", torch):
            assert layer(x).dtype == torch.float32


@pytest.mark.parametrize("shape", [(3, 70), (2, 1), (1, 2500)])
def test_the_chunked_nll_is_one_float64_log_softmax(shape):
    """The worker's NLL, taken in chunks of positions, equals the float64 log-softmax it replaced, bit for bit."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 97, shape, generator=gen)
    logits = 8 * torch.randn(*shape, 97, generator=gen)
    ref = -torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    got = score_worker.nll_of(logits, tokens, torch)
    assert got.dtype == torch.float64 and got.shape == ref.shape and torch.equal(got, ref)


# --------------------------------------------------------------------------------------------------
# Through the sandbox


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return data_spec(tiny_dataset)


@pytest.fixture(scope="module")
def artifact(tiny_dataset, tmp_path_factory) -> Path:
    """One tiny model trained by the real trainer in fp32 (PRESET=cpu): every test scores this file."""
    folder = tmp_path_factory.mktemp("trained")
    proc = train_tiny(tiny_dataset, folder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return folder / "model.int8.ptz"


def score(source: str, artifact: Path, data, run_dir: Path, env: dict[str, str]) -> SandboxResult:
    """The harness's scoring phase on an existing artifact, as a run scores it after training."""
    mode, _ = resolve_isolation(None)
    run_dir.mkdir(parents=True)
    run = RunSetup(
        source.encode(), run_dir, data, THOROUGH, env, 1337, None, False, compile_patterns(None), None, mode
    )
    run.prepare()
    shutil.copyfile(artifact, run.artifact_path())
    return score_artifact(run, SandboxResult(status=Status.ok))


@pytest.fixture(scope="module")
def scored(artifact, data, tmp_path_factory) -> dict[str, SandboxResult]:
    folder, source = tmp_path_factory.mktemp("scored"), TRAINER.read_text()
    return {
        numerics: score(source, artifact, data, folder / numerics, {"EVAL_AUTOCAST": numerics})
        for numerics in ("fp32", "bf16")
    }


@needs_bwrap
def test_a_model_declaring_bf16_scores_honestly_and_verifies(scored):
    fp32, bf16 = scored["fp32"], scored["bf16"]
    assert fp32.status is Status.ok and bf16.status is Status.ok, (fp32.reason, bf16.reason)
    assert "autocast" not in fp32.eval_mode and bf16.eval_mode["autocast"] == "bf16"  # in the result
    assert fp32.verification["max_gap_nats"] <= 1e-9  # fp32: the same numbers in both workers
    # bf16: the gap the batch shapes leave, re-measured here, is far inside the tolerance and the bias bound
    v = bf16.verification
    print(
        f"bf16 verification: m={v['positions']} max_gap={v['max_gap_nats']:.2e} nats "
        f"mean gap={v['verified_mean_nats'] - v['reported_mean_nats']:.2e}"
    )
    assert v["positions"] >= 40 and v["max_gap_nats"] <= THOROUGH.verify.tolerance_nats / 4
    assert abs(v["verified_mean_nats"] - v["reported_mean_nats"]) <= THOROUGH.verify.bias_nats / 4
    # the autocast was applied: the same artifact scores differently, and only a little
    assert 1e-6 < abs(bf16.val_bpb - fp32.val_bpb) < 0.02, (bf16.val_bpb, fp32.val_bpb)
    assert bf16.val_tokens == fp32.val_tokens and bf16.val_bytes == fp32.val_bytes


@needs_bwrap
def test_the_harness_moves_with_bf16_as_the_trainers_own_eval(scored, artifact, tiny_dataset, monkeypatch):
    """The trainer's own evaluate() on the same artifact, in this process, in fp32 and under bf16 autocast: the
    harness's bf16 number moves from its fp32 one as the trainer's does (the trainer leaves out the stream's
    partial last window, so the levels differ a little; the difference bf16 makes is the same)."""
    import sentencepiece as spm

    trainer = import_trainer()
    own = {}
    for numerics in ("fp32", "bf16"):
        monkeypatch.setenv("EVAL_AUTOCAST", numerics)
        model = trainer.load_model(str(artifact))
        assert model.eval_autocast == numerics
        val = trainer.load_validation_tokens(tiny_dataset.val_files, model.seq_len, tiny_dataset.vocab_size)
        sp = spm.SentencePieceProcessor(model_file=str(tiny_dataset.tokenizer))
        luts = trainer.build_byte_luts(sp, tiny_dataset.vocab_size)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=numerics == "bf16"):
            own[numerics] = trainer.evaluate(model, val, luts, model.seq_len, 32, 0, 1, torch.device("cpu"))[
                1
            ]
    moved = scored["bf16"].val_bpb - scored["fp32"].val_bpb
    assert moved == pytest.approx(own["bf16"] - own["fp32"], abs=2e-4), (moved, own)


@needs_bwrap
def test_a_forger_declaring_bf16_is_still_caught(scored, artifact, data, tmp_path):
    """The real trainer under bf16, nudged 0.008 nats toward the true next token at every position: each
    position stays under the tolerance, the bf16 noise does not hide the mean. The honest bf16 run above is
    its positive control."""
    head, guard, tail = TRAINER.read_text().rpartition('if __name__ == "__main__":')  # its last: main()
    source = head + PEEK + guard + tail
    result = score(source, artifact, data, tmp_path / "peek", {"EVAL_AUTOCAST": "bf16"})
    assert result.status is Status.violation, (result.status, result.reason)
    assert "systematically better while scored than when verified" in result.reason
    assert result.val_bpb is None and scored["bf16"].status is Status.ok


@needs_bwrap
@pytest.mark.parametrize("attack", ["noncausal.py", "small_bias.py"])
def test_toy_forgers_declaring_bf16_are_violations(data, tmp_path, attack):
    result = run_sandboxed(
        declaring(compose(attack, tmp_path), eval_autocast="bf16"), tmp_path / "run", data, THOROUGH
    )
    assert result.status is Status.violation and "unverifiable score" in result.reason, result.reason


@needs_bwrap
@pytest.mark.parametrize(("declared", "ok"), [("int4", False), (7, False), ("fp16", True), ("fp32", True)])
def test_what_cannot_be_run_is_refused_in_the_harness_words(data, tmp_path, declared, ok):
    """An unknown declaration ends the candidate's `crash` with a clear reason (never a harness error, never
    silently fp32); the known ones score."""
    trainer = declaring(compose("context_copy.py", tmp_path), eval_autocast=declared)
    result = run_sandboxed(trainer, tmp_path / "run", data, THOROUGH)
    if ok:
        assert result.status is Status.ok, result.reason
        assert result.eval_mode.get("autocast") == (None if declared == "fp32" else declared)
        return
    assert result.status is Status.crash, (result.status, result.reason)
    assert "eval_autocast must be one of fp32, bf16, fp16" in result.reason and result.val_bpb is None
    assert "int4" not in result.reason  # the candidate's words never reach the reason
