"""The proposer's memory: keeps the best chain, recent results and failures, and stays bounded."""

from __future__ import annotations

import random

from agentgolf.agent.proposers.briefing.digest import DIGEST_MAX_CHARS, build_digest, similar
from agentgolf.experiments.ledger import Experiment

STATUSES = ["ok", "ok", "ok", "crash", "timeout", "over_size", "rejected", "nan"]
CATEGORIES = ["opt", "arch", "quant", "sched", "data"]


def synthetic_ledger(n: int, seed: int = 0) -> tuple[list[Experiment], Experiment]:
    rng = random.Random(seed)
    rows = [
        Experiment(id=1, kind="baseline", status="ok", title="Baseline", val_bpb=2.0, kept=True, created_at=0)
    ]
    best = rows[0]
    for i in range(2, n + 1):
        status = rng.choice(STATUSES)
        delta = rng.gauss(0.002, 0.01) if status == "ok" else None
        kept = delta is not None and delta < -0.01
        e = Experiment(
            id=i,
            kind="proposal",
            status=status,
            parent_id=best.id,
            category=rng.choice(CATEGORIES),
            title=f"idea {i} "
            + rng.choice(["lower lr", "wider mlp", "int6 export", "longer warmdown", "seq 2048"]),
            hypothesis="because " * rng.randint(1, 30),
            val_bpb=None if delta is None else best.val_bpb + delta,
            delta_bpb=delta,
            kept=kept,
            reason="" if status == "ok" else "exit code 1: " + "x" * rng.randint(0, 300),
            created_at=i,
        )
        rows.append(e)
        if kept:
            best = e
    return rows, best


def test_digest_is_bounded_at_1000_experiments():
    rows, best = synthetic_ledger(1000)
    digest = build_digest(rows, best)
    assert len(digest) <= DIGEST_MAX_CHARS
    assert f"exp {best.id} " in digest  # the parent is always there
    assert f"exp {rows[-1].id} " in digest  # so is the latest result
    assert "older negative results not shown" in digest
    worst = max((e for e in rows if e.delta_bpb is not None and not e.kept), key=lambda e: e.delta_bpb)
    assert f"exp {worst.id} " in digest  # the largest regression is remembered


def test_digest_of_small_ledger_keeps_every_negative():
    rows, best = synthetic_ledger(30, seed=3)
    digest = build_digest(rows, best)
    for e in rows:
        if e.kind == "proposal" and not e.kept:
            assert f"exp {e.id} " in digest
    crashed = next(e for e in rows if e.status == "crash")
    assert "crash: exit code 1" in digest.split(f"exp {crashed.id} ")[1].splitlines()[0]


def test_similar_finds_earlier_attempts():
    rows, _ = synthetic_ledger(200, seed=1)
    hits = similar(rows, "idea with wider mlp", "")
    assert hits and all("wider mlp" in e.title for e in hits)
    assert similar(rows, "completely unrelated tokenizer change", "") == []
