"""What a session may ask the lab while it works: the ledger's current state (`refresh`), a line in the
run's notebook (`note_to_self`), a smoke run of its change (`try`) and any experiment's loss curve.

A prompt is a snapshot: a verdict that comes 29 s after it was built stays "measuring again" unless the
model can look again, and a change that compiles can still fail to train (a parameter never given to an
optimizer). A `Desk` is one session's access to the lab for these, made by context.build_context; it
opens the ledger on its own connection (the proposer runs in a thread of its own) and writes only the
notebook table, never an experiment row.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agentgolf.agent.proposers.briefing import board, notebook
from agentgolf.agent.proposers.briefing.data_facts import read_manifest
from agentgolf.agent.proposers.briefing.digest import line, verdict
from agentgolf.agent.proposers.briefing.facts import (
    TRAIN_LOG,
    _loss_points,
    _steps,
    parse_train_log,
    read_text,
)
from agentgolf.agent.proposers.briefing.rules import BudgetLeft, charged
from agentgolf.challenge import TRAINER_FILE
from agentgolf.experiments.ledger import Experiment

if TYPE_CHECKING:
    from agentgolf.agent.controller.lab import Lab

TRY_STEPS, TRY_MAX_STEPS = 3, 10
TRY_SECONDS = 60.0  # the smoke run's training window: seconds, never a real run
LOSS_POINTS = 12  # points of a loss curve that show_experiment returns
SINCE_SHOWN = 10  # results decided since the session began, listed by refresh


class Desk:
    """One session's access to the lab (see the module docstring)."""

    def __init__(self, lab: Lab, parent: Experiment, name: str, in_flight: callable):
        self.lab, self.parent, self.name = lab, parent, name
        self.run_id = parent.run_id
        self.started = time.time()
        self.in_flight = in_flight  # (rows) -> the in-flight block, context.in_flight_block with the board
        self.notes_written = 0

    def rows(self) -> list[Experiment]:
        ledger = self.lab.ws.ledger()
        try:
            return ledger.experiments()
        finally:
            ledger.close()

    def budget_left(self, rows: list[Experiment]) -> BudgetLeft:
        cap = None
        if self.run_id:
            ledger = self.lab.ws.ledger()
            try:
                run = ledger.find_run(self.run_id)
            finally:
                ledger.close()
            cap = run.settings.get("experiments") if run is not None else None
        mine = [e for e in rows if e.run_id == self.run_id]
        waiting = board.others(self.lab.ws.root, self.name, rows)
        return BudgetLeft(cap=cap, charged=charged(mine), preparing=1 + len(waiting))

    def refresh(self) -> str:
        """The ledger as it stands now: what was decided since this session began, what is in flight and
        being prepared, the budget left."""
        rows = self.rows()
        decided = [
            e
            for e in rows
            if e.kind in ("baseline", "proposal")
            and e.status != "running"
            and (e.finished_at or e.created_at) >= self.started
        ]
        said = [line(e) for e in decided[-SINCE_SHOWN:]] or ["- nothing decided since your session began"]
        changed = [
            e
            for e in rows
            if e.kind == "proposal" and e.created_at < self.started and (e.finished_at or 0) >= self.started
        ]
        if changed:
            said += [f"- exp {e.id} {e.title}: now {verdict(e)}" for e in changed if e not in decided]
        best = next((e for e in reversed(rows) if e.kept and e.run_id == self.run_id), None)
        head = f"The ledger now ({len(rows)} rows); the best is exp {best.id}" if best else "The ledger now"
        return "\n".join(
            [
                head + (f", val_bpb {best.val_bpb:.4f}." if best and best.val_bpb is not None else "."),
                "## Decided since your session began",
                *said,
                "## In flight",
                self.in_flight(rows),
                "## " + self.budget_left(rows).line(),
            ]
        )

    def note(self, text: str) -> str:
        text = notebook.clean(text)
        if not text:
            return "not noted: the note is empty"
        if self.notes_written >= notebook.NOTES_PER_SESSION:
            return f"not noted: one session may write {notebook.NOTES_PER_SESSION} lines"
        ledger = self.lab.ws.ledger()
        try:
            ledger.add_notebook(self.run_id, text, self.parent.id, author=self.name)
        finally:
            ledger.close()
        self.notes_written += 1
        return f"noted (every later proposal of this run reads it; at most {notebook.NOTE_CHARS} characters)"

    def points(self, exp: Experiment) -> str:
        """An experiment's train-loss curve and step facts, from its run folder's train.log."""
        log = parse_train_log(read_text(self.lab.ws.run_dir(exp.id) / TRAIN_LOG, 4 * 2**20, tail=False))
        if not log.losses:
            return "train loss: none logged"
        steps = _steps(log)
        return f"train loss: {_loss_points(log, LOSS_POINTS)}" + (f"\nsteps: {steps}" if steps else "")

    def manifest(self) -> str:
        import json

        data = read_manifest(self.lab.ws.resolve(self.lab.ws.config.data.dataset_dir))
        return json.dumps(data, indent=1)[:8_000] if data else "the dataset has no manifest"

    def try_run(self, tree: Path, steps: int) -> str:
        """A few steps of the worktree's trainer in the sandbox, on the CPU, uncharged, no score kept."""
        from agentgolf.sandbox.runner import run_sandboxed

        steps = max(1, min(int(steps), TRY_MAX_STEPS))
        lab = self.lab
        run_dir = lab.ws.state / "try" / self.name
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        trainer = run_dir / TRAINER_FILE
        trainer.write_bytes((tree / lab.ws.config.trainer).read_bytes())
        env = {
            **lab.ws.config.trainer_env,
            "ITERATIONS": str(steps),
            "TRAIN_LOG_EVERY": "1",
            "VAL_LOSS_EVERY": "0",
        }
        budget = lab.budget.model_copy(update={"train_seconds": min(lab.budget.train_seconds, TRY_SECONDS)})
        started = time.monotonic()
        result = run_sandboxed(trainer, run_dir / "run", lab.data, budget, env=env, seed=lab.ws.config.seed)
        log = parse_train_log(read_text(run_dir / "run" / TRAIN_LOG, 2**20, tail=False))
        losses = ", ".join(f"step {s} {v:.4f}" for s, v in log.losses) or "none logged"
        size = f"{result.artifact_bytes:,} bytes" if result.artifact_bytes else "no artifact"
        cap = lab.budget.size_bytes
        loads = "yes" if result.val_bpb is not None else f"no ({result.status.value}: {result.reason[:300]})"
        pace = f"{log.step_ms:.1f} ms/step" if log.step_ms is not None else "not logged"
        return (
            f"smoke run of {steps} step(s) on the CPU ({time.monotonic() - started:.0f} s, uncharged, no score "
            f"kept):\nstatus: {result.status.value}\ntrain loss: {losses}\nstep time: {pace}\n"
            f"artifact after export: {size} (cap {cap:,})\nload_model reads the artifact back: {loads}"
        )
