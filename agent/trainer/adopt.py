"""`agentgolf adopt PATH`: the workspace's LLM ports a trainer to the trainer contract, and `check` judges the port.

A researcher's trainer near the frontier rarely has `load_model`/`forward_logits`; writing them by hand is the
chore between them and a night of experiments. The LLM gets the contract (docs/trainer-contract.md), the
trainer, and what `check` found, and answers with search/replace edits; the edited trainer is checked, and
what it still misses goes back, at most `tries` times. A port is accepted only when every contract point is
met and the harness's verified score of its artifact is within `budget.metric_tolerance_bpb` of the trainer's
own evaluation of the same weights (check's `score gap`): the port must compute what the trainer computes.
The original file is never modified; the port is written beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from agentgolf.agent.proposers.proposal import Edit, ProposalError
from agentgolf.agent.trainer.check import CheckReport, check_trainer
from agentgolf.agent.trainer.contract import Point, read_source, static_points
from agentgolf.errors import AgentgolfError, first_line

if TYPE_CHECKING:
    from agentgolf.agent.proposers.llm.proposer import LLMConfig
    from agentgolf.agent.workspace import Workspace

SYSTEM = """You port Parameter Golf trainers to agentgolf's trainer contract, whose text follows. Change as \
little as you can: keep the model, the training and the export as they are; add what the contract asks \
(load_model(artifact_path, device) returning an object with seq_len and forward_logits, the environment \
variables, the artifact at ARTIFACT_PATH, the clock), and keep or add the trainer's own final evaluation line \
(`..._exact val_loss:F val_bpb:F`) computed on exactly the weights it leaves, so the harness can compare.

Answer with one JSON object and nothing else:
{"edits": [{"search": "exact text that occurs once in the file", "replace": "its replacement"}], "note": "one line"}

The contract:

"""


class Port(BaseModel):
    """The LLM's answer: search/replace edits of the trainer, and a line saying what it changed."""

    edits: list[Edit]
    note: str = ""


class Adopted(BaseModel):
    out: str
    tries: int
    report: CheckReport


def contract_text() -> str:
    """docs/trainer-contract.md from the checkout; a package installed without the docs gets the gist."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "trainer-contract.md"
    if doc.is_file():
        return doc.read_text()
    return (
        "Version 1. One file; the harness sets DATA_PATH (train shards), TOKENIZER_PATH, VOCAB_SIZE, SEED, "
        "ARTIFACT_PATH, MAX_WALLCLOCK_SECONDS (or TRAIN_CLOCK=cpu with MAX_CPU_SECONDS); train under "
        '`if __name__ == "__main__":`, stop by the clock, leave the artifact at ARTIFACT_PATH. '
        "load_model(artifact_path, device) returns an object with an int seq_len and forward_logits(int64 "
        "[B, T]) -> float [B, T, V], causal; optional eval_mode windows|sliding|stream, eval_stride, "
        "eval_context, eval_autocast, adapt(tokens, doc_starts)."
    )


def findings(points: list[Point]) -> str:
    """What check said, for the LLM: every point that is not met, one line each."""
    shown = [p.line() for p in points if p.state in ("missed", "warn")]
    return "\n".join(shown) or "(no findings)"


def accepted(report: CheckReport) -> bool:
    """Every point met, and the harness's score of the port within tolerance of the trainer's own."""
    gap = next((p for p in report.points if p.name == "score gap"), None)
    return report.ran and not report.missed and gap is not None and gap.state == "met"


def adopt(
    path: Path,
    ws: Workspace,
    llm: LLMConfig,
    *,
    tries: int = 3,
    out: Path | None = None,
    seconds: float | None = None,
    say: Callable[[str], None] = print,
) -> Adopted:
    """Port `path` to the contract in at most `tries` replies of the LLM; the accepted port, or an error."""
    from agentgolf.agent.proposers.knobs import apply_in_memory
    from agentgolf.agent.proposers.llm.proposer import JSON_BLOCK, LLMProposer

    if not path.is_file():
        raise AgentgolfError(f"trainer file {path} does not exist")
    out = out or path.with_name(f"{path.stem}_adopted.py")
    if out.resolve() == path.resolve():
        raise AgentgolfError("--out must not be the trainer itself: adopt never modifies the original")
    source = path.read_text()
    out.write_text(source)
    report = _check(out, ws, seconds, say)
    if accepted(report):
        say(f"{path.name} already keeps the contract: {out} is a copy")
        return Adopted(out=str(out), tries=0, report=report)
    client = LLMProposer(llm)
    messages = [
        {"role": "system", "content": SYSTEM + contract_text()},
        {"role": "user", "content": _ask(source, report)},
    ]
    for attempt in range(1, tries + 1):
        text, _ = client.complete(messages)
        messages.append({"role": "assistant", "content": text})
        try:
            match = JSON_BLOCK.search(text)
            port = Port.model_validate_json(match.group(0) if match else text)
            source = apply_in_memory(
                source, [e.model_copy(update={"path": "train_gpt.py"}) for e in port.edits]
            )
        except (ValidationError, ProposalError) as exc:
            problem = f"your reply could not be applied: {first_line(exc)}"
            say(f"try {attempt}/{tries}: {problem}")
            messages.append({"role": "user", "content": f"{problem}. The file is unchanged; answer again."})
            continue
        out.write_text(source)
        report = _check(out, ws, seconds, say)
        say(f"try {attempt}/{tries}: {port.note or 'edited'} -> {report.summary()}")
        if accepted(report):
            return Adopted(out=str(out), tries=attempt, report=report)
        messages.append({"role": "user", "content": _again(report)})
    missed = findings(report.points).replace("\n", "; ")
    raise AgentgolfError(f"adopt gave up after {tries} tries; the port in {out} still fails check: {missed}")


def _check(trainer: Path, ws: Workspace, seconds: float | None, say: Callable[[str], None]) -> CheckReport:
    """check, but without a run while a static point is missed (the run could only fail on it)."""
    static = static_points(read_source(trainer), ws.config.budget.size_bytes)
    if any(p.state == "missed" for p in static):
        return CheckReport(trainer=str(trainer), points=static)
    return check_trainer(trainer, ws, seconds=seconds, say=say)


def _ask(source: str, report: CheckReport) -> str:
    return (
        f"agentgolf check found:\n{findings(report.points)}\n\nThe trainer (train_gpt.py, "
        f"{len(source.splitlines())} lines):\n```python\n{source}\n```\nPort it to the contract."
    )


def _again(report: CheckReport) -> str:
    gap = next((p for p in report.points if p.name == "score gap"), None)
    extra = "" if report.ran else " (it was not run: the points above must be met first)"
    if report.ran and (gap is None or gap.state != "met"):
        extra = " The port is accepted only when the harness's score matches the trainer's own evaluation."
    return f"With your edits applied, agentgolf check still finds:\n{findings(report.points)}\n{extra}\nFix these."
