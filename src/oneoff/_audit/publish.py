"""What a server publishes of its audit log: checkpoints, RFC 6962 proofs, co-signatures.

The JSON documents the team server's ``/v1/audit/...`` endpoints return (and what the CLI,
``oneoff._client.witness``, checks). Nothing here needs to be trusted by the reader: every
checkpoint is signed by the log's key and every proof is recomputed by the client from
hashes; a server that lies is caught by the client's remembered checkpoint.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from oneoff._audit.checkpoint import Checkpoint, InclusionProofDoc, key_id
from oneoff._audit.merkle import consistency_proof, inclusion_proof
from oneoff.errors import AuditError, UsageError

if TYPE_CHECKING:
    from oneoff._audit.log import AuditLog
    from oneoff._store.interface import Store

__all__ = [
    "MAX_EVENTS",
    "accept_cosignature",
    "checkpoint_document",
    "consistency_document",
    "events_document",
    "inclusion_document",
]

MAX_EVENTS = 1000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _cosignatures(store: Store, size: int) -> list[dict[str, Any]]:
    out = []
    for row in store.audit_cosignature_rows():
        csize, kid, timestamp, signature = tuple(row)
        if csize == size and isinstance(signature, bytes):
            out.append({"witness_key_id": kid, "timestamp": timestamp,
                        "signature": _b64(signature)})  # fmt: skip
    return sorted(out, key=lambda c: str(c["witness_key_id"]))


def _witnessed(store: Store) -> list[dict[str, Any]]:
    """Each witness's largest co-signed checkpoint, with the co-signature (rows come
    largest size first). A reader checks it, and that the newest checkpoint extends it."""
    seen: dict[str, dict[str, Any]] = {}
    for row in store.audit_cosignature_rows():
        size, kid, timestamp, signature = tuple(row)
        if kid in seen or not isinstance(signature, bytes) or not isinstance(kid, str):
            continue
        try:
            cp = _stored(store, size)
        except AuditError:
            continue  # its checkpoint row is gone: it vouches for nothing
        seen[kid] = {"checkpoint": cp.to_dict(), "witness_key_id": kid,
                     "timestamp": timestamp, "signature": _b64(signature)}  # fmt: skip
    return [seen[k] for k in sorted(seen)]


def checkpoint_document(audit: AuditLog) -> dict[str, Any]:
    """The newest checkpoint, first signing one over any events it does not cover yet
    (cheap: only the new events are hashed), with every co-signature it has and each
    witness's newest co-signed checkpoint."""
    cp = audit.checkpoint()
    store = audit.store
    return {"checkpoint": cp.to_dict(), "cosignatures": _cosignatures(store, cp.size),
            "witnessed": _witnessed(store)}  # fmt: skip


def _stored(store: Store, size: int) -> Checkpoint:
    from oneoff._audit.verify import stored_checkpoint

    return stored_checkpoint(store, size)


def consistency_document(store: Store, first: int, second: int) -> dict[str, Any]:
    """RFC 6962 PROOF(first, D[second]) for the stored checkpoint of ``second`` events."""
    if not 0 <= first <= second:
        raise UsageError(f"first ({first}) must be between 0 and second ({second})")
    new = _stored(store, second)
    leaves = store.audit_leaf_hashes(new.size)
    path = consistency_proof(first, leaves)
    return {"first": first, "second": second, "checkpoint": new.to_dict(),
            "path": [_b64(h) for h in path]}  # fmt: skip


def inclusion_document(store: Store, seq: int, size: int | None) -> dict[str, Any]:
    """Inclusion proof of event ``seq`` in the stored checkpoint of ``size`` (default
    newest), as ``oneoff audit prove`` writes it, plus the event's exported line."""
    from oneoff._audit.log import decode_event

    if size is None:
        latest = store.audit_latest_checkpoint()
        if latest is None:
            raise AuditError("no signed checkpoint yet", hint="run `oneoff audit checkpoint`")
        cp = latest[0]
    else:
        cp = _stored(store, size)
    if not 1 <= seq <= cp.size:
        raise AuditError(f"event {seq} is not covered by the checkpoint of {cp.size} events")
    leaves = store.audit_leaf_hashes(cp.size)
    row = next(iter(store.audit_rows(since=seq - 1)), None)
    if row is None or row[0] != seq:
        raise AuditError(f"audit event {seq} is missing")
    event = decode_event(row[0], bytes(row[1]), bytes(row[2]), bytes(row[3]))
    doc = InclusionProofDoc(leaves[seq - 1], seq - 1, cp, tuple(inclusion_proof(seq - 1, leaves)))
    return {"proof": doc.to_dict(), "event": event.to_json()}


def events_document(
    audit: AuditLog, *, after: int, limit: int, run: str | None, kind: str | None
) -> dict[str, Any]:
    """Up to ``limit`` events after ``after`` (filtered); ``next`` continues the listing."""
    if after < 0 or not 1 <= limit <= MAX_EVENTS:
        raise UsageError(f"after must be >= 0 and limit between 1 and {MAX_EVENTS}")
    out: list[dict[str, Any]] = []
    for event in audit.events(since=after, run_id=run, kind=kind):
        out.append(event.to_json())
        if len(out) == limit:
            break
    more = len(out) == limit
    return {"events": out, "next": out[-1]["seq"] if more else None}


def accept_cosignature(audit: AuditLog, doc: object, *, actor: str) -> tuple[dict[str, Any], bool]:
    """Check a witness's co-signature (``{size, timestamp, signature, public_key}``, bytes
    base64) against the stored checkpoint it names and store it; ``(cosignature, new)``.
    A co-signature that does not verify is refused (AuditError, audited)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from oneoff._audit.witness import Cosignature, valid_cosignature

    if not isinstance(doc, dict) or set(doc) != {"size", "timestamp", "signature", "public_key"}:
        raise UsageError("a co-signature is {size, timestamp, signature, public_key}")
    size, timestamp = doc["size"], doc["timestamp"]
    if type(size) is not int or type(timestamp) is not int or size < 0 or timestamp < 0:
        raise UsageError("size and timestamp must be non-negative integers")
    try:
        raw_key = base64.b64decode(str(doc["public_key"]), validate=True)
        signature = base64.b64decode(str(doc["signature"]), validate=True)
        public = Ed25519PublicKey.from_public_bytes(raw_key)
    except ValueError:
        raise UsageError("public_key and signature must be base64 (a raw Ed25519 key)") from None
    cp = _stored(audit.store, size)
    cos = Cosignature(size, key_id(public), timestamp, signature)
    if not valid_cosignature(cp, cos, public):
        audit.append("audit.cosignature_refused", actor=actor,
                     payload={"size": size, "witness": cos.witness_key_id})  # fmt: skip
        raise AuditError(f"the co-signature of checkpoint {size} does not verify")
    store = audit.store
    with store.tx():
        new = store.audit_put_cosignature(size, cos.witness_key_id, timestamp, signature)
    if new:
        audit.append("audit.cosigned", actor=actor,
                     payload={"size": size, "witness": cos.witness_key_id})  # fmt: skip
    return {"size": size, "witness_key_id": cos.witness_key_id, "timestamp": timestamp,
            "signature": _b64(signature)}, new  # fmt: skip
