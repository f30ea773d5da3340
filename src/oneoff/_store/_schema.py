"""The SQLite schema as an ordered list of forward migrations (index + 1 = user_version)."""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

# Append only: a released migration is never edited, a new one is added after it.
MIGRATIONS: list[str] = [
    # v1: runs and their output, the audit log, releases, approvals, locks.
    # audit_events: ``body`` (canonical JSON bytes) is the source of truth that the chain hashes;
    # the other columns are computed from it (VIRTUAL: never stored, so never tampered with
    # apart from it; NULL for a body that is not JSON) and serve only for filtering.
    # See oneoff._audit.log.
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
        size INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY,
        prev_hash BLOB NOT NULL,
        body BLOB NOT NULL,
        hash BLOB NOT NULL,
        ts TEXT GENERATED ALWAYS AS (json_extract(
            iif(json_valid(CAST(body AS TEXT)), CAST(body AS TEXT), NULL), '$.ts')) VIRTUAL,
        kind TEXT GENERATED ALWAYS AS (json_extract(
            iif(json_valid(CAST(body AS TEXT)), CAST(body AS TEXT), NULL), '$.kind')) VIRTUAL,
        actor TEXT GENERATED ALWAYS AS (json_extract(
            iif(json_valid(CAST(body AS TEXT)), CAST(body AS TEXT), NULL), '$.actor')) VIRTUAL,
        environment TEXT GENERATED ALWAYS AS (json_extract(
            iif(json_valid(CAST(body AS TEXT)), CAST(body AS TEXT), NULL), '$.environment'))
            VIRTUAL,
        task TEXT GENERATED ALWAYS AS (json_extract(
            iif(json_valid(CAST(body AS TEXT)), CAST(body AS TEXT), NULL), '$.task')) VIRTUAL,
        run_id TEXT GENERATED ALWAYS AS (json_extract(
            iif(json_valid(CAST(body AS TEXT)), CAST(body AS TEXT), NULL), '$.run_id')) VIRTUAL,
        release_id TEXT GENERATED ALWAYS AS (json_extract(
            iif(json_valid(CAST(body AS TEXT)), CAST(body AS TEXT), NULL), '$.release_id')) VIRTUAL,
        plan_hash TEXT GENERATED ALWAYS AS (json_extract(
            iif(json_valid(CAST(body AS TEXT)), CAST(body AS TEXT), NULL), '$.plan_hash')) VIRTUAL,
        payload TEXT GENERATED ALWAYS AS (json_extract(
            iif(json_valid(CAST(body AS TEXT)), CAST(body AS TEXT), NULL), '$.payload')) VIRTUAL
    );
    CREATE TABLE audit_checkpoints (
        size INTEGER PRIMARY KEY,
        root BLOB NOT NULL,
        timestamp INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        signature BLOB NOT NULL,
        frontier BLOB NOT NULL
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
    # v2 (releases, #3): a release's code entries (path, mode, size, sha256 of each file)
    # beside its signed document, which holds their Merkle digest: every run reads the
    # small document, only a diff or a drift report reads (and re-checks) the entries.
    """
    ALTER TABLE releases ADD COLUMN code_entries TEXT
    """,
    # v3 (witnesses, #13): independent parties' co-signatures of audit checkpoints.
    """
    CREATE TABLE audit_cosignatures (
        size INTEGER NOT NULL,
        witness_key_id TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (size, witness_key_id)
    )
    """,
    # v4 (#11): the audit filters (`export --run`, `export --kind`, `audit break-glass`)
    # read one run's or one kind's events through an index instead of every event. The
    # indexed columns are the VIRTUAL ones, so the index is computed from ``body`` too.
    """
    CREATE INDEX audit_events_run_id ON audit_events (run_id, seq);
    CREATE INDEX audit_events_kind ON audit_events (kind, seq);
    """,
    # v5 (team server, #13): the server's own small state, shared by every server process
    # on one store: its id, its session-token key, the pinned people and policy files.
    """
    CREATE TABLE server_state (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        updated_at TEXT NOT NULL
    )
    """,
    # v6 (team server, #13): the sweep of stale API nonces (every second per server
    # process) finds them through an index instead of reading the whole table.
    """
    CREATE INDEX nonces_seen_at ON nonces (seen_at)
    """,
]
