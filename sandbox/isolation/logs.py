"""Log capture: a sandboxed process's output drained into a capped file, its start and end kept in memory."""

from __future__ import annotations

import os
import select
import threading
from pathlib import Path

# The launcher (sandbox/isolation/process.py) prints this to the log once the sandbox is set up, just before exec'ing
# the candidate: a log without it means the sandbox itself failed (infra_error). A candidate cannot take back
# a line already printed.
READY_LINE = "[agentgolf] sandbox ready"
HEAD_BYTES = 4096  # the start of the log, kept to look for READY_LINE

READ_CHUNK = 1 << 16
TAIL_BYTES = 64 * 1024  # kept in memory for parsing and for log_tail, even past the log cap
DRAIN_SECONDS = 5.0  # how long to wait for a pipe to reach EOF after the process tree is dead


class LogCapture:
    """Drain a pipe into a file up to a byte cap, keep draining past it, and keep the last bytes in memory.

    The child never blocks on a full pipe (that would let it stall the harness), and a log that hits the
    cap ends with a note saying how much was dropped.
    """

    def __init__(self, fd: int, path: Path, cap: int):
        self.fd, self.path, self.cap = fd, path, cap
        self.written = 0
        self.dropped = 0
        self.error: OSError | None = None
        self._tail = bytearray()
        self._head = bytearray()
        self._stop = threading.Event()
        self._file = open(path, "wb")
        self._thread = threading.Thread(target=self._run, name=f"log:{path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                ready, _, _ = select.select([self.fd], [], [], 0.2)
                if not ready:
                    if self._stop.is_set():
                        break
                    continue
                chunk = os.read(self.fd, READ_CHUNK)
                if not chunk:
                    break
                self._take(chunk)
        except OSError as e:  # harness-side I/O failure (disk full...): reported as infra_error
            self.error = e
        finally:
            self._finish()

    def _take(self, chunk: bytes) -> None:
        room = self.cap - self.written
        if room > 0:
            part = chunk[:room]
            self._file.write(part)
            self._file.flush()
            self.written += len(part)
        self.dropped += max(0, len(chunk) - max(room, 0))
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[: HEAD_BYTES - len(self._head)]
        self._tail += chunk
        if len(self._tail) > TAIL_BYTES:
            del self._tail[: len(self._tail) - TAIL_BYTES]

    def _finish(self) -> None:
        try:
            if self.dropped:
                note = (
                    f"\n[agentgolf: log truncated at {self.cap} bytes; {self.dropped} more bytes dropped]\n"
                )
                self._file.write(note.encode())
            self._file.close()
        except OSError as e:
            self.error = self.error or e
        try:
            os.close(self.fd)
        except OSError:
            pass

    def close(self, timeout: float = DRAIN_SECONDS) -> None:
        """Wait for EOF; if a leaked process still holds the pipe, stop reading anyway."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()

    @property
    def saw_ready(self) -> bool:
        return READY_LINE.encode() in self._head

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def tail(self, max_chars: int | None = None) -> str:
        text = bytes(self._tail).decode("utf-8", errors="replace")
        return text if max_chars is None else text[-max_chars:]

    def text(self) -> str:
        """What is worth parsing: the log file plus the in-memory tail (which outlives the cap)."""
        try:
            head = self.path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            head = ""
        return head + "\n" + self.tail() if self.truncated else head
