"""One experiment as a TensorBoard run: `<folder>/tensorboard/<run id>/<id>-<slug>/events.out.tfevents.*`.

`tensorboard --logdir <folder>/tensorboard` shows a run's experiments side by side. The writer is torch's
SummaryWriter (torch is a dependency; tensorboard writes the files), imported only when a run tracks.
Tags: `train/loss` by step, with each point's wall time set to the start plus its training seconds (so the
RELATIVE axis is training time); `train/loss_by_ms` (its step axis is training milliseconds);
`train/step_ms`; then `result/val_bpb`, `result/artifact_bytes`, `result/delta_bpb`; the hypothesis, the
diff (indented, so Markdown shows it verbatim) and the status in the Text tab; and the settings with the
result in the HParams table, written when the experiment is closed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agentgolf.agent.tracking.card import Card, Outcome
from agentgolf.sandbox.metrics import CurvePoint

FOLDER = "tensorboard"
FLUSH_SECONDS = 10  # how stale a live `tensorboard --logdir` view may be; close() flushes everything


def prepare() -> None:
    """Import the writer now, at the run's start (it loads torch's tensorboard support, seconds once)."""
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401


def location(folder: Path, card: Card) -> Path:
    return Path(folder) / FOLDER / card.group / card.name


def indented(text: str) -> str:
    """Markdown shows a block indented by 4 spaces as it is: a diff's `*` and `#` stay characters."""
    return "\n".join("    " + line for line in text.splitlines())


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """The settings as the HParams table takes them: scalars, nested names joined by dots."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, name + "."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        elif value is not None:
            out[name] = str(value)
    return out


class TensorBoardRun:
    """One experiment's event file; every call comes from its feed's thread."""

    def __init__(self, folder: Path, card: Card):
        from torch.utils.tensorboard import SummaryWriter

        self.card = card
        self.location = location(folder, card)
        self._start = time.time()
        self._step = 0  # the last training step logged: where the results are drawn
        self._outcome: Outcome | None = None
        self._logged: dict[str, float] = {}
        self._writer = SummaryWriter(log_dir=str(self.location), flush_secs=FLUSH_SECONDS)
        if card.hypothesis:
            self._writer.add_text("hypothesis", card.hypothesis, 0)
        if card.diff:
            self._writer.add_text("diff", indented(card.diff), 0)

    def log_train(self, point: CurvePoint) -> None:
        seconds = point.seconds
        wall = self._start + seconds if seconds is not None else time.time()
        w = self._writer
        w.add_scalar("train/loss", point.train_loss, point.step, walltime=wall)
        if seconds is not None:
            w.add_scalar("train/loss_by_ms", point.train_loss, round(seconds * 1000), walltime=wall)
        if point.step_ms is not None:
            w.add_scalar("train/step_ms", point.step_ms, point.step, walltime=wall)
        self._step = max(self._step, point.step)

    def log_outcome(self, outcome: Outcome) -> None:
        """Each result value as a scalar at the last step (again only when it changed), the status as text."""
        values = {
            "result/val_bpb": outcome.val_bpb,
            "result/artifact_bytes": outcome.artifact_bytes,
            "result/delta_bpb": outcome.delta_bpb,
        }
        for tag, value in values.items():
            if value is not None and self._logged.get(tag) != float(value):
                self._writer.add_scalar(tag, float(value), self._step)
                self._logged[tag] = float(value)
        if self._outcome is None or outcome.line() != self._outcome.line():
            self._writer.add_text("result/status", outcome.line(), self._step)
        self._outcome = outcome

    def close(self) -> None:
        """The HParams row (settings, status, decision, the result tags as its metrics), then flush."""
        from torch.utils.tensorboard.summary import hparams

        outcome = self._outcome or Outcome(status="unfinished")
        table = flat(self.card.config) | {"status": outcome.status, "decision": outcome.decision}
        metrics = dict(self._logged) or {"result/val_bpb": float("nan")}
        for summary in hparams(table, metrics):
            self._writer.file_writer.add_summary(summary, self._step)
        self._writer.close()
