"""The harness's own bytes-per-token table, so a score never depends on the trainer's copy of it.

Rules (the challenge's `train_gpt.py:build_sentencepiece_luts` and `eval_val`): a target token counts the
UTF-8 bytes of its piece without the leading "▁"; byte-fallback pieces count 1; control, unknown and unused
pieces count 0. The "▁" itself counts 1 byte unless the previous token is a boundary (control, unknown,
unused, or an id beyond the SentencePiece vocab), so the first word after BOS is not charged a space.

Data whose tokenizer transforms the text (CaseOps: lowercase plus case-operator tokens) ships a byte sidecar
instead: `fineweb_val_bytes_NNNNNN.bin` beside each `fineweb_val_NNNNNN.bin`, the same shard format, one uint16
per validation token, the original UTF-8 bytes it stands for (BOS and operators 0). Where it exists, a target
at stream position i counts sidecar[i] bytes and the table is not used (`stream_bytes`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import sentencepiece as spm

from agentgolf.baseline.shards import ShardError, read_shard
from agentgolf.errors import AgentgolfError

SPACE_MARK = "\u2581"  # SentencePiece's "▁"
VAL_PREFIX, VAL_BYTES_PREFIX = "fineweb_val_", "fineweb_val_bytes_"


class ByteTableError(AgentgolfError, ValueError):
    """A tokenizer could not be read, or token ids fall outside the table."""


class ByteTable:
    def __init__(self, base_bytes: np.ndarray, has_leading_space: np.ndarray, is_boundary: np.ndarray):
        self.base_bytes = base_bytes.astype(np.int64)
        self.has_leading_space = has_leading_space.astype(bool)
        self.is_boundary = is_boundary.astype(bool)

    @property
    def size(self) -> int:
        return self.base_bytes.size

    @classmethod
    def from_model(cls, tokenizer: Path, vocab_size: int) -> ByteTable:
        """Table over max(sp vocab, vocab_size) ids; ids the model lacks count 0 bytes and are boundaries."""
        try:
            sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
        except (RuntimeError, OSError):
            raise ByteTableError(f"{tokenizer}: not a readable SentencePiece model") from None
        sp_vocab = sp.vocab_size()
        size = max(sp_vocab, vocab_size)
        base = np.zeros(size, dtype=np.int64)
        space = np.zeros(size, dtype=bool)
        boundary = np.ones(size, dtype=bool)
        for i in range(sp_vocab):
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                continue  # 0 bytes, boundary
            boundary[i] = False
            if sp.is_byte(i):
                base[i] = 1
                continue
            piece = sp.id_to_piece(i)
            if piece.startswith(SPACE_MARK):
                space[i] = True
                piece = piece[1:]
            base[i] = len(piece.encode("utf-8"))
        return cls(base, space, boundary)

    def count(self, prev: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Bytes of each target token given the token before it (same shapes; int64)."""
        prev = np.asarray(prev)
        target = np.asarray(target)
        if prev.shape != target.shape:
            raise ByteTableError(f"prev shape {prev.shape} differs from target shape {target.shape}")
        for name, ids in (("prev", prev), ("target", target)):
            if ids.size and (ids.min() < 0 or ids.max() >= self.size):
                raise ByteTableError(f"{name} ids must lie in [0, {self.size})")
        extra = self.has_leading_space[target] & ~self.is_boundary[prev]
        return self.base_bytes[target] + extra.astype(np.int64)


def bits_per_byte(nll_sum_nats: float, n_bytes: int) -> float:
    """Total cross-entropy in nats over the scored tokens, divided by ln 2 and their byte count."""
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be positive, got {n_bytes}")
    return nll_sum_nats / (math.log(2) * n_bytes)


def load_byte_sidecar(val_files: list[Path]) -> np.ndarray | None:
    """The byte sidecar parallel to the val shards (None when the data has none), checked shard by shard."""
    paths = [Path(f).with_name(Path(f).name.replace(VAL_PREFIX, VAL_BYTES_PREFIX, 1)) for f in val_files]
    present = [p.is_file() for p in paths]
    if not any(present):
        return None
    if not all(present):
        raise ByteTableError(f"byte sidecar incomplete: {paths[present.index(False)].name} is missing")
    parts = []
    for shard, side in zip(val_files, paths, strict=True):
        try:
            counts, tokens = read_shard(side), read_shard(shard, mmap=True)
        except ShardError as e:
            raise ByteTableError(f"byte sidecar: {e}") from None
        if counts.size != tokens.size:
            raise ByteTableError(
                f"{side.name}: {counts.size} byte counts for {tokens.size} tokens in {shard.name}"
            )
        parts.append(counts)
    return np.concatenate(parts).astype(np.int64)


def stream_bytes(
    table: ByteTable, stream: np.ndarray, sidecar: np.ndarray | None, start: int = 0, end=None
) -> int:
    """Bytes of the targets stream[start+1 : end+1] (each after the token before it): the sidecar's when given."""
    end = stream.size - 1 if end is None else end
    if sidecar is not None:
        if sidecar.size != stream.size:
            raise ByteTableError(f"byte sidecar has {sidecar.size} entries for {stream.size} tokens")
        return int(sidecar[start + 1 : end + 1].sum())
    return int(table.count(stream[start:end], stream[start + 1 : end + 1]).sum())
