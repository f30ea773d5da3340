"""The append-only, hash-chained audit log: one event per security-relevant action.

Storage format (what ``oneoff audit verify`` checks):

* An event's **body** is the RFC 8785 canonical JSON of its content (``v``, ``ts``, ``kind``,
  ``actor``, ``environment``, ``task``, ``run_id``, ``release_id``, ``plan_hash``,
  ``payload``). The exact body bytes are stored; they are the source of truth. The store's
  other columns are computed from them, for filtering only, and display and export decode
  the verified body (``json.loads``) instead of trusting any column.
* An event's **entry** is ``prev_hash || body``: it carries its predecessor's hash (32 zero
  bytes for the first event).
* Its **hash** is the RFC 6962 leaf hash of the entry, ``SHA-256(0x00 || prev_hash || body)``.
  One hash serves both as the chain link (the next event's ``prev_hash``) and as the event's
  leaf in the Merkle tree that checkpoints sign, so verifying costs one SHA-256 per event.
* The event's number (``seq``, from 1) is its position: leaf index ``seq - 1``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from oneoff._canonical import canonical_json
from oneoff._clock import utc_iso
from oneoff._record import dataclass, field
from oneoff.errors import AuditError, ConfigError, StoreError

if TYPE_CHECKING:
    from oneoff._audit.checkpoint import Checkpoint
    from oneoff._audit.keys import AuditKey
    from oneoff._store.interface import Store

__all__ = ["GENESIS", "AuditEvent", "AuditLog", "chain_hash", "event_body"]

GENESIS = b"\x00" * 32
EVENT_VERSION = 1
_FIELDS = ("ts", "kind", "actor", "environment", "task", "run_id", "release_id", "plan_hash")


@dataclass(frozen=True)
class AuditEvent:
    """One stored event; ``body`` is exactly what the chain and the Merkle tree hash."""

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
    body: bytes = b""

    @property
    def entry(self) -> bytes:
        """The Merkle tree entry: predecessor's hash, then the body."""
        return self.prev_hash + self.body

    def to_json(self) -> dict[str, Any]:
        """One exported line: the decoded fields plus what is needed to re-check the hash."""
        data: dict[str, Any] = {"seq": self.seq}
        data.update({name: getattr(self, name) for name in _FIELDS})
        data["payload"] = dict(self.payload)
        data["prev_hash"] = self.prev_hash.hex()
        data["hash"] = self.hash.hex()
        data["body"] = self.body.decode("utf-8")
        return data


def event_body(
    *,
    ts: str,
    kind: str,
    actor: str,
    environment: str | None,
    task: str | None,
    run_id: str | None,
    release_id: str | None,
    plan_hash: str | None,
    payload: Mapping[str, Any],
) -> bytes:
    """Canonical bytes of an event's content (what its hash covers, after ``prev_hash``)."""
    return canonical_json(
        {
            "v": EVENT_VERSION,
            "ts": ts,
            "kind": kind,
            "actor": actor,
            "environment": environment,
            "task": task,
            "run_id": run_id,
            "release_id": release_id,
            "plan_hash": plan_hash,
            "payload": dict(payload),
        }
    )


def chain_hash(prev_hash: bytes, body: bytes) -> bytes:
    """The event's hash: RFC 6962 leaf hash of its entry ``prev_hash || body``."""
    return hashlib.sha256(b"\x00" + prev_hash + body).digest()


def decode_event(seq: int, prev_hash: bytes, body: bytes, digest: bytes) -> AuditEvent:
    """Rebuild an event from its stored body; a body that is not an event is an AuditError."""
    try:
        data = json.loads(body)
        if not isinstance(data, dict) or data.get("v") != EVENT_VERSION:
            raise ValueError("not a version 1 event")
        payload = data["payload"]
        if not isinstance(payload, dict):
            raise ValueError("payload is not an object")
        return AuditEvent(
            seq=seq,
            **{name: data[name] for name in _FIELDS},
            payload=payload,
            prev_hash=prev_hash,
            hash=digest,
            body=body,
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise AuditError(f"audit event {seq} is malformed: {exc}") from None


def _now() -> str:
    return utc_iso(timespec="microseconds")


def _builder(
    kind: str,
    *,
    actor: str,
    environment: str | None = None,
    task: str | None = None,
    run_id: str | None = None,
    release_id: str | None = None,
    plan_hash: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> Callable[[int, bytes], AuditEvent]:
    """How to build the event on the head it will follow; AuditError now if it cannot be
    encoded (before any lock is taken)."""
    fields: dict[str, Any] = {
        "kind": kind, "actor": actor, "environment": environment, "task": task,
        "run_id": run_id, "release_id": release_id, "plan_hash": plan_hash,
    }  # fmt: skip
    data = dict(payload or {})
    try:
        # Encode once before taking the write lock: refuse what cannot be hashed early.
        canonical_json({**fields, "payload": data})
    except ValueError as exc:
        raise AuditError(f"audit event {kind!r} cannot be recorded: {exc}") from None

    def build(prev_seq: int, prev_hash: bytes) -> AuditEvent:
        # The timestamp is taken under the write lock so it never goes backwards.
        ts = _now()
        body = event_body(ts=ts, payload=data, **fields)
        return AuditEvent(
            seq=prev_seq + 1, ts=ts, payload=data, prev_hash=prev_hash,
            hash=chain_hash(prev_hash, body), body=body, **fields,
        )  # fmt: skip

    return build


class AuditLog:
    """Appends to and reads the audit log of one store."""

    def __init__(self, store: Store, key: AuditKey | None = None) -> None:
        self.store = store
        self.key = key

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
        """Append one event after the current head; appends never fork the chain. Durable
        when this returns, unless called inside a store transaction: then it lands (or not)
        with that transaction."""
        return self.store.audit_append(
            _builder(
                kind, actor=actor, environment=environment, task=task, run_id=run_id,
                release_id=release_id, plan_hash=plan_hash, payload=payload,
            )
        )  # fmt: skip

    def append_all(self, entries: Sequence[Mapping[str, Any]]) -> list[AuditEvent]:
        """Append several events (each given as ``append``'s keyword arguments) one after
        the other, nothing between them, in one commit: all of them or none. A call that
        records a decision and its outcome waits for one durable commit, not two."""
        if not entries:
            return []
        return self.store.audit_append_all([_builder(**entry) for entry in entries])

    def append_with(
        self, write: Callable[[Store], Sequence[Mapping[str, Any]]]
    ) -> list[AuditEvent]:
        """Run ``write(store)`` (writes through the store it is given; returns the events to
        append, as ``append_all`` takes them) and append its events, in one commit: its
        writes and their audit land together or not at all (``Store.audit_append_with``)."""
        return self.store.audit_append_with(
            lambda store: [_builder(**entry) for entry in write(store)]
        )

    def events(
        self, *, since: int = 0, run_id: str | None = None, kind: str | None = None
    ) -> Iterator[AuditEvent]:
        """Events after ``since``, in order, decoded from their bodies."""
        for seq, prev, body, digest in self.store.audit_rows(since=since, run_id=run_id, kind=kind):
            yield decode_event(seq, prev, body, digest)

    def head(self) -> int:
        """Number of events in the log."""
        return self.store.audit_head()[0]

    def checkpoint(self) -> Checkpoint:
        """Sign the tree head over every event so far (or return the newest if nothing is new).

        Costs O(new events + log n): the tree state (frontier) is stored with each checkpoint.
        """
        from oneoff._audit.checkpoint import sign_checkpoint, verify_checkpoint
        from oneoff._audit.merkle import TreeBuilder

        if self.key is None:
            raise AuditError("no audit key: cannot sign a checkpoint")
        private = self.key.private()
        public = private.public_key()
        with self.store.tx():
            last = self.store.audit_latest_checkpoint()
            head_seq, head_hash = self.store.audit_head()
            if last is not None and last[0].size == head_seq:
                return last[0]
            if last is None:
                tree, prev = TreeBuilder(), GENESIS
            else:
                cp, frontier = last
                # Never extend a tree the store cannot vouch for: the saved frontier must
                # hash to the signed root, and the new events must chain onto it.
                verify_checkpoint(cp, public)
                tree = TreeBuilder.from_frontier(cp.size, frontier)
                if tree.root() != cp.root:
                    raise AuditError(f"checkpoint {cp.size}: stored tree state is corrupt")
                prev = self.store.audit_hash_at(cp.size)
            for seq, prev_hash, body, digest in self.store.audit_rows(since=tree.size):
                if prev_hash != prev or chain_hash(prev_hash, body) != digest:
                    raise AuditError(
                        f"audit event {seq} does not chain: refusing to sign a checkpoint",
                        hint="run `oneoff audit verify`",
                    )
                tree.append(digest)
                prev = digest
            if tree.size != head_seq or prev != head_hash:
                raise AuditError("audit log changed while signing a checkpoint")
            signed = sign_checkpoint(tree.size, tree.root(), int(time.time()), private)
            self.store.audit_put_checkpoint(signed, tree.frontier)
        return signed

    def checkpoint_or_warn(self) -> Checkpoint | None:
        """Checkpoint after a run; a failure is logged, never hides the task's own outcome."""
        try:
            return self.checkpoint()
        except (AuditError, StoreError, ConfigError) as exc:
            from oneoff._log import log

            log(
                "audit.checkpoint_failed", f"audit checkpoint not written: {exc.message}",
                level="warning", hint=exc.hint or "run `oneoff audit verify`",
            )  # fmt: skip
            return None
