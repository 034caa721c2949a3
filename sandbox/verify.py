"""Verified scoring: a random sample of the scored positions, scored again by a fresh process that cannot
know their true continuations, with the arithmetic done by the harness.

Why this holds when every in-process check does not: the scoring worker runs the candidate's code, which can
patch anything in its interpreter (the frame reader, the NLL, the probes). So the evidence comes from a
second worker, started only after the first has exited, in its own sandbox with no writable path, memory or
process in common with it. For each checked position t of a row, it gets the row's real tokens up to
t followed by other real validation text, so its prediction at t cannot use the true next token. The harness
takes that prediction's raw logits, computes the log-softmax itself, and compares the NLL of the true next
token with what the scoring worker reported there.

- A position whose reported NLL is lower than the fresh process's by more than `tolerance_nats` is a
  violation: the score used something a causal model could not know (a peek, a forged NLL, a memo).
- A mean difference above `bias_nats` over the sample is a violation too: a small systematic advantage
  spread over every position, each one under the tolerance.
- With m checked positions drawn uniformly, a candidate that lowers its loss at a fraction q of all scored
  positions escapes with probability (1 - q)^m; `detectable_fraction` is the q caught with 99% certainty.
"""

from __future__ import annotations

import math
import secrets

import numpy as np
from pydantic import BaseModel, Field

from agentgolf.sandbox.layout import Layout
from agentgolf.sandbox.result import Status
from agentgolf.sandbox.score import ScoreOutcome, Session, Verdict, nll_from_logits

CONFIDENCE = 0.99  # the detection level the guarantee is stated at
SPLICE_TRIES = 8  # attempts to find splice text whose first token differs from the true next one


class VerifyConfig(BaseModel):
    """How hard the harness checks a score, and how much that may cost."""

    cost_fraction: float = Field(
        0.10, ge=0, le=10, description="checked positions as a share of the scored windows (one row each)"
    )
    min_positions: int = Field(16, ge=0, description="checked positions at least, however small the val set")
    max_positions: int = Field(8192, ge=0, description="checked positions at most")
    tolerance_nats: float = Field(
        0.02, gt=0, description="largest honest |reported - verified| NLL at one position (batch-shape noise)"
    )
    bias_nats: float = Field(
        0.002, gt=0, description="largest honest mean (verified - reported) NLL over the checked positions"
    )
    stream_probe_fraction: float = Field(
        0.1, ge=0, le=1, description="stream mode: chunks predicted twice (once spliced) to check purity"
    )


class Verification(BaseModel):
    """What the cross-check found: the numbers behind the verdict, kept in the result."""

    positions: int
    detectable_fraction: float  # the smallest forged share of positions caught with CONFIDENCE
    reported_mean_nats: float
    verified_mean_nats: float
    max_gap_nats: float  # largest verified - reported at one position


def sample_positions(layout: Layout, cfg: VerifyConfig) -> list[int]:
    """Scored positions to check, drawn uniformly with a secret seed; a row's last position is as likely as
    any other. Each costs one row of the verifier's, so their number is a share of the scored rows."""
    total = layout.positions
    m = min(total, cfg.max_positions, max(cfg.min_positions, math.ceil(cfg.cost_fraction * layout.rows)))
    rng = np.random.default_rng(secrets.randbits(64))
    return sorted(int(p) for p in rng.choice(total, size=m, replace=False))


def detectable_fraction(m: int, confidence: float = CONFIDENCE) -> float:
    """The forged share q with 1 - (1 - q)^m = confidence."""
    return 1.0 - (1.0 - confidence) ** (1.0 / m) if m else 1.0


def splice(stream: np.ndarray, row: np.ndarray, t: int, flat: int, positions: int, rng) -> np.ndarray:
    """`row` kept up to its position t (validation token `flat`), then other real validation text: the same
    length, another continuation, whose first token is not the true next one (when one is found)."""
    out = row.copy()
    tail = row.size - 1 - t
    if tail:
        for _ in range(SPLICE_TRIES):
            src = int(rng.integers(0, positions - tail))
            if stream[src] != stream[flat + 1] and abs(src - (flat + 1)) > row.size:
                break
        out[t + 1 :] = stream[src : src + tail]
    return out


def probe_row(stream: np.ndarray, flat: int, layout: Layout, rng) -> np.ndarray:
    """The inputs of the row that scored `flat`, spliced after it: the same length as that row, without its
    true continuation (a row's last position has none in the row anyway)."""
    i = layout.row_of(flat)
    row = stream[layout.start[i] : layout.end[i]].astype(np.int64)
    return splice(stream, row, flat - layout.start[i], flat, layout.positions, rng)


def cross_check(
    session: Session, stream: np.ndarray, layout: Layout, scored: ScoreOutcome, cfg: VerifyConfig
) -> tuple[ScoreOutcome, Verification]:
    """Score the checked positions in this fresh worker and compare; a violation raises Verdict."""
    mode = session.hello()
    if mode != layout.mode:
        raise Verdict(Status.violation, f"the model declared {mode} when verified, {layout.mode} when scored")
    positions = sorted(scored.reported)
    rng = np.random.default_rng(secrets.randbits(64))
    by_length: dict[int, list[int]] = {}  # probes in batches shaped like the scoring's, in random order
    for k in rng.permutation(len(positions)):
        i = layout.row_of(positions[k])
        by_length.setdefault(layout.end[i] - layout.start[i], []).append(int(k))
    verified = np.empty(len(positions))
    for ids in by_length.values():
        for b in range(0, len(ids), layout.per_batch):
            batch = ids[b : b + layout.per_batch]
            block = np.stack([probe_row(stream, positions[k], layout, rng) for k in batch])
            at = [(r, positions[k] - layout.start[layout.row_of(positions[k])]) for r, k in enumerate(batch)]
            _, logits = session.nll(block, at=at)
            verified[batch] = nll_from_logits(logits, np.array([stream[positions[k] + 1] for k in batch]))
    session.send("bye")
    reported = np.array([scored.reported[p] for p in positions])
    if not np.isfinite(verified).all():
        raise Verdict(Status.nan, "non-finite logits when the score was verified")
    gaps = verified - reported
    worst = int(np.argmax(gaps)) if gaps.size else 0
    found = Verification(
        positions=len(positions),
        detectable_fraction=detectable_fraction(len(positions)),
        reported_mean_nats=float(reported.mean()) if reported.size else 0.0,
        verified_mean_nats=float(verified.mean()) if verified.size else 0.0,
        max_gap_nats=float(gaps[worst]) if gaps.size else 0.0,
    )
    evidence = (
        f"on {found.positions} checked positions the scoring process reported {found.reported_mean_nats:.4f} "
        f"nats/token, a fresh process that could not see the continuations gives {found.verified_mean_nats:.4f}"
    )
    if gaps.size and gaps[worst] > cfg.tolerance_nats:
        raise Verdict(
            Status.violation,
            f"unverifiable score: at validation token {positions[worst]} the scoring process reported NLL "
            f"{reported[worst]:.4f}, the fresh process {verified[worst]:.4f} ({evidence})",
        )
    if gaps.size and gaps.mean() > cfg.bias_nats:
        raise Verdict(
            Status.violation,
            f"unverifiable score: systematically better while scored than when verified, by "
            f"{gaps.mean():.4f} nats/token on average ({evidence})",
        )
    return scored, found
