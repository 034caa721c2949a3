"""Steering notes: what the person running agentgolf tells every later proposal, until they remove it.

`agentgolf note "try shorter warmdown"` appends a note to `.agentgolf/notes.json`; each proposal prepared
from then on carries every note in its prompt (newest last, within a fixed size), whichever proposer makes
it; `agentgolf note --clear` removes them all, `--remove ID` one. The file is replaced atomically, so a
run reading it mid-write sees the old notes or the new ones, never half of them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from agentgolf.errors import AgentgolfError

NOTES_FILE = "notes.json"
NOTE_CHARS = 1_000  # one note
NOTES_MAX_CHARS = 2_000  # all of them in a prompt; the oldest give way first


class Note(BaseModel):
    id: int
    text: str = Field(min_length=1, max_length=NOTE_CHARS)
    added_at: float


def notes_path(state: Path) -> Path:
    return state / NOTES_FILE


def read_notes(state: Path) -> list[Note]:
    path = notes_path(state)
    try:
        data = json.loads(path.read_text())
        return [Note.model_validate(item) for item in data]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, ValidationError) as exc:
        raise AgentgolfError(
            f"the notes file {path} is unreadable ({type(exc).__name__}); remove it"
        ) from exc


def _write(state: Path, notes: list[Note]) -> None:
    path = notes_path(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{NOTES_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps([n.model_dump() for n in notes], indent=1) + "\n")
    tmp.replace(path)


def add_note(state: Path, text: str) -> Note:
    text = " ".join(text.split())
    if not text:
        raise AgentgolfError('a note needs some text: agentgolf note "what every later proposal should know"')
    if len(text) > NOTE_CHARS:
        raise AgentgolfError(f"a note is at most {NOTE_CHARS} characters ({len(text)} given)")
    notes = read_notes(state)
    note = Note(id=max((n.id for n in notes), default=0) + 1, text=text, added_at=time.time())
    _write(state, [*notes, note])
    return note


def remove_notes(state: Path, note_id: int | None = None) -> list[Note]:
    """Remove one note (by id) or, without an id, all of them; returns what was removed."""
    notes = read_notes(state)
    gone = [n for n in notes if note_id is None or n.id == note_id]
    if note_id is not None and not gone:
        raise AgentgolfError(f"no note {note_id}; `agentgolf note` lists them")
    _write(state, [n for n in notes if n not in gone])
    return gone


def notes_block(notes: list[Note], max_chars: int = NOTES_MAX_CHARS) -> str:
    """The notes for a prompt, one line each, newest kept when they do not all fit."""
    lines: list[str] = []
    room = max_chars
    for note in reversed(notes):
        text = f"- {note.text}"
        if len(text) + 1 > room:
            break
        lines.insert(0, text)
        room -= len(text) + 1
    return "\n".join(lines)


def agent_notebook(state: Path, run_id: str | None = None) -> list[str]:
    """The proposer's lab notebook (`note_to_self`, kept in the ledger), one line each, for
    `agentgolf note --agent`: the latest run's unless one is named."""
    from agentgolf.experiments.ledger import Ledger

    ledger = Ledger(state / "ledger.db", create=True)
    try:
        run = ledger.find_run(run_id) if run_id else ledger.latest_run()
        entries = ledger.notebook(run.id if run else None)
    finally:
        ledger.close()
    return [f"{e.id}: {e.text} (exp {e.experiment_id}, {e.author})" for e in entries]
