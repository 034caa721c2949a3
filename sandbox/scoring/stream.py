"""Stream mode (score-first test-time training): predict a chunk, have it scored, only then reveal it.

The harness feeds the validation stream in order, one chunk (`stride` targets, up to `context` tokens of left
context) per request. For each chunk the model first predicts (the same "nll" request as every other mode);
the harness scores it; only then is the chunk, with its document starts, sent to the model's
`adapt(tokens, doc_starts)`. So every target is scored once, left to right, by a model that has trained
only on tokens already graded: legal by construction (the challenge's rule on test-time training).

A model that keeps state is verified by a replay: a fresh worker, which could not see what the scorer saw,
is sent the same stream in the same order, with the same requests, and adapts on each true chunk after
predicting it, as the scorer did. At m secret chunks (sandbox/scoring/verify.py: `sample_positions`) it is asked to
predict only a spliced copy, the tokens after the checked position taken from other real text, never the real
chunk; the harness compares the NLL of the true next token there with what the scorer reported. A model that
peeks (on first sight, with a memo, or by adapting inside `forward_logits` on what it is asked to predict)
predicts the spliced token in the replay and is caught; an honest one gives the same numbers. The replay
stops after the last checked chunk, so it costs up to one more pass of the stream.
"""

from __future__ import annotations

import numpy as np

from agentgolf.baseline.shards import BOS_ID
from agentgolf.sandbox.scoring.layout import Layout, row_inputs
from agentgolf.sandbox.scoring.score import (
    ScoreOutcome,
    Session,
    any_position,
    ask,
    row_nll,
)
from agentgolf.sandbox.scoring.verify import (
    Verification,
    VerifyConfig,
    judge,
    open_check,
    position_for,
    row_for,
    true_nll,
)


def score_chunks(
    session: Session, layout: Layout, stream: np.ndarray, keep: dict[int, int], rng: np.random.Generator
) -> tuple[float, dict[int, float]]:
    """The scorer's pass: returns (summed NLL of every scored position, the reported NLL at the positions
    `keep` names, by row). Violations raise."""
    nll_sum, reported = 0.0, {}
    for (i,) in layout.batches(rng):
        i = int(i)
        block = row_inputs(stream, layout, [i])
        t = any_position(layout, i, rng)
        inner, ends, at_checked = ask(session, block, layout, [i], [t])
        scored = row_nll(stream, layout, i, inner[0], ends[0], at_checked[0], t)
        nll_sum += float(scored.sum())
        if i in keep:
            reported[keep[i]] = float(scored[keep[i] - (int(layout.end[i]) - scored.size)])
        _reveal(session, stream, layout, i)
    return nll_sum, reported


def replay(
    session: Session, layout: Layout, stream: np.ndarray, scored: ScoreOutcome, cfg: VerifyConfig, rng
) -> tuple[ScoreOutcome, Verification]:
    """The verifier's pass: the same stream, spliced at the checked chunks, up to the last of them."""
    probes = open_check(session, layout, scored)
    verified: dict[int, float] = {}
    for i in range(max(probes, default=-1) + 1):
        block = row_for(stream, layout, i, probes, rng)[None]
        _, _, at_checked = ask(session, block, layout, [i], [position_for(layout, i, probes, rng)])
        if i in probes:
            verified[probes[i]] = true_nll(stream, probes[i], at_checked[0])
        _reveal(session, stream, layout, i)
    return scored, judge(scored.reported, verified, cfg)


def _reveal(session: Session, stream: np.ndarray, layout: Layout, i: int) -> None:
    """Chunk i, with the target after it, once it has been scored: the model may now learn from it."""
    revealed = stream[layout.start[i] : layout.end[i] + 1][None].astype(np.int64)
    session.adapt(revealed, [int(k) for k in np.flatnonzero(revealed[0] == BOS_ID)])
