"""The leaderboard's techniques as tested patches: a catalogue of our own implementations of the
records' ideas (parameter-golf-facts.md §5), each a small unified diff against the baseline trainer.

The search treats each technique as one categorical move and an LLM sees the list as known options;
the reported effect is what the records measured at full scale, not a promise for this workspace.
Patches ship as package data in `technique_patches/<name>.patch`. They apply with `git apply`, or, on a
parent that moved near them (tuned knobs, other techniques), by a three-way merge against the baseline, so
techniques stack: the search combines them.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from pydantic import BaseModel

from agentgolf.agent.proposers.proposal import Proposal, ProposalError
from agentgolf.challenge import TRAINER_FILE
from agentgolf.experiments.ledger import Experiment

PATCH_FOLDER = "technique_patches"
# git merge-file --diff3 marks a conflict with these at the start of a line; 0-127 is the number of conflicts
CONFLICT_START, CONFLICT_BASE, CONFLICT_SPLIT, CONFLICT_END = "<<<<<<< ", "||||||| ", "=======", ">>>>>>> "
MERGE_ERROR = 128
KNOB_LINE = re.compile(
    r'^    [a-z0-9_]+ = (?:int|float|str)\(os\.environ\.get\("([A-Z0-9_]+)", .*\)\)$', re.M
)


class Technique(BaseModel):
    name: str  # slug, also the patch file's stem
    title: str  # short, used as the proposal title
    category: str  # one of proposal.CATEGORIES
    hypothesis: str  # why it should help here
    reported_effect: str  # what the records measured, or a negative result
    reported_bpb: float | None = None  # signed reported delta in bpb (negative = better), if one is given


# Reported effects quote parameter-golf-facts.md §5 (record folders by date); "comp." means measured together
# with other changes. They were measured at full scale (8xH100, 600 s) and are re-measured here, not trusted.
TECHNIQUES: list[Technique] = [
    Technique(
        name="sliding_eval",
        title="Sliding-window evaluation (stride 64)",
        category="eval",
        hypothesis="Scoring each target with up to a full context of left tokens instead of restarting every "
        "window removes the cold-start positions that dominate the windows score; the model is unchanged.",
        reported_effect="-0.0319 bpb, 1.2244 -> 1.1925 (record 03-19 SlidingWindowEval, stride 64, eval 70 s); "
        "stride 16 a further -0.015 (non-record 03-21)",
        reported_bpb=-0.0319,
    ),
    Technique(
        name="muon_weight_decay",
        title="Decoupled Muon weight decay 0.04",
        category="opt",
        hypothesis="Shrinking the block matrices each step keeps their RMS small, which quantizes with a "
        "smaller gap and compresses into fewer bytes.",
        reported_effect="WD 0.04 best of 0.01-0.05, part of the 1.1458 stack (record 03-20), no isolated figure; "
        "on looped models 0.02 was best and 0.06 cost +0.011",
    ),
    Technique(
        name="ema",
        title="Export an EMA of the weights",
        category="opt",
        hypothesis="An average of the last steps' weights sits nearer the valley floor than the last noisy "
        "iterate, so it scores lower and quantizes with a smaller gap, at no cost in bytes.",
        reported_effect="EMA 0.997: -0.0006 bpb (record 03-22); SWA over the last 40%: -0.0006 (record 03-20); "
        "negative for ternary and binary models (0.13 and 0.03 worse)",
        reported_bpb=-0.0006,
    ),
    Technique(
        name="int6_qat",
        title="Int6 block matrices with late QAT",
        category="quant",
        hypothesis="Six bits per block weight need far fewer bytes after zlib, bytes a wider or deeper model "
        "can spend; rounding the weights to the int6 grid in the last part of training makes the "
        "model robust to that rounding, so the quantization gap stays near zero.",
        reported_effect="int6 + STE QAT: quant gap -> 0.0000 (record 03-19); int6 funding MLP 3x: -0.0294 comp. "
        "(record 03-19); late QAT alone -0.0001 (03-22); QAT later dropped as not worth its step time (04-01)",
    ),
    Technique(
        name="smear_gate",
        title="SmearGate: mix in the previous token's embedding",
        category="arch",
        hypothesis="A learned per-channel share of the previous token's embedding gives the first layer a "
        "bigram signal for about model_dim parameters; it starts at zero, as the baseline.",
        reported_effect="part of the 1.1556 stack (record 03-19 smeargate_orthoinit_muonwd) and of 1.1458 "
        "(03-20), no isolated figure; re-added 04-16 with a BOS mask",
    ),
    Technique(
        name="bigram_hash",
        title="BigramHash embedding (4096 x 128)",
        category="arch",
        hypothesis="A hashed table of (previous, current) token pairs adds bigram statistics the small model "
        "would otherwise spend layers on; the projection starts at zero, so training starts as the baseline.",
        reported_effect="part of the 1.1458 stack (record 03-20); 4096 -> 8192 buckets -0.0012, -> 10240 -0.0008 "
        "(03-20); dropped at vocab 4096+; 0.020 worse at convergence on a ternary model",
    ),
    Technique(
        name="partial_rope",
        title="Partial RoPE (16 dims per head)",
        category="arch",
        hypothesis="Rotating only part of each head leaves the other dimensions to match by content at any "
        "distance, which helps at long context for no parameters or bytes.",
        reported_effect="-0.0023 bpb comp. with LN scale 1/sqrt(l+1), 1.1271 -> 1.1248 (record 03-21)",
        reported_bpb=-0.0023,
    ),
    Technique(
        name="value_embed",
        title="Value embeddings",
        category="arch",
        hypothesis="A second token table added to every layer's attention values, each layer with its own "
        "zero-initialised scale, lets attention move token identity directly; costs one vocab x kv_dim table.",
        reported_effect="not in the Parameter Golf catalogue (it comes from the modded-nanogpt speedruns); "
        "the related value residual on looped cores was +0.14 worse (PR #363)",
    ),
    Technique(
        name="layer_recurrence",
        title="Mini depth recurrence (2 middle blocks twice, from 40%)",
        category="arch",
        hypothesis="Running the last encoder blocks a second time adds depth for no bytes; starting it after "
        "40% of training avoids the slow early steps that made full recurrence lose.",
        reported_effect="re-running layers 4-5 switched on at 35-50% of training: -0.002 to -0.003 (03-31, "
        "04-03); early full recurrence +0.025 worse (non-record 03-21), x2 on a 1x5090 +0.051 worse",
        reported_bpb=-0.002,
    ),
    Technique(
        name="long_context",
        title="Twice the training context",
        category="data",
        hypothesis="Longer rows give every token more left context in training and in the windows score, "
        "with the same tokens per step.",
        reported_effect="train seq 2048 with retuned LRs: -0.0186 bpb, 1.2244 -> 1.2058 (record 03-18)",
        reported_bpb=-0.0186,
    ),
    Technique(
        name="leaky_relu2",
        title="LeakyReLU(0.5)^2 MLP activation",
        category="arch",
        hypothesis="Negative pre-activations keep a gradient, so fewer MLP units die; one line, no bytes.",
        reported_effect="-0.0021 to -0.003 bpb (record 03-23); negligible on 8xH100 with 80 shards (PR #363)",
        reported_bpb=-0.0021,
    ),
    Technique(
        name="fp16_embed",
        title="Keep the tied embedding in fp16",
        category="quant",
        hypothesis="The tied embedding is also the output layer, so its int8 error hits every logit; fp16 "
        "costs about vocab x dim bytes more and removes most of the quantization gap.",
        reported_effect="quant gap 0.007 -> 0.0005 for about +500 KB (record 03-18 FP16Embed)",
        reported_bpb=-0.0065,
    ),
]


def catalogue() -> list[Technique]:
    """Every technique, each with its patch in the package."""
    return list(TECHNIQUES)


def _patch_file(name: str):
    return resources.files("agentgolf.agent.proposers").joinpath(PATCH_FOLDER, f"{name}.patch")


def patch_text(t: Technique) -> str:
    """The unified diff against the baseline trainer, paths a/train_gpt.py and b/train_gpt.py."""
    return _patch_file(t.name).read_text()


def apply_technique(tree: Path, t: Technique) -> None:
    """Apply the patch to tree/train_gpt.py, or raise ProposalError with a one-line reason.

    A parent that differs from the baseline near the patch (tuned knob defaults, another technique) no longer
    matches its context lines; the change is then merged three ways (`_merge`)."""
    trainer = tree / TRAINER_FILE
    if not trainer.is_file():
        raise ProposalError(f"technique {t.name}: {TRAINER_FILE} is missing from the tree")
    text, patch = trainer.read_text(), patch_text(t)
    try:
        trainer.write_text(_git_apply(text, patch, t.name))
    except ProposalError:
        trainer.write_text(_merge(text, patch, t.name))


def _merge(text: str, patch: str, name: str) -> str:
    """The patch's change merged into `text`, with the packaged baseline as the common ancestor.

    Tuned knob defaults are set back to the baseline's for the merge and restored after it, so a knob line
    next to the change does not conflict. Where both sides only inserted lines at the same place (another
    technique's knobs, config fields or statements), both insertions are kept, the parent's first; any other
    conflict means the technique does not stack on this parent."""
    base = resources.files("agentgolf.baseline").joinpath(TRAINER_FILE).read_text()
    base_knobs = _knob_lines(base)
    tuned = {env: line for env, line in _knob_lines(text).items() if base_knobs.get(env, line) != line}
    for env, line in tuned.items():
        text = text.replace(line, base_knobs[env], 1)
    with tempfile.TemporaryDirectory() as scratch:
        paths = [Path(scratch) / side for side in ("parent", "baseline", name)]
        for path, content in zip(paths, (text, base, _git_apply(base, patch, name)), strict=True):
            path.write_text(content)
        done = subprocess.run(
            ["git", "merge-file", "-p", "--diff3", *map(str, paths)], capture_output=True, text=True
        )
    if done.returncode < 0 or done.returncode >= MERGE_ERROR:
        raise ProposalError(f"technique {name}: git merge-file failed: {done.stderr.strip()[:200]}")
    merged = _keep_both_insertions(done.stdout, name)
    for env, line in tuned.items():
        merged = merged.replace(base_knobs[env], line, 1)
    return merged


def _keep_both_insertions(merged: str, name: str) -> str:
    """Resolve git's diff3 conflict blocks where the ancestor part is empty: parent's lines, then the patch's."""
    out: list[str] = []
    lines = iter(merged.splitlines(keepends=True))
    for line in lines:
        if not line.startswith(CONFLICT_START):
            out.append(line)
            continue
        parts: list[list[str]] = [[], [], []]  # parent, ancestor, patch
        part = 0
        for inner in lines:
            if inner.startswith(CONFLICT_END):
                break
            if inner.startswith((CONFLICT_BASE, CONFLICT_SPLIT)):
                part += 1
                continue
            parts[part].append(inner)
        parent, ancestor, theirs = parts
        if ancestor:
            where = ancestor[0].strip()[:80]
            raise ProposalError(f"technique {name} conflicts with this trainer's own change to {where!r}")
        out += parent + theirs
    return "".join(out)


def _knob_lines(text: str) -> dict[str, str]:
    """Each Hyperparameters line, by its environment variable's name (the first, if one repeats)."""
    lines: dict[str, str] = {}
    for match in KNOB_LINE.finditer(text):
        lines.setdefault(match.group(1), match.group(0))
    return lines


def _git_apply(text: str, patch: str, name: str) -> str:
    """The trainer's text with the patch applied; git runs outside any repository, as patch(1) would."""
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch) / TRAINER_FILE
        work.write_text(text)
        done = subprocess.run(
            ["git", "apply", "--whitespace=nowarn", "-"],
            cwd=scratch,
            input=patch,
            capture_output=True,
            text=True,
            env={**os.environ, "GIT_CEILING_DIRECTORIES": str(Path(scratch).parent)},
        )
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["git apply failed"])[0]
            raise ProposalError(f"technique {name} does not apply to this trainer: {reason}")
        return work.read_text()


def to_proposal(t: Technique) -> Proposal:
    """The proposal that records this technique in the ledger: the patch is applied to the tree separately."""
    return Proposal(
        title=t.title,
        hypothesis=f"Technique {t.name}: {t.hypothesis} Reported: {t.reported_effect}.",
        category=t.category,
        expected_effect=t.reported_effect,
    )


def catalogue_text(techniques: list[Technique] | None = None) -> str:
    """The catalogue as prompt lines: one technique a line, with what the records reported."""
    return "\n".join(
        f"- {t.name} ({t.category}): {t.title}. Reported: {t.reported_effect}"
        for t in (catalogue() if techniques is None else techniques)
    )


def find(name: str) -> Technique | None:
    return next((t for t in TECHNIQUES if t.name == name.strip()), None)


def tried_as(t: Technique, e: Experiment) -> bool:
    """Does ledger row `e` apply technique `t`? Its title, or its hypothesis or expected effect naming it (as
    to_proposal, the search and an LLM's `apply_technique` write them)."""
    if e.kind != "proposal":
        return False
    return (
        e.title == t.title
        or f"Technique {t.name}" in e.hypothesis
        or t.hypothesis[:60] in e.hypothesis
        or re.search(rf"techniques?: [^;]*\b{re.escape(t.name)}\b", e.hypothesis) is not None
    )


def outcome_in(t: Technique, history: list[Experiment], shown: int = 3) -> str:
    """The technique's outcome in this workspace so far: each row that applied it, in the judge's words."""
    from agentgolf.agent.proposers.briefing.digest import verdict

    rows = [e for e in history if tried_as(t, e)]
    if not rows:
        return "not tried here yet"
    said = "; ".join(f"exp {e.id} {verdict(e)[:80]}" for e in rows[-shown:])
    return f"tried {len(rows)}x here: {said}"


def catalogue_with_outcomes(history: list[Experiment]) -> str:
    """The catalogue for a prompt: what each technique does, what the records reported, what it did here."""
    return "\n".join(
        f"- {t.name} ({t.category}): {t.title}. {t.hypothesis} Reported on the leaderboard: "
        f"{t.reported_effect}. Here: {outcome_in(t, history)}."
        for t in catalogue()
    )
