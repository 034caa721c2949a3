"""Stream mode (score-first test-time training): predict a chunk, have it scored, only then reveal it.

The harness feeds the validation stream in order, one chunk (`stride` targets, up to `context` tokens of left
context) per request. For each chunk the model first predicts (the same "nll" request as every other mode);
the harness scores it; only then is the chunk, with its document starts, sent to the model's
`adapt(tokens, doc_starts)`. So every target is scored once, left to right, by a model that has trained
only on tokens already graded: legal by construction (the challenge's rule on test-time training).

A model that keeps state cannot be re-scored by a fresh process without replaying the whole stream, so the
checks here run inside the stream, and are best effort: at secret random chunks the harness makes a second
predict call, identical in shape, whose tokens after a random position come from other real text, in random
order before or after the real call. Predicting must be pure (no state change between the two calls: the
NLLs before the splice must match) and causal (the prediction at the splice must match). A model that adapts
inside `forward_logits` on the tokens it is asked to predict fails the first; one that peeks fails the
second. A model that peeks on first sight and memoizes its answers per prefix can pass both: see the README.
"""

from __future__ import annotations

import numpy as np

from agentgolf.baseline.shards import BOS_ID
from agentgolf.sandbox.layout import Layout, row_inputs
from agentgolf.sandbox.result import Status
from agentgolf.sandbox.score import Session, Verdict, nll_from_logits
from agentgolf.sandbox.verify import splice


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    top = z.max(axis=-1, keepdims=True)
    return z - (top + np.log(np.exp(z - top).sum(axis=-1, keepdims=True)))


def score_chunks(
    session: Session, stream: np.ndarray, layout: Layout, rng, probe_fraction: float, tolerance: float
) -> tuple[float, int]:
    """Drive the stream; returns (summed NLL of every scored position, probes made). Violations raise."""
    nll_sum, probes = 0.0, 0
    for (i,) in layout.batches():
        block = row_inputs(stream, layout, [i])
        last = block.shape[1] - 1
        t = int(rng.integers(max(1, last)))  # a second position asked for, in every call alike
        inner, logits = _predict(session, block, last, t)
        if rng.random() < probe_fraction and last >= 1:
            probes += 1
            spliced = splice(stream, block[0], t, layout.start[i] + t, layout.positions, rng)
            first_real = rng.random() < 0.5
            if first_real:
                other = _predict(session, spliced[None], last, t)
            else:  # the probe first, then the real call again: a state change shows either way
                other = (inner, logits)
                inner, logits = _predict(session, block, last, t)
            _compare(inner, logits, other, t, tolerance, layout.start[i])
        target = stream[layout.end[i]]
        ends = nll_from_logits(logits[:1], np.array([target]))
        nll = np.concatenate([inner[0], ends])
        scored = nll[nll.size - layout.scored[i] :]
        if not np.isfinite(scored).all():
            raise Verdict(
                Status.nan, f"non-finite NLL in the chunk ending at validation token {layout.end[i]}"
            )
        if scored.min() < -1e-6:
            raise Verdict(Status.violation, f"negative NLL {scored.min():.3g}: not a normalized distribution")
        nll_sum += float(scored.sum())
        revealed = stream[layout.start[i] : layout.end[i] + 1][None].astype(np.int64)
        session.send("adapt", revealed, doc_starts=[int(k) for k in np.flatnonzero(revealed[0] == BOS_ID)])
        session.receive("adapted", max_payload=0)
    return nll_sum, probes


def _predict(session: Session, block: np.ndarray, last: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    return session.nll(block, at=[(0, last), (0, t)])


def _compare(inner, logits, other, t: int, tolerance: float, row_start: int) -> None:
    o_inner, o_logits = other
    if t > 0:
        gap = float(np.max(np.abs(inner[0, :t] - o_inner[0, :t])))
        if not gap <= tolerance:
            raise Verdict(
                Status.violation,
                f"predicting changed the model: the same tokens before validation token {row_start + t} gave "
                f"NLLs {gap:.3g} nats apart in two predict calls (adapting before the chunk was scored?)",
            )
    gap = float(np.max(np.abs(_log_softmax(logits[1:2]) - _log_softmax(o_logits[1:2]))))
    if not gap <= tolerance:
        raise Verdict(
            Status.violation,
            f"non-causal prediction: at validation token {row_start + t} the prediction moved by {gap:.3g} "
            "nats when only the tokens after it changed",
        )
