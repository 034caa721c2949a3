"""Verified scoring: a random sample of the scored positions, scored again by a fresh process that cannot
know their true continuations, with the arithmetic done by the harness.

Why this holds when every in-process check does not: the scoring worker runs the candidate's code, which can
patch anything in its interpreter (the frame reader, the NLL, the checks). So the evidence comes from a
second worker, started only after the first has exited, in a fresh folder at the same path, with no writable
path, memory or process in common with it. For each checked position t of a row, it gets the row's real
tokens up to t followed by other real validation text, so its prediction at t cannot use the true next
token. The harness takes that prediction's raw logits, computes the log-softmax itself, and compares the NLL
of the true next token with what the scoring worker reported there. Stream mode is checked the same way by
a replay of the stream (sandbox/scoring/stream.py).

The two workers cannot tell which one they are: the same folder path and files made just before each
starts, requests of the same shapes, sizes and positions asked (sandbox/scoring/score.py: `ask`), in random order.

- A position whose reported NLL is lower than the fresh process's by more than `tolerance_nats` is a
  violation: the score used something a causal model could not know (a peek, a forged NLL, a memo).
- A mean difference above `bias_nats` over the sample is a violation too: a small systematic advantage
  spread over every position, each one under the tolerance.
- m, the number of checked positions, comes from the scored targets in units of seq_len (capped at
  `max_unit_tokens`), never from how the candidate lays out its rows. Drawn uniformly, one per row, they
  catch a candidate that lowers its loss at a fraction q of all positions but with probability (1 - q)^m;
  each result records m, the q caught with 99% certainty, and the escape probability at q = 1%.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, Field

from agentgolf.sandbox.result import Status
from agentgolf.sandbox.scoring.layout import Layout
from agentgolf.sandbox.scoring.score import ScoreOutcome, Session, Verdict, any_position, ask, nll_from_logits

CONFIDENCE = 0.99  # the detection level the guarantee is stated at
FORGER_SHARE = 0.01  # the forged share of positions each result states its escape probability for
SPLICE_TRIES = 8  # attempts to find splice text whose first token differs from the true next one


class VerifyConfig(BaseModel):
    """How hard the harness checks a score, and how much that may cost."""

    cost_fraction: float = Field(
        0.10, ge=0, le=1, description="checked positions as a share of the scored seq_len windows"
    )
    max_unit_tokens: int = Field(
        4096, ge=1, description="a declared seq_len longer than this does not lower the number checked"
    )
    min_positions: int = Field(16, ge=0, description="checked positions at least, however small the val set")
    max_positions: int = Field(8192, ge=0, description="checked positions at most")
    tolerance_nats: float = Field(
        0.02, gt=0, description="largest honest |reported - verified| NLL at one position (batch-shape noise)"
    )
    bias_nats: float = Field(
        0.002, gt=0, description="largest honest mean (verified - reported) NLL over the checked positions"
    )


class Verification(BaseModel):
    """What the cross-check found: the numbers behind the verdict, kept in the result."""

    positions: int  # m
    detectable_fraction: float  # the smallest forged share of positions caught with CONFIDENCE
    escape_at_1pct: float  # the chance a forger of 1% of the positions is not sampled at all
    reported_mean_nats: float
    verified_mean_nats: float
    max_gap_nats: float  # largest verified - reported at one position


def sample_count(layout: Layout, cfg: VerifyConfig) -> int:
    """m: a share of the scored seq_len windows, whatever the declared rows; one per row at most."""
    unit = min(layout.mode.seq_len, cfg.max_unit_tokens)
    m = max(cfg.min_positions, math.ceil(cfg.cost_fraction * layout.positions / unit))
    return min(m, cfg.max_positions, layout.rows)


def sample_positions(layout: Layout, cfg: VerifyConfig, rng: np.random.Generator) -> dict[int, int]:
    """Positions to check, {row: flat position}: rows drawn with weight their scored count, then a position
    uniform over what the row scores, so each is a uniform scored position; never two in one row."""
    rows = rng.choice(
        layout.rows, size=sample_count(layout, cfg), replace=False, p=layout.scored / layout.positions
    )
    return {int(i): int(layout.start[i]) + any_position(layout, int(i), rng) for i in sorted(rows)}


def detectable_fraction(m: int, confidence: float = CONFIDENCE) -> float:
    """The forged share q with 1 - (1 - q)^m = confidence."""
    return 1.0 - (1.0 - confidence) ** (1.0 / m) if m else 1.0


def splice(stream: np.ndarray, row: np.ndarray, t: int, flat: int, rng) -> np.ndarray:
    """`row` kept up to its position t (validation token `flat`), then other real validation text: the same
    length, another continuation, whose first token is not the true next one (when one is found)."""
    out = row.copy()
    tail = row.size - 1 - t
    if tail:
        for _ in range(SPLICE_TRIES):
            src = int(rng.integers(0, stream.size - tail))
            if stream[src] != stream[flat + 1] and abs(src - (flat + 1)) > row.size:
                break
        out[t + 1 :] = stream[src : src + tail]
    return out


def requests(layout: Layout, probes: dict[int, int], rng: np.random.Generator) -> list[list[int]]:
    """The verifier's requests: the probed rows in requests of the sizes the scorer's take, no two rows of
    one request closer than `reach`, each topped up with unprobed rows of the same length."""
    sizes, probed = layout.batch_sizes(), np.array(sorted(probes), dtype=np.int64)
    out = []
    for n, ids in layout.groups().items():
        hit = np.isin(ids, probed)
        pending = [int(i) for i in rng.permutation(ids[hit])]
        fillers, spare = iter(int(i) for i in rng.permutation(ids[~hit])), []
        while pending:
            size, batch, rest = int(rng.choice(sizes[n])), [], []
            for i in pending:
                fits = len(batch) < size and all(abs(i - j) >= layout.reach for j in batch)
                (batch if fits else rest).append(i)
            pending, kept = rest, []
            for i in spare:
                fits = len(batch) < size and all(abs(i - j) >= layout.reach for j in batch)
                (batch if fits else kept).append(i)
            while len(batch) < size and (i := next(fillers, None)) is not None:
                (batch if all(abs(i - j) >= layout.reach for j in batch) else kept).append(i)
            spare = kept
            out.append(batch)
    return [out[j] for j in rng.permutation(len(out))]


def cross_check(
    session: Session, layout: Layout, stream: np.ndarray, scored: ScoreOutcome, cfg: VerifyConfig, rng
) -> tuple[ScoreOutcome, Verification]:
    """Windows and sliding: score the checked positions in this fresh worker and compare (Verdict if not)."""
    probes = open_check(session, layout, scored)
    verified: dict[int, float] = {}
    for rows in requests(layout, probes, rng):
        block = np.stack([row_for(stream, layout, i, probes, rng) for i in rows])
        _, _, at_checked = ask(
            session, block, layout, rows, [position_for(layout, i, probes, rng) for i in rows]
        )
        verified |= {
            probes[i]: true_nll(stream, probes[i], at_checked[r]) for r, i in enumerate(rows) if i in probes
        }
    session.send("bye")
    return scored, judge(scored.reported, verified, cfg)


def open_check(session: Session, layout: Layout, scored: ScoreOutcome) -> dict[int, int]:
    """The fresh worker must declare the mode the scorer did; returns the checked positions, by row."""
    mode = session.hello()
    if mode != layout.mode:
        raise Verdict(Status.violation, f"the model declared {mode} when verified, {layout.mode} when scored")
    return {layout.row_of(p): p for p in scored.reported}


def position_for(layout: Layout, i: int, probes: dict[int, int], rng) -> int:
    """The second position asked of row i: its probe if it is checked, else one drawn as the scorer draws."""
    return probes[i] - int(layout.start[i]) if i in probes else any_position(layout, i, rng)


def true_nll(stream: np.ndarray, flat: int, logits: np.ndarray) -> float:
    """The NLL of the true next token at `flat`, from the fresh worker's raw logits there."""
    return float(nll_from_logits(logits[None], np.array([stream[flat + 1]]))[0])


def row_for(stream: np.ndarray, layout: Layout, i: int, probes: dict[int, int], rng) -> np.ndarray:
    """Row i's inputs: spliced after its checked position when it is probed, else as they are."""
    row = stream[layout.start[i] : layout.end[i]].astype(np.int64)
    if i not in probes:
        return row
    return splice(stream, row, probes[i] - int(layout.start[i]), probes[i], rng)


def judge(reported: dict[int, float], verified: dict[int, float], cfg: VerifyConfig) -> Verification:
    """Compare what the scorer reported with what the fresh process gives, position by position."""
    positions = sorted(reported)
    rep = np.array([reported[p] for p in positions])
    ver = np.array([verified[p] for p in positions])
    if not np.isfinite(ver).all():
        raise Verdict(Status.violation, "verification failed: non-finite logits when the score was verified")
    gaps = ver - rep
    worst = int(np.argmax(gaps)) if gaps.size else 0
    m = len(positions)
    found = Verification(
        positions=m,
        detectable_fraction=detectable_fraction(m),
        escape_at_1pct=(1.0 - FORGER_SHARE) ** m,
        reported_mean_nats=float(rep.mean()) if m else 0.0,
        verified_mean_nats=float(ver.mean()) if m else 0.0,
        max_gap_nats=float(gaps[worst]) if m else 0.0,
    )
    evidence = (
        f"on {m} checked positions the scoring process reported {found.reported_mean_nats:.4f} "
        f"nats/token, a fresh process that could not see the continuations gives {found.verified_mean_nats:.4f}"
    )
    if m and gaps[worst] > cfg.tolerance_nats:
        raise Verdict(
            Status.violation,
            f"unverifiable score: at validation token {positions[worst]} the scoring process reported NLL "
            f"{rep[worst]:.4f}, the fresh process {ver[worst]:.4f} ({evidence})",
        )
    if m and gaps.mean() > cfg.bias_nats:
        raise Verdict(
            Status.violation,
            f"unverifiable score: systematically better while scored than when verified, by "
            f"{gaps.mean():.4f} nats/token on average ({evidence})",
        )
    return found
