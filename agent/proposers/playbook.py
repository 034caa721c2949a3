"""The offline proposer: a library of concrete, known-useful edits to the baseline, tried in order,
never repeating one the ledger already holds.

Hyperparameter moves edit the literal default that is actually in effect: the line of the active
PRESET in `PRESETS`, else the `os.environ.get("NAME", default)` line of `Hyperparameters`. A knob
that the workspace sets through `trainer_env` is skipped, since editing the file would change nothing.
"""

from __future__ import annotations

import ast
import difflib
import re
from pathlib import Path

from pydantic import BaseModel, Field

from agentgolf.agent.proposers.proposal import Edit, Proposal, ProposalContext, ProposalError, apply_edits
from agentgolf.challenge import TRAINER_FILE
from agentgolf.experiments.ledger import Experiment
from agentgolf.sandbox.runner import HARNESS_ENV_KEYS

NAME = "playbook"


class Move(BaseModel):
    title: str
    hypothesis: str
    category: str
    scale: dict[str, float] = Field(default_factory=dict, description="multiply the current value")
    set: dict[str, float | int] = Field(default_factory=dict, description="set an absolute value")
    code: list[tuple[str, str]] = Field(default_factory=list, description="(search, replace) on the trainer")


# Drawn from the leaderboard's technique catalogue (parameter-golf-facts.md §5); gains there were
# measured at full scale, so every one is re-measured here rather than trusted.
LIBRARY: list[Move] = [
    Move(
        title="Lower learning rates",
        hypothesis="Halving Muon, scalar and tied-embedding LRs was worth -0.0056 bpb on the baseline.",
        category="opt",
        scale={"MATRIX_LR": 0.5, "SCALAR_LR": 0.5, "TIED_EMBED_LR": 0.6},
    ),
    Move(
        title="Longer warmdown",
        hypothesis="A longer LR decay leaves smoother weights that quantize with a smaller int8 gap.",
        category="sched",
        scale={"WARMDOWN_ITERS": 2.5},
    ),
    Move(
        title="Wider MLP (3x)",
        hypothesis="MLP 3x was one of the largest single architecture gains on the leaderboard.",
        category="arch",
        set={"MLP_MULT": 3},
    ),
    Move(
        title="Higher QK gain init",
        hypothesis="Records report monotonic gains raising QK_GAIN_INIT from 1.5 towards 4-5.",
        category="arch",
        set={"QK_GAIN_INIT": 4.0},
    ),
    Move(
        title="One more layer",
        hypothesis="Depth helped whenever the bytes allowed it (10 and 11 layers in records).",
        category="arch",
        scale={"NUM_LAYERS": 1.25},
    ),
    Move(
        title="Longer training sequences",
        hypothesis="Doubling the training context gave -0.019 bpb at full scale.",
        category="data",
        scale={"TRAIN_SEQ_LEN": 2.0},
    ),
    Move(
        title="Higher Muon momentum",
        hypothesis="Momentum 0.99 with a longer warmup helped the seq-4096 record.",
        category="opt",
        set={"MUON_MOMENTUM": 0.99, "MUON_MOMENTUM_WARMUP_START": 0.92},
    ),
    Move(
        title="Smaller batch, more steps",
        hypothesis="On slow hardware a smaller batch buys more optimizer steps per second.",
        category="opt",
        scale={"TRAIN_BATCH_TOKENS": 0.5, "ITERATIONS": 2.0},
    ),
    Move(
        title="Wider model",
        hypothesis="More width per layer, if the artifact still fits.",
        category="arch",
        scale={"MODEL_DIM": 1.25},
    ),
    Move(
        title="Softer logit cap",
        hypothesis="A lower softcap regularizes the logits of a small model.",
        category="arch",
        set={"LOGIT_SOFTCAP": 15.0},
    ),
    Move(
        title="Higher matrix LR",
        hypothesis="A small model may tolerate a larger Muon step.",
        category="opt",
        scale={"MATRIX_LR": 1.5},
    ),
    Move(
        title="Longer RoPE base",
        hypothesis="A larger rotary base spreads frequencies over longer contexts.",
        category="arch",
        set={"ROPE_BASE": 50000.0},
    ),
]


def _value_pattern(name: str, preset: str | None, source: str) -> re.Match[str] | None:
    """Find the literal default of NAME that is in effect for `preset` (group 1: prefix, 2: literal)."""
    key = re.escape(name)
    if preset:
        block = re.search(rf'["\']{re.escape(preset)}["\']\s*:\s*\{{(.*?)\n\s*\}}', source, re.S)
        if block:
            found = re.compile(rf'(["\']{key}["\']\s*:\s*)([^,\n]+)').search(
                source, block.start(1), block.end(1)
            )
            if found:
                return found
    return re.search(rf'(os\.environ\.get\(\s*["\']{key}["\']\s*,\s*)([^)\n]+)', source)


def _format(old: float | int | str, value: float) -> str:
    if isinstance(old, int) and not isinstance(old, bool):
        return str(max(1, round(value)))
    text = f"{value:.6g}"
    text = text if any(c in text for c in ".en") else text + ".0"
    return repr(text) if isinstance(old, str) else text


def current_value(source: str, name: str, preset: str | None) -> float | int | str:
    match = _value_pattern(name, preset, source)
    if match is None:
        raise ProposalError(f"the trainer has no default for {name}")
    return ast.literal_eval(match.group(2).strip())


def hparam_edits(source: str, changes: dict[str, float], preset: str | None) -> list[Edit]:
    """Search/replace edits that set each NAME's effective default to the given value."""
    edits = []
    for name, value in changes.items():
        match = _value_pattern(name, preset, source)
        if match is None:
            raise ProposalError(f"the trainer has no default for {name}")
        old = ast.literal_eval(match.group(2).strip())
        edits.append(Edit(search=match.group(0), replace=match.group(1) + _format(old, value)))
    return edits


def set_edits(
    source: str, values: dict[str, float | int | str], trainer_env: dict[str, str], path: str = TRAINER_FILE
) -> list[Edit]:
    """A proposal's `set`: edits that make each NAME's value in force the given one, where it is in force
    (the active preset's line, else the `Hyperparameters` default); refused where the file cannot win."""
    preset = trainer_env.get("PRESET")
    known = sorted(set(re.findall(r'os\.environ\.get\(\s*["\']([A-Z][A-Z0-9_]*)["\']', source)))
    edits = []
    for name, value in values.items():
        if name in HARNESS_ENV_KEYS:
            raise ProposalError(f"set {name}: the harness sets {name} itself; the file's value is never used")
        if name in trainer_env:
            raise ProposalError(
                f"set {name}: the workspace's trainer_env sets {name}={trainer_env[name]}, which wins over "
                "the file, so editing the file changes nothing; choose another setting or change the code"
            )
        match = _value_pattern(name, preset, source)
        if match is None:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ProposalError(f"set {name}: the trainer reads no setting {name}{hint}")
        old = ast.literal_eval(match.group(2).strip())
        edits.append(
            Edit(path=path, search=match.group(0), replace=match.group(1) + _literal(name, old, value))
        )
    return edits


def _literal(name: str, old: object, value: float | int | str) -> str:
    """The new value written as the old one was: an int stays an int, a string a string."""
    if isinstance(old, str):
        return repr(str(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProposalError(f"set {name}: {value!r} is not a number ({name} is {old!r})") from None
    if isinstance(old, int) and not isinstance(old, bool):
        if not number.is_integer():
            raise ProposalError(f"set {name}: {name} is an integer ({old}), not {value!r}")
        return str(int(number))
    return _format(old, number)


def move_to_proposal(move: Move, source: str, preset: str | None) -> Proposal:
    values: dict[str, float] = {}
    for name, factor in move.scale.items():
        values[name] = float(current_value(source, name, preset)) * factor
    values.update({k: float(v) for k, v in move.set.items()})
    edits = hparam_edits(source, values, preset) + [Edit(search=s, replace=r) for s, r in move.code]
    shown = ", ".join(f"{k}={_format(current_value(source, k, preset), v)}" for k, v in values.items())
    return Proposal(
        title=move.title,
        hypothesis=move.hypothesis,
        category=move.category,
        expected_effect=shown or "code change",
        edits=edits,
    )


def propose(source: str, history: list[Experiment], trainer_env: dict[str, str]) -> Proposal | None:
    """The first library move not yet in the ledger that applies to `source`; None when exhausted."""
    tried = {e.title for e in history if e.proposer == NAME and e.status != "infra_error"}
    preset = trainer_env.get("PRESET")
    for move in LIBRARY:
        if move.title in tried or set(move.scale) & set(trainer_env) or set(move.set) & set(trainer_env):
            continue
        try:
            proposal = move_to_proposal(move, source, preset)
        except ProposalError:
            continue
        if all(edit.search != edit.replace for edit in proposal.edits):
            return proposal
    return None


def proposer(ctx: ProposalContext, tree: Path) -> Proposal | None:
    """The loop's entry point: pick the next move and apply it to the worktree."""
    proposal = propose(ctx.source, ctx.history, ctx.trainer_env)
    if proposal is not None:
        apply_edits(tree, proposal.edits)
    return proposal
