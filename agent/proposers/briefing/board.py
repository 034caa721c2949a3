"""The preparations in flight: which proposals other sessions are making right now, and which they made.

A ledger row exists only once a slot takes a proposal, so a session started while others prepare theirs
would see nothing of them, and two sessions started together got the same prompt. The board is the
process's own record of them, keyed by workspace: the pipeline opens an entry for each preparation before
any of them builds its prompt (so each of two started together sees the other), a session's `submit`
adds its title and change, and an entry leaves the board when its proposal failed or when the ledger holds
its row (the same change, or the same title since it started).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pydantic import BaseModel

from agentgolf.experiments.ledger import Experiment


class Entry(BaseModel):
    """One preparation: its name (the pipeline's), its parent, and once submitted its title and change."""

    name: str
    parent_id: int
    started: float  # time.time()
    title: str = ""
    change: str = ""  # the changed lines, compacted (context.change_summary's form)
    fingerprint: str = ""


_LOCK = threading.Lock()
_BOARD: dict[str, dict[str, Entry]] = {}


def _key(root: Path) -> str:
    return str(Path(root).resolve())


def open_entry(root: Path, name: str, parent_id: int) -> None:
    """A preparation starts (called before its prompt is built; a second open of a name keeps the first)."""
    with _LOCK:
        _BOARD.setdefault(_key(root), {}).setdefault(
            name, Entry(name=name, parent_id=parent_id, started=time.time())
        )


def submitted(root: Path, name: str, title: str, change: str, fingerprint: str) -> None:
    with _LOCK:
        entry = _BOARD.get(_key(root), {}).get(name)
        if entry is not None:
            entry.title, entry.change, entry.fingerprint = title, change, fingerprint


def close_entry(root: Path, name: str) -> None:
    """The preparation ended without a proposal to run (it failed, or had nothing to try)."""
    with _LOCK:
        _BOARD.get(_key(root), {}).pop(name, None)


def others(root: Path, name: str, rows: list[Experiment]) -> list[Entry]:
    """Every other preparation on the board, oldest first; those the ledger now holds leave it."""
    with _LOCK:
        entries = _BOARD.get(_key(root), {})
        for gone in [e.name for e in entries.values() if registered(e, rows)]:
            entries.pop(gone)
        return sorted((e.model_copy() for e in entries.values() if e.name != name), key=lambda e: e.started)


def registered(entry: Entry, rows: list[Experiment]) -> bool:
    """The ledger holds this preparation's row: its change, or its title on a row made since it started."""
    if not entry.title:
        return False
    return any(
        e.kind == "proposal"
        and ((entry.fingerprint and e.fingerprint == entry.fingerprint) or e.title == entry.title)
        and e.created_at >= entry.started
        for e in rows
    )


def board_block(entries: list[Entry], own: str = "") -> str:
    """The preparations for a prompt: submitted ones with title and change, the others as still working."""
    if not entries:
        return ""
    now = time.time()
    lines = [f"Being prepared by other sessions right now ({len(entries)}; yours is {own or 'another'}):"]
    for e in entries:
        age = f"started {now - e.started:.0f} s ago"
        if e.title:
            lines.append(f"- {e.name} on exp {e.parent_id}, submitted: {e.title}; changes: {e.change}")
        else:
            lines.append(f"- {e.name} on exp {e.parent_id}, {age}, no title yet")
    lines.append("Make a different change from these; `refresh` shows their titles once they submit.")
    return "\n".join(lines)
