"""The `compare` command: two experiments side by side (report/compare.py), in at most the terminal's width.

Like the other command modules, it only parses, opens what the rows point at (the ledger, the workspace's
git repository, the run folders) and prints; a bad id is one line and exit code 2, as for `show`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from agentgolf.agent.cli.results import ID_HELP, experiment_id, resolve_id

if TYPE_CHECKING:
    from agentgolf.agent.report.compare import Comparison
    from agentgolf.agent.workspace import Workspace

out = Console(highlight=False)  # wraps at the terminal's width; the diff's lines are cut to it


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="two experiments side by side: settings, scores, decision, diff and curves"
    )
    p.add_argument("a", type=experiment_id, help=ID_HELP)
    p.add_argument("b", type=experiment_id, help=ID_HELP)
    p.add_argument("--plot", type=Path, metavar="PNG", help="also draw both training curves into this file")
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON object")
    p.set_defaults(func=cmd_compare)


def load(ws: Workspace, given_a: int | str, given_b: int | str) -> Comparison:
    """The two rows (an id, or `best`), each scored among its own run, their curves and git's diff."""
    from agentgolf.agent.judge.deltas import current
    from agentgolf.agent.report import evidence
    from agentgolf.agent.report.compare import Side, compare
    from agentgolf.errors import AgentgolfError

    ledger = ws.ledger()
    a, b = (ledger.get(resolve_id(ledger, given)) for given in (given_a, given_b))
    if a.id == b.id:
        raise AgentgolfError(f"compare needs two different experiments (both are {a.id})")
    sides = []
    for e in (a, b):
        score = current(ledger.experiments(run_id=e.run_id)).get(e.id) if e.run_id else None
        sides.append(Side(exp=e, score=score, curve=evidence.curve_of(evidence.read_log(ws.run_dir(e.id)))))
    diff, note = evidence.git_diff(evidence.open_repo(ws.root), a.commit_sha, b.commit_sha)
    return compare(*sides, diff=diff, diff_note=note)


def cmd_compare(args: argparse.Namespace) -> int:
    from agentgolf.agent.report.compare import compare_lines, pair_series
    from agentgolf.agent.workspace import find_workspace

    view = load(find_workspace(), args.a, args.b)
    a, b = view.a.exp, view.b.exp
    if args.plot:
        from agentgolf.agent.report.plot import plot_curves

        plot_curves(pair_series(view), args.plot.resolve(), f"#{a.id} and #{b.id}: train loss")
    if args.json:
        print(view.model_dump_json(indent=2))
        return 0
    for item in compare_lines(view, out.width):
        out.print(item)
    if args.plot:
        out.print(f"plot: {args.plot.resolve()}", markup=False)
    return 0
