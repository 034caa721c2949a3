"""bench/gpu_check.sh dry-run on the CPU with its stand-ins (bench/gpu_standins): the parsing and failure paths
of the GPU check are tested before a GPU is spent on it (issue 14)."""

from __future__ import annotations

import importlib.util
import json
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentgolf.baseline.corpus import demo_corpus

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
TINY_RECIPE = {  # our trainer, for seconds on a CPU; the agent's experiments get it too (GPU_CHECK_AGENT_ENV)
    "PRESET": "cpu",
    "NUM_LAYERS": "2",
    "MODEL_DIM": "64",
    "NUM_HEADS": "2",
    "NUM_KV_HEADS": "1",
    "TRAIN_SEQ_LEN": "64",
    "TRAIN_BATCH_TOKENS": "1024",
    "ITERATIONS": "8",
    "VAL_BATCH_SIZE": "4096",
}


def load_helper():
    spec = importlib.util.spec_from_file_location("gpu_check_helper", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_log_reads_a_trainers_figures():
    log = "\n".join(
        [
            "[    4.000] model_params:17059912",
            "[    4.100] world_size:1 grad_accum_steps:8",
            "[    5.000] train_batch_tokens:524288 train_seq_len:1024 iterations:20000 warmup_steps:3 "
            "max_wallclock_seconds:120.000",
            "[   65.000] warmup_step:1/3",
            "[   66.000] warmup_step:3/3",
            "[   66.400] step:1/20000 train_loss:6.9 train_time:350ms step_avg:350.00ms",
            "[  190.000] step:340/20000 train_loss:3.1 train_time:120100ms step_avg:353.24ms",
            "[  190.100] step:340/20000 val_loss:2.9 val_bpb:1.7 train_time:120100ms step_avg:353.24ms",
            "[  190.200] stopping_early: wallclock_cap train_time:120100ms step:340/20000",
            "[  190.300] peak memory allocated: 10303 MiB reserved: 10830 MiB",
            "[  195.000] Total submission size int8+zlib: 15499336 bytes",
            "[  197.000] final_int8_zlib_roundtrip_exact val_loss:2.91000000 val_bpb:1.71234567",
            "[  197.500] gpu_check: exit 0",
        ]
    )
    m = load_helper().parse_log(log)
    assert m["steps"] == 340 and m["train_s"] == pytest.approx(120.1)
    assert m["ms_per_step"] == pytest.approx(120100 / 340)
    assert m["tokens_per_s"] == pytest.approx(524288 * 340 / 120.1)
    assert m["val_bpb"] == pytest.approx(1.71234567) and m["prequant_bpb"] == pytest.approx(1.7)
    assert m["artifact_bytes"] == 15499336 and m["peak_mib"] == 10303 and m["grad_accum"] == 8
    assert m["compile_s"] == pytest.approx(60.0) and m["warmup_s"] == pytest.approx(1.0)
    assert m["model_built_s"] == pytest.approx(4.0) and m["wall_s"] == pytest.approx(197.5)
    assert m["outside_s"] == pytest.approx(197.5 - 120.1) and m["after_training_s"] == pytest.approx(7.3)
    assert m["exit"] == 0
    cut = load_helper().parse_log(
        "[ 1.000] model_params:5\n[ 9.000] gpu_check: exit -9 (timed out after 8 s)\n"
    )
    assert cut["exit"] == -9 and cut["exit_note"] == "timed out after 8 s" and cut["steps"] is None


@pytest.fixture(scope="module")
def tiny_pack(tiny_dataset, tmp_path_factory) -> Path:
    """A pack as bench/gpu_data.py packs it, from small texts and the tiny tokenizer (vocab 256)."""
    pack = tmp_path_factory.mktemp("pack")
    (pack / "text").mkdir()
    docs = demo_corpus(200_000)
    for name, part in (("wiki_en.jsonl.xz", docs[4:]), ("fineweb_docs.jsonl.xz", docs[:4])):
        with lzma.open(pack / "text" / name, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": d}) + "\n" for d in part)
    shutil.copy(tiny_dataset.tokenizer, pack / "text" / "fineweb_1024_bpe.model")
    return pack


def dry_run(pack: Path, tmp: Path, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp / "out"
    full = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")}
    full.update(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", PYTHON=sys.executable)
    full.update(GPU_CHECK_PACK=str(pack), GPU_CHECK_WORK=str(tmp / "work"), GPU_CHECK_OUT=str(out))
    full.update(VOCAB_SIZE="256", GPU_CHECK_SHARD_ARGS="", GPU_CHECK_TRAIN_SECONDS="20", **TINY_RECIPE)
    full.update(GPU_CHECK_AGENT_SECONDS="60", GPU_CHECK_AGENT_OVERHEAD="30", GPU_CHECK_AGENT_BUDGET="1")
    full.update(env)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], env=full, capture_output=True, text=True, timeout=400
    )
    return proc, out


@pytest.mark.slow
def test_dry_run_runs_every_stage_and_prints_the_table(tiny_pack, tmp_path):
    proc, out = dry_run(tiny_pack, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    table = (out / "gpu_check.txt").read_text()
    assert "DRY RUN on a CPU" in table and "| how it ended | ok | ok | |" in table, table
    figures = json.loads((out / "gpu_check.json").read_text())
    official, ours = figures["trainers"]["official"], figures["trainers"]["ours"]
    assert official["steps"] > 0 and official["artifact_bytes"] == 11_860_079 and official["compile_s"] > 0
    assert ours["steps"] == 8 and 0 < ours["val_bpb"] < 8 and ours["outside_s"] > 0
    assert ours["artifact_bytes"] < 15_500_000 and ours["tokens_per_s"] > 0
    (row,) = figures["agent"]["experiments"]
    assert row["kind"] == "baseline" and row["status"] == "ok" and row["val_bpb"] > 0, figures["agent"]
    assert "| 1 | baseline | ok |" in table
    assert (out / "logs.tar.gz").stat().st_size > 0


def test_dry_run_without_a_gpu_stops_at_once(tiny_pack, tmp_path):
    proc, out = dry_run(tiny_pack, tmp_path, STANDIN_NVIDIA_SMI_FAIL="1")
    assert proc.returncode == 3
    assert (
        "error: no usable GPU" in proc.stdout and "couldn't communicate with the NVIDIA driver" in proc.stdout
    )
    assert not (out / "gpu_check.txt").exists()


def test_dry_run_reports_a_crash_a_missing_trainer_and_a_missing_agentgolf(tiny_pack, tmp_path):
    proc, out = dry_run(
        tiny_pack,
        tmp_path / "a",
        GPU_CHECK_STAGES="official,agent",
        STANDIN_EXIT="3",
        AGENTGOLF="no-such-agentgolf",
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    table = (out / "gpu_check.txt").read_text()
    assert "| how it ended | failed: exit 3 | not run | |" in table, table
    assert "agentgolf: skipped: no 'no-such-agentgolf' command and no wheels" in table

    proc, out = dry_run(
        tiny_pack, tmp_path / "b", GPU_CHECK_STAGES="official", OFFICIAL_TRAINER="/nonexistent.py"
    )
    table = (out / "gpu_check.txt").read_text()
    assert "| how it ended | skipped: no file at /nonexistent.py | not run | |" in table, table


def test_dry_run_kills_a_trainer_at_its_timeout_and_skips_what_the_deadline_leaves_no_time_for(
    tiny_pack, tmp_path
):
    proc, out = dry_run(
        tiny_pack,
        tmp_path,
        GPU_CHECK_STAGES="official,agent",
        STANDIN_TRAIN_SECONDS="60",
        ITERATIONS="100000",
        GPU_CHECK_TRAINER_OVERHEAD="-16",  # timeout 20 - 16 = 4 s
        GPU_CHECK_DEADLINE="60",
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    table = (out / "gpu_check.txt").read_text()
    assert "timed out after 4 s" in table, table
    assert "agentgolf: skipped:" in table and "one experiment needs about 90s" in table, table
