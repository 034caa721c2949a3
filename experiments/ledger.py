"""The experiment ledger: one SQLite row per experiment, failures included, readable while a run writes.

SQLite in WAL mode so `agentgolf ledger` can read while `agentgolf run` writes. The schema is versioned
with `PRAGMA user_version`; MIGRATIONS[i] upgrades version i to i + 1, so an old ledger opens after an
upgrade and nothing is rewritten by hand.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter

from agentgolf.errors import AgentgolfError
from agentgolf.experiments.migrations import MIGRATIONS, SCHEMA_VERSION
from agentgolf.experiments.status import Kind, RowStatus

BUSY_TIMEOUT_MS = 10_000
CORRUPTION = ("file is not a database", "malformed", "disk image", "file is encrypted", "not a database")


class LedgerError(AgentgolfError):
    """The ledger file cannot be used as it is; the message says why and what is safe to do."""


class Experiment(BaseModel):
    id: int
    run_id: str | None = None
    parent_id: int | None = None
    kind: Kind
    status: RowStatus
    title: str = ""
    hypothesis: str = ""
    category: str = ""
    proposer: str = ""
    branch: str = ""
    commit_sha: str = ""
    parent_commit: str = ""
    seed: int | None = None
    val_bpb: float | None = None
    val_loss: float | None = None
    self_val_bpb: float | None = None
    delta_bpb: float | None = None
    artifact_bytes: int | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    gpu_seconds: float | None = None  # wall seconds x GPUs held (x1 on a CPU slot)
    isolation: str = ""
    trust: str = ""
    reason: str = ""
    log_tail: str = ""
    kept: bool = False
    fingerprint: str = ""  # normalized diff against the parent: the same change has the same one
    tokens: int = 0  # LLM tokens spent proposing it
    usd: float = 0.0  # LLM dollars spent proposing it
    replay_of: int | None = None  # the row it measures again, same commit: confirm, calibration, replay
    retest_of: int | None = None  # the win this one carries onto a newer best (its change, rebased)
    slot: int | None = None  # the scheduler's slot it last trained on (0, 1, ...)
    rung: str = ""  # the fidelity rung that measured it: "" is the full budget, else a screen's name
    screen_of: int | None = None  # the screened row whose verdict earned this full-budget run
    paired_with: list[int] = Field(
        default_factory=list
    )  # a control: the candidate runs it was measured beside
    val_tokens: int | None = None  # the validation targets the harness scored it on
    init_hash: str = (
        ""  # the initial weights its trainer logged (`init_hash:`): a common seed, a common init?
    )
    steps: int | None = None  # training steps it ran
    step_ms: float | None = None  # mean step time
    started_at: float | None = None  # when a slot started it (after --resume, anew); finished_at: result
    manifest: dict[str, Any] = Field(default_factory=dict)
    decision: dict[str, Any] = Field(default_factory=dict)  # the evidence of its acceptance verdict
    created_at: float
    finished_at: float | None = None


def lineage(exp: Experiment, parent_of: Callable[[int], Experiment | None]) -> list[Experiment]:
    """The chain of parents that led to `exp`, oldest first (the baseline), ending with `exp` itself.

    `parent_of` looks a row up by id (`by_id.get` over a listing, or the ledger); a missing parent ends
    the chain, and a loop in the parent links (a hand-edited ledger) cannot hang it.
    """
    chain, seen = [exp], {exp.id}
    while chain[-1].parent_id is not None and chain[-1].parent_id not in seen:
        parent = parent_of(chain[-1].parent_id)
        if parent is None:
            break
        chain.append(parent)
        seen.add(parent.id)
    return chain[::-1]


class NotebookEntry(BaseModel):
    """One line of the proposer's lab notebook: what a session learned, for the sessions after it."""

    id: int
    run_id: str | None = None
    experiment_id: int | None = None  # the parent the session worked on
    author: str = ""  # the proposer session that wrote it
    text: str
    created_at: float


class Run(BaseModel):
    id: str
    created_at: float
    base_commit: str
    settings: dict[str, Any] = Field(default_factory=dict)
    status: str = "running"
    stop_reason: str = ""


JSON_COLUMNS = {"manifest", "settings", "decision", "paired_with"}
EXPERIMENT_LIST = TypeAdapter(list[Experiment])  # one validation call for a whole listing
EXPERIMENT_COLUMNS = list(Experiment.model_fields)
HEAVY_COLUMNS = {"log_tail", "manifest"}


def _row_json(columns: list[str]) -> str:
    """An SQL expression that renders one experiments row as a JSON object (JSON columns embedded as JSON)."""
    pairs = [f"'{c}', {'json(' + c + ')' if c in JSON_COLUMNS else c}" for c in columns]
    return "json_object(" + ", ".join(pairs) + ")"


ROW_JSON_FULL = _row_json(EXPERIMENT_COLUMNS)
ROW_JSON_LIGHT = _row_json([c for c in EXPERIMENT_COLUMNS if c not in HEAVY_COLUMNS])


def _encode(key: str, value: Any) -> Any:
    if key in JSON_COLUMNS:
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, bool):
        return int(value)
    return value


def _decode_json(row: dict[str, Any]) -> dict[str, Any]:
    for key in JSON_COLUMNS & row.keys():
        row[key] = json.loads(row[key] or ("[]" if key == "paired_with" else "{}"))
    return row


def _decode_row(row: sqlite3.Row) -> dict[str, Any]:
    return _decode_json(dict(row))


class Ledger:
    """A thin, typed door onto the SQLite file. Every write is one short transaction."""

    def __init__(self, path: Path, *, create: bool = False):
        self.path = Path(path)
        self.writes = 0  # committed write transactions through this connection: lets readers cache
        if not create and not self.path.exists():
            raise LedgerError(f"no ledger at {self.path}")
        try:
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(self._explain(exc)) from exc

    def _explain(self, exc: sqlite3.DatabaseError) -> str:
        """Only real corruption is called corruption (with a copy kept and the recovery command): a user who
        is told to move a healthy ledger aside loses it."""
        text = str(exc)
        if "locked" in text or "busy" in text:
            return f"ledger {self.path} is locked by another process ({text}); nothing was changed, try again"
        if any(sign in text for sign in CORRUPTION):
            copy = self._keep_copy()
            return (
                f"ledger {self.path} is not a readable SQLite database ({text}); it was left untouched and "
                f"a copy is at {copy}: recover what it holds with `sqlite3 {copy} .recover | sqlite3 "
                f"{self.path.with_name('recovered.db')}`, or move it aside to start a new one"
            )
        return f"ledger {self.path}: the database refused an operation ({type(exc).__name__}: {text})"

    def _keep_copy(self) -> Path:
        """One copy per corruption, not one per command: an earlier copy with the same bytes is named again."""
        body = self.path.read_bytes() if self.path.is_file() else b""
        for earlier in sorted(self.path.parent.glob(f"{self.path.name}.corrupt-*")):
            if earlier.stat().st_size == len(body) and earlier.read_bytes() == body:
                return earlier
        copy = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        if not copy.exists():
            with contextlib.suppress(OSError):
                shutil.copyfile(self.path, copy)
        return copy

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self.path} has schema v{version}, newer than this agentgolf (v{SCHEMA_VERSION}); upgrade agentgolf"
            )
        for target in range(version, SCHEMA_VERSION):
            # One transaction per step: a failed migration leaves the file at the previous version.
            try:
                self.db.executescript(
                    f"BEGIN IMMEDIATE;{MIGRATIONS[target]};PRAGMA user_version = {target + 1};COMMIT;"
                )
            except sqlite3.DatabaseError:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            self.writes += 1
        except sqlite3.DatabaseError as exc:
            raise LedgerError(self._explain(exc)) from exc

    def close(self) -> None:
        self.db.close()

    # --- runs -------------------------------------------------------------------------------------

    def add_run(self, run: Run) -> None:
        fields = run.model_dump()
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO runs ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",
                [_encode(k, v) for k, v in fields.items()],
            )

    def get_run(self, run_id: str) -> Run:
        row = self._query("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise LedgerError(f"no run {run_id!r} in the ledger")
        return Run(**_decode_row(row))

    def find_run(self, run_id: str) -> Run | None:
        try:
            return self.get_run(run_id)
        except LedgerError:
            return None

    def latest_run(self) -> Run | None:
        """The newest run a loop made (a replay's own run is not one)."""
        loops = [r for r in self.runs() if "replay_of" not in r.settings]
        return loops[-1] if loops else None

    def runs(self) -> list[Run]:
        return [Run(**_decode_row(r)) for r in self._query("SELECT * FROM runs ORDER BY created_at")]

    def update_run(self, run_id: str, **fields: Any) -> None:
        self._update("runs", run_id, fields)

    # --- the proposer's notebook ----------------------------------------------------------------------

    def add_notebook(
        self, run_id: str | None, text: str, experiment_id: int | None = None, author: str = ""
    ) -> NotebookEntry:
        """Append a line to the run's notebook. Written from a proposer's thread on its own connection: a
        table no scheduler decision reads, so the scheduler stays the only writer of experiment rows."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO notebook (run_id, experiment_id, author, text, created_at) VALUES (?, ?, ?, ?, ?)",
                (run_id, experiment_id, author, text, time.time()),
            )
            entry_id = cur.lastrowid
        row = self._query("SELECT * FROM notebook WHERE id = ?", (entry_id,)).fetchone()
        return NotebookEntry(**dict(row))

    def notebook(self, run_id: str | None = None) -> list[NotebookEntry]:
        """The notebook's lines, oldest first: one run's, or every run's."""
        sql, args = "SELECT * FROM notebook", ()
        if run_id is not None:
            sql, args = sql + " WHERE run_id = ?", (run_id,)
        return [NotebookEntry(**dict(r)) for r in self._query(sql + " ORDER BY id", args)]

    # --- experiments ------------------------------------------------------------------------------

    def add_experiment(self, **fields: Any) -> Experiment:
        """Insert a row now (status running/rejected) so that no experiment is ever invisible."""
        fields.setdefault("created_at", time.time())
        cols = [k for k in fields if k in EXPERIMENT_COLUMNS and k != "id"]
        with self.transaction() as db:
            cur = db.execute(
                f"INSERT INTO experiments ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [_encode(k, fields[k]) for k in cols],
            )
            exp_id = cur.lastrowid
        return self.get(exp_id)

    def update(self, exp_id: int, **fields: Any) -> Experiment:
        self._update("experiments", exp_id, fields)
        return self.get(exp_id)

    def get(self, exp_id: int) -> Experiment:
        row = self._query("SELECT * FROM experiments WHERE id = ?", (exp_id,)).fetchone()
        if row is None:
            raise LedgerError(f"no experiment with id {exp_id} in the ledger")
        return Experiment(**_decode_row(row))

    def experiments(
        self,
        *,
        run_id: str | None = None,
        status: str | None = None,
        category: str | None = None,
        better_than: float | None = None,
        order: str = "id",
        limit: int | None = None,
        full: bool = False,
    ) -> list[Experiment]:
        """Rows matching every filter given. Without `full`, the bulky log tail and manifest are left out
        (use `get` for one whole record), which keeps listing 10,000 rows fast."""
        where, args = [], []
        for column, value in (("run_id", run_id), ("status", status), ("category", category)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if better_than is not None:
            where.append("val_bpb IS NOT NULL AND val_bpb < ?")
            args.append(better_than)
        if order not in ORDERS:
            raise LedgerError(f"unknown sort order {order!r}; choose one of {', '.join(ORDERS)}")
        # SQLite writes each row as JSON and pydantic parses the whole list in one call: 10,000 rows
        # list in about 100 ms, several times faster than building Python dicts row by row.
        sql = f"SELECT {ROW_JSON_FULL if full else ROW_JSON_LIGHT} FROM experiments"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY " + ORDERS[order]
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = [r[0] for r in self._query(sql, args)]
        return EXPERIMENT_LIST.validate_json("[" + ",".join(rows) + "]")

    def lineage(self, exp: Experiment) -> list[Experiment]:
        """`lineage` read from this ledger; a re-run (replay, confirm) stands for its original."""
        if exp.replay_of is not None:
            exp = self.get(exp.replay_of)
        return lineage(exp, self.find)

    def find(self, exp_id: int) -> Experiment | None:
        try:
            return self.get(exp_id)
        except LedgerError:
            return None

    def _query(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, args)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(self._explain(exc)) from exc

    def _update(self, table: str, key: Any, fields: dict[str, Any]) -> None:
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as db:
            db.execute(
                f"UPDATE {table} SET {sets} WHERE id = ?", [_encode(k, v) for k, v in fields.items()] + [key]
            )


ORDERS = {
    "id": "id",
    "val_bpb": "val_bpb IS NULL, val_bpb",
    "delta": "delta_bpb IS NULL, delta_bpb",
    "recent": "id DESC",
}
