"""Follow a training log as it grows: the training points of its complete lines, read once each.

The log is read from where the last read stopped, never again from the start. A line is parsed only once
its newline has been written (a line cut mid-number would give a wrong point), and only when it ended
inside the log's byte cap: past the cap the sandbox stops writing and appends a note, whose newline would
otherwise complete the cut line (sandbox/isolation/logs.py). A log that shrank was written anew (the same
experiment trained again in place): it is followed from its start.
"""

from __future__ import annotations

from pathlib import Path

from agentgolf.sandbox.metrics import CurvePoint, parse_train_curve


class LogFollower:
    """The new training points of one growing log, each returned once (`parse_train_curve`'s lines)."""

    def __init__(self, path: Path, cap: int | None = None):
        self.path = Path(path)
        self.cap = cap  # the phase's log byte cap (Budget.log_bytes); None: no cap
        self.offset = 0  # bytes of the file read so far
        self._partial = b""  # the start of a line whose newline is not written yet

    def poll(self) -> list[CurvePoint]:
        """The points of the lines completed since the last poll."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return []  # not started yet
        if size < self.offset:
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(size - self.offset)
        start = self.offset - len(self._partial)  # where the first line of `data` starts in the file
        self.offset += len(chunk)
        data = self._partial + chunk
        end = data.rfind(b"\n") + 1
        complete, self._partial = data[:end], data[end:]
        if self.cap is not None and start + len(complete) > self.cap:
            complete = complete[: max(0, self.cap - start)]  # lines that ended inside the cap...
            complete = complete[: complete.rfind(b"\n") + 1]  # ...and no line the cap cut
        return parse_train_curve(complete.decode("utf-8", errors="replace"))
