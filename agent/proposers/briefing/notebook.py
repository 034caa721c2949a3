"""The proposer's lab notebook: short lines a session writes with `note_to_self`, read by every later one.

A session learns things that a ledger row does not hold ("the warmdown outlasts the budget at this step
time"); a peer loop forgets them between proposals. They are kept in the ledger (its `notebook` table,
per run, so `--resume` finds them), shown in every later prompt of the run within a fixed size (the
newest kept first), and printed by `agentgolf note --agent`.
"""

from __future__ import annotations

from agentgolf.experiments.ledger import NotebookEntry

NOTE_CHARS = 300  # one line: a finding, not an essay
NOTEBOOK_CHARS = 2_000  # all of them in a prompt; the oldest give way first
NOTES_PER_SESSION = 3  # lines one session may add


def clean(text: str) -> str:
    """One line, bounded; '' when there is nothing to keep."""
    return " ".join(str(text).split())[:NOTE_CHARS]


def notebook_block(entries: list[NotebookEntry], max_chars: int = NOTEBOOK_CHARS) -> str:
    """The notebook for a prompt, oldest first, with the newest kept when they do not all fit."""
    lines: list[str] = []
    used = 0
    for e in reversed(entries):
        where = f" (on exp {e.experiment_id})" if e.experiment_id is not None else ""
        text = f"- {e.text}{where}"
        if used + len(text) + 1 > max_chars:
            lines.append(f"- ... and {len(entries) - len(lines)} older line(s) not shown")
            break
        lines.append(text)
        used += len(text) + 1
    return "\n".join(reversed(lines))
