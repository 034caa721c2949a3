"""Predicting a config's artifact bytes before it trains, so the search never spends a run on a model that
cannot fit: the model's stored bytes counted from its shape, scaled by what recorded runs compressed to.

The count mirrors the trainer's export (`Int8Export`): a float tensor of at least INT8_MIN_NUMEL values is
stored as one int8 code per value plus one fp16 step per row; a smaller one passes through as fp16, or
fp32 when it is a control tensor (scales, gains, mixes, skip weights). zlib then shrinks that by a ratio
that depends on the weights; the ratio is learned from the ledger: the largest (artifact - code) / counted
bytes of any recorded run, so a predicted fit is a fit at the worst compression seen, and a run recorded
over the size limit raises every later prediction.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from agentgolf.agent.proposers.knobs import value_in_force
from agentgolf.agent.proposers.proposal import ProposalError

INT8_MIN_NUMEL = 65_537  # the trainer's threshold, used when its source does not state one
SHAPE_KNOBS = (
    "VOCAB_SIZE",
    "NUM_LAYERS",
    "MODEL_DIM",
    "NUM_HEADS",
    "NUM_KV_HEADS",
    "MLP_MULT",
    "TIE_EMBEDDINGS",
)


class Shape(BaseModel):
    vocab: int
    layers: int
    dim: int
    heads: int
    kv_heads: int
    mlp_mult: int
    tied: bool


class SizeRecord(BaseModel):
    """One recorded run: what its shape counts to, its code bytes, and the artifact bytes it measured."""

    counted: int
    code: int
    artifact: int


def read_shape(source: str, trainer_env: dict[str, str]) -> Shape:
    """The model's shape as the trainer will build it (trainer_env wins over the file, as at run time)."""
    v = {name: int(float(value_in_force(source, name, trainer_env))) for name in SHAPE_KNOBS}
    return Shape(
        vocab=v["VOCAB_SIZE"],
        layers=v["NUM_LAYERS"],
        dim=v["MODEL_DIM"],
        heads=max(1, v["NUM_HEADS"]),
        kv_heads=max(1, v["NUM_KV_HEADS"]),
        mlp_mult=v["MLP_MULT"],
        tied=bool(v["TIE_EMBEDDINGS"]),
    )


def _min_numel(source: str) -> int:
    found = re.search(r"^INT8_MIN_NUMEL\s*=\s*([\d_]+)", source, re.M)
    return int(found.group(1).replace("_", "")) if found else INT8_MIN_NUMEL


def counted_bytes(source: str, trainer_env: dict[str, str]) -> int:
    """The export's bytes before compression for the model this source builds."""
    s = read_shape(source, trainer_env)
    kv_dim = s.kv_heads * (s.dim // s.heads)
    matrices = [(s.vocab, s.dim)] + ([] if s.tied else [(s.vocab, s.dim)])
    per_layer = [(s.dim, s.dim), (kv_dim, s.dim), (kv_dim, s.dim), (s.dim, s.dim)]
    per_layer += [(s.mlp_mult * s.dim, s.dim), (s.dim, s.mlp_mult * s.dim)]
    matrices += per_layer * s.layers
    controls = s.layers * (s.heads + 4 * s.dim) + min(s.layers // 2, s.layers - s.layers // 2) * s.dim
    threshold, total = _min_numel(source), 4 * controls  # control tensors stay fp32
    for rows, cols in matrices:
        numel = rows * cols
        total += numel + 2 * rows if numel >= threshold else 2 * numel
    return total


def code_bytes(source: str) -> int:
    return len(source.encode())


def record(source: str, trainer_env: dict[str, str], artifact_bytes: int) -> SizeRecord | None:
    """A run's size record, or None when its shape cannot be read from its source."""
    try:
        return SizeRecord(
            counted=counted_bytes(source, trainer_env), code=code_bytes(source), artifact=artifact_bytes
        )
    except (ProposalError, ValueError, ZeroDivisionError):
        return None


def bytes_ratio(records: list[SizeRecord], default: float) -> float:
    """Stored model bytes per counted byte: the largest any recorded run showed, else `default`."""
    ratios = [(r.artifact - r.code) / r.counted for r in records if r.counted > 0 and r.artifact > r.code]
    return max(ratios) if ratios else default


def predict_bytes(source: str, trainer_env: dict[str, str], ratio: float) -> int:
    """Code bytes plus the model's counted bytes at the learned compression ratio."""
    return code_bytes(source) + round(ratio * counted_bytes(source, trainer_env))
