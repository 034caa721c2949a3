"""The data check from the agent's side: `agentgolf data check`, and the gate at the start of every run.

The checks themselves are baseline/data_check.py. A run checks its workspace's dataset in the fast mode
before its baseline; a failure stops it there, one line per finding, unless `--allow-data-warnings` lets it
go on (recorded). The report is kept in `.agentgolf/data_check.json`, and each experiment's manifest carries
it as `data_check` (`manifest_entry`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from agentgolf.baseline.data_check import DataCheckConfig, DataReport, check_dataset
from agentgolf.baseline.variants import VARIANTS
from agentgolf.errors import AgentgolfError

if TYPE_CHECKING:
    from agentgolf.agent.workspace import Workspace

DEFAULT_DATASET = Path("data/datasets/fineweb10B_sp1024")
REPORT_NAME = "data_check.json"  # in the workspace's state folder: the last run's check


class DataCheckFailed(AgentgolfError):
    """The dataset failed a check; the message holds one line per finding that failed."""


def add_check_command(data: argparse._SubParsersAction) -> None:
    d = data.add_parser(
        "check", help="leaks from validation into training, counts, BOS, the tokenizer's hash"
    )
    d.add_argument("dir", nargs="?", type=Path, help="a dataset folder (default: the workspace's)")
    d.add_argument("--fast", action="store_true", help="read only the first training shards (as `run` does)")
    d.add_argument("--variant", choices=sorted(VARIANTS), help="judge the counts as this export's")
    d.add_argument("--tokenizer", type=Path, help="the tokenizer to check (default: the manifest's)")
    d.add_argument("--json", action="store_true", help="print the report as JSON")
    d.set_defaults(func=cmd_data_check)


def cmd_data_check(args: argparse.Namespace) -> int:
    """One line per finding; exit 1 when any failed."""
    dataset, tokenizer, config = args.dir, args.tokenizer, DataCheckConfig()
    if dataset is None:
        ws = _workspace()
        if ws is not None:
            dataset = ws.resolve(ws.config.data.dataset_dir)
            tokenizer = tokenizer or ws.resolve(ws.config.data.tokenizer)
            config = _config(ws)
    dataset = _dataset_dir(dataset or DEFAULT_DATASET)
    report = check_dataset(dataset, tokenizer=tokenizer, variant=args.variant, fast=args.fast, config=config)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print("\n".join(report.lines()))
        print(
            f"{report.mode} check of {dataset}: {report.train_tokens_scanned:,} train tokens in {report.seconds:.1f} s"
        )
    return 1 if report.failed else 0


def gate_run(ws: Workspace, *, allow: bool = False, say=None) -> DataReport:
    """The fast check before a run's baseline: raises DataCheckFailed on a failure unless `allow`.

    The report (`allowed` set when a failure was let through) is written to the workspace's state folder,
    whence each experiment's manifest takes it; `say` gets one line per finding that is not ok."""
    report = check_dataset(
        ws.resolve(ws.config.data.dataset_dir),
        tokenizer=ws.resolve(ws.config.data.tokenizer),
        fast=True,
        config=_config(ws),
    )
    report.allowed = report.failed and allow
    ws.state.mkdir(parents=True, exist_ok=True)
    (ws.state / REPORT_NAME).write_text(report.model_dump_json(indent=2) + "\n")
    if report.failed and not allow:
        failed = [line for line in report.lines() if line.startswith("fail:")]
        raise DataCheckFailed(
            "the data check failed (--allow-data-warnings to run anyway): " + "\n".join(failed)
        )
    if say is not None:
        for line in report.lines():
            if not line.startswith("ok:"):
                say(
                    f"data check: {line}"
                    + (" (allowed: --allow-data-warnings)" if line.startswith("fail:") else "")
                )
    return report


def manifest_entry(state: Path) -> dict | None:
    """What an experiment's manifest records of its run's data check (None where no run checked it)."""
    try:
        report = DataReport.model_validate_json((state / REPORT_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return {
        "mode": report.mode,
        "variant": report.variant,
        "allowed": report.allowed,
        "findings": report.lines(),
    }


def _config(ws: Workspace) -> DataCheckConfig:
    return ws.config.data.check


def _workspace() -> Workspace | None:
    from agentgolf.agent.workspace import find_workspace

    try:
        return find_workspace()
    except AgentgolfError:
        return None


def _dataset_dir(path: Path) -> Path:
    """A dataset folder, or a data root holding exactly one under datasets/."""
    if (path / "datasets").is_dir() and not list(path.glob("fineweb_*.bin")):
        found = [p for p in (path / "datasets").iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(found) == 1:
            return found[0]
    if not path.is_dir():
        raise AgentgolfError(f"dataset folder {path} does not exist")
    return path
