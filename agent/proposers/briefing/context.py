"""What a proposal is asked with: the digest with reasons, the parent's run facts, what else is in flight
(training, and being prepared by other sessions), the rules of measurement with the budget left, the
workspace's data, the techniques with their outcomes here, the run's notebook and the person's notes,
gathered into one `ProposalContext` for any proposer.

It runs in the proposer's thread, so it writes no experiment row: the ledger is read through a connection
of its own, and everything else comes from run folders, the board of preparations and git.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from agentgolf.agent.controller.notes import notes_block, read_notes
from agentgolf.agent.proposers.briefing import board
from agentgolf.agent.proposers.briefing.data_facts import data_description, read_manifest
from agentgolf.agent.proposers.briefing.digest import build_digest
from agentgolf.agent.proposers.briefing.facts import outcome, parent_block, parent_facts
from agentgolf.agent.proposers.briefing.notebook import notebook_block
from agentgolf.agent.proposers.briefing.research import Desk
from agentgolf.agent.proposers.briefing.rules import measurement_rules, rung_labels
from agentgolf.agent.proposers.proposal import ProposalContext
from agentgolf.agent.proposers.techniques import catalogue_with_outcomes
from agentgolf.errors import AgentgolfError
from agentgolf.experiments.ledger import Experiment
from agentgolf.experiments.status import Kind, RowStatus

if TYPE_CHECKING:
    from agentgolf.agent.controller.lab import Lab

IN_FLIGHT_SHOWN = 6  # experiments listed; the rest are counted
CHANGE_LINES = 6  # changed lines shown per experiment in flight
CHANGE_LINE_CHARS = 110


def build_context(lab: Lab, parent: Experiment, history: list[Experiment], name: str = "") -> ProposalContext:
    """The context of the preparation `name` (its entry on the board of preparations in flight)."""
    ws = lab.ws
    source = lab.trainer_source(parent.commit_sha).decode()
    size_limit = lab.budget.size_bytes

    def why(e: Experiment) -> str:
        return outcome(e, ws.run_dir(e.id), size_limit)

    full = _full_row(lab, parent)
    facts = parent_facts(
        full, ws.run_dir(parent.id), source, lab.budget.train_seconds, size_limit, ws.config.trainer_env
    )
    try:
        notes = notes_block(read_notes(ws.state))
    except AgentgolfError as exc:  # a broken notes file must not stop the run; the prompt says so
        notes = f"- (the notes file could not be read: {exc})"

    def in_flight(rows: list[Experiment]) -> str:
        preparing = board.board_block(board.others(ws.root, name, rows), name)
        return in_flight_block(ws.root, parent, rows) + (f"\n\n{preparing}" if preparing else "")

    desk = Desk(lab, parent, name, in_flight)
    run_rows = [e for e in history if e.run_id == parent.run_id]
    cfg = ws.config
    return ProposalContext(
        source=source,
        trainer=ws.config.trainer,
        parent=parent,
        history=history,
        digest=build_digest(history, parent, ws.config.digest, why, rung_labels(cfg.fidelity, lab.budget)),
        trainer_env=ws.config.trainer_env,
        budget=lab.budget,
        facts=parent_block(facts, ws.config.digest.facts_max_chars, ws.config.digest.loss_points),
        in_flight=in_flight(history),
        notes=notes,
        root=ws.root,
        runs_dir=ws.state / "runs",
        rules=measurement_rules(
            cfg.acceptance, cfg.fidelity, lab.budget, run_rows, desk.budget_left(history)
        ),
        data=data_description(read_manifest(ws.resolve(cfg.data.dataset_dir)), cfg.data.vocab_size),
        techniques=catalogue_with_outcomes(history),
        notebook=_notebook(lab, parent.run_id),
        name=name,
        outline_over_lines=cfg.digest.outline_over_lines,
        desk=desk,
    )


def _notebook(lab: Lab, run_id: str | None) -> str:
    """The run's notebook (every run's lines when the run is not known)."""
    with contextlib.suppress(AgentgolfError):
        ledger = lab.ws.ledger()
        try:
            return notebook_block(ledger.notebook(run_id))
        finally:
            ledger.close()
    return ""


def _full_row(lab: Lab, exp: Experiment) -> Experiment:
    """The row with its manifest (the hardware); the scheduler's listing leaves the manifest out."""
    if exp.manifest:
        return exp
    with contextlib.suppress(AgentgolfError):
        ledger = lab.ws.ledger()  # this thread's own connection: SQLite's are not shared across threads
        try:
            return ledger.get(exp.id)
        finally:
            ledger.close()
    return exp


def in_flight_block(root: Path, parent: Experiment, history: list[Experiment]) -> str:
    """Which parent the change lands on, and what each experiment still training changes."""
    bpb = f", val_bpb {parent.val_bpb:.4f}" if parent.val_bpb is not None else ""
    head = f"Your change will be applied to experiment {parent.id} ({parent.title}{bpb}), the current best."
    busy = [
        e
        for e in history
        if e.kind == Kind.proposal
        and e.status in (RowStatus.running, RowStatus.confirming)
        and e.commit_sha
        and e.id != parent.id
    ]
    if not busy:
        return head + " Nothing else is training."
    lines = [head, "Still training or being confirmed, not yet decided:"]
    for e in busy[:IN_FLIGHT_SHOWN]:
        state = "training" if e.status == RowStatus.running else "looked better, re-run with another seed"
        change = change_summary(root, e.parent_commit, e.commit_sha)
        lines.append(f"- exp {e.id} on experiment {e.parent_id} ({state}): {e.title}; changes: {change}")
    if len(busy) > IN_FLIGHT_SHOWN:
        lines.append(f"- ... and {len(busy) - IN_FLIGHT_SHOWN} more")
    lines.append(
        "If one of these becomes the new best before a slot takes your change, your change is carried over "
        f"onto it when it still applies cleanly; otherwise it runs on experiment {parent.id}. Do not "
        "duplicate them."
    )
    return "\n".join(lines)


def change_summary(root: Path, parent_commit: str, commit: str) -> str:
    """The lines a commit removes and adds against its parent, compacted: `- old | + new | ...`."""
    if not parent_commit or not commit or parent_commit == commit:
        return "nothing"
    proc = subprocess.run(
        ["git", "diff", "--unified=0", "--no-color", parent_commit, commit],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return "(diff unavailable)"
    changed = [
        f"{line[0]} {' '.join(line[1:].split())}"[:CHANGE_LINE_CHARS]
        for line in proc.stdout.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---")) and line[1:].strip()
    ]
    shown = " | ".join(changed[:CHANGE_LINES])
    more = f" | (+{len(changed) - CHANGE_LINES} more changed lines)" if len(changed) > CHANGE_LINES else ""
    return (shown + more) or "whitespace only"
