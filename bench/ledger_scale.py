"""How the ledger and the proposer's digest scale: 10,000 experiments in a real SQLite file.

    python bench/ledger_scale.py [N]

Prints the median of 5 timings for listing, filtering, one lookup and the digest.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from agentgolf.agent.proposers.briefing.digest import build_digest
from agentgolf.experiments.ledger import Ledger, Run

STATUSES = ["ok"] * 5 + ["inconclusive", "crash", "timeout", "oom", "over_size", "rejected", "nan"]
CATEGORIES = ["opt", "arch", "quant", "sched", "data", "eval"]
REPEATS = 5


def fill(ledger: Ledger, n: int) -> None:
    rng = random.Random(0)
    ledger.add_run(Run(id="bench", created_at=time.time(), base_commit="0" * 40))
    rows, best_id, best_bpb = [], 1, 2.0
    for i in range(1, n + 1):
        status = "ok" if i == 1 else rng.choice(STATUSES)
        bpb = None if status not in ("ok", "inconclusive") else best_bpb + rng.gauss(0.003, 0.01)
        kept = i == 1 or (bpb is not None and bpb < best_bpb - 0.01)
        rows.append(
            (
                "bench",
                None if i == 1 else best_id,
                "baseline" if i == 1 else "proposal",
                status,
                f"idea {i}: {rng.choice(CATEGORIES)} change",
                "because " * rng.randint(3, 30),
                rng.choice(CATEGORIES),
                bpb,
                None if bpb is None else bpb - best_bpb,
                int(kept),
                "" if status == "ok" else "exit code 1: " + "x" * rng.randint(10, 200),
                "log line\n" * rng.randint(10, 60),
                '{"seed": 1337}',
                time.time(),
            )
        )
        if kept:
            best_id, best_bpb = i, bpb
    with ledger.transaction() as db:
        db.executemany(
            "INSERT INTO experiments (run_id, parent_id, kind, status, title, hypothesis, category, val_bpb, "
            "delta_bpb, kept, reason, log_tail, manifest, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )


def timed(fn) -> float:
    samples = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "n", nargs="?", type=int, default=10_000, help="experiments in the ledger (default 10000)"
    )
    n = ap.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.db", create=True)
        fill(ledger, n)
        rows = ledger.experiments()
        best = min((e for e in rows if e.kept), key=lambda e: e.val_bpb)
        figures = {
            "list all": timed(lambda: ledger.experiments()),
            "filter status=crash": timed(lambda: ledger.experiments(status="crash")),
            "filter better_than, sorted by val_bpb": timed(
                lambda: ledger.experiments(better_than=2.0, order="val_bpb")
            ),
            "get one by id": timed(lambda: ledger.get(n // 2)),
            "digest (from listed rows)": timed(lambda: build_digest(rows, best)),
            "list + digest": timed(lambda: build_digest(ledger.experiments(), best)),
        }
        digest = build_digest(rows, best)
    print(f"{n:,} experiments, median of {REPEATS}:")
    for name, ms in figures.items():
        print(f"  {name:<40} {ms:8.1f} ms")
    print(f"  digest size: {len(digest):,} characters")


if __name__ == "__main__":
    main()
