"""The challenge's token shard format: a 256-int32 header, then uint16 tokens; write, validate, read.

The trusted scorer imports this module and nothing else from baseline, so it imports nothing from
agentgolf but `agentgolf.errors`. `atomic_file` is also how the other data modules write their files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

from agentgolf.errors import AgentgolfError

# Shard format (challenge `train_gpt.py:load_data_shard`): 256 little-endian int32 header, uint16 body.
SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
MAX_VOCAB = 1 << 16  # uint16 tokens
MAX_SHARD_TOKENS = (1 << 31) - 1  # the header stores the count as int32
BOS_ID = 1  # every document in a shard starts with this token (no EOS): the stream's document boundaries


class ShardError(AgentgolfError, ValueError):
    """A shard file is missing, truncated or not in the challenge format; the message names the file."""


def write_shard(path: Path, tokens: np.ndarray) -> None:
    """Write tokens as one shard; a temp file in the same folder is fsynced then renamed over `path`."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ShardError(f"{path.name}: tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size > MAX_SHARD_TOKENS:
        raise ShardError(f"{path.name}: {tokens.size} tokens do not fit a shard (max {MAX_SHARD_TOKENS})")
    if tokens.dtype.kind not in "iu":
        raise ShardError(f"{path.name}: tokens must be integers, got {tokens.dtype}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= MAX_VOCAB):
        raise ShardError(f"{path.name}: token ids must lie in [0, {MAX_VOCAB})")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    with atomic_file(path) as f:
        f.write(header.tobytes())
        f.write(tokens.astype(TOKEN_DTYPE, copy=False).tobytes())


def shard_token_count(path: Path) -> int:
    """Validate a shard's header against its file size and return its token count (reads 1 KiB)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file not found") from None
    except OSError as e:
        raise ShardError(f"{path}: cannot read shard ({e.strerror})") from None
    if len(raw) < HEADER_BYTES:
        raise ShardError(f"{path}: truncated header ({len(raw)} of {HEADER_BYTES} bytes)")
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != SHARD_MAGIC:
        raise ShardError(f"{path}: bad magic {int(header[0])}, expected {SHARD_MAGIC}")
    if header[1] != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported version {int(header[1])}, expected {SHARD_VERSION}")
    n = int(header[2])
    if n < 0:
        raise ShardError(f"{path}: negative token count {n}")
    expected = HEADER_BYTES + n * TOKEN_DTYPE.itemsize
    if size != expected:
        raise ShardError(f"{path}: file is {size} bytes but the header's {n} tokens need {expected}")
    return n


def read_shard(path: Path, *, mmap: bool = False) -> np.ndarray:
    """Return a shard's tokens as uint16 (a read-only memory map when `mmap`), after validating it."""
    n = shard_token_count(path)
    if mmap and n:
        return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n,))
    tokens = np.fromfile(path, dtype=TOKEN_DTYPE, count=n, offset=HEADER_BYTES)
    return tokens.astype(np.uint16, copy=False)


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """Yield a temp file next to `path`; on success fsync and rename it over `path`, else delete it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the permissions open() would
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
