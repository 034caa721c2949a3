"""The eval modes as layouts: which validation tokens each request row holds, and which positions it scores.

A model declares its mode on the object `load_model` returns, and the harness builds the rows, so the rules
hold by construction (the challenge's rules on evaluation):
- `windows` (the default, the official baseline's): non-overlapping windows of `seq_len`, every position
  scored, no context across windows;
- `sliding`: each target scored exactly once, with up to `context` tokens of left context, `stride` new
  targets per row (the leaderboard's sliding-window evaluation);
- `stream` (score-first test-time training): the same rows, `stride` being the chunk, sent one at a time in
  order; only after the harness has a chunk's predictions is the chunk revealed to the model's `adapt`
  (sandbox/stream.py).

Both score the same targets, positions 0..n*seq_len-1 of the stream (position p predicts token p+1 from the
tokens before it), so their val_bpb compare directly. A row's last target is never sent: it is the first
token after the row, and the harness scores that position from the raw logits. Rows that share any token
never share a request, so no row can read another's future.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

MAX_CONTEXT = 1 << 20


class EvalMode(BaseModel):
    """What the model declared (`eval_mode`, `eval_stride`, `eval_context` on its object) and the harness ran."""

    mode: Literal["windows", "sliding", "stream"] = "windows"
    seq_len: int = Field(ge=2, le=MAX_CONTEXT)
    stride: int | None = Field(None, ge=1)
    context: int | None = Field(None, ge=2, le=MAX_CONTEXT)

    @model_validator(mode="after")
    def _complete(self) -> EvalMode:
        if self.mode == "windows":
            self.stride = self.context = self.seq_len
        else:
            self.context = self.context or self.seq_len
            self.stride = self.stride or self.context // 2
            if self.stride > self.context:
                raise ValueError(f"eval_stride {self.stride} is longer than eval_context {self.context}")
        return self


class Layout(BaseModel):
    """The request rows of one evaluation: row i holds tokens start[i]..end[i]-1 as inputs and scores its last
    `scored[i]` positions. Positions are flat: p = start + t predicts token p + 1."""

    mode: EvalMode
    positions: int  # scored positions in all: n windows x seq_len
    start: list[int]
    end: list[int]
    scored: list[int]
    per_batch: int  # rows per request, at most

    @property
    def rows(self) -> int:
        return len(self.start)

    def row_of(self, p: int) -> int:
        """The row that scores position p."""
        return p // self.mode.stride

    def batches(self) -> list[list[int]]:
        """Row ids per request: rows of one length together, strided so that no two rows of a request
        overlap or touch (a row's next token is the first token of the row after it)."""
        if self.mode.mode == "stream":
            return [[i] for i in range(self.rows)]  # one chunk at a time, in order
        groups: dict[int, list[int]] = {}
        for i in range(self.rows):
            groups.setdefault(self.end[i] - self.start[i], []).append(i)
        reach = math.ceil(self.mode.context / self.mode.stride) + 1  # rows closer than this share tokens
        out = []
        for ids in groups.values():
            k = max(math.ceil(len(ids) / self.per_batch), min(reach, len(ids)))
            out += [ids[j::k] for j in range(k)]
        return out


def build_layout(mode: EvalMode, stream_tokens: int, batch_tokens: int) -> Layout:
    """The rows for `mode` over a stream of `stream_tokens` tokens (inputs and targets)."""
    n_windows = (stream_tokens - 1) // mode.seq_len
    if n_windows == 0:
        raise ValueError(f"seq_len {mode.seq_len} exceeds the {stream_tokens} validation tokens")
    total = n_windows * mode.seq_len
    starts, ends, scored = [], [], []
    for first in range(0, total, mode.stride):
        last = min(first + mode.stride, total)
        starts.append(max(0, last - mode.context))
        ends.append(last)
        scored.append(last - first)
    return Layout(
        mode=mode,
        positions=total,
        start=starts,
        end=ends,
        scored=scored,
        per_batch=max(1, batch_tokens // mode.context),
    )


def row_inputs(stream: np.ndarray, layout: Layout, rows: list[int]) -> np.ndarray:
    """The inputs of rows of one length as an int64 [B, L] block; their last targets stay here."""
    return np.stack([stream[layout.start[i] : layout.end[i]] for i in rows]).astype(np.int64)
