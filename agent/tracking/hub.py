"""A run's tracking: one feed per experiment in flight, each backend switched off at its first failure.

`Lab` holds one `Tracking`; it does nothing until a run turns it on (`with tracking.on(run_id, say):` in
loop.py, which closes everything however the run ends: its budget, Ctrl-C, a crash). Three hooks feed it,
all on the scheduler's thread: `started` when an experiment's run folder is ready (lab.prepare_run_dir),
`update` when its row is recorded (lab.record) and when a verdict is announced (judge/verdicts.py). An
experiment's feed stays open until its row is settled (card.settled: a paired decision lands after the
row is recorded) or the run ends. Tracking never fails an experiment or the run: any error is one warning
line, and the backend it came from is off for the rest of the run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from agentgolf.agent.tracking import tensorboard_run, wandb_run
from agentgolf.agent.tracking.card import Card, Outcome, settled
from agentgolf.agent.tracking.config import TrackConfig
from agentgolf.agent.tracking.feed import Backend, Feed
from agentgolf.agent.tracking.follow import LogFollower
from agentgolf.challenge import TRAINER_FILE
from agentgolf.errors import first_line
from agentgolf.experiments import worktree as wt
from agentgolf.experiments.ledger import Experiment
from agentgolf.sandbox.run_setup import TRAIN_LOG

if TYPE_CHECKING:
    from agentgolf.agent.controller.lab import Lab
    from agentgolf.agent.workspace import Workspace

NAMES = "names"  # <folder>/names/<run id>/<name>: each name taken once, across resumes and retries
PREPARE = {"tensorboard": tensorboard_run.prepare, "wandb": wandb_run.prepare}


class Tracking:
    """One run's dashboards: which backends are on, and the feed of each experiment in flight."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.cfg = TrackConfig()
        self.folder = Path()
        self.run_id = ""
        self._say: Callable[[str], None] = print
        self._on: list[str] = []  # backends still on; empty: tracking is off
        self._lock = threading.Lock()
        self._feeds: dict[int, Feed] = {}  # open, by experiment id
        self._closing: list[Feed] = []  # asked to close; joined at the run's end

    # -- the run --

    @contextmanager
    def on(self, run_id: str, say: Callable[[str], None]) -> Iterator[None]:
        """Track the run's experiments for the block's duration; everything is closed when it ends."""
        self.cfg = self.ws.config.track
        if not self.cfg.backends:
            yield
            return
        self.folder, self.run_id, self._say = self.ws.resolve(self.cfg.folder), run_id, say
        self._on = list(self.cfg.backends)
        for name in self.cfg.backends:
            try:
                PREPARE[name]()
            except Exception as exc:  # the run goes on without it
                self.failed(name, exc)
        for line in self.where():
            say(line)
        try:
            yield
        finally:
            self.close()

    def where(self) -> list[str]:
        """Where each backend's files go, and how to look at them: the run's first lines."""
        shown = (
            self.folder.relative_to(self.ws.root) if self.folder.is_relative_to(self.ws.root) else self.folder
        )
        lines = []
        if "tensorboard" in self._on:
            lines.append(
                f"tracking: TensorBoard in {shown}/{tensorboard_run.FOLDER}/{self.run_id}/ "
                f"(tensorboard --logdir {shown}/{tensorboard_run.FOLDER})"
            )
        if "wandb" in self._on:
            lines.append(
                f"tracking: W&B offline in {shown}/{wandb_run.FOLDER}/ (upload later: wandb sync -p "
                f"{self.cfg.wandb_project} {shown}/{wandb_run.FOLDER}/offline-run-*)"
            )
        return [escape(line) for line in lines]

    def close(self) -> None:
        """Close every feed and wait for their files (at most `close_seconds` in all), then stop wandb."""
        for feed in self._feeds.values():
            feed.close()
        self._closing += self._feeds.values()
        self._feeds.clear()
        deadline = time.monotonic() + self.cfg.close_seconds
        late = [f for f in self._closing if not f.join(max(0.0, deadline - time.monotonic()))]
        self._closing = []
        if late:
            names = ", ".join(f.card.name for f in late)
            self._say(escape(f"tracking: still writing after {self.cfg.close_seconds:g} s: {names}"))
        elif "wandb" in self.cfg.backends:
            try:
                wandb_run.shutdown()
            except Exception as exc:
                self.failed("wandb", exc)
        with self._lock:
            self._on = []

    # -- the switch (feed.Switch), called from the feeds' threads --

    def is_on(self, backend: str) -> bool:
        with self._lock:
            return backend in self._on

    def failed(self, backend: str, exc: BaseException) -> None:
        """One warning line for the run, and the backend off from now on."""
        with self._lock:
            if backend not in self._on:
                return
            self._on.remove(backend)
        why = f"{type(exc).__name__}: {first_line(exc)}"[:200]
        self._say(escape(f"tracking: {backend} failed ({why}); it is off for the rest of this run"))

    # -- the hooks, on the scheduler's thread --

    def started(self, exp: Experiment, run_dir: Path, lab: Lab) -> None:
        """`exp` is about to train in `run_dir`: open its feed (a second training of it, a new one)."""
        backends = [b for b in self.cfg.backends if self.is_on(b)]
        if not backends:
            return
        try:
            old = self._feeds.pop(exp.id, None)
            if old is not None:  # trained again in place (an infra retry): that curve ends here
                old.close(Outcome(status="infra_error", reason="trained again in place"))
                self._closing.append(old)
            card = self.card(exp, run_dir, lab)
            follower = LogFollower(run_dir / TRAIN_LOG, lab.budget_for(exp).log_bytes)
            self._feeds[exp.id] = Feed(card, follower, backends, self.open, self, self.cfg.poll_seconds)
        except Exception as exc:  # the experiment trains anyway
            self._say(escape(f"tracking: #{exp.id} is not tracked ({type(exc).__name__}: {first_line(exc)})"))

    def update(self, row: Experiment) -> None:
        """The row's result or verdict: to its feed, which closes once nothing more will be said of it."""
        feed = self._feeds.get(row.id)
        if feed is None:
            return
        if settled(row):
            del self._feeds[row.id]
            feed.close(Outcome.of(row))
            self._closing.append(feed)
        else:
            feed.post(Outcome.of(row))

    # -- one experiment --

    def open(self, backend: str, card: Card) -> Backend:
        """`card` as a run of `backend` (on its feed's thread)."""
        if backend == "tensorboard":
            return tensorboard_run.TensorBoardRun(self.folder, card)
        return wandb_run.WandbRun(self.folder, card, self.cfg.wandb_project, self.cfg.close_seconds)

    def card(self, exp: Experiment, run_dir: Path, lab: Lab) -> Card:
        env = lab.env_for(exp)
        config: dict[str, Any] = {
            "id": exp.id,
            "kind": str(exp.kind),
            "title": exp.title,
            "seed": lab.seed_of(exp),
            "rung": exp.rung or "full",
            "parent_id": exp.parent_id,
            "commit": exp.commit_sha[:10],
            "proposer": exp.proposer,
            "category": exp.category,
            "trainer_env": dict(env),
            "knobs": knobs((run_dir / TRAINER_FILE).read_text(errors="replace"), env),
        }
        return Card(
            exp_id=exp.id,
            name=self.claim(f"{exp.id}-{wt.slugify(exp.title) or exp.kind}"),
            group=self.run_id,
            kind=str(exp.kind),
            config=config,
            hypothesis=exp.hypothesis,
            diff=wt.diff(lab.repo, exp.parent_commit, exp.commit_sha),
        )

    def claim(self, name: str) -> str:
        """`name`, or `name-2`, `name-3`...: the first this run has not used, in this process or before
        (a resumed run's second training of an experiment never writes into the first one's curve)."""
        folder = self.folder / NAMES / self.run_id
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            candidate = name if n == 1 else f"{name}-{n}"
            try:
                os.close(os.open(folder / candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return candidate
            except FileExistsError:
                continue
        raise FileExistsError(f"every name like {name} is taken in {folder}")


def knobs(source: str, env: dict[str, str]) -> dict[str, float | int]:
    """The trainer's knobs in force (the offline search's reading of a trainer): the settings table's
    columns beside seed and rung; {} for a trainer it cannot read."""
    from agentgolf.agent.proposers.search import space

    try:
        return space.read_knobs(source, space.searched(source, env), env)
    except Exception:  # a trainer of the user's, shaped otherwise
        return {}
