"""The memory a proposer reads: a compact digest of the ledger that stays under a fixed size.

What is kept, in order of priority: the current best chain (what the parent is made of), the most
recent results, and the negative results worth remembering (largest regressions and every failure
class), one line each. Whatever does not fit is summarized as counts, so a ledger of 1,000 or 100,000
experiments yields a digest of the same bounded size.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from pydantic import BaseModel, Field

from agentgolf.agent.judge.deltas import Score, Scores
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
    outline_over_lines: int = Field(
        1_500,
        ge=0,
        description="a trainer longer than this many lines is sent as an outline the model views parts "
        "of (0: always whole)",
    )


def line(
    e: Experiment,
    why: Why | None = None,
    score: Score | None = None,
    label: str = "",
    reference: float | None = None,
) -> str:
    """One experiment in a line: its rung, its score, and why it came out so (`why` reads its run folder).
    With its `score` (deltas.py): the mean of its runs and its Δ vs parent; else the ledger row's own figures.
    `label` names its rung ("screen 20 s"); `reference`, the parent's mean on that rung, which a screened
    row's Δ is measured against (its parent's full-budget score is another number)."""
    bpb = f"val_bpb {e.val_bpb:.4f}" if e.val_bpb is not None else "no score"
    delta = f", {e.delta_bpb:+.4f} vs parent" if e.delta_bpb is not None else ""
    if score is not None and score.bpb is not None:
        bpb = f"val_bpb {score.bpb:.4f}" + (f" (mean of {score.runs} runs)" if score.runs > 1 else "")
        pairs = f" ({score.rounds} pair{'s' * (score.rounds != 1)})" if score.rounds else ""
        delta = f", {score.delta:+.4f} vs parent{pairs}" if score.delta is not None else ""
    if e.rung and reference is not None and delta:
        delta = delta.replace(" vs parent", f" vs the parent's {e.rung} {reference:.4f}")
    cat = f"[{e.category}] " if e.category else ""
    rung = f"[{label}] " if label else ""
    steps = f", {trained(e)}" if e.steps is not None else ""
    return f"- exp {e.id} {rung}{cat}{e.title}: {bpb}{delta}{steps}; {why(e) if why else verdict(e)}"


FULL_RUN = re.compile(r"full budget as experiment (\d+)")


def evidence_words(decision: dict) -> str:
    """What a stored decision rests on, in a few words: "2 pairs, p = 0.014"."""
    if not decision or decision.get("runs") is None:
        return ""
    unit = "pair" if decision.get("design") == "paired" else "run"
    n = decision["runs"]
    p = decision.get("p_value")
    return f"{n} {unit}{'s' * (n != 1)}" + (f", p = {p:.2g}" if p is not None else "")


def verdict(e: Experiment) -> str:
    """What happened to the row, in the judge's words: promoted (kept), passed the screen and sent on to a
    full run, measuring again, inconclusive, dead end, or the failure; never "reverted" for a screen."""
    reason = e.reason[:REASON_CHARS]
    decided = (e.decision or {}).get("decision")
    ev = evidence_words(e.decision)
    said = f" ({ev})" if ev else ""
    if e.kind == "baseline":
        return "the baseline" + (f" ({reason})" if reason else "")
    if e.kept:
        return f"kept ({reason})" if reason else "kept"
    if e.status == "running":
        return "training now, not decided yet"
    if e.rung:
        if full := FULL_RUN.search(e.reason):
            return f"passed the screen → full run #{full.group(1)}"
        if e.status == "confirming" or decided == "confirm":
            return f"looks better on the screen: measuring again{said}"
        if decided == "dead_end":
            return f"dead end on the screen{said}"
        if decided == "inconclusive" or e.status == "inconclusive":
            return f"inconclusive on the screen: {ev or reason}"
        if decided == "promote":
            return f"passed the screen, not sent on: {reason}"
    if e.status == "confirming" or decided == "confirm":
        return f"looks better: measuring again{said}"
    if e.status == "inconclusive" or decided == "inconclusive":
        return f"inconclusive: {ev or reason}"
    if decided == "dead_end":
        return f"dead end{said}"
    if decided == "promote":
        return f"won{said}, not kept: {reason}"
    if e.status == "ok":
        return f"reverted: {reason}" if reason else "reverted (not better than its parent)"
    return f"{e.status}: {reason}" if reason else str(e.status)


def build_digest(
    history: list[Experiment],
    parent: Experiment | None,
    cfg: DigestConfig | None = None,
    why: Why | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """The digest; `labels` names each rung ("" the full budget: rules.rung_labels), shown on every line
    when the run has more than one rung."""
    cfg = cfg or DigestConfig()
    why = _with_steps_flags(why, pair_flags(history))
    max_chars = cfg.max_chars
    proposals = [e for e in history if e.kind in ("baseline", "proposal")]
    by_id = {e.id: e for e in proposals}
    index = Scores(history)
    scores = {e.id: index.score(e) for e in proposals}  # means over runs, Δ vs parent (deltas.py)

    labels = labels if labels and len(labels) > 1 else {}

    def said(e: Experiment) -> str:
        reference = None
        if e.rung and (parent_row := index.parent_of(e)) is not None:
            runs = index.parent_runs(e, parent_row)
            reference = sum(r.val_bpb for r in runs) / len(runs) if runs else None
        return line(e, why, scores[e.id], labels.get(e.rung, e.rung), reference)

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
    from agentgolf.agent.proposers.briefing.retrieval import similar_attempts

    return [e for e, _ in similar_attempts(history, f"{title}\n{hypothesis}", diff_of, k, threshold)]
