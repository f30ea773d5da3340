"""What every store backend provides; SQLite today, PostgreSQL next, one contract test suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol

from oneoff._record import dataclass, field

if TYPE_CHECKING:
    from oneoff._audit.checkpoint import Checkpoint
    from oneoff._audit.log import AuditEvent

__all__ = [
    "RUN_STATUSES",
    "AccessStore",
    "ApprovalRecord",
    "AuditStore",
    "LockRecord",
    "LockStore",
    "OutputStore",
    "ReleaseRecord",
    "ReleaseStore",
    "RequestRecord",
    "RunRecord",
    "RunStatus",
    "RunStore",
    "ServerStateStore",
    "Store",
]  # fmt: skip

RunStatus = Literal["running", "succeeded", "failed", "timed_out", "cancelled", "lost"]
RUN_STATUSES: tuple[str, ...] = (
    "running", "succeeded", "failed", "timed_out", "cancelled", "lost",
)  # fmt: skip


@dataclass
class RunRecord:
    """One execution of a task, as stored. Secret params are never in ``params``."""

    id: str
    task: str
    environment: str
    params: dict[str, str]
    principal: str
    plan_hash: str
    status: RunStatus
    started_at: str
    runner_host: str
    runner_pid: int
    runner_token: str
    release_id: str | None = None
    exit_code: int | None = None
    ended_at: str | None = None
    allow_drift: bool = False
    request_id: str | None = None
    break_glass: bool = False
    reason: str | None = None
    output_bytes: int | None = None
    output_digest: str | None = None
    output_truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class RunStore(Protocol):
    def create_run(self, run: RunRecord) -> None: ...

    def finish_run(
        self,
        run_id: str,
        *,
        status: RunStatus,
        exit_code: int | None,
        ended_at: str,
        output_bytes: int | None = None,
        output_digest: str | None = None,
        output_truncated: bool = False,
    ) -> None: ...

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id or unique id prefix; StoreError/UsageError otherwise."""
        ...

    def list_runs(
        self,
        *,
        limit: int = 20,
        task: str | None = None,
        environment: str | None = None,
        status: str | None = None,
    ) -> Sequence[RunRecord]: ...

    def running_runs(self) -> Sequence[RunRecord]: ...

    def mark_lost(self, run_id: str, *, ended_at: str) -> bool:
        """Mark a still-running run as lost; False if it had already ended."""
        ...


# [releases] appended by issue #3.
@dataclass(frozen=True)
class ReleaseRecord:
    """One stored release row, as stored; ``oneoff._release.document`` checks it."""

    id: str
    environment: str
    version: int
    document: str
    signature: bytes | None
    key_id: str | None
    created_at: str
    created_by: str
    # Only written, never read back with the row: see ``release_code_entries``.
    code_entries: str | None = None


class ReleaseStore(Protocol):
    def next_release_version(self, environment: str) -> int:
        """1 + the highest version in ``environment``; call inside ``tx()``."""
        ...

    def add_release(self, record: ReleaseRecord) -> None: ...

    def release_code_entries(self, release_id: str) -> str | None:
        """The stored code entries (JSON) of a release; large, so fetched only on demand."""
        ...

    def get_release(self, ref: str) -> ReleaseRecord:
        """The release with this id or unique id prefix; UsageError otherwise."""
        ...

    def release_by_version(self, environment: str, version: int) -> ReleaseRecord | None: ...

    def list_releases(self, environment: str | None = None) -> Sequence[ReleaseRecord]:
        """Newest first within each environment."""
        ...

    def current_release_id(self, environment: str) -> str | None: ...

    def set_current_release(
        self, environment: str, release_id: str, *, updated_at: str
    ) -> None: ...


# [access] requests, approvals, nonces and locks (issue #5).


@dataclass
class RequestRecord:
    """A pending (or spent) request to run one exact plan; ``plan`` is what approvers see."""

    id: str
    task: str
    environment: str
    plan_hash: str
    plan: dict[str, Any]
    requester: str
    created_at: str
    status: str  # pending, used, denied
    policy_version: str | None = None
    used_by_run: str | None = None


@dataclass
class ApprovalRecord:
    """One person's signed approval of one request's plan (``signature`` is SSHSIG armor)."""

    request_id: str
    approver: str
    plan_hash: str
    signature: str
    created_at: str
    expires_at: str
    used: bool = False


@dataclass
class LockRecord:
    """A held lease on a named resource."""

    name: str
    run_id: str
    holder: str
    runner_host: str
    runner_pid: int
    acquired_at: str
    expires_at: str


class AccessStore(Protocol):
    def create_request(self, request: RequestRecord) -> None: ...

    def get_request(self, request_id: str) -> RequestRecord: ...

    def list_requests(self, *, status: str | None = "pending") -> Sequence[RequestRecord]: ...

    def set_request_status(self, request_id: str, status: str, *, expect: str) -> bool: ...

    def use_request(self, request_id: str, run_id: str, approvers: Sequence[str]) -> bool: ...

    def add_approval(self, approval: ApprovalRecord) -> bool: ...

    def add_approval_spending(
        self, approval: ApprovalRecord, nonce: str, principal: str, seen_at: str
    ) -> tuple[bool, bool]:
        """Spend an API call's nonce (``remember_nonce``) and, if it was fresh, store the
        approval it carries (``add_approval``), in one round trip: ``(fresh, added)``."""
        ...

    def approvals_for(self, request_id: str) -> Sequence[ApprovalRecord]: ...

    def remember_nonce(self, nonce: str, principal: str, seen_at: str) -> bool: ...

    def forget_nonces(self, before: str) -> None: ...


class ServerStateStore(Protocol):
    """The team server's own named values (its id, token key, pinned access files)."""

    def server_value(self, name: str) -> bytes | None: ...

    def put_server_value(self, name: str, value: bytes, updated_at: str, *, replace: bool) -> bool:
        """Store ``value``; with ``replace`` false, only if ``name`` has none yet (False
        then: another server process got there first, read its value)."""
        ...


class LockStore(Protocol):
    def lock_holders(self, names: Sequence[str] | None = None) -> Sequence[LockRecord]: ...

    def take_locks(self, locks: Sequence[LockRecord]) -> None: ...

    def renew_locks(self, run_id: str, expires_at: str) -> int: ...

    def drop_locks(self, run_id: str, names: Sequence[str] | None = None) -> int: ...


class AuditStore(Protocol):
    """The hash-chained audit log and its signed checkpoints (``oneoff._audit`` checks them)."""

    def audit_head(self) -> tuple[int, bytes]:
        """``(seq, hash)`` of the newest event, ``(0, GENESIS)`` for an empty log."""
        ...

    def audit_append(self, build: Callable[[int, bytes], AuditEvent]) -> AuditEvent:
        """Append ``build(head_seq, head_hash)`` under the write lock (joins an open tx).
        Outside a tx, a backend may write it in one commit with concurrent appends (and call
        ``build`` in another thread): it returns once that commit is durable, or raises."""
        ...

    def audit_append_all(
        self, builds: Sequence[Callable[[int, bytes], AuditEvent]]
    ) -> list[AuditEvent]:
        """Append the events of ``builds`` as ``audit_append`` does one: consecutive (each
        built on the one before), in one commit, all or none."""
        ...

    def audit_append_with(
        self, write: Callable[[Store], Sequence[Callable[[int, bytes], AuditEvent]]]
    ) -> list[AuditEvent]:
        """Run ``write(store)`` inside one write transaction, then append the events of the
        builders it returns in the same transaction: its writes and its events commit
        together, all or none (a call spends its nonce, stores its outcome and audits it
        with one durable commit). ``write`` must write through the store it is given (a
        backend may run it on another connection and thread, with other appenders in the
        same commit), and must decide what to audit from what its writes report (an
        ``ON CONFLICT DO NOTHING``'s row count), not from an error: if it raises, nothing
        of it is written and its error is raised here; the others in that commit still go.
        Inside an open tx it joins it."""
        ...

    def audit_rows(
        self, *, since: int = 0, run_id: str | None = None, kind: str | None = None
    ) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        """Raw ``(seq, prev_hash, body, hash)`` rows after ``since``, in order."""
        ...

    def audit_chain_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every event's ``(prev_hash, body, hash)`` in order, as stored (types unchecked)."""
        ...

    def audit_chain_pages(self) -> Iterator[list[tuple[Any, ...]]]:
        """``audit_chain_rows``, a list of rows at a time (for ``audit verify``'s hot loop)."""
        ...

    def audit_first_gap(self, counted: int | None = None) -> int | None:
        """The first missing event number, or None when events are numbered 1..n.
        ``counted``: how many rows the caller has just read in one pass over the events,
        which may spare counting them again (a backend may ignore it)."""
        ...

    def audit_hash_at(self, seq: int) -> bytes: ...

    def audit_leaf_hashes(self, size: int) -> list[bytes]:
        """The hashes (Merkle leaves) of events 1..size; AuditError if any is missing."""
        ...

    def audit_put_checkpoint(self, cp: Checkpoint, frontier: tuple[bytes, ...]) -> None: ...

    def audit_checkpoint_rows(self, *, size: int | None = None) -> list[tuple[Any, ...]]:
        """Raw checkpoint rows ``(size, root, timestamp, key_id, signature, frontier)``."""
        ...

    def audit_checkpoint_states(self, key_id: str) -> list[tuple[Any, ...]]:
        """``(size, frontier)`` of every checkpoint row, by size (for ``audit verify``, which
        reads every row): frontier is None for a row with a field of the wrong type or size
        (bar the frontier's length) or naming another key than ``key_id``."""
        ...

    def audit_checkpoint_rows_at(self, sizes: Sequence[int]) -> list[tuple[Any, ...]]:
        """The raw rows of the checkpoints of ``sizes`` (those that exist), by size."""
        ...

    def audit_latest_checkpoint(self) -> tuple[Checkpoint, tuple[bytes, ...]] | None: ...

    # Witnesses' co-signatures of checkpoints (issue #13; see oneoff._audit.witness).
    def audit_put_cosignature(
        self, size: int, witness_key_id: str, timestamp: int, signature: bytes
    ) -> bool:
        """Store one witness's co-signature of checkpoint ``size``; False if it has one."""
        ...

    def audit_cosignature_rows(self) -> list[tuple[Any, ...]]:
        """Raw rows ``(size, witness_key_id, timestamp, signature)``, largest size first."""
        ...


class OutputStore(Protocol):
    """A run's recorded (redacted) output, as numbered compressed chunks."""

    def add_output_chunks(self, run_id: str, chunks: Sequence[tuple[int, int, int, bytes]]) -> None:
        """Append ``(seq, stream, size, zlib data)`` chunks (joins an open tx)."""
        ...

    def output_chunks(self, run_id: str) -> Iterator[tuple[Any, ...]]:
        """Raw ``(seq, stream, size, data)`` rows of a run in order (types unchecked)."""
        ...


class Store(
    RunStore,
    AuditStore,
    ReleaseStore,
    AccessStore,
    LockStore,
    OutputStore,
    ServerStateStore,
    Protocol,
):
    """The whole store. Code outside ``oneoff._store`` sees only this, so a PostgreSQL
    backend slots in by providing it (and passing the same tests). Every failure of the
    backend (a lost connection, a lock held too long, damage) is raised as StoreError."""

    def tx(self) -> AbstractContextManager[object]:
        """One write transaction: all of it lands, or none of it. Taken at once (no lock
        upgrade half-way). Inside another one it joins it; there are no savepoints, so an
        error leaving the inner one rolls back the outermost, and one caught inside the
        outer one lets the inner writes commit with it."""
        ...

    def connect_again(self) -> Store:
        """Another connection to the same store, for use by another thread."""
        ...

    def close(self) -> None: ...
