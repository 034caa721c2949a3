"""One experiment streamed while it trains: a thread that follows its log and feeds each open backend.

Every backend call of an experiment happens on its feed's thread, so neither the scheduler nor a slot ever
waits for a dashboard: the scheduler only posts the row's outcome (`post`) and, once nothing more will be
said of it, asks the feed to close (`close`). Before each outcome the log is read to its end, so a result
is drawn at the last training step. A backend that fails is reported to the `Switch` (one warning for the
run, the backend off for the rest of it) and dropped here; one the switch turned off elsewhere is closed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Protocol

from agentgolf.agent.tracking.card import Card, Outcome
from agentgolf.agent.tracking.follow import LogFollower
from agentgolf.sandbox.metrics import CurvePoint


class Backend(Protocol):
    """One experiment in one dashboard (tensorboard_run.TensorBoardRun, wandb_run.WandbRun)."""

    def log_train(self, point: CurvePoint) -> None: ...
    def log_outcome(self, outcome: Outcome) -> None: ...
    def close(self) -> None: ...


class Switch(Protocol):
    """Which backends are still on for the run; `failed` says so once and turns one off (hub.Tracking)."""

    def is_on(self, backend: str) -> bool: ...
    def failed(self, backend: str, exc: BaseException) -> None: ...


Opener = Callable[[str, Card], Backend]  # (backend name, card) -> that backend's run for this experiment


class Feed:
    """One experiment's thread: open its backends, stream its points, post its outcomes, close."""

    def __init__(
        self,
        card: Card,
        follower: LogFollower,
        backends: list[str],
        opener: Opener,
        switch: Switch,
        poll_seconds: float,
    ):
        self.card, self.follower = card, follower
        self._names, self._open, self._switch = list(backends), opener, switch
        self._poll = poll_seconds
        self._runs: dict[str, Backend] = {}
        self._events: queue.Queue[tuple[bool, Outcome | None]] = queue.Queue()
        self.points = 0  # training points read from the log (each sent to every backend on)
        self._thread = threading.Thread(target=self._main, name=f"track:{card.name}", daemon=True)
        self._thread.start()

    def post(self, outcome: Outcome) -> None:
        self._events.put((False, outcome))

    def close(self, outcome: Outcome | None = None) -> None:
        """Ask the thread to send `outcome` (if any), close every backend and end (`join` waits for it)."""
        self._events.put((True, outcome))

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; False if it is still closing after `timeout` seconds."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread --

    def _main(self) -> None:
        for name in self._names:
            if self._switch.is_on(name):
                try:
                    self._runs[name] = self._open(name, self.card)
                except Exception as exc:  # a dashboard never fails an experiment
                    self._switch.failed(name, exc)
        closing = False
        while not closing:
            try:
                closing, outcome = self._events.get(timeout=self._poll)
            except queue.Empty:
                self._stream()
                continue
            self._stream()
            if outcome is not None:
                self._each(lambda run, o=outcome: run.log_outcome(o))
        self._each(lambda run: run.close())
        self._runs.clear()

    def _stream(self) -> None:
        points = self.follower.poll()
        self.points += len(points)
        for point in points:
            self._each(lambda run, p=point: run.log_train(p))

    def _each(self, action: Callable[[Backend], None]) -> None:
        for name, run in list(self._runs.items()):
            if not self._switch.is_on(name):  # failed in another experiment: closed quietly here
                del self._runs[name]
                try:
                    run.close()
                except Exception:  # already reported where it failed
                    pass
                continue
            try:
                action(run)
            except Exception as exc:  # a dashboard never fails an experiment
                del self._runs[name]
                self._switch.failed(name, exc)
