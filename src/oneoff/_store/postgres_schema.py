"""The PostgreSQL schema as ordered forward migrations, applied only by `oneoff server migrate`.

Unlike the embedded SQLite store, which migrates itself on first use, a shared database is
changed on purpose: several servers and runners of possibly different versions use it, so
an older oneoff must not find its tables altered under it. A store opened on an unmigrated
or older schema refuses with a hint to migrate; one on a newer schema refuses to guess.

The version lives in ``oneoff_schema`` (one row). Migrations run in one transaction under
an advisory lock, so two operators migrating at once apply each step once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oneoff.errors import StoreError

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATE_LOCK", "MIGRATIONS", "WRITE_LOCK", "apply_migrations", "schema_version"]

#: pg_advisory_xact_lock keys: every write transaction takes WRITE_LOCK (writers are
#: serialized, as SQLite's BEGIN IMMEDIATE does); migrations take MIGRATE_LOCK.
WRITE_LOCK = 0x6F6E656F6666  # "oneoff"
MIGRATE_LOCK = WRITE_LOCK + 1

# Append only: a released migration is never edited, a new one is added after it.
# Same tables and columns as the SQLite schema (oneoff._store._schema), PostgreSQL types.
# Text compares bytewise (COLLATE "C"), as in SQLite, whatever the database's locale: ids
# are found by prefix and timestamps sort as strings.
# audit_events keeps only seq, prev_hash, body and hash: filters decode the body, so no
# column can disagree with what the chain hashes.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        id TEXT COLLATE "C" PRIMARY KEY,
        task TEXT COLLATE "C" NOT NULL,
        environment TEXT COLLATE "C" NOT NULL,
        params TEXT COLLATE "C" NOT NULL,
        principal TEXT COLLATE "C" NOT NULL,
        release_id TEXT COLLATE "C",
        plan_hash TEXT COLLATE "C" NOT NULL,
        status TEXT COLLATE "C" NOT NULL CHECK (status IN
            ('running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'lost')),
        exit_code INTEGER,
        started_at TEXT COLLATE "C" NOT NULL,
        ended_at TEXT COLLATE "C",
        runner_host TEXT COLLATE "C" NOT NULL,
        runner_pid INTEGER NOT NULL,
        runner_token TEXT COLLATE "C" NOT NULL,
        allow_drift INTEGER NOT NULL DEFAULT 0,
        request_id TEXT COLLATE "C",
        break_glass INTEGER NOT NULL DEFAULT 0,
        reason TEXT COLLATE "C",
        output_bytes BIGINT,
        output_digest TEXT COLLATE "C",
        output_truncated INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_started ON runs (started_at);
    CREATE INDEX runs_status ON runs (status);
    CREATE TABLE output_chunks (
        run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
        seq INTEGER NOT NULL,
        stream INTEGER NOT NULL,
        size INTEGER NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE audit_events (
        seq BIGINT PRIMARY KEY,
        prev_hash BYTEA NOT NULL,
        body BYTEA NOT NULL,
        hash BYTEA NOT NULL
    );
    CREATE TABLE audit_checkpoints (
        size BIGINT PRIMARY KEY,
        root BYTEA NOT NULL,
        timestamp BIGINT NOT NULL,
        key_id TEXT COLLATE "C" NOT NULL,
        signature BYTEA NOT NULL,
        frontier BYTEA NOT NULL
    );
    CREATE TABLE releases (
        id TEXT COLLATE "C" PRIMARY KEY,
        environment TEXT COLLATE "C" NOT NULL,
        version INTEGER NOT NULL,
        document TEXT COLLATE "C" NOT NULL,
        signature BYTEA,
        key_id TEXT COLLATE "C",
        created_at TEXT COLLATE "C" NOT NULL,
        created_by TEXT COLLATE "C" NOT NULL,
        code_entries TEXT COLLATE "C",
        UNIQUE (environment, version)
    );
    CREATE TABLE current_releases (
        environment TEXT COLLATE "C" PRIMARY KEY,
        release_id TEXT COLLATE "C" NOT NULL REFERENCES releases (id),
        updated_at TEXT COLLATE "C" NOT NULL
    );
    CREATE TABLE requests (
        id TEXT COLLATE "C" PRIMARY KEY,
        task TEXT COLLATE "C" NOT NULL,
        environment TEXT COLLATE "C" NOT NULL,
        plan_hash TEXT COLLATE "C" NOT NULL,
        plan TEXT COLLATE "C" NOT NULL,
        requester TEXT COLLATE "C" NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL,
        status TEXT COLLATE "C" NOT NULL,
        policy_version TEXT COLLATE "C",
        used_by_run TEXT COLLATE "C"
    );
    CREATE TABLE approvals (
        request_id TEXT COLLATE "C" NOT NULL REFERENCES requests (id),
        approver TEXT COLLATE "C" NOT NULL,
        plan_hash TEXT COLLATE "C" NOT NULL,
        signature TEXT COLLATE "C" NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL,
        expires_at TEXT COLLATE "C" NOT NULL,
        used INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (request_id, approver)
    );
    CREATE TABLE nonces (
        nonce TEXT COLLATE "C" PRIMARY KEY,
        principal TEXT COLLATE "C" NOT NULL,
        seen_at TEXT COLLATE "C" NOT NULL
    );
    CREATE TABLE locks (
        name TEXT COLLATE "C" PRIMARY KEY,
        run_id TEXT COLLATE "C" NOT NULL,
        holder TEXT COLLATE "C" NOT NULL,
        runner_host TEXT COLLATE "C" NOT NULL,
        runner_pid INTEGER NOT NULL,
        acquired_at TEXT COLLATE "C" NOT NULL,
        expires_at TEXT COLLATE "C" NOT NULL
    )
    """,
    # v2 (witnesses): independent parties' co-signatures of audit checkpoints.
    """
    CREATE TABLE audit_cosignatures (
        size BIGINT NOT NULL,
        witness_key_id TEXT COLLATE "C" NOT NULL,
        timestamp BIGINT NOT NULL,
        signature BYTEA NOT NULL,
        PRIMARY KEY (size, witness_key_id)
    )
    """,
    # v3 (team server): the server's own small state, shared by every server process on
    # one store: its id, its session-token key, the pinned people and policy files.
    """
    CREATE TABLE server_state (
        name TEXT COLLATE "C" PRIMARY KEY,
        value BYTEA NOT NULL,
        updated_at TEXT COLLATE "C" NOT NULL
    )
    """,
    # v4 (team server, #13): the sweep of stale API nonces (every second per server
    # process) finds them through an index instead of reading the whole table, which holds
    # every call of the last 10 minutes (hundreds of thousands at a few hundred calls/s).
    """
    CREATE INDEX nonces_seen_at ON nonces (seen_at)
    """,
]


def schema_version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """The database's schema version; 0 when oneoff never migrated it."""
    row = conn.execute("SELECT to_regclass('oneoff_schema') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    found = conn.execute("SELECT version FROM oneoff_schema").fetchall()
    if len(found) != 1 or type(found[0][0]) is not int:
        raise StoreError("oneoff_schema must hold exactly one version row; is it damaged?")
    return found[0][0]


def apply_migrations(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[int, int]:
    """Bring the schema to the newest version; ``(before, after)``. ``conn`` is in
    autocommit mode; the whole migration is one transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        before = schema_version(conn)  # read under the lock: another may have migrated
        if before > len(MIGRATIONS):
            raise StoreError(
                f"store schema v{before} is newer than this oneoff (knows "
                f"v{len(MIGRATIONS)}); upgrade oneoff"
            )
        if before == 0:
            conn.execute("CREATE TABLE oneoff_schema (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO oneoff_schema (version) VALUES (0)")
        for number in range(before, len(MIGRATIONS)):
            conn.execute(MIGRATIONS[number])  # several statements, no parameters
            conn.execute("UPDATE oneoff_schema SET version = %s", (number + 1,))
    return before, len(MIGRATIONS)
