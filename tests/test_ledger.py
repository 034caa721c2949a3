"""The SQLite ledger on real files: rows, filters, schema versions, damaged and locked files."""

from __future__ import annotations

import sqlite3
import time

import pytest

from agentgolf.experiments.ledger import SCHEMA_VERSION, Ledger, LedgerError, Run
from tests.tiny import old_ledger


def _fill(ledger: Ledger) -> None:
    ledger.add_run(Run(id="r1", created_at=time.time(), base_commit="abc"))
    base = ledger.add_experiment(run_id="r1", kind="baseline", status="ok", title="Baseline", val_bpb=2.0)
    ledger.add_experiment(
        run_id="r1",
        kind="proposal",
        status="ok",
        parent_id=base.id,
        title="a",
        val_bpb=1.9,
        delta_bpb=-0.1,
        category="opt",
        kept=True,
        manifest={"seed": 1, "env": {"A": "1"}},
    )
    ledger.add_experiment(
        run_id="r1",
        kind="proposal",
        status="crash",
        parent_id=base.id,
        title="b",
        reason="exit code 1",
        category="arch",
    )


def test_roundtrip_and_filters(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db", create=True)
    _fill(ledger)
    rows = ledger.experiments()
    assert [e.title for e in rows] == ["Baseline", "a", "b"]
    assert rows[1].kept is True and rows[1].manifest == {}  # listings leave the bulky columns out
    assert ledger.get(rows[1].id).manifest == {"seed": 1, "env": {"A": "1"}}
    assert ledger.experiments(full=True)[1].manifest == {"seed": 1, "env": {"A": "1"}}
    assert [e.title for e in ledger.experiments(status="crash")] == ["b"]
    assert [e.title for e in ledger.experiments(category="opt")] == ["a"]
    assert [e.title for e in ledger.experiments(better_than=1.95)] == ["a"]
    assert [e.title for e in ledger.experiments(order="val_bpb")] == ["a", "Baseline", "b"]
    updated = ledger.update(rows[2].id, status="timeout", reason="killed")
    assert updated.status == "timeout" and updated.reason == "killed"
    with pytest.raises(LedgerError, match="no experiment with id 99"):
        ledger.get(99)
    with pytest.raises(LedgerError, match="unknown sort order"):
        ledger.experiments(order="DROP TABLE")


def test_wal_readable_while_another_connection_writes(tmp_path):
    writer = Ledger(tmp_path / "ledger.db", create=True)
    _fill(writer)
    writer.db.execute("BEGIN IMMEDIATE")
    writer.db.execute("UPDATE experiments SET title = 'pending' WHERE id = 1")
    reader = Ledger(tmp_path / "ledger.db")
    assert reader.get(1).title == "Baseline"  # the open write does not block or leak into the reader
    writer.db.execute("COMMIT")
    assert reader.get(1).title == "pending"
    assert reader.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_version_recorded_and_newer_refused(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(path, create=True).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="newer than this agentgolf"):
        Ledger(path)


def test_corrupt_file_gives_clear_error_and_is_untouched(tmp_path):
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="not a readable SQLite database") as err:
        Ledger(path)
    assert path.read_bytes() == before
    copies = list(tmp_path.glob("ledger.db.corrupt-*"))
    assert len(copies) == 1 and copies[0].read_bytes() == before and ".recover" in str(err.value)


def test_an_ordinary_database_error_is_not_called_corruption(tmp_path):
    """A duplicate run id (or any refused statement) on a healthy ledger must not say `move it aside`."""
    ledger = Ledger(tmp_path / "ledger.db", create=True)
    _fill(ledger)
    run = ledger.runs()[0]
    with pytest.raises(LedgerError) as err:
        ledger.add_run(run)
    assert "refused an operation (IntegrityError" in str(err.value)
    assert "not a readable" not in str(err.value) and "move it aside" not in str(err.value)
    assert not list(tmp_path.glob("ledger.db.corrupt-*")) and ledger.get_run(run.id) == run


def test_truncated_file_loses_nothing(tmp_path):
    path = tmp_path / "ledger.db"
    ledger = Ledger(path, create=True)
    _fill(ledger)
    ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ledger.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    damaged = path.read_bytes()
    with pytest.raises(LedgerError):
        Ledger(path).experiments()
    assert path.read_bytes() == damaged


def test_locked_database_gives_clear_error(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(path, create=True).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    ledger = Ledger.__new__(Ledger)
    ledger.path = path
    ledger.db = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    with pytest.raises(LedgerError, match="locked"):
        with ledger.transaction():
            pass
    holder.execute("ROLLBACK")


def test_ledger_written_by_an_older_schema_opens_after_migration(tmp_path):
    """A v1 file (as the first release wrote it) gains the v2 columns and keeps every row."""
    insert = (
        "INSERT INTO experiments (run_id, kind, status, title, val_bpb, created_at) "
        "VALUES ('r0', 'baseline', 'ok', 'from v1', 2.25, 1.0)"
    )
    ledger = Ledger(old_ledger(tmp_path / "ledger.db", 1, insert))
    row = ledger.get(1)
    assert (row.title, row.val_bpb, row.tokens, row.usd, row.fingerprint) == ("from v1", 2.25, 0, 0.0, "")
    assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
    updated = ledger.update(1, tokens=1200, usd=0.5, gpu_seconds=30.0)
    assert (updated.tokens, updated.usd, updated.gpu_seconds) == (1200, 0.5, 30.0)


def test_a_v2_ledger_gains_the_decision_column(tmp_path):
    """v2 -> v3: every row gets an empty decision; a decision's evidence round-trips as JSON, in listings too."""
    ledger = Ledger(old_ledger(tmp_path / "ledger.db", 2))
    assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3
    assert ledger.get(1).decision == {}
    evidence = {
        "decision": "promote",
        "samples": [1.9, 1.91],
        "dof": 12,
        "p_value": 0.001,
        "sigma_bpb": 0.002,
    }
    ledger.update(1, decision=evidence)
    assert ledger.get(1).decision == evidence and ledger.experiments()[0].decision == evidence
