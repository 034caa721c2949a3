"""bench/gpu_check.sh dry-run on the CPU with its stand-ins (bench/gpu_standins) and the import blocker: every
step of the device call runs here first, and a call cut off halfway has already left its finished steps in
$OUT (issues 14 and 21)."""

from __future__ import annotations

import importlib.util
import json
import lzma
import os
import shutil
import signal
import subprocess
import sys
import time
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
            "[  196.900] final_int8_zlib_roundtrip val_loss:2.9100 val_bpb:1.7123 eval_time:1412ms",
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
    assert m["exit"] == 0 and m["eval_s"] == pytest.approx(1.412)
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


STEP_FILES = {
    "probe.txt",
    "install.txt",
    "smoke.txt",
    "ours_cold.log",
    "score.txt",
    "ours_warm.log",
    "official.log",
}


def dry_run_env(pack: Path, tmp: Path, **env: str) -> tuple[dict, Path]:
    out = tmp / "out"
    full = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")}
    full.update(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", PYTHON=sys.executable)
    full.update(GPU_CHECK_PACK=str(pack), GPU_CHECK_WORK=str(tmp / "work"), GPU_CHECK_OUT=str(out))
    full.update(VOCAB_SIZE="256", GPU_CHECK_SHARD_ARGS="", GPU_CHECK_TRAIN_SECONDS="10", **TINY_RECIPE)
    full.update(GPU_CHECK_WARM_SECONDS="4", GPU_CHECK_SMOKE_SECONDS="30")
    full.update(env)
    return full, out


def dry_run(pack: Path, tmp: Path, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    full, out = dry_run_env(pack, tmp, **env)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], env=full, capture_output=True, text=True, timeout=600
    )
    return proc, out


def result(path: Path, prefix: str = "RESULT ") -> dict:
    lines = [x for x in path.read_text().splitlines() if x.startswith(prefix)]
    assert lines, path.read_text()[-3000:]
    return json.loads(lines[-1][len(prefix) :])


@pytest.mark.slow
def test_dry_run_runs_every_step_and_leaves_one_file_each(tiny_pack, tmp_path):
    proc, out = dry_run(tiny_pack, tmp_path)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == STEP_FILES | {"summary.txt"}  # 8: what a device call returns
    probe = (out / "probe.txt").read_text()
    assert "DRY RUN" in probe and "GPU-00000000-0000-4000-8000-000000000000, Default" in probe
    assert "cuda False" in probe and "stripped env: exit 3" in probe, probe
    # the install: every agentgolf module, optuna's TPE, bm25s and the CLI under the image's import blocker
    install = result(out / "install.txt")
    assert install["ok"] and install["packages"]["bm25s"] == "0.3.16", install
    assert "blocked: alembic distro jiter openai sqlalchemy submitit" in (out / "install.txt").read_text()
    # the smoke through the real sandbox on gpus=[0]: CUDA fails on a CPU, so the LD_LIBRARY_PATH try follows
    smoke = result(out / "smoke.txt")
    assert smoke["cuda_worked"] == "none" and [t["label"] for t in smoke["tries"]] == [
        "stripped",
        "ld_library_path",
    ]
    first = smoke["tries"][0]
    assert first["steps"]["cuda"] == "FAIL" and first["status"] == "crash"  # it trains nothing, as designed
    assert first["steps"]["matmul_bf16"] == "OK" and first["steps"]["compile"] == "OK", first  # CPU stand-ins
    assert first["steps"]["process_group"] == "OK", first  # a one-rank group over torchrun's store, inside
    smoke_text = (out / "smoke.txt").read_text()
    assert "SMOKE dev ['nvidia-uvm', 'nvidia0', 'nvidiactl']" in smoke_text  # the fake nodes, bound
    assert "'CUDA_VISIBLE_DEVICES': 'GPU-00000000-0000-4000-8000-000000000000'" in smoke_text
    # the sandbox leg: the real trainer on gpus=[0] through torchrun inside the sandbox, judged by GPU budgets
    leg = result(out / "smoke.txt", "SANDBOX_LEG ")
    assert leg["artifact"] and leg["torchrun"] and leg["steps"], leg
    if shutil.which("bwrap"):
        assert first["isolation"] == "bwrap" and leg["isolation"] == "bwrap"
    from agentgolf.sandbox.budget import Budget

    if hasattr(Budget(), "gpu_grace_seconds"):  # a GPU run's grace, not a CPU run's
        assert leg["grace_s"] == Budget().gpu_grace_seconds, leg
    # ours cold and warm, the harness's score of the cold artifact against the trainer's own, the official
    cold, warm = (load_helper().parse_log((out / n).read_text()) for n in ("ours_cold.log", "ours_warm.log"))
    assert cold["exit"] == 0 and cold["steps"] == 8 and 0 < cold["val_bpb"] < 8 and cold["eval_s"] > 0
    assert warm["exit"] == 0 and warm["val_bpb"] is not None
    score = result(out / "score.txt")
    assert score["status"] == "ok" and score["trainer_val_bpb"] == cold["val_bpb"], score
    assert abs(score["harness_minus_trainer"]) < 0.05 and score["verification"]["positions"] > 0, score
    summary = (out / "summary.txt").read_text()
    assert "| how it ended | ok | ok | | ok |" in summary and "official exit 0" in summary, summary
    assert "harness scoring of ours' cold artifact: status ok" in summary


def test_dry_run_without_a_gpu_stops_at_the_probe(tiny_pack, tmp_path):
    proc, out = dry_run(tiny_pack, tmp_path, STANDIN_NVIDIA_SMI_FAIL="1")
    assert proc.returncode == 3, proc.stdout[-3000:]
    assert "couldn't communicate with the NVIDIA driver" in (out / "probe.txt").read_text()
    assert {p.name for p in out.iterdir()} == {"probe.txt", "summary.txt"}
    assert "probe exit 3" in (out / "summary.txt").read_text()


def test_a_dry_run_killed_halfway_has_already_left_its_finished_steps(tiny_pack, tmp_path):
    full, out = dry_run_env(tiny_pack, tmp_path)
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "--dry-run"], env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        summary = out / "summary.txt"
        while "install exit" not in (summary.read_text() if summary.is_file() else ""):
            assert proc.poll() is None and time.monotonic() < deadline, "the dry run ended or stalled first"
            time.sleep(0.5)
        time.sleep(3)  # into the smoke step
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # as a device call cut off: nothing gets to clean up
        proc.wait()
    assert {"probe.txt", "install.txt", "summary.txt"} <= {p.name for p in out.iterdir()}
    assert result(out / "install.txt")["ok"]  # the whole step, not a partial copy
    steps = (out / "summary.txt").read_text()
    assert "probe exit 0" in steps and "install exit 0" in steps and "ours_cold" not in steps, steps
    assert not (out / "ours_cold.log").exists()
