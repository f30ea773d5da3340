"""Witnesses: independent parties who verify the audit log and co-sign its checkpoints.

A witness is anyone with an Ed25519 key of their own (``oneoff keys generate``) and read
access to the store. ``oneoff audit witness --key W.key`` verifies the whole log with the
app's audit public key, holds it to the checkpoint the witness's own account remembers
(``oneoff._audit.remembered``), then co-signs the newest checkpoint and stores the
co-signature beside it. Any number of witnesses can co-sign.

``oneoff audit verify --witness W.pub`` (repeatable) then requires a valid co-signature by
each named witness on a stored checkpoint. ``verify`` has already proven every stored
checkpoint's root against the events, so a valid co-signature means that witness saw
exactly this history up to that size. Rewriting it and re-signing every checkpoint with
the audit key voids every co-signature over the rewritten part (they signed the old
roots); deleting co-signatures leaves a named witness with none: both exit 8. The
witness's next ``audit witness`` refuses the rewritten log too (its remembered checkpoint).

Co-signed bytes: ``oneoff-audit-cosignature/v1\\n<log key id>\\n<co-sign unix time>\\n``
followed by the checkpoint's own signed payload, so a co-signature names the log's key and
cannot be moved to another log's checkpoint of the same size and root.

What remains for issue #13: the server publishing checkpoints and co-signatures
(``GET /audit/checkpoint``), witnesses fetching them remotely, and which witnesses an app
requires being set somewhere the log's owner cannot edit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from oneoff._record import dataclass
from oneoff.errors import AuditError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from oneoff._audit.checkpoint import Checkpoint
    from oneoff._store.interface import Store

__all__ = [
    "COSIGNATURE_HEADER", "Cosignature", "check_witnesses", "cosign", "valid_cosignature",
    "witness_log",
]  # fmt: skip

COSIGNATURE_HEADER = "oneoff-audit-cosignature/v1"
_SIGNATURE = 64


@dataclass(frozen=True)
class Cosignature:
    """One witness's signature over one checkpoint."""

    size: int
    witness_key_id: str
    timestamp: int
    signature: bytes


def _payload(cp: Checkpoint, timestamp: int) -> bytes:
    head = f"{COSIGNATURE_HEADER}\n{cp.key_id}\n{timestamp}\n".encode("ascii")
    return head + cp.signed_payload()


def cosign(cp: Checkpoint, private: Ed25519PrivateKey, timestamp: int) -> Cosignature:
    """Co-sign ``cp`` (already verified by the caller) with a witness's key."""
    from oneoff._audit.checkpoint import key_id

    signature = private.sign(_payload(cp, timestamp))
    return Cosignature(cp.size, key_id(private.public_key()), timestamp, signature)


def valid_cosignature(cp: Checkpoint, cos: Cosignature, public: Ed25519PublicKey) -> bool:
    """Whether ``cos`` is ``public``'s valid co-signature of exactly ``cp``."""
    from cryptography.exceptions import InvalidSignature

    if type(cos.signature) is not bytes or len(cos.signature) != _SIGNATURE:
        return False
    if type(cos.timestamp) is not int or cos.timestamp < 0:
        return False
    try:
        public.verify(cos.signature, _payload(cp, cos.timestamp))
    except InvalidSignature:
        return False
    return True


def witness_log(
    store: Store, log_key: Ed25519PublicKey, witness: Ed25519PrivateKey, identity: str
) -> tuple[Checkpoint, Cosignature, bool]:
    """Verify the log, hold it to this account's remembered checkpoint, co-sign the newest
    checkpoint and store the co-signature; ``(checkpoint, cosignature, newly stored)``."""
    from oneoff._audit.remembered import check_remembered, remember
    from oneoff._audit.verify import verify_log

    verify_log(store, log_key, all_signatures=True)
    latest = store.audit_latest_checkpoint()
    if latest is None:
        raise AuditError("no signed checkpoint to co-sign", hint="run `oneoff audit checkpoint`")
    cp = latest[0]
    check_remembered(store, log_key, identity, cp)
    remember(identity, log_key, cp)
    cos = cosign(cp, witness, int(time.time()))
    with store.tx():
        stored = store.audit_put_cosignature(cos.size, cos.witness_key_id, cos.timestamp,
                                             cos.signature)  # fmt: skip
    return cp, cos, stored


def _row(row: tuple[Any, ...]) -> Cosignature | None:
    size, kid, timestamp, signature = row
    if type(size) is not int or not isinstance(kid, str):
        return None
    return Cosignature(size, kid, timestamp, signature)


def check_witnesses(store: Store, witnesses: list[Ed25519PublicKey]) -> dict[str, int]:
    """For each witness key, the largest stored checkpoint it validly co-signed; AuditError
    (exit 8) naming the first witness with none. Call after ``verify_log`` succeeded."""
    from oneoff._audit.checkpoint import key_id
    from oneoff._audit.verify import stored_checkpoint

    found: dict[str, int] = {}
    rows = [c for c in (_row(tuple(r)) for r in store.audit_cosignature_rows()) if c]
    for public in witnesses:
        kid = key_id(public)
        mine = sorted((c for c in rows if c.witness_key_id == kid), key=lambda c: -c.size)
        for cos in mine:
            try:
                cp = stored_checkpoint(store, cos.size)
            except AuditError:
                continue  # its checkpoint row is gone: the co-signature vouches for nothing
            if valid_cosignature(cp, cos, public):
                found[kid] = cos.size
                break
        else:
            what = (
                f"none of its {len(mine)} co-signatures matches the stored checkpoints "
                "(they were re-signed after it co-signed them)"
                if mine
                else "it has no co-signature in this store (never asked, or they were deleted)"
            )
            raise AuditError(
                f"witness {kid} does not vouch for this log: {what}",
                hint="the log was tampered with, or the witness has yet to run `audit witness`",
            )
    return found
