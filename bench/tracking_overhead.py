"""Benchmark: what `run --track` costs the loop, per experiment and per backend.

    python bench/tracking_overhead.py [--experiments 6] [--points 200] [--side-by-side 2] [--json]

One run, on this machine, of the backends the loop uses (agent/tracking): for each backend, the one-time
start (the library's import, and W&B's service), then `--experiments` experiments one after another, each
opened with a card like a real one (settings, hypothesis, diff), fed `--points` training points, its
outcome, and closed (W&B's close waits until its run file is complete, as the loop's does); then
`--side-by-side` experiments at once from threads, as slots do. W&B runs offline, with no network.

The table gives the median seconds of each part and the share of a 600 s training the per-experiment cost
is. Every backend call happens on an experiment's feed thread, never the scheduler's; this is the time
those threads spend, and the files written are checked back with the reader the tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentgolf.agent.tracking import tensorboard_run, wandb_run  # noqa: E402
from agentgolf.agent.tracking.card import Card, Outcome  # noqa: E402
from agentgolf.challenge import TRAIN_SECONDS  # noqa: E402
from agentgolf.sandbox.metrics import CurvePoint  # noqa: E402

DIFF = "--- a/train_gpt.py\n+++ b/train_gpt.py\n@@ -1 +1 @@\n-MATRIX_LR = 0.04\n+MATRIX_LR = 0.03\n"


def card(i: int, group: str) -> Card:
    knobs = {f"knob_{k}": 0.01 * k for k in range(30)}  # a trainer's knobs in force, about as many
    return Card(
        exp_id=i,
        name=f"{i}-lower-learning-rates",
        group=group,
        kind="proposal",
        config={"seed": 1337 + i, "rung": "", "parent_id": 1, "trainer_env": {"PRESET": "cpu"}, **knobs},
        hypothesis="Lower matrix LR: the loss plateaus early, a smaller step may settle lower.",
        diff=DIFF,
    )


def points(n: int) -> list[CurvePoint]:
    return [
        CurvePoint(step=s, total_steps=n, train_loss=7.0 - 3.0 * s / n, seconds=0.45 * s, step_ms=450.0)
        for s in range(1, n + 1)
    ]


def one(backend: str, folder: Path, c: Card, curve: list[CurvePoint]) -> dict[str, float]:
    t0 = time.perf_counter()
    run = (
        tensorboard_run.TensorBoardRun(folder, c)
        if backend == "tensorboard"
        else wandb_run.WandbRun(folder, c, "agentgolf-bench", 60.0)
    )
    t1 = time.perf_counter()
    for p in curve:
        run.log_train(p)
    t2 = time.perf_counter()
    run.log_outcome(Outcome(status="ok", val_bpb=1.2244, artifact_bytes=15_800_000, decision="dead_end"))
    run.close()
    t3 = time.perf_counter()
    return {"open": t1 - t0, "points": t2 - t1, "close": t3 - t2, "total": t3 - t0}


def measure(backend: str, work: Path, experiments: int, n_points: int, side: int) -> dict:
    curve = points(n_points)
    t0 = time.perf_counter()
    (tensorboard_run.prepare if backend == "tensorboard" else wandb_run.prepare)()
    start = time.perf_counter() - t0
    seq = [one(backend, work / backend, card(i, "seq"), curve) for i in range(experiments)]
    together: list[dict[str, float]] = []
    threads = [
        threading.Thread(
            target=lambda i=i: together.append(one(backend, work / backend, card(100 + i, "side"), curve))
        )
        for i in range(side)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    side_wall = time.perf_counter() - t0
    if backend == "wandb":
        wandb_run.shutdown()
    med = {k: statistics.median(r[k] for r in seq) for k in seq[0]}
    return {
        "backend": backend,
        "start_seconds": start,
        "open_seconds": med["open"],
        "per_point_ms": 1000 * med["points"] / n_points,
        "close_seconds": med["close"],
        "per_experiment_seconds": med["total"],
        "share_of_training": med["total"] / TRAIN_SECONDS,
        "side_by_side": side,
        "side_by_side_wall_seconds": side_wall,
        "files_ok": check(backend, work / backend, experiments + side),
    }


def check(backend: str, folder: Path, expected: int) -> bool:
    """The runs are on disk and complete, read the way the tests read them."""
    if backend == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        runs = [d for d in (folder / "tensorboard").glob("*/*") if d.is_dir()]
        ok = 0
        for d in runs:
            acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
            acc.Reload()
            ok += bool(acc.Scalars("train/loss"))
        return ok == expected
    from agentgolf.agent.tracking import wandb_log

    logs = list((folder / "wandb").glob("offline-run-*/run-*.wandb"))
    return len(logs) == expected and all(wandb_log.ends_with_exit(p) for p in logs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=6)
    ap.add_argument("--points", type=int, default=200, help="training points per experiment")
    ap.add_argument("--side-by-side", type=int, default=2)
    ap.add_argument("--backends", default="tensorboard,wandb")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="track-bench-") as tmp:
        os.environ.setdefault("WANDB_CACHE_DIR", str(Path(tmp) / "cache"))  # wandb-core's own debug logs
        rows = [
            measure(b, Path(tmp), args.experiments, args.points, args.side_by_side)
            for b in args.backends.split(",")
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{args.experiments} experiments one after another, {args.points} points each; then "
        f"{args.side_by_side} side by side"
    )
    head = (
        "backend",
        "start s",
        "open s",
        "ms/point",
        "close s",
        "per exp s",
        "of 600 s",
        "side wall s",
        "files",
    )
    print("  ".join(f"{h:>11}" for h in head))
    for r in rows:
        cells = (
            r["backend"],
            f"{r['start_seconds']:.2f}",
            f"{r['open_seconds']:.3f}",
            f"{r['per_point_ms']:.3f}",
            f"{r['close_seconds']:.3f}",
            f"{r['per_experiment_seconds']:.3f}",
            f"{100 * r['share_of_training']:.3f}%",
            f"{r['side_by_side_wall_seconds']:.3f}",
            "ok" if r["files_ok"] else "INCOMPLETE",
        )
        print("  ".join(f"{c:>11}" for c in cells))
    return 0 if all(r["files_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
