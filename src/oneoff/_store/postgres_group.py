"""Group commit of audit appends: many appenders, one transaction, one WAL flush.

Why: each durable commit waits for the disk to flush the WAL (``synchronous_commit`` on),
and a disk does a few hundred flushes a second; one commit per event caps a server's audit
appends there. So appends that arrive together share a commit, as a database's own group
commit does for its log.

How (leader/follower, in each process, per store URL): an appender queues its event
builder. If no batch is being written it becomes the leader: it opens the write
transaction on its own connection (which takes the store-wide advisory lock, so batches
from other processes on the same database are serialized with it), THEN takes every
builder queued by then, builds each event on the head left by the one before (seq,
prev_hash, timestamp taken under the lock), inserts them in one statement and commits.
Appenders that arrive while a batch is written wait and join the next one.

What it promises, the same as one commit per append:

* the chain never forks: the head is read under the advisory lock (in the round trip
  that takes it), the batch's events chain onto it in order, and the primary key on
  ``seq`` would refuse a fork anyway;
* an appender learns its event (its ``seq``) only after COMMIT returned, i.e. after the
  WAL flush that made the whole batch durable;
* a batch that fails (a lost connection, a refused write, a crash of the leader's process:
  PostgreSQL rolls the open transaction back) fails every appender in it, with the same
  StoreError; none of its events is reported as appended.

Only the ``seq`` numbers an appender would have got may differ from a serial run: they
are assigned in the order the leader takes the queue.

An appender may bring writes of its own (``append_with``): a function the leader runs
inside the batch's transaction, through its own connection, just before building that
appender's events, which it returns (they may depend on what its writes found, e.g. a
nonce already spent). So an API call spends its nonce, stores its outcome and audits it
in the one commit it shares with the others: all of it lands, or none. If one appender's
function raises, the leader rolls the batch back, fails that appender alone with its
error, and writes the batch again without it: nobody else's writes depend on its.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from oneoff.errors import OneoffError, StoreError

if TYPE_CHECKING:
    from oneoff._audit.log import AuditEvent

__all__ = ["MAX_BATCH", "GroupCommit", "group_for"]

#: Builds one event on the head ``(seq, hash)`` it follows.
Build = Callable[[int, bytes], "AuditEvent"]
#: An appender's own writes, run by the leader in the batch's transaction through the
#: store it is given; returns that appender's event builders.
Write = Callable[[Any], Sequence[Build]]

#: Appenders' items (an event or a few) written in one transaction at most (bounds its
#: size and the lock's hold time).
MAX_BATCH = 512

_INSERT = (
    "INSERT INTO audit_events (seq, prev_hash, body, hash)"
    " SELECT * FROM unnest(%s::bigint[], %s::bytea[], %s::bytea[], %s::bytea[])"
)


class _Pending:
    """One appender's events (consecutive, all or none): their builders, then the outcome;
    ``wake`` shares the queue's lock."""

    __slots__ = ("builds", "done", "error", "events", "wake", "write")

    def __init__(
        self, builds: Sequence[Build], lock: threading.Lock, write: Write | None = None
    ) -> None:
        self.builds = builds
        self.write = write
        self.wake = threading.Condition(lock)
        self.done = False
        self.events: list[AuditEvent] | None = None
        self.error: BaseException | None = None

    def outcome(self) -> list[AuditEvent]:
        if self.error is not None:
            raise self.error
        assert self.events is not None  # done without an error means written
        return self.events


class _Store(Protocol):
    """What the leader needs of the store it writes through (a ``PostgresStore``)."""

    url: str
    db: Any

    def tx_reading_head(self) -> AbstractContextManager[tuple[int, bytes]]: ...


class _Undo(Exception):
    """One appender's own writes failed: roll the batch back and write it without them."""

    def __init__(self, item: _Pending, error: BaseException) -> None:
        super().__init__(str(error))
        self.item, self.error = item, error


class GroupCommit:
    """The queue of one process's appenders to one database.

    The appender at the head of the queue leads the next batch; the others sleep until
    their batch is written or they reach the head, each woken alone (not all at once: with
    dozens of appenders a broadcast costs more than the batch)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leading = False
        #: Batches written and events in them, for benches and tests to see batching.
        self.batches = 0
        self.events = 0

    def append(self, store: _Store, build: Build) -> AuditEvent:
        """Append ``build(head_seq, head_hash)``; return once its batch is durable."""
        return self.append_all(store, [build])[0]

    def append_all(self, store: _Store, builds: Sequence[Build]) -> list[AuditEvent]:
        """Append the events of ``builds``, one after the other with nothing between them,
        all or none; return once their batch is durable."""
        return self._join(store, _Pending(builds, self._lock))

    def append_with(self, store: _Store, write: Write) -> list[AuditEvent]:
        """Run ``write(leader's store)`` in the batch's transaction, then append the events
        of the builders it returns; return once that batch is durable, or raise what
        ``write`` raised (nothing of it written)."""
        return self._join(store, _Pending((), self._lock, write))

    def _join(self, store: _Store, mine: _Pending) -> list[AuditEvent]:
        with self._lock:
            self._queue.append(mine)
            while not mine.done and (self._leading or self._queue[0] is not mine):
                mine.wake.wait()
            if mine.done:
                return mine.outcome()
            self._leading = True
        batch: list[_Pending] = []
        try:
            batch = self._lead(store)
        finally:
            with self._lock:
                self._leading = False
                for item in batch:
                    item.wake.notify()
                if self._queue:
                    self._queue[0].wake.notify()  # the next leader
        return mine.outcome()

    def _take(self) -> list[_Pending]:
        # Called with the lock held; the leader is at the head, so always in its batch.
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        return batch

    def _lead(self, store: _Store) -> list[_Pending]:
        batch: list[_Pending] = []
        undone: list[_Pending] = []
        try:
            while True:
                try:
                    with store.tx_reading_head() as head:
                        # Under the write lock now: everything queued so far rides this
                        # commit (taken once: a batch written again keeps its members).
                        if not batch:
                            with self._lock:
                                batch = self._take()
                        written = self._write(store, batch, head)
                    break
                except _Undo as undo:  # rolled back: that appender fails, the rest retry
                    undo.item.error = _own_error(store.url, undo.error)
                    undo.item.events = None
                    batch.remove(undo.item)
                    undone.append(undo.item)
            # COMMIT returned: the WAL holding the whole batch is flushed.
            with self._lock:
                self.batches += 1
                self.events += written
                for item in batch + undone:
                    item.done = True
            return batch + undone
        except BaseException as exc:
            with self._lock:
                if not batch and not undone:  # the transaction never started: fail the queue
                    batch = self._take()
                for item in batch:
                    item.error = _shared_error(store.url, exc)
                    item.events = None
                for item in batch + undone:  # the undone keep their own errors
                    item.done = True
                    item.wake.notify()
            raise

    @staticmethod
    def _write(store: _Store, batch: list[_Pending], first: tuple[int, bytes]) -> int:
        seq, head = first
        events: list[AuditEvent] = []
        for item in batch:
            item.error, item.events = None, None
            built: list[AuditEvent] = []
            builds = item.builds
            if item.write is not None:
                try:
                    builds = item.write(store)
                except BaseException as exc:
                    raise _Undo(item, exc) from exc
            try:
                for build in builds:
                    last = (seq, head) if not built else (built[-1].seq, built[-1].hash)
                    event = build(*last)
                    if event.seq != last[0] + 1 or event.prev_hash != last[1]:
                        raise StoreError(
                            f"audit event {event.seq} does not follow {last[0]}: not written"
                        )
                    built.append(event)
            except Exception as exc:  # this appender's own fault: the others still go
                if item.write is not None:
                    raise _Undo(item, exc) from exc  # its writes must not land alone
                item.error = exc
                continue
            item.events = built
            events.extend(built)
            if built:
                seq, head = built[-1].seq, built[-1].hash
        if events:
            store.db.execute(
                _INSERT,
                (
                    [e.seq for e in events],
                    [e.prev_hash for e in events],
                    [e.body for e in events],
                    [e.hash for e in events],
                ),
            )
        return len(events)


def _shared_error(url: str, exc: BaseException) -> BaseException:
    """The error each appender of a failed batch raises: its own instance (they raise in
    different threads), StoreError for anything the store said."""
    import psycopg

    from oneoff._store.postgres_errors import store_error

    if isinstance(exc, psycopg.Error):
        return store_error(url, exc)
    if isinstance(exc, OneoffError):
        return type(exc)(exc.message, hint=exc.hint)
    return StoreError(f"the audit batch was not written ({type(exc).__name__}: {exc})")


def _own_error(url: str, exc: BaseException) -> BaseException:
    """What an appender whose own writes failed raises: its error, a StoreError for
    anything the store said."""
    import psycopg

    from oneoff._store.postgres_errors import store_error

    return store_error(url, exc) if isinstance(exc, psycopg.Error) else exc


_groups: dict[str, GroupCommit] = {}
_groups_lock = threading.Lock()


def group_for(url: str) -> GroupCommit:
    """This process's group commit queue for the database at ``url``."""
    with _groups_lock:
        group = _groups.get(url)
        if group is None:
            group = _groups[url] = GroupCommit()
        return group
