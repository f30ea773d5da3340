"""The SQLite schema as an ordered list of forward migrations (index + 1 = user_version)."""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

# Append only: a released migration is never edited, a new one is added after it.
MIGRATIONS: list[str] = [
    # v1: runs and their output, the audit log, releases, approvals, locks.
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        environment TEXT NOT NULL,
        params TEXT NOT NULL,
        principal TEXT NOT NULL,
        release_id TEXT,
        plan_hash TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'lost')),
        exit_code INTEGER,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        runner_host TEXT NOT NULL,
        runner_pid INTEGER NOT NULL,
        runner_token TEXT NOT NULL,
        allow_drift INTEGER NOT NULL DEFAULT 0,
        request_id TEXT,
        break_glass INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        output_bytes INTEGER,
        output_digest TEXT,
        output_truncated INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_started ON runs (started_at);
    CREATE INDEX runs_status ON runs (status);
    CREATE TABLE output_chunks (
        run_id TEXT NOT NULL REFERENCES runs (id),
        seq INTEGER NOT NULL,
        stream INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        environment TEXT,
        task TEXT,
        run_id TEXT,
        release_id TEXT,
        plan_hash TEXT,
        payload TEXT NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL
    );
    CREATE TABLE audit_checkpoints (
        size INTEGER PRIMARY KEY,
        root BLOB NOT NULL,
        ts TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature BLOB NOT NULL
    );
    CREATE TABLE releases (
        id TEXT PRIMARY KEY,
        environment TEXT NOT NULL,
        version INTEGER NOT NULL,
        document TEXT NOT NULL,
        signature BLOB,
        key_id TEXT,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        UNIQUE (environment, version)
    );
    CREATE TABLE current_releases (
        environment TEXT PRIMARY KEY,
        release_id TEXT NOT NULL REFERENCES releases (id),
        updated_at TEXT NOT NULL
    );
    CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        environment TEXT NOT NULL,
        plan_hash TEXT NOT NULL,
        plan TEXT NOT NULL,
        requester TEXT NOT NULL,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL,
        policy_version TEXT,
        used_by_run TEXT
    );
    CREATE TABLE approvals (
        request_id TEXT NOT NULL REFERENCES requests (id),
        approver TEXT NOT NULL,
        plan_hash TEXT NOT NULL,
        signature TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (request_id, approver)
    );
    CREATE TABLE nonces (
        nonce TEXT PRIMARY KEY,
        principal TEXT NOT NULL,
        seen_at TEXT NOT NULL
    );
    CREATE TABLE locks (
        name TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        holder TEXT NOT NULL,
        runner_host TEXT NOT NULL,
        runner_pid INTEGER NOT NULL,
        acquired_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    """,
]
