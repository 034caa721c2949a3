"""Benchmark: the harness's verified scoring against the trainer's own in-process evaluation (issue 21, item 6).

    python bench/scoring_speed.py [--numerics fp32|bf16] [--reps 2] [--json]

One run, on this machine, on one artifact:

1. a dataset built offline from the Python standard library (as `agentgolf init --demo` and the tests do),
   cached under --work;
2. the real trainer (baseline/train_gpt.py, PRESET=cpu, a small model) trains briefly and writes its artifact;
   its own roundtrip evaluation prints `eval_time`;
3. then, alternating --reps times on that artifact:
   - the trainer's `evaluate` run in this process on the model its `load_model` rebuilds (the same windows,
     the same numerics: under bf16 autocast with --numerics bf16);
   - the harness: `score_artifact`, a sandboxed scoring worker and then a fresh verifying worker, exactly as
     a run scores (bubblewrap when installed).

The goal is harness scoring, verification included, within 1.5x the trainer's own evaluation. The table
shows both, their ratio, and where the harness's time goes (worker start and load_model, predictions,
verification). With --numerics bf16 the model is scored under bf16 autocast (EVAL_AUTOCAST=bf16), and the
verification's largest gap is the figure to hold against `tolerance_nats`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TRAINER = ROOT / "baseline" / "train_gpt.py"
MODEL_ENV = {  # the CPU preset's shape, trained briefly: the numbers here are speeds, not a good model
    "PRESET": "cpu",
    "ITERATIONS": "30",
    "WARMDOWN_ITERS": "10",
    "TRAIN_LOG_EVERY": "0",
    "MAX_WALLCLOCK_SECONDS": "600",
}
EVAL_RE = re.compile(r"^final_int8_zlib_roundtrip val_loss:\S+ val_bpb:\S+ eval_time:(\d+)ms$", re.M)
EXACT_RE = re.compile(r"^final_int8_zlib_roundtrip_exact val_loss:\S+ val_bpb:(\S+)$", re.M)


def dataset(work: Path, corpus_bytes: int, val_fraction: float, vocab: int):
    from agentgolf.baseline.corpus import demo_corpus
    from agentgolf.baseline.dataset import build_dataset, load_dataset

    folder = work / f"data-{corpus_bytes}-{val_fraction}-{vocab}"
    if (folder / "datasets" / "bench").is_dir():
        return load_dataset(folder / "datasets" / "bench")
    shutil.rmtree(folder, ignore_errors=True)
    docs = demo_corpus(corpus_bytes)
    return build_dataset(docs, folder, name="bench", vocab_size=vocab, val_fraction=val_fraction)


def train(work: Path, info, env_extra: dict[str, str]) -> tuple[Path, float, float]:
    """The trainer's own run: (artifact, its printed eval time in seconds, its printed val_bpb)."""
    folder = work / "train"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR", "LANG") if k in os.environ}
    env |= MODEL_ENV | env_extra
    env |= {
        "DATA_PATH": str(info.dataset_dir),
        "TOKENIZER_PATH": str(info.tokenizer),
        "VOCAB_SIZE": str(info.vocab_size),
        "ARTIFACT_PATH": str(folder / "model.ptz"),
    }
    proc = subprocess.run([sys.executable, str(TRAINER)], cwd=folder, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"the trainer failed:\n{proc.stderr[-3000:]}")
    return (
        folder / "model.ptz",
        int(EVAL_RE.search(proc.stdout).group(1)) / 1000,
        float(EXACT_RE.search(proc.stdout).group(1)),
    )


def load_trainer():
    spec = importlib.util.spec_from_file_location("trainer_under_bench", TRAINER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def in_process(trainer, artifact: Path, info, numerics: str, batch_tokens: int) -> tuple[float, float]:
    """The trainer's own `evaluate` on the model `load_model` rebuilds: (seconds, val_bpb)."""
    import sentencepiece as spm

    model = trainer.load_model(str(artifact), "cpu")
    seq_len = model.seq_len
    val = trainer.load_validation_tokens([Path(f) for f in info.val_files], seq_len, info.vocab_size)
    luts = trainer.build_byte_luts(
        spm.SentencePieceProcessor(model_file=str(info.tokenizer)), info.vocab_size
    )
    batch = max(1, batch_tokens // seq_len)
    cast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if numerics == "bf16"
        else torch.autocast("cpu", enabled=False)
    )
    t0 = time.perf_counter()
    with cast:
        _, bpb = trainer.evaluate(model, val, luts, seq_len, batch, 0, 1, torch.device("cpu"))
    return time.perf_counter() - t0, bpb


def harness(artifact: Path, info, run_dir: Path, env: dict[str, str], thorough: bool) -> dict:
    """score_artifact on this artifact, as a run scores it: the result's figures and the wall time."""
    from agentgolf.sandbox.budget import Budget
    from agentgolf.sandbox.isolation.bwrap import resolve_isolation
    from agentgolf.sandbox.metrics import compile_patterns
    from agentgolf.sandbox.result import DataSpec, SandboxResult, Status
    from agentgolf.sandbox.run_setup import RunSetup
    from agentgolf.sandbox.scoring.score_phase import score_artifact
    from agentgolf.sandbox.scoring.verify import VerifyConfig

    data = DataSpec(
        train_files=info.train_files,
        val_files=info.val_files,
        tokenizer=info.tokenizer,
        vocab_size=info.vocab_size,
    )
    mode, _ = resolve_isolation(None)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    budget = Budget(verify=VerifyConfig(min_positions=1 << 20 if thorough else 16))
    run = RunSetup(
        TRAINER.read_bytes(),
        run_dir,
        data,
        budget,
        env,
        1337,
        None,
        False,
        compile_patterns(None),
        None,
        mode,
    )
    run.prepare()
    shutil.copyfile(artifact, run.artifact_path())
    t0 = time.perf_counter()
    res = score_artifact(run, SandboxResult(status=Status.ok))
    wall = time.perf_counter() - t0
    if res.status is not Status.ok:
        sys.exit(f"the harness did not score it: {res.status.value}: {res.reason}")
    return {
        "isolation": mode,
        "wall_s": wall,
        "score_s": res.score_seconds,
        "load_s": res.load_seconds,
        "predict_s": res.predict_seconds,
        "verify_s": res.verify_seconds,
        "val_bpb": res.val_bpb,
        "val_tokens": res.val_tokens,
        "eval_mode": res.eval_mode,
        "verification": res.verification,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numerics", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--corpus-bytes", type=int, default=4_000_000)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "scoring_speed")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="trainer settings")
    parser.add_argument(
        "--thorough", action="store_true", help="verify every row (at most 8,192), to measure the gaps"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on both sides (OMP_NUM_THREADS, as a CPU slot's)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    info = dataset(args.work, args.corpus_bytes, args.val_fraction, args.vocab)
    env = {"OMP_NUM_THREADS": str(args.threads), **dict(item.split("=", 1) for item in args.env)}
    torch.set_num_threads(args.threads)
    if args.numerics == "bf16":
        env["EVAL_AUTOCAST"] = "bf16"
    artifact, trainer_eval_s, trainer_bpb = train(args.work, info, env)
    trainer = load_trainer()
    os.environ.update(env)  # load_model in this process reads EVAL_* as the scoring worker does
    batch_tokens = int(env.get("VAL_BATCH_SIZE", 32768))
    rows = []
    for rep in range(args.reps):
        own_s, own_bpb = in_process(trainer, artifact, info, args.numerics, batch_tokens)
        h = harness(artifact, info, args.work / f"run{rep}", {**MODEL_ENV, **env}, args.thorough)
        rows.append({"own_s": own_s, "own_bpb": own_bpb, **h})
    best_own = min(r["own_s"] for r in rows)
    best = min(rows, key=lambda r: r["wall_s"])
    out = {
        "numerics": args.numerics,
        "threads": torch.get_num_threads(),
        "val_tokens": best["val_tokens"],
        "trainer_run_eval_s": trainer_eval_s,
        "trainer_run_val_bpb": trainer_bpb,
        "in_process_eval_s": best_own,
        "harness": best,
        "ratio": best["wall_s"] / best_own,
        "predict_ratio": best["predict_s"] / best_own,
        "reps": rows,
    }
    if args.json:
        print(json.dumps(out, indent=1, default=str))
        return
    v = best["verification"] or {}
    print(
        f"scoring speed, {args.numerics}, {out['val_tokens']:,} val tokens, {out['threads']} threads, "
        f"isolation {best['isolation']} (best of {args.reps})"
    )
    print(f"{'':38}{'seconds':>9}{'val_bpb':>13}")
    own_run = "trainer, its own run (fp32)" if args.numerics == "bf16" else "trainer, its own run"
    print(f"{own_run + ' eval_time':38}{trainer_eval_s:9.2f}{trainer_bpb:13.8f}")
    print(f"{'trainer evaluate(), in process':38}{best_own:9.2f}{rows[0]['own_bpb']:13.8f}")
    print(f"{'harness, scoring + verification':38}{best['wall_s']:9.2f}{best['val_bpb']:13.8f}")
    print(f"{'  scoring worker (phase)':38}{best['score_s']:9.2f}")
    print(f"{'    start + load_model':38}{best['load_s']:9.2f}")
    print(f"{'    predictions':38}{best['predict_s']:9.2f}")
    print(f"{'  verification (fresh worker)':38}{best['verify_s']:9.2f}")
    print(
        f"harness / in-process: {out['ratio']:.2f}x in all (goal <= 1.5x), {out['predict_ratio']:.2f}x in "
        f"predictions; verification m={v.get('positions')} max_gap={v.get('max_gap_nats', float('nan')):.2e} nats"
    )


if __name__ == "__main__":
    main()
