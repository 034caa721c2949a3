"""A workspace small enough to run the whole loop in seconds on 2 busy cores, with the real trainer."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from agentgolf.agent.judge.acceptance import AcceptanceConfig
from agentgolf.agent.workspace import DataConfig, Workspace, init_workspace, save_config
from agentgolf.baseline.dataset import DatasetInfo
from agentgolf.sandbox.budget import Budget

TINY_ENV = {
    "PRESET": "cpu",
    "NUM_LAYERS": "2",
    "MODEL_DIM": "64",
    "NUM_HEADS": "2",
    "NUM_KV_HEADS": "1",
    "ITERATIONS": "6",
    "TRAIN_SEQ_LEN": "64",
    "TRAIN_BATCH_TOKENS": "2048",
    "VAL_BATCH_SIZE": "8192",
}


def make_workspace(root: Path, dataset: DatasetInfo, env: dict[str, str] | None = None) -> Workspace:
    """A real workspace (git repo, config, ledger) on the tiny dataset; plain comparisons, no calibration."""
    ws = init_workspace(root.resolve())
    ws.config.data = DataConfig(
        dataset_dir=dataset.dataset_dir, tokenizer=dataset.tokenizer, vocab_size=dataset.vocab_size
    )
    ws.config.trainer_env = dict(TINY_ENV if env is None else env)
    # A far wall-clock cap: the trainer's time-based warmdown must not engage, or replays stop being exact.
    ws.config.budget = Budget(train_seconds=600, train_grace_seconds=60, score_seconds=120)
    ws.config.acceptance = AcceptanceConfig(
        noise_seeds=1, known_sigma_bpb=0.001, confirm=False, min_delta_bpb=0.0
    )
    ws.config.scheduler.morning_rounds = 0  # the morning number has its own test (test_paired.py)
    save_config(ws.config_path, ws.config)
    return ws


def training_row(workspace: Path, timeout: float = 240, step: str = "step:2/") -> int | None:
    """Wait until a row is `running` and its trainer has logged `step`; its id, or None at the deadline."""
    import sqlite3
    import time

    db = workspace / ".agentgolf" / "ledger.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if not db.exists():
            continue
        with sqlite3.connect(db) as conn:
            for exp_id, status in conn.execute("SELECT id, status FROM experiments"):
                log = workspace / ".agentgolf" / "runs" / str(exp_id) / "train.log"
                if status == "running" and log.exists() and step in log.read_text():
                    return exp_id
    return None


def phase_pids(workspace: Path, exp_id: int) -> list[int]:
    """The phase leaders a run folder recorded (see agent/controller/processes.py)."""
    pid_file = workspace / ".agentgolf" / "runs" / str(exp_id) / "pids"
    return [int(line.split()[0]) for line in pid_file.read_text().splitlines()] if pid_file.exists() else []


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not); a process gone while we look is dead, not an error."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_until(done: Callable[[], object], timeout: float, every: float = 0.1) -> bool:
    """Poll `done` until it holds or `timeout` seconds pass; whether it held (a loaded machine is slow, so
    tests wait for a state, never sleep a fixed time and hope)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
    return True


def wait_dead(pids: list[int], timeout: float = 10) -> list[int]:
    """Wait until none of `pids` is alive; those still alive at the deadline (none: all dead). For a tree
    SIGKILLed at once: its exit and reaping, which a loaded machine may delay, but not by seconds."""
    wait_until(lambda: not any(alive(p) for p in pids), timeout)
    return [p for p in pids if alive(p)]


def proposal_tree(folder: Path, trainer: str):
    """A git repository holding `trainer` as train_gpt.py, and the ProposalContext of its baseline commit:
    what a proposer gets, without a whole workspace."""
    import time

    import git

    from agentgolf.agent.proposers.proposal import ProposalContext
    from agentgolf.experiments.ledger import Experiment

    repo = git.Repo.init(folder)
    (folder / "train_gpt.py").write_text(trainer)
    repo.index.add(["train_gpt.py"])
    sha = repo.index.commit("base").hexsha
    parent = Experiment(
        id=1,
        kind="baseline",
        status="ok",
        title="Baseline",
        val_bpb=2.5,
        commit_sha=sha,
        created_at=time.time(),
    )
    return ProposalContext(
        source=trainer,
        trainer="train_gpt.py",
        parent=parent,
        history=[parent],
        digest="- none",
        trainer_env={},
        budget=Budget(),
    )


def old_ledger(path: Path, version: int, insert: str = "") -> Path:
    """A ledger file as schema `version` wrote it (its first `version` migrations), with one row inserted by
    `insert` (SQL), for the migration tests."""
    import sqlite3

    from agentgolf.experiments.ledger import MIGRATIONS

    old = sqlite3.connect(path)
    old.executescript("".join(MIGRATIONS[:version]))
    old.execute(f"PRAGMA user_version = {version}")
    old.execute(
        insert
        or "INSERT INTO experiments (kind, status, val_bpb, created_at) VALUES ('proposal', 'ok', 2.0, 1.0)"
    )
    old.commit()
    old.close()
    return path
