"""Whether two runs meant to be compared trained alike: the steps each trained, and a flag where they differ.

A candidate is compared with its control (a row of kind control whose paired_with lists the candidate runs it
was measured beside). If their step counts differ by more than a share, they were not given the same training,
whatever their clocks said (on a shared CPU under a wall clock the machine's load decides the steps: a null
change once looked 0.59 bpb better because its runs trained 59 and 69 steps and its comparison 28 to 33), and
the difference in their scores may be the steps', not the change's. The flag says so wherever the rows are
shown: `agentgolf ledger` (from the rows listed), and `agentgolf show`, the report and the proposer's digest
(from the row's manifest, where `flag_steps` writes it when the second run of a pair is recorded).
"""

from __future__ import annotations

from agentgolf.experiments.ledger import Experiment, Ledger
from agentgolf.experiments.status import Kind

STEPS_SHARE = 0.10
"""The default share of the larger step count by which a candidate and its control may differ unflagged."""
MANIFEST_KEY = "steps_check"  # the row's flags against its partners, one line each ([] when alike)


def partners(rows: list[Experiment], e: Experiment) -> list[Experiment]:
    """The runs `e` is compared with, among `rows`: a control's candidates, a candidate's controls."""
    if e.kind == Kind.control:
        return [r for r in rows if r.id in e.paired_with]
    return [r for r in rows if r.kind == Kind.control and e.id in r.paired_with]


def steps_flag(run: Experiment, other: Experiment, share: float = STEPS_SHARE) -> str | None:
    """A line when `run` and `other` (its control or its candidate) trained step counts more than `share` of
    the larger apart; None when they are alike or either count is unknown."""
    if not run.steps or not other.steps:
        return None
    apart = abs(run.steps - other.steps) / max(run.steps, other.steps)
    if apart <= share:
        return None
    role = "its candidate" if other.kind != Kind.control else "its control"
    return (
        f"{run.steps:,} steps vs {other.steps:,} in #{other.id} ({role}): {apart:.0%} apart, more than "
        f"{share:.0%}; the steps, not the change, may decide their difference"
    )


def pair_flags(rows: list[Experiment], share: float = STEPS_SHARE) -> dict[int, list[str]]:
    """Each listed row's flags against its partners among `rows` (rows without a flag are left out)."""
    flags: dict[int, list[str]] = {}
    for e in rows:
        found = [f for p in partners(rows, e) if (f := steps_flag(e, p, share)) is not None]
        if found:
            flags[e.id] = found
    return flags


def flag_steps(ledger: Ledger, row: Experiment, share: float = STEPS_SHARE) -> Experiment:
    """Record (in the manifest, MANIFEST_KEY) the flags of a row just scored and of its partners, whose pair it
    may complete; returns the row as it now is."""
    rows = ledger.experiments(run_id=row.run_id)
    rows = [row if r.id == row.id else r for r in rows]
    for e in [row, *partners(rows, row)]:
        found = [f for p in partners(rows, e) if (f := steps_flag(e, p, share)) is not None]
        if found or MANIFEST_KEY in e.manifest:
            ledger.update(e.id, manifest={**ledger.get(e.id).manifest, MANIFEST_KEY: found})
    return ledger.get(row.id)


def trained(e: Experiment) -> str:
    """What a row trained, in a phrase: "412 steps, 14.6 ms/step" ('' when its log gave no steps)."""
    if e.steps is None:
        return ""
    return f"{e.steps:,} steps" + (f", {e.step_ms:.1f} ms/step" if e.step_ms is not None else "")


def recorded_flags(e: Experiment) -> list[str]:
    """The steps flags recorded on a row (`flag_steps`)."""
    found = e.manifest.get(MANIFEST_KEY) or []
    return [str(f) for f in found] if isinstance(found, list) else []
