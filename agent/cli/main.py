"""The `agentgolf` command: thin wrappers that parse arguments, call one module each, and print.

Every failure the user can fix ends as one line on stderr and exit code 2, before anything trains where it
can be known then; a run that stops on a failure (not its budget, a cap, Ctrl-C or `cancel`) exits 1, its
last line saying why; Ctrl-C exits 130. Anything else is our bug: one line and the path of a log file with
the traceback (AGENTGOLF_DEBUG=1 re-raises it).
The commands that take a result out of the ledger (pick, replay, submit) are in cli_results.py, the ones
that steer a live run (note, similar, status) in cli_steering.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from agentgolf.agent.cli.args import BadArguments, OneLineParser, at_least, positive, track_backends
from agentgolf.agent.cli.compare import add_commands as add_compare_commands
from agentgolf.agent.cli.contract import add_commands as add_contract_commands
from agentgolf.agent.cli.results import ID_HELP, experiment_id, resolve_id
from agentgolf.agent.cli.results import add_commands as add_result_commands
from agentgolf.agent.cli.steering import add_commands as add_steering_commands
from agentgolf.agent.trainer.data_gate import add_check_command as add_data_check
from agentgolf.errors import AgentgolfError, first_line

EXIT_FAILED = 1  # a run that started and stopped on a failure (its proposer, its baseline)
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except BadArguments as exc:  # argparse's own complaint, as one line like every other error
        return fail(str(exc))
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        err.print("interrupted; the ledger keeps everything recorded so far")
        return EXIT_INTERRUPTED
    except AgentgolfError as exc:
        return fail(str(exc))
    except Exception as exc:  # a bug, not the user's doing: one line here, the traceback in a file
        if os.environ.get("AGENTGOLF_DEBUG"):
            raise
        return fail(f"unexpected {type(exc).__name__}: {first_line(exc)} (traceback in {crash_log(exc)})")


def crash_log(exc: BaseException) -> Path:
    """Write the traceback of an unexpected error where the user can find it and send it to us."""
    folder = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "agentgolf"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text(f"agentgolf {' '.join(sys.argv[1:])}\n\n" + "".join(traceback.format_exception(exc)))
    return path


def fail(message: str) -> int:
    err.print(f"[red]error:[/] {escape(message)}", markup=True)
    return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="agentgolf",
        description="An autonomous, sandboxed experiment loop for OpenAI's Parameter Golf challenge.",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("init", help="create a workspace with the baseline trainer (and demo data)")
    p.add_argument("dir", nargs="?", default=".", type=Path)
    p.add_argument("--demo", action="store_true", help="build a small offline corpus and CPU settings")
    p.add_argument(
        "--trainer", type=Path, help="your own trainer (a file or a records folder) as the baseline"
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("run", help="run N experiments: the baseline, then proposals")
    p.add_argument(
        "--budget", type=int, help="number of experiments, baseline included (a --resume keeps the run's own)"
    )
    p.add_argument("--max-gpu-hours", type=positive, help="stop when the run has used this many device hours")
    p.add_argument("--max-usd", type=positive, help="stop when the proposer has spent this many LLM dollars")
    p.add_argument(
        "--resume", nargs="?", const="latest", metavar="RUN", help="continue a run (default: the latest)"
    )
    p.add_argument(
        "--gpus-per-experiment",
        type=at_least(1),
        help="split the configured GPUs into slots of K (SLURM: per job)",
    )
    p.add_argument("--executor", choices=("local", "slurm"), help="where experiments run (default: config)")
    p.add_argument("--partition", help="SLURM partition")
    p.add_argument("--max-concurrent", type=at_least(1), help="SLURM: experiments in flight at once")
    p.add_argument("--time-budget", type=positive, help="training seconds per experiment (default: config)")
    p.add_argument(
        "--size-budget", type=at_least(1), help="artifact byte limit (default: config, 16,000,000)"
    )
    p.add_argument("--proposer", default=None, help="search (offline, default), openai or command")
    p.add_argument("--model", help="openai proposer: model name (default: config llm.model)")
    p.add_argument(
        "--base-url", help="openai proposer: an OpenAI-compatible endpoint, e.g. http://host:8000/v1"
    )
    p.add_argument("--agent-cmd", help="command proposer: shell command of an external coding agent")
    p.add_argument("--agent", choices=("codex", "claude", "aider"), help="command proposer: a preset")
    p.add_argument(
        "--allow-dirty",
        action="store_true",
        help="start although the trainer has uncommitted edits (the run uses the commit, without them)",
    )
    p.add_argument(
        "--allow-data-warnings",
        action="store_true",
        help="start although the data check failed (each experiment's manifest records it)",
    )
    p.add_argument(
        "--track", type=track_backends, metavar="LIST", help="curves to tensorboard,wandb (offline) or none"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("cancel", help="cancel a run's experiments in flight (SLURM jobs or local phases)")
    p.add_argument("run", nargs="?", help="run id (default: the latest)")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("ledger", help="list experiments")
    p.add_argument("--run", help="only this run")
    p.add_argument("--status", help="only this status (ok, crash, rejected, interrupted, ...)")
    p.add_argument("--category", help="only this category (opt, arch, quant, ...)")
    p.add_argument("--better-than", type=float, metavar="BPB", help="only val_bpb below this")
    p.add_argument("--sort", default="id", choices=("id", "val_bpb", "delta", "recent"), help="%(choices)s")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument(
        "--tsv",
        action="store_true",
        help="autoresearch's results.tsv columns (commit, val_bpb, memory_gb, status, description), then id, "
        "rung and steps",
    )
    p.set_defaults(func=cmd_ledger)

    p = sub.add_parser("show", help="one experiment: hypothesis, diff, metrics, log tail")
    p.add_argument("id", type=experiment_id, help=ID_HELP)
    p.add_argument("--manifest", action="store_true", help="print its raw manifest too, last")
    p.set_defaults(func=cmd_show)

    add_result_commands(sub)  # pick, replay, submit
    add_compare_commands(sub)

    p = sub.add_parser("sandbox", help="train and score one trainer file under the sandbox")
    p.add_argument("trainer", type=Path)
    p.add_argument("--time-budget", type=positive, help="training seconds (default: config)")
    p.add_argument("--size-budget", type=at_least(1), help="artifact byte limit (default: config)")
    p.add_argument("--self-reported", action="store_true", help="for trainers the harness cannot re-score")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--overhead",
        type=at_least(0, float),
        metavar="SECONDS",
        help="how long past the training seconds the training phase may run (default: measured once on "
        "the workspace's baseline for this commit and machine, then cached)",
    )
    how.add_argument(
        "--no-measure",
        action="store_true",
        help="do not measure the baseline: only the budget's default overhead allowance bounds training",
    )
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("report", help="summary of a run with a progress plot")
    p.add_argument("run", nargs="?", help="run id (default: the latest)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("data", help="build or fetch shards and tokenizers")
    data = p.add_subparsers(title="data commands", metavar="ACTION")
    d = data.add_parser(
        "build", help="shards (+ a new or given SentencePiece model) from text/JSONL documents"
    )
    d.add_argument("inputs", nargs="+", type=Path, help=".jsonl/.txt files, optionally .gz/.xz")
    d.add_argument("--out", type=Path, default=Path("data"), help="root folder (datasets/ and tokenizers/)")
    d.add_argument("--name", default="custom_sp1024")
    d.add_argument("--vocab-size", type=int, default=1024)
    d.add_argument("--tokenizer", type=Path, help="reuse this .model instead of training one")
    d.add_argument("--val-docs", type=int, help="hold out the first N documents for validation")
    d.add_argument("--val-fraction", type=float, default=0.05)
    d.add_argument(
        "--val-input", type=Path, action="append", help="use these documents as validation instead"
    )
    d.set_defaults(func=cmd_data_build)
    d = data.add_parser("fetch", help="download a published FineWeb export's shards and tokenizer")
    d.add_argument(
        "--variant",
        default="sp1024",
        help="sp1024, sp4096, sp8192 or caseops-sp8192 (the leaderboard's exports)",
    )
    d.add_argument("--train-shards", type=int, default=1)
    d.add_argument("--out", type=Path, default=Path("data"))
    d.add_argument("--source", help="base URL or a local folder with the same layout")
    d.set_defaults(func=cmd_data_fetch)
    add_data_check(data)  # check (agent/trainer/data_gate.py)
    p.set_defaults(func=lambda a: p.print_help() or EXIT_USAGE)
    add_steering_commands(sub)  # note, status
    add_contract_commands(sub)  # check
    return parser


# --- commands ---------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from agentgolf.agent.workspace import init_workspace

    if args.trainer is not None:
        from agentgolf.agent.cli.contract import cmd_init_trainer

        return cmd_init_trainer(args)

    ws = init_workspace(args.dir, demo=args.demo)
    out.print(f"workspace ready at {ws.root}")
    if not args.demo:
        out.print(
            f"next: put shards in {ws.resolve(ws.config.data.dataset_dir)} and the tokenizer at "
            f"{ws.resolve(ws.config.data.tokenizer)} (agentgolf data fetch --out {ws.root / 'data'}), "
            "then `agentgolf run --budget N`"
        )
    else:
        out.print(f"next: cd {args.dir} && agentgolf run --budget 3")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agentgolf.agent.controller.run_start import RunOptions, start_run
    from agentgolf.agent.workspace import find_workspace

    fields = {k: v for k, v in vars(args).items() if k in RunOptions.model_fields}
    summary = start_run(find_workspace(), RunOptions(**fields), console=err)
    if summary.best_bpb is not None:
        runs = f"mean of {summary.best_runs} runs" if summary.best_runs > 1 else "1 run"
        out.print(
            f"best: experiment {summary.best_id}, val_bpb {summary.best_bpb:.4f} ({runs}; "
            f"branch agentgolf/{summary.run_id}/best)"
        )
    if summary.failed:  # not the budget, a cap, Ctrl-C or cancel: a script must see it
        err.print(f"[red]error:[/] run {summary.run_id} stopped: {escape(summary.stop_reason)}", markup=True)
        return EXIT_FAILED
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from agentgolf.agent.controller.loop import cancel_run
    from agentgolf.agent.report.summary import pick_run
    from agentgolf.agent.workspace import find_workspace

    ws = find_workspace()
    ledger = ws.ledger()
    run = pick_run(ledger, args.run)
    cancelled = cancel_run(ws, ledger, run.id)
    out.print(f"run {run.id}: cancelled {len(cancelled)} experiment(s) in flight {cancelled or ''}".rstrip())
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    from agentgolf.agent.judge.deltas import current
    from agentgolf.agent.report.tables import ledger_json, ledger_table, ledger_tsv
    from agentgolf.agent.workspace import find_workspace
    from agentgolf.experiments.status import RowStatus

    statuses = [s.value for s in RowStatus]
    if args.status is not None and args.status not in statuses:
        raise BadArguments(f"--status {args.status!r} is not a status; choose one of {', '.join(statuses)}")
    ledger = find_workspace().ledger()
    rows = ledger.experiments(
        run_id=args.run,
        status=args.status,
        category=args.category,
        better_than=args.better_than,
        order=args.sort,
        full=args.tsv,  # the TSV's memory column is read from the log tail
    )
    if args.tsv:
        print(ledger_tsv(rows))
    elif args.json:
        print(ledger_json(rows))
    else:
        runs = {e.run_id for e in rows if e.run_id}
        whole = [e for run in sorted(runs) for e in ledger.experiments(run_id=run)]
        for item in ledger_table(rows, scores=current(whole), width=out.width):
            out.print(item)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from agentgolf.agent.judge.deltas import current
    from agentgolf.agent.report.tables import show_experiment
    from agentgolf.agent.workspace import find_workspace
    from agentgolf.experiments import worktree as wt

    ws = find_workspace()
    ledger = ws.ledger()
    e = ledger.get(resolve_id(ledger, args.id))
    score = current(ledger.experiments(run_id=e.run_id)).get(e.id) if e.run_id else None
    diff = None
    if e.commit_sha and e.parent_commit and e.commit_sha != e.parent_commit:
        diff = wt.diff(wt.open_repo(ws.root), e.parent_commit, e.commit_sha)
    for line in show_experiment(e, diff, score, manifest=args.manifest):
        out.print(line.text, markup=line.markup, soft_wrap=line.soft_wrap)  # what a person reads: wrapped
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    import time

    from agentgolf.agent.judge.allowance import resolve
    from agentgolf.agent.report.tables import sandbox_lines
    from agentgolf.agent.workspace import find_workspace
    from agentgolf.sandbox.runner import run_sandboxed

    trainer = args.trainer.resolve()
    if not trainer.is_file():
        raise AgentgolfError(f"trainer file {args.trainer} does not exist")
    ws = find_workspace()
    say = err.print if args.json else out.print  # --json keeps stdout one JSON object
    allowance = resolve(
        ws,
        ws.budget(args.time_budget, args.size_budget),
        overhead=args.overhead,
        measure=not args.no_measure,
        say=lambda line: err.print(line, markup=False),
    )
    say(allowance.line(), markup=False)
    run_dir = ws.state / "sandbox" / time.strftime("%Y%m%d-%H%M%S")
    result = run_sandboxed(
        trainer,
        run_dir,
        ws.data_spec(),
        allowance.budget,
        env=dict(ws.config.trainer_env),
        seed=ws.config.seed,
        gpus=ws.config.gpus,
        self_reported=args.self_reported,
    )
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        for line in sandbox_lines(result):
            out.print(line)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from agentgolf.agent.report.report import write_report
    from agentgolf.agent.workspace import find_workspace

    ws = find_workspace()
    files = write_report(ws.ledger(), args.run, ws.state / "reports")
    out.print(files.text.read_text(), markup=False)  # the Markdown's content, laid out for 100 columns
    out.print(files.where(Path.cwd()), markup=False)
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
    from itertools import chain

    from agentgolf.baseline.corpus import read_docs
    from agentgolf.baseline.dataset import build_dataset

    for path in [*args.inputs, *(args.val_input or [])]:
        if not path.is_file():
            raise AgentgolfError(f"input file {path} does not exist")
    docs = chain.from_iterable(read_docs(p) for p in args.inputs)
    val = chain.from_iterable(read_docs(p) for p in args.val_input) if args.val_input else None
    info = build_dataset(
        docs,
        args.out,
        name=args.name,
        vocab_size=args.vocab_size,
        tokenizer=args.tokenizer,
        val_docs=args.val_docs,
        val_fraction=args.val_fraction,
        val_docs_iter=val,
        progress=True,
    )
    out.print(
        f"{info.name}: {info.train_docs:,} train docs ({info.train_tokens:,} tokens), "
        f"{info.val_docs:,} val docs ({info.val_tokens:,} tokens) in {info.dataset_dir}; tokenizer {info.tokenizer}"
    )
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from agentgolf.baseline.fetch import DEFAULT_SOURCE, fetch_official

    info = fetch_official(
        args.out, variant=args.variant, train_shards=args.train_shards, source=args.source or DEFAULT_SOURCE
    )
    out.print(
        f"{info.name}: {len(info.train_files)} train shard(s), {len(info.val_files)} val shard(s) in {info.dataset_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
