"""What the sandbox costs: each phase of a trivial trainer run sandboxed vs the same work run bare.

    .venv/bin/python bench/sandbox_overhead.py [--repeats 3] [--isolation bwrap|none]

Bare train: the toy trainer as a plain subprocess. Bare score: a plain subprocess that imports the toy,
loads its artifact and computes the float64 NLL of every validation window in one go. Sandboxed: the
train_seconds and score_seconds of run_sandboxed (process start to reaped tree; scoring includes the worker
protocol). Verification: the wall time it adds after scoring (a fresh worker, started once the scorer has
exited, re-scores a secret sample of positions; in stream mode it replays the stream up to the last checked
chunk), with the scoring worker's own load and predict times beside it. Also an empty sandboxed process.
Figures are medians; results go to stdout and bench/out/sandbox_overhead.json. Goal: < 2 s per phase.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agentgolf.baseline.corpus import demo_corpus
from agentgolf.baseline.dataset import build_dataset
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.isolation.bwrap import resolve_isolation
from agentgolf.sandbox.isolation.limits import Limits
from agentgolf.sandbox.isolation.process import SandboxedProcess
from agentgolf.sandbox.phase import PhaseSpec
from agentgolf.sandbox.result import DataSpec, Status
from agentgolf.sandbox.runner import run_sandboxed

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "sandbox_trainers" / "toy_bigram.py"
OUT = ROOT / "bench" / "out" / "sandbox_overhead.json"
CORPUS_BYTES = 300_000
VOCAB = 256
BUDGET = Budget(train_seconds=60, train_grace_seconds=30, score_seconds=120, memory_bytes=8 * 2**30)
GOAL_S = 2.0

BARE_SCORE = """
import importlib.util, sys, numpy as np, torch
spec = importlib.util.spec_from_file_location("toy", sys.argv[1]); toy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toy)
model = toy.load_model(sys.argv[2], "cpu")
val = np.concatenate([toy.read_shard(f) for f in sys.argv[3:]])
t = model.seq_len; n = (val.size - 1) // t
x = torch.from_numpy(val[: n * t].reshape(n, t)); y = torch.from_numpy(val[1 : n * t + 1].reshape(n, t))
with torch.inference_mode():
    logp = torch.log_softmax(model.forward_logits(x).double(), -1)
print(float(-logp.gather(-1, y.unsqueeze(-1)).mean()))
"""


def timed(fn) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def bare_train(work: Path, data: DataSpec) -> float:
    shards = work / "shards"
    shards.mkdir(exist_ok=True)
    for f in data.train_files:
        if not (shards / f.name).exists():
            (shards / f.name).symlink_to(f)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "HOME": str(work),
        "DATA_PATH": str(shards),
        "VOCAB_SIZE": str(data.vocab_size),
        "SEED": "1337",
        "ARTIFACT_PATH": str(work / "model.ptz"),
        "MAX_WALLCLOCK_SECONDS": "60",
        "PYTHONUNBUFFERED": "1",
    }
    return timed(
        lambda: subprocess.run(
            [sys.executable, str(TOY)], cwd=work, env=env, check=True, stdout=subprocess.DEVNULL
        )
    )


def bare_score(work: Path, data: DataSpec) -> float:
    argv = [sys.executable, "-c", BARE_SCORE, str(TOY), str(work / "model.ptz"), *map(str, data.val_files)]
    return timed(lambda: subprocess.run(argv, check=True, stdout=subprocess.DEVNULL))


def empty_process(work: Path, isolation: str) -> float:
    spec = PhaseSpec(
        argv=[sys.executable, "-c", "pass"],
        cwd=Path("/sandbox/w") if isolation == "bwrap" else work,
        env={"PATH": "/usr/bin"},
        rw_binds=[(work, Path("/sandbox/w"))] if isolation == "bwrap" else [],
        limits=Limits(wall_seconds=30, max_file_bytes=2**20, max_processes=16),
        log_path=work / "empty.log",
        log_bytes=10_000,
    )

    def go() -> None:
        proc = SandboxedProcess(spec, isolation)
        proc.start()
        proc.wait()

    return timed(go)


# The toy with an eval mode (tests/sandbox_trainers/): (mode, the code appended, its env).
MODES = (
    ("windows", None, {}),
    ("sliding", "context_copy.py", {"EVAL_MODE": "sliding"}),
    ("stream", "ttt.py", {"EVAL_MODE": "stream", "TTT": "legal"}),
)


def verification_by_mode(data: DataSpec, isolation: str) -> dict[str, dict]:
    """What checking the score costs in each eval mode: the wall time it adds after scoring."""
    out = {}
    print("verification by eval mode (one run each):")
    with tempfile.TemporaryDirectory() as tmp:
        for mode, attack, env in MODES:
            trainer = TOY
            if attack:
                toy = TOY.read_text()
                guard = 'if __name__ == "__main__":'
                head, tail = toy.rsplit(guard, 1)
                trainer = Path(tmp) / f"{mode}.py"
                extra = (TOY.parent / attack).read_text()
                trainer.write_text(f"{head}\n{extra}\n\n{guard}{tail}")
            r = run_sandboxed(trainer, Path(tmp) / mode, data, BUDGET, env=env, isolation=isolation)
            if r.status is not Status.ok:
                raise SystemExit(f"{mode}: {r.status.value}: {r.reason}")
            v = r.verification or {}
            verify_s = r.verify_seconds or 0.0
            out[mode] = {
                "score_s": r.score_seconds,
                "load_s": r.load_seconds,
                "predict_s": r.predict_seconds,
                "verify_s": verify_s,
                "verify_share": verify_s / r.score_seconds,
                "checked_positions": v.get("positions", 0),
                "val_bpb": r.val_bpb,
            }
            print(
                f"    {mode:8s} scoring {r.score_seconds:5.2f} s (load {r.load_seconds:4.2f} s, predict "
                f"{r.predict_seconds:4.2f} s), verification adds {verify_s:5.2f} s "
                f"({verify_s / r.score_seconds:4.0%}): {v.get('positions')} positions by a fresh process; "
                f"val_bpb {r.val_bpb:.4f}"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--isolation", default=None, help="bwrap or none (default: bwrap when installed)")
    args = parser.parse_args()
    isolation, _ = resolve_isolation(args.isolation)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        info = build_dataset(
            demo_corpus(CORPUS_BYTES),
            tmp / "data",
            name="tiny",
            vocab_size=VOCAB,
            val_docs=2,
            byte_fallback=False,
        )
        data = DataSpec(
            train_files=info.train_files,
            val_files=info.val_files,
            tokenizer=info.tokenizer,
            vocab_size=info.vocab_size,
        )
        rows: dict[str, list[float]] = {
            k: []
            for k in (
                "bare_python",
                "sandboxed_python",
                "bare_train",
                "sandboxed_train",
                "bare_score",
                "sandboxed_score",
                "harness_other",
                "verify",
            )
        }
        checked = []
        for i in range(args.repeats):
            work = tmp / f"bare{i}"
            work.mkdir()
            rows["bare_python"].append(
                timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
            )
            rows["sandboxed_python"].append(empty_process(work, isolation))
            rows["bare_train"].append(bare_train(work, data))
            rows["bare_score"].append(bare_score(work, data))
            result = run_sandboxed(TOY, tmp / f"run{i}", data, BUDGET, isolation=isolation)
            if result.status is not Status.ok:
                raise SystemExit(f"sandboxed run failed: {result.status.value}: {result.reason}")
            rows["sandboxed_train"].append(result.train_seconds)
            rows["sandboxed_score"].append(result.score_seconds)
            rows["verify"].append(result.verify_seconds)
            checked.append(result.verification)
            other = result.wall_seconds - result.train_seconds - result.score_seconds - result.verify_seconds
            rows["harness_other"].append(other)
        modes = verification_by_mode(data, isolation)
    med = {k: statistics.median(v) for k, v in rows.items()}
    figures = {
        "isolation": isolation,
        "repeats": args.repeats,
        "median_seconds": med,
        "overhead_empty_process_s": med["sandboxed_python"] - med["bare_python"],
        "overhead_train_s": med["sandboxed_train"] - med["bare_train"],
        "overhead_score_s": med["sandboxed_score"] - med["bare_score"],
        "harness_other_s": med["harness_other"],
        "verify_s": med["verify"],
        "verify_share_of_scoring": med["verify"] / med["sandboxed_score"],
        "verified_positions": checked[0]["positions"],
        "detectable_fraction_99": checked[0]["detectable_fraction"],
    }
    print(f"isolation={isolation} repeats={args.repeats} (medians, seconds)")
    for name, bare, boxed in (
        ("empty process", "bare_python", "sandboxed_python"),
        ("train phase", "bare_train", "sandboxed_train"),
        ("score phase", "bare_score", "sandboxed_score"),
    ):
        over = med[boxed] - med[bare]
        flag = "ok" if over < GOAL_S else f"OVER the {GOAL_S:g} s goal"
        print(
            f"  {name:14s} bare {med[bare]:6.2f}  sandboxed {med[boxed]:6.2f}  overhead {over:+6.2f}  {flag}"
        )
    print(
        f"  verification   {med['verify']:6.2f} s after scoring ({figures['verify_share_of_scoring']:.0%} of the "
        f"scoring phase): {figures['verified_positions']} positions re-scored by a fresh process; a forger of "
        f">= {figures['detectable_fraction_99']:.1%} of positions is caught with 99% probability"
    )
    print(f"  harness work outside the phases (copies, val read, result.json): {med['harness_other']:.2f}")
    figures["modes"] = modes
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
