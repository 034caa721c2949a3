"""The commands that steer a run from outside while it goes: `note` (what every later proposal must know),
`status` (the live run's state, `--json` for scripts and for agents that drive agentgolf) and `similar`
(the past experiments most like an idea, for a CLI agent deciding what to try).

They only parse, call and print, like `cli.py`, which registers them; the state itself is built by
`run_status.py` and the notes are kept by `notes.py`.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from agentgolf.errors import AgentgolfError

out = Console(highlight=False, soft_wrap=True)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("note", help="tell every later proposal something (no text: list the notes)")
    p.add_argument(
        "text", nargs="*", help='the note, e.g. "try shorter warmdown; the width changes are done"'
    )
    p.add_argument("--clear", action="store_true", help="remove every note")
    p.add_argument("--remove", type=int, metavar="ID", help="remove one note")
    p.add_argument(
        "--agent", action="store_true", help="show the proposer's own lab notebook (note_to_self) instead"
    )
    p.add_argument("--run", help="with --agent: the run whose notebook (default: the latest)")
    p.set_defaults(func=cmd_note)

    p = sub.add_parser(
        "similar", help="the past experiments most like an idea (BM25 over title, hypothesis, diff)"
    )
    p.add_argument("query", nargs="+", help='the idea, e.g. "lower the Muon learning rate"')
    p.add_argument("-k", type=int, default=5, help="how many (default 5)")
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser("status", help="a run's state: done, in flight, best, spend, stop reason")
    p.add_argument("run", nargs="?", help="run id (default: the live run, else the latest)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_status)


def cmd_note(args: argparse.Namespace) -> int:
    from agentgolf.agent.controller.notes import add_note, agent_notebook, read_notes, remove_notes
    from agentgolf.agent.workspace import find_workspace

    state = find_workspace().state
    if args.agent:
        if args.text or args.clear or args.remove is not None:
            raise AgentgolfError(
                "--agent only reads the proposer's notebook: it takes no text, --clear or --remove"
            )
        lines = agent_notebook(state, args.run)
        for line in lines:
            out.print(line, markup=False)
        if not lines:
            out.print("the proposer has kept no notes in this run (its note_to_self tool)")
        return 0
    if args.clear or args.remove is not None:
        gone = remove_notes(state, None if args.clear else args.remove)
        out.print(f"removed {len(gone)} note(s)")
    if args.text:
        note = add_note(state, " ".join(args.text))
        out.print(f"note {note.id} added: every proposal prepared from now on carries it")
    if not (args.text or args.clear or args.remove is not None):
        notes = read_notes(state)
        for note in notes:
            out.print(f"{note.id}: {note.text}")
        if not notes:
            out.print('no notes; add one with agentgolf note "..."')
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from agentgolf.agent.proposers.briefing.facts import outcome
    from agentgolf.agent.proposers.briefing.retrieval import search
    from agentgolf.agent.report.tables import similar_lines
    from agentgolf.agent.workspace import find_workspace

    ws = find_workspace()
    hits = search(ws.ledger().experiments(), " ".join(args.query), ws.root, k=args.k)
    size = ws.config.budget.size_bytes
    width = out.width if out.is_terminal else None  # a pipe (a CLI agent reads it): whole lines, nothing cut
    for item in similar_lines(hits, lambda e: outcome(e, ws.run_dir(e.id), size), width=width):
        out.print(item, soft_wrap=width is None)  # wrapped at the terminal's width; only a title is cut
    if not hits:
        out.print("nothing tried so far resembles it")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from agentgolf.agent.controller.run_status import live_run, run_status
    from agentgolf.agent.report.summary import pick_run
    from agentgolf.agent.report.tables import status_lines
    from agentgolf.agent.workspace import find_workspace

    ws = find_workspace()
    ledger = ws.ledger()
    run_id = args.run or live_run(ws.state) or pick_run(ledger, None).id  # the live run, else the latest
    status = run_status(ws.state, ledger, run_id)
    if args.json:
        print(json.dumps(status.model_dump(mode="json"), indent=2))
    else:
        for line in status_lines(status):
            out.print(line, markup=False)
    return 0
