"""What the offline search may change: the trainer's knobs with their ranges, the leaderboard's techniques
as on/off switches, and the playbook's single moves that it tries first.

A config is the dict of every searched knob's value in force plus one flag per technique. Ranges are
factors of the baseline's value (so the same space fits the CPU preset and the full model), absolute, or
fractions of the size limit; each is widened to hold every value the ledger has seen, since Optuna
refuses a recorded trial outside its distribution. Values are rounded to what would be written, so two
configs that write the same file compare equal.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Literal

from pydantic import BaseModel, Field

from agentgolf.agent.proposers.knobs import value_in_force
from agentgolf.agent.proposers.proposal import ProposalError
from agentgolf.sandbox.runner import HARNESS_ENV_KEYS

Config = dict[str, float | int | bool]
TECHNIQUE_PREFIX = "technique:"


class Knob(BaseModel):
    name: str
    category: str
    low: float
    high: float
    scale: Literal["baseline", "absolute", "size_limit"] = "baseline"  # what low and high multiply
    log: bool = False
    grid: Literal["any", "pow2", "heads"] = "any"  # written values: any, powers of two, whole even heads


SPACE: list[Knob] = [
    Knob(name="MATRIX_LR", category="opt", low=0.25, high=4.0, log=True),
    Knob(name="SCALAR_LR", category="opt", low=0.25, high=4.0, log=True),
    Knob(name="TIED_EMBED_LR", category="opt", low=0.25, high=4.0, log=True),
    Knob(name="MUON_MOMENTUM", category="opt", low=0.85, high=0.99, scale="absolute"),
    Knob(name="MUON_MOMENTUM_WARMUP_START", category="opt", low=0.7, high=0.95, scale="absolute"),
    Knob(name="TRAIN_BATCH_TOKENS", category="opt", low=0.25, high=4.0, log=True, grid="pow2"),
    Knob(name="WARMDOWN_ITERS", category="sched", low=0.25, high=4.0, log=True),
    Knob(name="ITERATIONS", category="sched", low=0.5, high=4.0, log=True),
    Knob(name="MODEL_DIM", category="arch", low=0.5, high=2.0, grid="heads"),
    Knob(name="NUM_LAYERS", category="arch", low=0.5, high=2.0),
    Knob(name="MLP_MULT", category="arch", low=1, high=4, scale="absolute"),
    Knob(name="LOGIT_SOFTCAP", category="arch", low=10.0, high=60.0, scale="absolute"),
    Knob(name="QK_GAIN_INIT", category="arch", low=0.5, high=6.0, scale="absolute"),
    Knob(name="ROPE_BASE", category="arch", low=0.1, high=100.0, log=True),
    Knob(name="TRAIN_SEQ_LEN", category="data", low=0.25, high=4.0, log=True, grid="pow2"),
    Knob(name="ARTIFACT_MAX_BYTES", category="quant", low=0.95, high=1.0, scale="size_limit"),
]
BY_NAME = {k.name: k for k in SPACE}


class Move(BaseModel):
    """One of the playbook's single moves: multiply some knobs' current values, set others."""

    title: str
    hypothesis: str
    category: str
    scale: dict[str, float] = Field(default_factory=dict, description="multiply the current value")
    set: dict[str, float | int] = Field(default_factory=dict, description="set an absolute value")


# Drawn from the leaderboard's technique catalogue (parameter-golf-facts.md §5); gains there were
# measured at full scale, so every one is re-measured here rather than trusted. The search tries them
# first, one at a time on the best so far, before it models anything.
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


# A trainer's own settings beyond SPACE: every environment read with a positive numeric default is a knob,
# in a range around its own value (a factor of 2 each way), so a trainer that is not ours is searched too.
ENV_READ = re.compile(r'os\.(?:environ\.get|getenv)\(\s*["\']([A-Z][A-Z0-9_]*)["\']\s*,')
NOT_KNOBS = frozenset(
    {"SEED", "VOCAB_SIZE", "RUN_ID", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}
)
CATEGORY_WORDS = {
    "opt": ("LR", "MOMENTUM", "BETA", "BETA1", "BETA2", "BATCH", "WD", "DECAY", "CLIP", "EPS"),
    "sched": ("WARMUP", "WARMDOWN", "ITERATIONS", "ITERS", "STEPS", "FRAC"),
    "arch": ("DIM", "LAYERS", "HEADS", "HIDDEN", "EMBED", "MLP", "WIDTH", "DEPTH", "CONTEXT", "MULT"),
    "data": ("SEQ", "LEN"),
    "quant": ("BITS", "QUANT", "BYTES"),
}


def number(value: object) -> float | int | None:
    """A setting's value as a number: an int stays an int, a numeric string is read ("64" -> 64)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    try:
        return int(value) if str(value).strip().lstrip("-").isdigit() else float(value)
    except (TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=1)
def ours() -> frozenset[str]:
    """The settings our own baseline reads: SPACE holds the ones worth searching, the rest are left alone."""
    from importlib.resources import files

    from agentgolf.challenge import TRAINER_FILE

    try:
        return frozenset(ENV_READ.findall(files("agentgolf.baseline").joinpath(TRAINER_FILE).read_text()))
    except OSError:
        return frozenset()


def discovered(source: str, trainer_env: dict[str, str]) -> list[Knob]:
    """The trainer's own knobs that SPACE does not name: its environment reads with a positive numeric
    default (0/1 flags, paths and the harness's names excluded), each in [x/2, 2x] of its value."""
    out = []
    for name in dict.fromkeys(ENV_READ.findall(source)):
        if name in BY_NAME or name in ours() or name in NOT_KNOBS or name in HARNESS_ENV_KEYS:
            continue
        if any(word in name for word in ("PATH", "DIR", "FILE", "NAME", "DEVICE")):
            continue
        try:
            value = number(value_in_force(source, name, trainer_env))
        except ProposalError:
            continue
        if value is None or value <= 0 or (isinstance(value, int) and value <= 1):
            continue
        words = set(name.split("_"))
        category = next((c for c, w in CATEGORY_WORDS.items() if words & set(w)), "other")
        out.append(Knob(name=name, category=category, low=0.5, high=2.0, log=True))
    return out


def searched(source: str, trainer_env: dict[str, str]) -> list[Knob]:
    """The knobs this trainer reads and the file decides: SPACE's, then its own (discovered); one set in
    trainer_env cannot be moved here."""
    out = []
    for knob in [*SPACE, *discovered(source, trainer_env)]:
        if knob.name in trainer_env:
            continue
        try:
            value_in_force(source, knob.name, trainer_env)
        except ProposalError:
            continue
        out.append(knob)
    return out


def read_knobs(source: str, knobs: list[Knob], trainer_env: dict[str, str]) -> Config:
    """Each knob's value in force in this source, as a plain int or float."""
    config: Config = {}
    for knob in knobs:
        value = number(value_in_force(source, knob.name, trainer_env))
        if value is None:
            raise ProposalError(f"{knob.name} is not a number here")
        config[knob.name] = value if isinstance(value, int) else float(value)
    return config


def written(knob: Knob, value: float, is_int: bool, heads: int, size_limit: int, digits: int) -> float | int:
    """The value as it would be written: to `digits` significant digits (so near-equal values are one
    config), on the knob's grid, an int for an int knob, and a byte target never above the size limit."""
    value = float(f"{value:.{digits}g}")
    if knob.grid == "pow2":
        value = 2.0 ** round(math.log2(max(value, 1.0)))
    elif knob.grid == "heads":
        step = 2 * max(1, heads)
        value = step * max(1, round(value / step))
    if knob.scale == "size_limit":
        value = min(value, size_limit)
    return max(1, round(value)) if is_int else value


def bounds(knob: Knob, base: float, size_limit: int, seen: list[float], is_int: bool) -> tuple[float, float]:
    """The knob's range for this baseline, widened to hold every value seen; None when it cannot scale."""
    factor = {"baseline": base, "absolute": 1.0, "size_limit": float(size_limit)}[knob.scale]
    low, high = knob.low * factor, knob.high * factor
    low, high = min([low, *seen]), max([high, *seen])
    if is_int:
        low, high = max(1, math.floor(low)), max(1, math.ceil(high))
    return low, high


def shape_problem(source: str, trainer_env: dict[str, str], accum_seqs: int) -> str:
    """Why the trainer would refuse this source's shape at start-up ('' if it would not)."""
    v = {}
    for name in ("MODEL_DIM", "NUM_HEADS", "NUM_KV_HEADS", "TRAIN_SEQ_LEN", "TRAIN_BATCH_TOKENS"):
        try:
            v[name] = int(float(value_in_force(source, name, trainer_env)))
        except (ProposalError, ValueError):
            return ""  # a trainer without the setting: its own import check decides
    dim, heads, kv = v["MODEL_DIM"], max(1, v["NUM_HEADS"]), max(1, v["NUM_KV_HEADS"])
    if dim % heads or (dim // heads) % 2 or heads % kv:
        return f"MODEL_DIM {dim} does not split into {heads} heads of even size ({kv} kv heads)"
    seq, batch = v["TRAIN_SEQ_LEN"], v["TRAIN_BATCH_TOKENS"]
    if seq > 0 and batch % (accum_seqs * seq):
        return f"TRAIN_BATCH_TOKENS {batch} is not a multiple of {accum_seqs} x TRAIN_SEQ_LEN {seq}"
    return ""


def key(config: Config) -> tuple:
    """Configs that write the same values compare equal."""
    return tuple(sorted(config.items()))


def changes(old: Config, new: Config) -> dict[str, tuple]:
    """Knob -> (old, new) for what differs, techniques included."""
    return {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}


def show(name: str, value: float | int | bool | None) -> str:
    if name.startswith(TECHNIQUE_PREFIX):
        return f"{'+' if value else '-'}{name.removeprefix(TECHNIQUE_PREFIX)}"
    return f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
