"""The append-only, hash-chained audit log: one event per security-relevant action."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oneoff._canonical import canonical_json
from oneoff.errors import StoreError

if TYPE_CHECKING:
    from oneoff._store.sqlite import SQLiteStore

__all__ = ["GENESIS", "AuditEvent", "AuditLog", "chain_hash", "event_body"]

GENESIS = b"\x00" * 32
EVENT_VERSION = 1


@dataclass(frozen=True)
class AuditEvent:
    """One stored event; ``body()`` is exactly what the chain and the Merkle tree hash."""

    seq: int
    ts: str
    kind: str
    actor: str
    environment: str | None = None
    task: str | None = None
    run_id: str | None = None
    release_id: str | None = None
    plan_hash: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    prev_hash: bytes = GENESIS
    hash: bytes = GENESIS

    def body(self) -> bytes:
        return event_body(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "actor": self.actor,
            "environment": self.environment,
            "task": self.task,
            "run_id": self.run_id,
            "release_id": self.release_id,
            "plan_hash": self.plan_hash,
            "payload": dict(self.payload),
            "prev_hash": self.prev_hash.hex(),
            "hash": self.hash.hex(),
        }


def event_body(event: AuditEvent) -> bytes:
    """Canonical bytes of an event's content (everything but its own hash)."""
    return canonical_json(
        {
            "v": EVENT_VERSION,
            "seq": event.seq,
            "ts": event.ts,
            "kind": event.kind,
            "actor": event.actor,
            "environment": event.environment,
            "task": event.task,
            "run_id": event.run_id,
            "release_id": event.release_id,
            "plan_hash": event.plan_hash,
            "payload": dict(event.payload),
            "prev": event.prev_hash.hex(),
        }
    )


def chain_hash(body: bytes) -> bytes:
    # The body already holds the predecessor's hash, so hashing it chains the events.
    return hashlib.sha256(body).digest()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class AuditLog:
    """Appends to and reads the audit log of one store."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def append(
        self,
        kind: str,
        *,
        actor: str,
        environment: str | None = None,
        task: str | None = None,
        run_id: str | None = None,
        release_id: str | None = None,
        plan_hash: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """Append one event, durably, after the current head; appends never fork the chain."""
        data = dict(payload or {})
        canonical_json(data)  # refuse what cannot be hashed before taking the write lock

        def build(prev_seq: int, prev_hash: bytes) -> AuditEvent:
            draft = AuditEvent(
                seq=prev_seq + 1,
                ts=_now(),
                kind=kind,
                actor=actor,
                environment=environment,
                task=task,
                run_id=run_id,
                release_id=release_id,
                plan_hash=plan_hash,
                payload=data,
                prev_hash=prev_hash,
            )
            return AuditEvent(**{**draft.__dict__, "hash": chain_hash(draft.body())})

        return self.store.audit_append(build)

    def events(self, *, since: int = 0) -> Iterator[AuditEvent]:
        return self.store.audit_events(since=since)


def event_from_row(row: tuple[Any, ...]) -> AuditEvent:
    """Rebuild an event from its stored row; a malformed row is a store error."""
    try:
        seq, ts, kind, actor, env, task, run_id, release_id, plan_hash, payload, prev, digest = row
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("payload is not an object")
        return AuditEvent(
            seq=int(seq),
            ts=str(ts),
            kind=str(kind),
            actor=str(actor),
            environment=env,
            task=task,
            run_id=run_id,
            release_id=release_id,
            plan_hash=plan_hash,
            payload=data,
            prev_hash=bytes(prev),
            hash=bytes(digest),
        )
    except (ValueError, TypeError) as exc:
        raise StoreError(f"audit event row {row[0] if row else '?'} is malformed: {exc}") from None
