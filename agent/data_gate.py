"""The data check from the agent's side: `agentgolf data check`, and the gate at the start of every run.

The checks themselves are baseline/data_check.py. A run checks its workspace's dataset in the fast mode
before its baseline; a failure stops it there, one line per finding, unless `--allow-data-warnings` lets it
go on (recorded). The report goes into each experiment's manifest as `data_check`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from agentgolf.baseline.data_check import DataCheckConfig, DataReport, check_dataset
from agentgolf.baseline.variants import VARIANTS
from agentgolf.errors import AgentgolfError

if TYPE_CHECKING:
    from agentgolf.agent.workspace import Workspace

DEFAULT_DATASET = Path("data/datasets/fineweb10B_sp1024")
REPORT_NAME = "data_check.json"  # in the run's folder


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


def gate_run(ws: Workspace, run_dir: Path, *, allow: bool = False) -> DataReport:
    """The fast check before a run's baseline: raises DataCheckFailed on a failure unless `allow`.

    The report (with `allowed` set when a failure was let through) is written to `run_dir`/data_check.json,
    which each experiment's manifest then carries (`manifest_entry`)."""
    report = check_dataset(
        ws.resolve(ws.config.data.dataset_dir),
        tokenizer=ws.resolve(ws.config.data.tokenizer),
        fast=True,
        config=_config(ws),
    )
    report.allowed = report.failed and allow
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / REPORT_NAME).write_text(report.model_dump_json(indent=2) + "\n")
    if report.failed and not allow:
        failed = [line for line in report.lines() if line.startswith("fail:")]
        raise DataCheckFailed(
            "the data check failed (--allow-data-warnings to run anyway):\n" + "\n".join(failed)
        )
    return report


def manifest_entry(run_dir: Path) -> dict | None:
    """What an experiment's manifest records of its run's data check (None before the check existed)."""
    try:
        report = json.loads((run_dir / REPORT_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    keep = ("mode", "variant", "allowed", "train_tokens_scanned")
    return {**{k: report.get(k) for k in keep}, "findings": DataReport.model_validate(report).lines()}


def _config(ws: Workspace) -> DataCheckConfig:
    return getattr(ws.config.data, "check", None) or DataCheckConfig()


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
