"""The memory a proposer reads: a compact digest of the ledger that stays under a fixed size.

What is kept, in order of priority: the current best chain (what the parent is made of), the most
recent results, and the negative results worth remembering (largest regressions and every failure
class), one line each. Whatever does not fit is summarized as counts, so a ledger of 1,000 or 100,000
experiments yields a digest of the same bounded size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from pydantic import BaseModel, Field

from agentgolf.agent.deltas import Score, Scores
from agentgolf.experiments.ledger import Experiment, lineage
from agentgolf.experiments.steps import pair_flags, trained

DIGEST_MAX_CHARS = 6_000  # ~1,500 tokens
REASON_CHARS = 90
SUMMARY_RESERVE = 300  # room kept for the "... and N more" line
Why = Callable[[Experiment], str]  # why a result came out as it did (facts.outcome over its run folder)


class DigestConfig(BaseModel):
    """How much of the ledger a proposer reads."""

    max_chars: int = Field(
        DIGEST_MAX_CHARS, ge=500, description="the digest's fixed size bound (~4 chars/token)"
    )
    recent: int = Field(8, ge=0, description="most recent results always shown")
    facts_max_chars: int = Field(
        2_500, ge=200, description="the fixed size of the parent's run facts (steps, time, loss, bytes, ...)"
    )
    loss_points: int = Field(6, ge=2, description="points of the parent's train-loss curve shown")


def line(e: Experiment, why: Why | None = None, score: Score | None = None) -> str:
    """One experiment in a line: its score, and why it came out so (`why` reads its run folder). With its
    `score` (deltas.py): the mean of its runs and its Δ vs parent; else the ledger row's own figures."""
    bpb = f"val_bpb {e.val_bpb:.4f}" if e.val_bpb is not None else "no score"
    delta = f", {e.delta_bpb:+.4f} vs parent" if e.delta_bpb is not None else ""
    if score is not None and score.bpb is not None:
        bpb = f"val_bpb {score.bpb:.4f}" + (f" (mean of {score.runs} runs)" if score.runs > 1 else "")
        delta = f", {score.delta:+.4f} vs parent" if score.delta is not None else ""
    cat = f"[{e.category}] " if e.category else ""
    steps = f", {trained(e)}" if e.steps is not None else ""
    return f"- exp {e.id} {cat}{e.title}: {bpb}{delta}{steps}; {why(e) if why else verdict(e)}"


def verdict(e: Experiment) -> str:
    """What the ledger row alone says: kept, reverted with the acceptance rule's reason, or the failure."""
    reason = e.reason[:REASON_CHARS]
    if e.kept:
        return f"kept ({reason})" if reason else "kept"
    if e.status == "ok":
        return f"reverted: {reason}" if reason else "reverted (not better than its parent)"
    return f"{e.status}: {reason}" if reason else str(e.status)


def build_digest(
    history: list[Experiment],
    parent: Experiment | None,
    cfg: DigestConfig | None = None,
    why: Why | None = None,
) -> str:
    cfg = cfg or DigestConfig()
    why = _with_steps_flags(why, pair_flags(history))
    max_chars = cfg.max_chars
    proposals = [e for e in history if e.kind in ("baseline", "proposal")]
    by_id = {e.id: e for e in proposals}
    index = Scores(history)
    scores = {e.id: index.score(e) for e in proposals}  # means over runs, Δ vs parent (deltas.py)

    def said(e: Experiment) -> str:
        return line(e, why, scores[e.id])

    chain = lineage(parent, by_id.get) if parent is not None else []
    sections: list[tuple[str, list[str]]] = []
    sections.append(
        ("Current best chain (baseline first; you are patching the last one)", [said(e) for e in chain])
    )
    in_chain = {e.id for e in chain}
    recent = [e for e in proposals if e.id not in in_chain][-cfg.recent :] if cfg.recent else []
    sections.append(("Most recent results", [said(e) for e in recent]))
    shown = in_chain | {e.id for e in recent}
    negatives = [e for e in proposals if e.id not in shown and not e.kept and e.kind == "proposal"]
    # The most instructive first: the biggest regressions, then failures, newest first within each.
    negatives.sort(key=lambda e: (-d if (d := scores[e.id].delta) is not None else 1.0, -e.id))
    sections.append(("Negative results to remember (do not repeat these)", []))

    room = max_chars - len(_render(sections)) - SUMMARY_RESERVE
    shown_lines = []
    for e in negatives:  # lines made only while they fit: each may read a run folder
        text = said(e)
        if len(text) + 1 > room:
            break
        shown_lines.append(text)
        room -= len(text) + 1
    dropped = negatives[len(shown_lines) :]
    if dropped:
        counts = Counter(e.category or "other" for e in dropped)
        summary = ", ".join(f"{cat} {n}" for cat, n in counts.most_common())
        shown_lines.append(
            f"- ... and {len(dropped)} older negative results not shown (by category: {summary})"
        )
    sections[2] = (sections[2][0], shown_lines)
    return _render(sections)[:max_chars]


def _with_steps_flags(why: Why | None, flags: dict[int, list[str]]) -> Why:
    """`why` (or the row's verdict), then, for a run whose steps differ from its control's by more than the
    share set (experiments/steps.py), that flag: its score may be the steps', not the change's."""

    def told(e: Experiment) -> str:
        found = flags.get(e.id)
        head = why(e) if why else verdict(e)
        return head + (f"; steps flag: {found[0]}" if found else "")

    return told


def _render(sections: list[tuple[str, list[str]]]) -> str:
    parts = []
    for title, lines in sections:
        parts.append(f"## {title}\n" + ("\n".join(lines) if lines else "- none yet"))
    return "\n\n".join(parts) + "\n"


def similar(
    history: list[Experiment],
    title: str,
    hypothesis: str = "",
    k: int = 3,
    threshold: float = 0.3,
    diff_of: Callable[[Experiment], str] | None = None,
) -> list[Experiment]:
    """Past experiments most like a new idea: BM25 over title, hypothesis (and diff), retrieval.py."""
    from agentgolf.agent.proposers.retrieval import similar_attempts

    return [e for e, _ in similar_attempts(history, f"{title}\n{hypothesis}", diff_of, k, threshold)]
