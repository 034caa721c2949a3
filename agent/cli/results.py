"""The commands that take a result out of the ledger: `pick` (a kept chain's commits onto a branch),
`replay` (an experiment again, from its recorded commit, seed and settings) and `submit` (a records folder
for the challenge).

`pick` and `submit` take only the best chain's rows (kept.py): a row that was never kept, or a screen-rung
row, is refused as one line with exit code 2; `--force` takes it anyway and says so on stderr. `submit`
refuses, in the same line, whatever else keeps a row from being a challenge result (submit_checks.py). Like
`cli.py`, which registers them, they only parse, call and print.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from agentgolf.agent.cli.args import at_least

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
FORCE_HELP = "take a row that was never kept, or a screen-rung row, anyway (warns)"
BEST = "best"
ID_HELP = "an experiment id, or `best`: the latest run's best row"
SUBMIT_FORCE_HELP = (
    "submit what is not a challenge result (outside the best chain, a CPU run, demo data, another budget, "
    "too few seeds) anyway: the reasons go to stderr and into the record's README"
)


def experiment_id(text: str) -> int | str:
    """An id argument: a number, or `best` (resolve_id finds it once the ledger is open)."""
    if text.strip().lower() == BEST:
        return BEST
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an experiment id (a number, or `best`)") from None


def resolve_id(ledger, given: int | str) -> int:
    """`best` as the latest run's best row (its last promotion, summary.best); a number as it is."""
    if given != BEST:
        return int(given)
    from agentgolf.agent.report.summary import best, pick_run
    from agentgolf.errors import AgentgolfError

    run = pick_run(ledger, None)
    top = best(ledger.experiments(run_id=run.id))
    if top is None:
        raise AgentgolfError(f"run {run.id} has no best row yet (nothing kept)")
    return top.id


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pick", help="cherry-pick an experiment's chain of kept changes onto a branch")
    p.add_argument("id", type=experiment_id, help=ID_HELP)
    p.add_argument("--onto", help="target branch (default: the current branch; created if missing)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=cmd_pick)

    p = sub.add_parser("replay", help="re-run an experiment from its recorded commit, seed and settings")
    p.add_argument("id", type=experiment_id, help=ID_HELP)
    p.add_argument(
        "--seeds", type=at_least(1), default=1, help="replay with K seeds (the recorded one first)"
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("submit", help="write a records folder the challenge accepts for one experiment")
    p.add_argument("id", type=experiment_id, help=ID_HELP)
    p.add_argument("--author", required=True)
    p.add_argument("--github-id", required=True)
    p.add_argument("--name", required=True, help="the submission's name (also names the folder)")
    p.add_argument("--blurb", default="", help="one paragraph on what it does")
    p.add_argument("--baseline-bpb", type=float, help="the score to beat, for the one-sided t-test")
    p.add_argument(
        "--seeds", type=int, nargs="*", default=[], metavar="ID", help="ledger ids of more seeds of it"
    )
    p.add_argument(
        "--with-confirmations",
        action="store_true",
        help="add its confirmations and replays (a baseline's calibration seeds) on its rung as seeds",
    )
    p.add_argument("--out", type=Path, default=Path("records/track_10min_16mb"))
    p.add_argument("--size-limit", type=int, help="artifact byte limit (default: the workspace budget)")
    p.add_argument("--force", action="store_true", help=SUBMIT_FORCE_HELP)
    p.set_defaults(func=cmd_submit)


def warn_forced(ledger, exp_id: int, verb: str, force: bool) -> None:
    """Refuse (AgentgolfError, one line) a row outside the best chain, or say loudly that --force took it."""
    from agentgolf.agent.results import kept

    warning = kept.check(ledger.get(exp_id), ledger.find, verb, force)
    if warning:
        err.print(f"[bold red]{escape(warning)}[/]")


def cmd_pick(args: argparse.Namespace) -> int:
    from agentgolf.agent.results.pick import pick_experiment
    from agentgolf.agent.workspace import find_workspace

    ws = find_workspace()
    exp_id = resolve_id(ws.ledger(), args.id)
    warn_forced(ws.ledger(), exp_id, "pick", args.force)
    picked = pick_experiment(ws, exp_id, args.onto, force=args.force)
    out.print(picked.line(exp_id), markup=False)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from agentgolf.agent.controller.live import describe
    from agentgolf.agent.controller.loop import replay_experiment
    from agentgolf.agent.report.tables import replay_table
    from agentgolf.agent.workspace import find_workspace

    ws = find_workspace()
    replay = replay_experiment(ws, resolve_id(ws.ledger(), args.id), args.seeds, console=err)
    original, copies, drift = replay.original, replay.copies, replay.drift
    for item in replay_table(original, copies, width=out.width):  # wrapped at the terminal's width
        out.print(item, soft_wrap=False)
    for copy in copies:
        out.print(describe(copy), soft_wrap=False)
    said = [*replay.again, *([f"same seed: val_bpb {replay.verdict}"] if replay.verdict else [])]
    for line in [*said, replay.spread, "settings drift: " + ("; ".join(drift) if drift else "none")]:
        if line:
            out.print(line, markup=False, soft_wrap=False)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from agentgolf.agent.results.submit import submission_seeds, write_submission
    from agentgolf.agent.workspace import find_workspace

    ws = find_workspace()
    ledger = ws.ledger()
    exp_id = resolve_id(ledger, args.id)
    seeds = submission_seeds(ledger, exp_id, args.seeds, with_confirmations=args.with_confirmations)
    folder = write_submission(
        ledger,
        exp_id,
        ws.resolve(args.out),
        author=args.author,
        github_id=args.github_id,
        name=args.name,
        blurb=args.blurb,
        baseline_bpb=args.baseline_bpb,
        extra_seeds=seeds,
        size_limit=args.size_limit or ws.config.budget.size_bytes,
        force=args.force,
        warn=lambda reason: err.print(f"[bold red]WARNING: --force: {escape(reason)}[/]"),
    )
    out.print(f"submission folder: {folder}", markup=False)
    return 0
