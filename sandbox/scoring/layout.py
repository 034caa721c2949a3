"""The eval modes as layouts: which validation tokens each request row holds, and which positions it scores.

A model declares its mode on the object `load_model` returns, and the harness builds the rows, so the rules
hold by construction (the challenge's rules on evaluation):
- `windows` (the default, the official baseline's): non-overlapping windows of `seq_len`, every position
  scored, no context across windows;
- `sliding`: each target scored exactly once, with up to `context` tokens of left context, `stride` new
  targets per row (the leaderboard's sliding-window evaluation);
- `stream` (score-first test-time training): the same rows, `stride` being the chunk, sent one at a time in
  order; only after the harness has a chunk's predictions is the chunk revealed to the model's `adapt`
  (sandbox/scoring/stream.py).

The scored targets are fixed by the harness, not by the declaration: every one of the stream's N - 1 targets
(position p predicts token p + 1 from the tokens before it), the last row being partial where the stream does
not divide. So every mode scores the same targets and their val_bpb compare directly. A row's last target is
never sent: it is the first token after the row, and the harness scores that position from the raw logits.
Rows that share any token never share a request, so no row can read another's future.

What a declaration may cost the harness is bounded here: `context` is at most MAX_CONTEXT_FACTOR x seq_len
(checking a position costs one row), and a layout has at most MAX_ROWS rows (the bounds are numpy arrays).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

MAX_SEQ_LEN = 1 << 20
MAX_CONTEXT_FACTOR = 4  # eval_context may be at most this many seq_lens: one checked position costs one row
MAX_ROWS = 1 << 22  # about 4M rows: 100 MB of bounds; a finer stride than that never finishes anyway
AUTOCAST = ("bf16", "fp16")  # the autocast dtypes a model may declare for its evaluation (or "fp32": none)


class EvalMode(BaseModel):
    """What the model declared (`eval_mode`, `eval_stride`, `eval_context` on its object) and the harness ran."""

    mode: Literal["windows", "sliding", "stream"] = "windows"
    seq_len: int = Field(ge=1, le=MAX_SEQ_LEN)
    stride: int | None = Field(None, ge=1)
    context: int | None = Field(None, ge=1)
    # `eval_autocast`: the autocast the scoring workers run the model under (sandbox/scoring/score_worker.py), both
    # alike; None is "fp32", no autocast (and is left out of the result's eval_mode)
    autocast: Literal["bf16", "fp16"] | None = None

    @field_validator("autocast", mode="before")
    @classmethod
    def _known_numerics(cls, value: object) -> object:
        if value is None or value == "fp32":
            return None
        if value not in AUTOCAST:
            raise ValueError(f"eval_autocast must be one of {', '.join(('fp32', *AUTOCAST))}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> EvalMode:
        if self.mode == "windows":
            self.stride = self.context = self.seq_len
        else:
            self.context = self.context or self.seq_len
            self.stride = self.stride or max(1, self.context // 2)
            if self.context > MAX_CONTEXT_FACTOR * self.seq_len:
                raise ValueError(
                    f"eval_context {self.context} is more than {MAX_CONTEXT_FACTOR} x seq_len {self.seq_len}"
                )
            if self.stride > self.context:
                raise ValueError(f"eval_stride {self.stride} is longer than eval_context {self.context}")
        return self


@dataclass(frozen=True)
class Layout:
    """The request rows of one evaluation: row i holds tokens start[i]..end[i]-1 as inputs and scores its last
    `scored[i]` positions. Positions are flat: p = start + t predicts token p + 1."""

    mode: EvalMode
    positions: int  # scored positions in all: every target of the stream, N - 1
    start: np.ndarray
    end: np.ndarray
    scored: np.ndarray
    per_batch: int  # rows per request, at most

    @property
    def rows(self) -> int:
        return int(self.start.size)

    def length(self, i: int) -> int:
        return int(self.end[i] - self.start[i])

    def row_of(self, p: int) -> int:
        """The row that scores position p."""
        return p // self.mode.stride

    @property
    def reach(self) -> int:
        """Rows closer than this share tokens (or one holds the other's next token): never in one request."""
        return math.ceil(self.mode.context / self.mode.stride) + 1

    def groups(self) -> dict[int, np.ndarray]:
        """Row ids by row length (inputs), in stream order: only rows of one length share a request."""
        lengths = self.end - self.start
        return {int(n): np.flatnonzero(lengths == n) for n in np.unique(lengths)}

    def batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Row ids per request, in a secret random order: rows of one length together, strided so that no two
        rows of a request overlap or touch. Stream mode: one chunk at a time, in order."""
        if self.mode.mode == "stream":
            return [np.array([i]) for i in range(self.rows)]
        out = [
            ids[j::k] for ids in self.groups().values() for k in [self._spread(ids.size)] for j in range(k)
        ]
        return [out[j] for j in rng.permutation(len(out))]

    def batch_sizes(self) -> dict[int, list[int]]:
        """The sizes of the requests `batches` makes, per row length: the verifier's requests take these."""
        if self.mode.mode == "stream":
            return {n: [1] for n in self.groups()}
        out = {}
        for n, ids in self.groups().items():
            k = self._spread(ids.size)
            out[n] = [len(range(j, ids.size, k)) for j in range(k)]
        return out

    def _spread(self, n: int) -> int:
        """How many requests n rows of one length go in: enough for per_batch, and at least `reach` apart."""
        return max(math.ceil(n / self.per_batch), min(self.reach, n))


def build_layout(mode: EvalMode, stream_tokens: int, batch_tokens: int) -> Layout:
    """The rows for `mode` over a stream of `stream_tokens` tokens (inputs and targets): every target."""
    total = stream_tokens - 1
    if total < 1:
        raise ValueError(f"the validation stream has {stream_tokens} tokens: nothing to score")
    rows = math.ceil(total / mode.stride)
    if rows > MAX_ROWS:
        raise ValueError(
            f"eval_stride {mode.stride} makes {rows:,} rows of the {total:,} targets; at most {MAX_ROWS:,}"
        )
    first = np.arange(rows, dtype=np.int64) * mode.stride
    end = np.minimum(first + mode.stride, total)
    return Layout(
        mode=mode,
        positions=total,
        start=np.maximum(0, end - mode.context),
        end=end,
        scored=end - first,
        per_batch=max(1, batch_tokens // mode.context),
    )


def row_inputs(stream: np.ndarray, layout: Layout, rows: np.ndarray | list[int]) -> np.ndarray:
    """The inputs of rows of one length as an int64 [B, L] block; their last targets stay here."""
    return np.stack([stream[layout.start[i] : layout.end[i]] for i in rows]).astype(np.int64)
