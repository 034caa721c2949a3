"""One experiment as an offline W&B run: `<folder>/wandb/offline-run-<time>-<id>/`, uploaded later with
`wandb sync -p <project> <folder>/wandb/offline-run-*` (no account and no network until then).

A run's experiments share its id as their `group`, each named `<id>-<slug>`, its settings as the config and
its hypothesis as the notes; the diff and the hypothesis are files of the run. History: `train/loss`,
`train/seconds`, `train/step_ms` by step, and `train/loss_by_seconds` charted against `train/seconds`;
the summary: val_bpb, artifact_bytes, delta_bpb, status, decision, reason (the runs table's columns).
wandb is imported only when a run tracks to it, and started once per process, offline, silent, without its
telemetry (which would otherwise look up its server's address and start threads), capturing nothing.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from agentgolf.agent.tracking import wandb_log
from agentgolf.agent.tracking.card import Card, Outcome
from agentgolf.sandbox.metrics import CurvePoint

FOLDER = "wandb"
BY_SECONDS = "train/loss_by_seconds"

_lock = threading.Lock()
_ready = False


def prepare() -> None:
    """Import wandb and start its service once per process: offline, silent, no error reports.

    The service reads WANDB_ERROR_REPORTING once, as it starts (here): set for that call only. wandb.setup
    leaves WANDB_SERVICE in this process's environment; no phase inherits it, every sandbox's environment
    is built from scratch (sandbox/run_setup.py, sandbox/isolation/agent_box.py)."""
    global _ready
    import wandb

    with _lock:
        if _ready:
            return
        old = os.environ.get("WANDB_ERROR_REPORTING")
        os.environ["WANDB_ERROR_REPORTING"] = "false"
        try:
            wandb.setup(settings=wandb.Settings(mode="offline", silent=True))
        finally:
            if old is None:
                os.environ.pop("WANDB_ERROR_REPORTING", None)
            else:
                os.environ["WANDB_ERROR_REPORTING"] = old
        _ready = True


def shutdown() -> None:
    """Stop the service (the run's end): no wandb process or thread outlives the run's tracking."""
    global _ready
    with _lock:
        if _ready:
            import wandb

            wandb.teardown()
            _ready = False


def settings() -> Any:
    """One run's settings: offline and silent; no console capture, system metrics, git, code or package
    list; several runs live at once in one process (one per experiment in flight)."""
    import wandb

    return wandb.Settings(
        mode="offline",
        silent=True,
        console="off",
        x_disable_stats=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
        disable_git=True,
        disable_code=True,
        save_code=False,
        x_save_requirements=False,
        reinit="create_new",
    )


class WandbRun:
    """One experiment's offline run; every call comes from its feed's thread."""

    def __init__(self, folder: Path, card: Card, project: str, close_seconds: float):
        import wandb

        prepare()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.close_seconds = close_seconds
        self._run = wandb.init(
            project=project,
            dir=str(folder),
            name=card.name,
            group=card.group,
            job_type=card.kind,
            config=card.config,
            notes=card.hypothesis or None,
            settings=settings(),
        )
        self.location = Path(self._run.dir).parent  # <folder>/wandb/offline-run-<time>-<id>
        self._run.define_metric("train/seconds")
        self._run.define_metric(BY_SECONDS, step_metric="train/seconds")
        for name, text in (("hypothesis.md", card.hypothesis), ("diff.patch", card.diff)):
            if text:
                path = Path(self._run.dir) / name
                path.write_text(text, encoding="utf-8")
                self._run.save(str(path), base_path=self._run.dir, policy="now")
        self._step = -1

    def log_train(self, point: CurvePoint) -> None:
        if point.step <= self._step:
            return  # W&B keeps steps increasing and drops the rest: said here, not in its log
        row: dict[str, float] = {"train/loss": point.train_loss}
        if point.seconds is not None:
            row |= {"train/seconds": point.seconds, BY_SECONDS: point.train_loss}
        if point.step_ms is not None:
            row["train/step_ms"] = point.step_ms
        self._run.log(row, step=point.step)
        self._step = point.step

    def log_outcome(self, outcome: Outcome) -> None:
        self._run.summary.update(outcome.model_dump(exclude_none=True))

    def close(self) -> None:
        """Finish the run and wait until its log is complete (wandb_log: finish() returns before)."""
        self._run.finish()
        (log,) = self.location.glob("run-*.wandb")
        wandb_log.wait_for_exit(log, self.close_seconds)
