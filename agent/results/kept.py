"""Which rows may leave the ledger as a result: `pick` and `submit` take the best chain, not any row.

A row stands for a result when it was promoted (`kept`: the baseline, or a change that beat its parent and
became the run's best) or re-measures one (a replay, confirmation, seed or control of a kept row runs the
same commit), and when it trained at the full budget: a screen-rung row trained shorter than the challenge
allows. Anything else is refused with its reason, as one line; `--force` takes it anyway, and says so.
"""

from __future__ import annotations

from collections.abc import Callable

from agentgolf.errors import AgentgolfError
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import RowStatus

FORCE_HINT = "pass --force to {verb} it anyway"


def original(exp: Experiment, find: Callable[[int], Experiment | None]) -> Experiment:
    """The row `exp` measures: itself, or the row it re-measures (same commit)."""
    if exp.replay_of is None:
        return exp
    return find(exp.replay_of) or exp


def refusal(exp: Experiment, find: Callable[[int], Experiment | None]) -> str:
    """Why `exp` is not a result of the best chain; "" when it is. `find` looks a row up by id."""
    target = original(exp, find)
    rung = exp.rung or target.rung
    if rung:
        return (
            f"experiment #{exp.id} ran on the screen rung '{rung}', a shorter training than the full budget; "
            "only a full-budget row of the best chain is a result"
        )
    if not target.kept:
        what = f"#{exp.id}" if target is exp else f"#{exp.id} re-measures #{target.id}, which"
        return f"experiment {what} was never kept ({_outcome(target)}); only a promoted row is a result"
    return ""


def check(exp: Experiment, find: Callable[[int], Experiment | None], verb: str, force: bool) -> str:
    """Raise AgentgolfError with the reason (one line) unless `force`; with `force`, return the warning to
    say loudly ("" when there is nothing to say)."""
    why = refusal(exp, find)
    if why and not force:
        raise AgentgolfError(f"{why}; {FORCE_HINT.format(verb=verb)}")
    return f"WARNING: --force: {why}; {verb} it anyway" if why else ""


def _outcome(e: Experiment) -> str:
    return "status ok: a dead end" if e.status == RowStatus.ok else f"status {e.status}"
