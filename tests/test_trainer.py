"""The baseline trainer, run for real as a subprocess on a tiny dataset (tests/conftest.py's tiny_dataset)."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

from agentgolf.baseline.corpus import demo_corpus
from tests.tiny import TINY_ENV as TINY_MODEL_ENV

TRAINER = Path(__file__).resolve().parents[1] / "baseline" / "train_gpt.py"
RUN_TIMEOUT_S = 240
TINY_ENV = {  # the shared tiny model, with a smaller batch and more, logged steps
    **TINY_MODEL_ENV,
    "TRAIN_BATCH_TOKENS": "1024",
    "ITERATIONS": "20",
    "WARMDOWN_ITERS": "6",
    "VAL_BATCH_SIZE": "2048",
    "TRAIN_LOG_EVERY": "10",
    "MAX_WALLCLOCK_SECONDS": "600",
}
# Only what a Python process needs: inherited trainer settings (SEED, RANK, ...) must not leak in.
KEPT_ENV = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "SYSTEMROOT")
EXACT_RE = re.compile(r"^final_int8_zlib_roundtrip_exact val_loss:(\d+\.\d{8}) val_bpb:(\d+\.\d{8})$", re.M)
CODE_RE = re.compile(r"^Code size: (\d+) bytes$", re.M)
TOTAL_RE = re.compile(r"^Total submission size int8\+zlib: (\d+) bytes$", re.M)
HYPERPARAMETER_RE = re.compile(
    r'^    [a-z0-9_]+ = (int|float|str)\(os\.environ\.get\("[A-Z0-9_]+", [^()]+\)\)$'
)


def base_env() -> dict[str, str]:
    return {k: os.environ[k] for k in KEPT_ENV if k in os.environ}


def run_trainer(cwd: Path, data_dir: Path, tokenizer: Path, vocab_size: int, **overrides: str):
    cwd.mkdir(parents=True, exist_ok=True)
    env = {
        **base_env(),
        **TINY_ENV,
        "DATA_PATH": str(data_dir),
        "TOKENIZER_PATH": str(tokenizer),
        "VOCAB_SIZE": str(vocab_size),
        "ARTIFACT_PATH": str(cwd / "model.int8.ptz"),
        **overrides,
    }
    return subprocess.run(
        [sys.executable, str(TRAINER)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def train_tiny(tiny_dataset, cwd: Path, **overrides: str):
    return run_trainer(
        cwd, tiny_dataset.dataset_dir, tiny_dataset.tokenizer, tiny_dataset.vocab_size, **overrides
    )


def import_trainer():
    spec = importlib.util.spec_from_file_location("agentgolf_train_gpt_under_test", TRAINER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """One tiny training run shared by the tests that only read its outputs."""
    cwd = tmp_path_factory.mktemp("trained")
    proc = train_tiny(tiny_dataset, cwd, SEED="1337")
    assert proc.returncode == 0, proc.stderr
    return cwd, proc


@pytest.mark.slow
def test_tiny_run_prints_official_lines_and_writes_artifact(trained):
    cwd, proc = trained
    out = proc.stdout
    for pattern in (
        r"^val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=\S+$",
        r"^train_loader:dataset:\S+ train_shards:1$",
        r"^val_loader:shards pattern=\S+ tokens:\d+$",
        r"^model_params:\d+$",
        r"^world_size:1 grad_accum_steps:1$",
        r"^seed:1337$",
        r"^train_batch_tokens:1024 train_seq_len:64 iterations:20 warmup_steps:0 max_wallclock_seconds:600\.000$",
        r"^step:10/20 train_loss:\d+\.\d{4} train_time:\d+ms step_avg:\d+\.\d{2}ms$",
        r"^step:20/20 val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} train_time:\d+ms step_avg:\d+\.\d{2}ms$",
        r"^peak memory allocated: 0 MiB reserved: 0 MiB$",
        r"^int8_export: step_floor:\d\.\d{4}e[-+]\d+ \(the finest that fits ARTIFACT_MAX_BYTES=15500000\) "
        r"compressions:1 time:\d+\.\ds$",
        r"^Serialized model int8\+zlib: \d+ bytes \(payload:\d+ raw_torch:\d+ payload_ratio:\d+\.\d{2}x\)$",
        r"^final_int8_zlib_roundtrip val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} eval_time:\d+ms$",
    ):
        assert re.search(pattern, out, re.M), f"missing line /{pattern}/ in:\n{out}"
    artifact = cwd / "model.int8.ptz"
    code_bytes = int(CODE_RE.search(out).group(1))
    assert code_bytes == len(TRAINER.read_text(encoding="utf-8").encode("utf-8"))
    assert int(TOTAL_RE.search(out).group(1)) == code_bytes + artifact.stat().st_size
    assert out.rstrip().splitlines()[-1].startswith("final_int8_zlib_roundtrip_exact ")
    val_loss, val_bpb = map(float, EXACT_RE.search(out).groups())
    assert 0 < val_bpb < 8  # learned something: uniform over 256 tokens is 8 bits per token
    assert not (cwd / "final_model.pt").exists()  # the raw checkpoint only with SAVE_RAW_MODEL=1


@pytest.mark.slow
def test_same_seed_is_bit_identical_and_other_seed_differs(tiny_dataset, trained, tmp_path):
    cwd, proc = trained
    again = train_tiny(tiny_dataset, tmp_path / "again", SEED="1337")
    other = train_tiny(tiny_dataset, tmp_path / "other", SEED="7")
    assert again.returncode == 0 and other.returncode == 0, again.stderr + other.stderr
    exact = EXACT_RE.search(proc.stdout).group(0)
    assert EXACT_RE.search(again.stdout).group(0) == exact
    assert (tmp_path / "again" / "model.int8.ptz").read_bytes() == (cwd / "model.int8.ptz").read_bytes()
    assert EXACT_RE.search(other.stdout).group(0) != exact
    assert (tmp_path / "other" / "model.int8.ptz").read_bytes() != (cwd / "model.int8.ptz").read_bytes()


SCORE_SCRIPT = """
import importlib.util, sys
import numpy as np, torch, torch.nn.functional as F
spec = importlib.util.spec_from_file_location("trainer", sys.argv[1])
trainer = importlib.util.module_from_spec(spec); spec.loader.exec_module(trainer)
model = trainer.load_model(sys.argv[2], device="cpu")
tokens = np.concatenate([trainer.read_shard(trainer.Path(p)) for p in sys.argv[3:]]).astype(np.int64)
T = model.seq_len
n = (tokens.size - 1) // T
x = torch.from_numpy(tokens[: n * T]).view(n, T)
y = torch.from_numpy(tokens[1 : n * T + 1]).view(n, T)
with torch.inference_mode():
    logits = model.forward_logits(x)
    assert logits.dtype == torch.float32 and logits.shape == (n, T, model.tok_emb.num_embeddings)
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
print(repr(nll.double().item() / y.numel()))
"""


@pytest.mark.slow
def test_load_model_in_another_process_reproduces_roundtrip_loss(tiny_dataset, trained):
    cwd, proc = trained
    val_loss = float(EXACT_RE.search(proc.stdout).group(1))
    args = [str(TRAINER), str(cwd / "model.int8.ptz"), *map(str, tiny_dataset.val_files)]
    score = subprocess.run(
        [sys.executable, "-c", SCORE_SCRIPT, *args],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert score.returncode == 0, score.stderr
    assert float(score.stdout.strip()) == pytest.approx(val_loss, abs=1e-5)


def test_import_has_no_side_effects_and_needs_no_data(tmp_path):
    probe = (
        "import importlib.util, os, sys\n"
        "spec = importlib.util.spec_from_file_location('trainer', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert callable(m.load_model) and 'cpu' in m.PRESETS\n"
        "assert 'NUM_LAYERS' not in os.environ, 'PRESET applied on import'\n"
    )
    env = {**base_env(), "PRESET": "cpu", "DATA_PATH": str(tmp_path / "missing")}
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(TRAINER)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("asked", [{"LOCAL_RANK": "0"}, {"CUDA_VISIBLE_DEVICES": "0"}])
def test_cuda_requested_but_missing_stops_with_one_line(tiny_dataset, tmp_path, asked):
    """torchrun's LOCAL_RANK, or CUDA_VISIBLE_DEVICES naming a device, on a torch that sees no GPU: the trainer
    stops at once with one line, rather than train the GPU recipe on the CPU (and end `oom` there)."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = train_tiny(tiny_dataset, tmp_path, PRESET="", **asked)
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "CUDA requested but not available" in lines[0], proc.stderr
    assert not (tmp_path / "model.int8.ptz").exists()


@pytest.mark.slow
def test_a_cpu_run_may_name_a_rank_or_a_device(tiny_dataset, tmp_path):
    """The positive control: PRESET=cpu trains on the CPU whatever the variables say; so does the emulated CUDA
    path, which gets past the check to the data (here missing: exit 2, one line about the shards)."""
    proc = train_tiny(tiny_dataset, tmp_path / "cpu", LOCAL_RANK="0", CUDA_VISIBLE_DEVICES="0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert EXACT_RE.search(proc.stdout) and (tmp_path / "cpu" / "model.int8.ptz").exists()
    not_asked = [
        {"LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": "0", "EMULATE_CUDA": "1"},  # the CUDA path, emulated
        {"CUDA_VISIBLE_DEVICES": ""},  # no device named: the harness's CPU phases
        {"CUDA_VISIBLE_DEVICES": "-1"},
    ]
    for cpu in not_asked:
        proc = run_trainer(
            tmp_path / "no", tmp_path / "no-data", tiny_dataset.tokenizer, 256, PRESET="", **cpu
        )
        assert proc.returncode == 2 and "no fineweb_train_*.bin files" in proc.stderr, (cpu, proc.stderr)


def test_the_artifact_carries_the_numerics_it_was_evaluated_with(tmp_path, monkeypatch):
    """A model trained on the CUDA path (bf16 autocast, bf16 residual stream) comes back declaring them, so the
    harness scores it under bf16 autocast; an fp32 model, or an artifact from before, declares fp32."""
    trainer = import_trainer()
    cfg = trainer.ModelConfig(64, 2, 32, 2, 1, 2, True, 0.005, 10000.0, 30.0, 1.5, 16)
    args = trainer.Hyperparameters()
    log = []
    x = torch.randint(0, 64, (2, 16))
    for autocast, stream in (("bf16", torch.bfloat16), ("fp32", None)):
        model = trainer.GPT(cfg)
        model.eval_autocast, model.stream_dtype = autocast, stream
        args.artifact_path = str(tmp_path / f"{autocast}.ptz")
        trainer.write_artifact(model, args, log.append)
        back = trainer.load_model(args.artifact_path)
        assert (back.eval_autocast, back.stream_dtype) == (autocast, stream)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast == "bf16"), torch.inference_mode():
            assert torch.isfinite(back.forward_logits(x)).all()  # bf16 autocast runs on a CPU
    monkeypatch.setenv("EVAL_AUTOCAST", "fp32")  # the run's setting wins; a bf16 stream needs the autocast
    back = trainer.load_model(str(tmp_path / "bf16.ptz"))
    assert (back.eval_autocast, back.stream_dtype) == ("fp32", None)
    monkeypatch.delenv("EVAL_AUTOCAST")
    old = trainer.read_artifact(str(tmp_path / "bf16.ptz"))
    del old["numerics"]  # an artifact written before the numerics were recorded
    buf = io.BytesIO()
    torch.save(old, buf)
    (tmp_path / "old.ptz").write_bytes(zlib.compress(buf.getvalue()))
    back = trainer.load_model(str(tmp_path / "old.ptz"))
    assert (back.eval_autocast, back.stream_dtype) == ("fp32", None)


def test_hyperparameters_are_one_regex_editable_line_each():
    source = TRAINER.read_text(encoding="utf-8")
    body = source.split("class Hyperparameters:\n", 1)[1].split("\n# fmt: on", 1)[0]
    settings = [line for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(settings) > 30
    for line in settings:
        assert HYPERPARAMETER_RE.match(line), line
    presets = source.split("PRESETS = {\n", 1)[1].split("\n}\n", 1)[0]
    for line in presets.splitlines()[1:-1]:
        if line.strip().startswith("#"):
            continue  # a comment on the recipe
        assert re.match(r'^        "[A-Z0-9_]+": [^,]+,$', line), line


def corrupt_magic(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0:4] = (12345).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def corrupt_version(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4:8] = (2).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [(corrupt_magic, "bad magic"), (corrupt_version, "bad version"), (truncate, "size mismatch")],
)
def test_malformed_shard_exits_2_with_one_line(tiny_dataset, tmp_path, damage, reason):
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_dataset.dataset_dir, data_dir)
    victim = data_dir / tiny_dataset.train_files[0].name
    damage(victim)
    proc = run_trainer(tmp_path / "run", data_dir, tiny_dataset.tokenizer, tiny_dataset.vocab_size)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(victim) in lines[0] and reason in lines[0]
    assert not (tmp_path / "run" / "model.int8.ptz").exists()


@pytest.mark.slow
def test_without_val_shards_trains_exports_and_says_so(tiny_dataset, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for f in tiny_dataset.train_files:
        shutil.copy(f, data_dir / f.name)
    proc = run_trainer(tmp_path / "run", data_dir, tmp_path / "no-tokenizer.model", tiny_dataset.vocab_size)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^val_loader:skipped .*the harness scores the model$", proc.stdout, re.M)
    artifact = tmp_path / "run" / "model.int8.ptz"
    code_bytes = int(CODE_RE.search(proc.stdout).group(1))
    assert int(TOTAL_RE.search(proc.stdout).group(1)) == code_bytes + artifact.stat().st_size
    assert "val_bpb" not in proc.stdout
    assert import_trainer().load_model(str(artifact)).seq_len == 64


# --- byte table -------------------------------------------------------------------------------------


def train_sp(lines: list[str], vocab_size: int, byte_fallback: bool) -> spm.SentencePieceProcessor:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=byte_fallback,
        character_coverage=1.0,
        add_dummy_prefix=False,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def doc_bytes(trainer, sp: spm.SentencePieceProcessor, ids: list[int]) -> np.ndarray:
    """Bytes per target for one document laid out as in the shards: [BOS] + its tokens."""
    seq = torch.tensor([sp.bos_id(), *ids])
    luts = trainer.build_byte_luts(sp, sp.vocab_size())
    return trainer.count_bytes(seq[:-1], seq[1:], luts).numpy()


@pytest.fixture(scope="module")
def corpus_lines() -> list[str]:
    return [line for doc in demo_corpus(200_000) for line in doc.splitlines() if line.strip()]


def test_byte_counts_sum_to_decoded_utf8_length(corpus_lines):
    trainer = import_trainer()
    sp = train_sp(corpus_lines, vocab_size=400, byte_fallback=True)  # room for the 256 byte pieces
    docs = [
        "def f(x):\n    return x + 1  # plain",
        "naïve café — 漢字 ☃ déjà vu",
        "  leading   spaces\tand tabs  ",
    ]
    for text in docs + corpus_lines[:200]:
        ids = sp.encode(text)
        assert sp.unk_id() not in ids
        counts = doc_bytes(trainer, sp, ids)
        assert counts.sum() == len(sp.decode(ids).encode("utf-8")), text


def test_unknown_tokens_count_zero_bytes_and_break_leading_space(corpus_lines):
    trainer = import_trainer()
    ascii_lines = [line for line in corpus_lines if line.isascii()]
    sp = train_sp(ascii_lines, vocab_size=256, byte_fallback=False)
    text = "return ☃ value"
    ids = sp.encode(text)
    counts = doc_bytes(trainer, sp, ids)
    unk = [i for i, t in enumerate(ids) if t == sp.unk_id()]
    assert unk, sp.id_to_piece(ids)
    assert all(counts[i] == 0 for i in unk)
    after = unk[-1] + 1  # "▁value" follows <unk>, a boundary: its space is not charged
    assert sp.id_to_piece(ids[after]).startswith("\u2581")
    assert counts[after] == len(sp.id_to_piece(ids[after])) - 1
    snowman_and_its_space = len("☃".encode()) + 1
    assert counts.sum() == len(text.encode()) - snowman_and_its_space


def test_int8_export_roundtrip_is_close():
    trainer = import_trainer()
    torch.manual_seed(0)
    state = {
        "w": torch.randn(300, 256) * 0.02,
        "v": torch.randn(70_000),
        "q_gain": torch.ones(4),
        "n": torch.arange(3),
    }
    obj = trainer.quantize_state_dict(state, ("q_gain",))
    assert obj["quantized"]["w"].dtype == torch.int8 and obj["quantized"]["v"].dtype == torch.int8
    back = trainer.dequantize_state_dict(obj)
    for name, t in state.items():
        assert back[name].dtype == t.dtype
    row_max = state["w"].abs().amax(dim=1, keepdim=True)
    assert ((back["w"] - state["w"]).abs() <= row_max / 127 * 0.51 + 1e-6).all()
    assert torch.equal(back["q_gain"], state["q_gain"]) and torch.equal(back["n"], state["n"])


# --- the export's byte budget (issue 14) ----------------------------------------------------------------

SIZE_CAP = 16_000_000
EXPORT_RE = re.compile(r"^int8_export: step_floor:(\S+) \(.*\) compressions:(\d+) ", re.M)


def gaussian_state(seed: int) -> dict[str, torch.Tensor]:
    """Rows like a trained model's: a spread of scales, none of them near int8's full range."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.005, 0.05, 512)[:, None]
    state = {f"blocks.{i}.w": torch.randn(512, 512, generator=g) * scales for i in range(4)}
    state["tok_emb.weight"] = torch.randn(1024, 128, generator=g) * 0.02
    state["blocks.0.attn_scale"] = torch.ones(512)
    return state


def test_export_fits_the_finest_floor_under_a_byte_budget():
    trainer = import_trainer()
    state = gaussian_state(0)
    export = trainer.Int8Export(state, ("attn_scale",), config={})
    natural = len(export.blob(0.0))
    budget = int(natural * 0.8)
    floor, blob, compressions = export.fit(budget)
    assert floor > 0 and len(blob) <= budget
    assert len(blob) >= 0.97 * budget, "the floor is coarser than the budget needs"
    assert len(export.blob(floor * 0.9)) > budget, "a finer floor would have fitted"
    assert compressions <= 4
    assert export.fit(natural) == (0.0, export.blob(0.0), 1)  # no floor when none is needed
    back = trainer.dequantize_state_dict(trainer.read_artifact_bytes(blob))
    for name in ("blocks.0.w", "tok_emb.weight"):
        steps = (state[name].abs().amax(dim=1) / 127).clamp_min(floor)[:, None]
        assert ((back[name] - state[name]).abs() <= steps * 0.51 + 1e-7).all(), name
    assert torch.equal(back["blocks.0.attn_scale"], state["blocks.0.attn_scale"])
    official = export.blob(1 / 127)  # the official trainer's fixed floor: far coarser at these scales
    assert len(official) < 0.6 * natural


@pytest.mark.slow
def test_default_recipe_after_real_steps_exports_well_under_the_cap(tiny_dataset, tmp_path):
    """The default 9x512 recipe after a few full-LR Muon steps: about 16.3 MB with no floor, over the cap."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for f in tiny_dataset.train_files:  # no val shards: validation is skipped, only the export matters
        shutil.copy(f, data_dir / f.name)
    env = {
        **base_env(),
        "DATA_PATH": str(data_dir),
        "VOCAB_SIZE": "1024",
        "ARTIFACT_PATH": str(tmp_path / "m.ptz"),
    }
    env.update(
        TRAIN_SEQ_LEN="128", TRAIN_BATCH_TOKENS="256", ITERATIONS="2", WARMDOWN_ITERS="0", WARMUP_STEPS="0"
    )
    env["SAVE_RAW_MODEL"] = "1"
    proc = subprocess.run(
        [sys.executable, str(TRAINER)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr
    assert "model_params:17059912" in proc.stdout
    total = int(TOTAL_RE.search(proc.stdout).group(1))
    assert total <= 15_500_000 < SIZE_CAP - 400_000, total  # the default ARTIFACT_MAX_BYTES, with margin
    floor, compressions = EXPORT_RE.search(proc.stdout).groups()
    assert float(floor) > 0 and int(compressions) >= 2, "a floorless export should not have fitted"
    raw = torch.load(tmp_path / "final_model.pt", map_location="cpu", weights_only=True)
    back = import_trainer().load_model(str(tmp_path / "m.ptz")).state_dict()
    err = sum(((back[k] - raw[k]) ** 2).sum() for k in raw if raw[k].numel() > 65_536)
    norm = sum((raw[k] ** 2).sum() for k in raw if raw[k].numel() > 65_536)
    assert (err / norm).sqrt() < 0.01  # the floor costs little precision
