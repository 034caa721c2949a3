"""An offline W&B run's transaction log (`run-<id>.wandb`): its records, and whether it is complete.

wandb 0.31's `run.finish()` returns once it has asked the wandb-core service to finish, not once the log
holds the run's last record: read straight after, the file can still be short. Closing an experiment
therefore waits until the log's last record is the run's `exit`. The format is a LevelDB log: a 7-byte
header (":W&B", 0xBEE1, version 0), then 32 KiB blocks of chunks, each with a 7-byte header (crc32 seeded
with its type byte, length, type); a record is one FULL chunk or FIRST, MIDDLE..., LAST.
"""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
POLL_SECONDS = 0.01


def payloads(data: bytes) -> list[bytes]:
    """The serialized Record messages of a run-*.wandb file, up to a torn or not yet flushed tail."""
    if len(data) < HEADER or struct.unpack("<4sHB", data[:HEADER]) != (b":W&B", 0xBEE1, 0):
        return []
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # a block's trailing padding
            pos += room
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        if kind == 0 or len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            break  # padding, a record still being written, or damage
        pos += HEADER + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
            pending = b""
    return out


def ends_with_exit(path: Path) -> bool:
    """Whether the log's last complete record is the run's exit record."""
    from wandb.proto import wandb_internal_pb2 as pb

    records = payloads(Path(path).read_bytes())
    return bool(records) and pb.Record.FromString(records[-1]).WhichOneof("record_type") == "exit"


def wait_for_exit(path: Path, timeout: float) -> None:
    """Return once the log is complete; TimeoutError, one line, after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ends_with_exit(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} has no exit record after {timeout:g} s")
        time.sleep(POLL_SECONDS)
