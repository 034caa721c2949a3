"""The ledger's schema, as the migrations that build it: MIGRATIONS[i] upgrades version i to i + 1.

A new column is a new migration appended here (never an edit of an old one), so a ledger written by any
earlier agentgolf opens and upgrades in place; experiments/ledger.py applies them.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # v0 -> v1: the first schema.
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        base_commit TEXT NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'running',
        stop_reason TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE experiments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT,
        parent_id INTEGER REFERENCES experiments(id),
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        hypothesis TEXT NOT NULL DEFAULT '',
        category TEXT NOT NULL DEFAULT '',
        proposer TEXT NOT NULL DEFAULT '',
        branch TEXT NOT NULL DEFAULT '',
        commit_sha TEXT NOT NULL DEFAULT '',
        parent_commit TEXT NOT NULL DEFAULT '',
        seed INTEGER,
        val_bpb REAL,
        val_loss REAL,
        self_val_bpb REAL,
        delta_bpb REAL,
        artifact_bytes INTEGER,
        train_seconds REAL,
        wall_seconds REAL,
        isolation TEXT NOT NULL DEFAULT '',
        trust TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '',
        log_tail TEXT NOT NULL DEFAULT '',
        kept INTEGER NOT NULL DEFAULT 0,
        replay_of INTEGER REFERENCES experiments(id),
        manifest TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX experiments_run ON experiments(run_id, id);
    CREATE INDEX experiments_status ON experiments(status);
    """,
    # v1 -> v2: cost accounting and change fingerprints (for repeat detection).
    """
    ALTER TABLE experiments ADD COLUMN gpu_seconds REAL;
    ALTER TABLE experiments ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
    ALTER TABLE experiments ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE experiments ADD COLUMN usd REAL NOT NULL DEFAULT 0;
    CREATE INDEX experiments_fingerprint ON experiments(fingerprint);
    """,
    # v2 -> v3: the acceptance decision's evidence (samples, noise, statistic, p-value, rule), as JSON.
    """
    ALTER TABLE experiments ADD COLUMN decision TEXT NOT NULL DEFAULT '{}';
    """,
    # v3 -> v4: a win carried onto a newer best is re-tested as a new row linked to the original, and each
    # run records where and when it trained (slot utilization).
    """
    ALTER TABLE experiments ADD COLUMN retest_of INTEGER REFERENCES experiments(id);
    ALTER TABLE experiments ADD COLUMN slot INTEGER;
    ALTER TABLE experiments ADD COLUMN started_at REAL;
    """,
    # v4 -> v5: the fidelity ladder. A row says which rung measured it ('' = the full budget), and an idea's
    # full-budget row links the screened row that earned it.
    """
    ALTER TABLE experiments ADD COLUMN rung TEXT NOT NULL DEFAULT '';
    ALTER TABLE experiments ADD COLUMN screen_of INTEGER REFERENCES experiments(id);
    """,
    # v5 -> v6: the paired judge. A control row (the parent's commit, the same seed and rung) names the
    # candidate runs it serves; each row says how many targets it was scored on, what initial weights its
    # trainer logged, and how many steps it trained at what step time.
    """
    ALTER TABLE experiments ADD COLUMN paired_with TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE experiments ADD COLUMN val_tokens INTEGER;
    ALTER TABLE experiments ADD COLUMN init_hash TEXT NOT NULL DEFAULT '';
    ALTER TABLE experiments ADD COLUMN steps INTEGER;
    ALTER TABLE experiments ADD COLUMN step_ms REAL;
    """,
    # v6 -> v7: the proposer's lab notebook (`note_to_self`): what it learned, kept per run so that every
    # later proposal of the run (after --resume too) reads it, and `agentgolf note --agent` shows it.
    """
    CREATE TABLE notebook (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT,
        experiment_id INTEGER,
        author TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX notebook_run ON notebook(run_id, id);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
