"""The commands of the trainer contract: `check FILE`, and `init DIR --trainer PATH` (called by cli.py's init).

Thin like the rest of the CLI: parse, call agent/trainer/check.py or agent/trainer/trainer_import.py, print one line per
point. `check` exits 1 when a point is missed, so a script (or `adopt`) can act on it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agentgolf.agent.cli.args import at_least, positive
from agentgolf.errors import AgentgolfError

EXIT_MISSED = 1


def add_commands(sub) -> None:
    p = sub.add_parser("check", help="does a trainer keep the trainer contract? (docs/trainer-contract.md)")
    p.add_argument("trainer", type=Path)
    p.add_argument("--static", action="store_true", help="read the source only; do not run it")
    p.add_argument("--time-budget", type=positive, help="training seconds of the check run (default: 20)")
    p.add_argument("--json", action="store_true", help="print the points (and the run's result) as JSON")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "adopt", help="the workspace's LLM ports a trainer to the contract; check judges each try"
    )
    p.add_argument("trainer", type=Path)
    p.add_argument("--out", type=Path, help="where the port goes (default: TRAINER_adopted.py beside it)")
    p.add_argument("--tries", type=at_least(1), default=3, help="replies of the LLM at most (default: 3)")
    p.add_argument("--model", help="LLM model (default: config llm.model)")
    p.add_argument("--base-url", help="an OpenAI-compatible endpoint (default: config llm.base_url)")
    p.add_argument("--time-budget", type=positive, help="training seconds of each check run (default: 20)")
    p.set_defaults(func=cmd_adopt)


def cmd_check(args: argparse.Namespace) -> int:
    from agentgolf.agent.cli.main import err, out
    from agentgolf.agent.trainer.check import check_trainer
    from agentgolf.agent.workspace import find_workspace

    try:
        ws = find_workspace()
    except AgentgolfError:
        ws = None  # static checks only, said in the report
    say = (
        (lambda line: err.print(line, markup=False))
        if args.json
        else (lambda line: out.print(line, markup=False))
    )
    report = check_trainer(args.trainer, ws, run=not args.static, seconds=args.time_budget, say=say)
    if args.json:
        print(json.dumps(report.model_dump(mode="json") | {"passed": not report.missed}, indent=2))
    else:
        for point in report.points:
            out.print(point.line(), markup=False)
        out.print(report.summary(), markup=False)
    return EXIT_MISSED if report.missed else 0


def cmd_adopt(args: argparse.Namespace) -> int:
    from agentgolf.agent.cli.main import out
    from agentgolf.agent.trainer.adopt import adopt
    from agentgolf.agent.workspace import find_workspace

    ws = find_workspace()
    changes = {k: v for k, v in (("model", args.model), ("base_url", args.base_url)) if v}
    llm = ws.config.llm.model_copy(update=changes)
    say = lambda line: out.print(line, markup=False)  # noqa: E731
    done = adopt(args.trainer, ws, llm, tries=args.tries, out=args.out, seconds=args.time_budget, say=say)
    for point in done.report.points:
        say(point.line())
    say(
        f"adopted: {done.out} keeps the contract ({done.tries} tries); review it, then `agentgolf init DIR --trainer {done.out}`"
    )
    return 0


def cmd_init_trainer(args: argparse.Namespace) -> int:
    from agentgolf.agent.cli.main import out
    from agentgolf.agent.trainer.trainer_import import init_with_trainer

    ws, report = init_with_trainer(
        args.dir, args.trainer, demo=args.demo, say=lambda s: out.print(s, markup=False)
    )
    out.print(report.summary(), markup=False)
    out.print(
        f"workspace ready at {ws.root}, its baseline {args.trainer.name} (committed as {ws.config.trainer})"
    )
    if not report.ran:
        out.print(
            "next: put the data in place, then `agentgolf check train_gpt.py` and `agentgolf run --budget N`"
        )
    return 0
