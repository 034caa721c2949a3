"""What a dashboard shows of one experiment: who it is (`Card`, fixed when it starts training) and how it
ended (`Outcome`: its verified score, bytes, status and decision, as the ledger row says)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind, RowStatus


class Card(BaseModel):
    """One experiment as a dashboard run: its name, its run (the group), its settings, hypothesis and diff."""

    exp_id: int
    name: str  # `<id>-<slug>`, unique in its run: a second training of the same row gets `-2`, ...
    group: str  # the run id: a run's experiments side by side
    kind: str  # baseline, proposal, control, ...: W&B's job type
    config: dict[str, Any]  # seed, rung, parent id, trainer_env, the trainer's knobs: the comparison table
    hypothesis: str
    diff: str  # against its parent's commit ("" for the baseline)


class Outcome(BaseModel):
    """What the ledger row says of an experiment's result so far."""

    status: str
    val_bpb: float | None = None
    artifact_bytes: int | None = None
    delta_bpb: float | None = None
    decision: str = ""  # kept, promote, dead_end, inconclusive, confirm; "" before (or without) a verdict
    reason: str = ""

    @classmethod
    def of(cls, row: Experiment) -> Outcome:
        decided = str(row.decision.get("decision", "")) if row.decision else ""
        return cls(
            status=str(row.status),
            val_bpb=row.val_bpb,
            artifact_bytes=row.artifact_bytes,
            delta_bpb=row.delta_bpb,
            decision="kept" if row.kept else decided,
            reason=row.reason,
        )

    def line(self) -> str:
        """The status and decision in words, for a text panel."""
        said = f"{self.status}" + (f", {self.decision}" if self.decision else "")
        return said + (f": {self.reason}" if self.reason else "")


def settled(row: Experiment) -> bool:
    """Nothing more will be said of this row: its result is in, and its verdict too where one comes later
    (a scored proposal waits for its paired rounds, the baseline for its promotion). A row that never gets
    one stays open until the run ends."""
    if row.status in (RowStatus.running, RowStatus.confirming):
        return False
    waits = row.kind in (Kind.proposal, Kind.baseline) and row.status == RowStatus.ok
    return not (waits and not row.kept and not row.decision.get("decision"))
