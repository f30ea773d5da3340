"""Verify a stored audit log end to end, and build inclusion and consistency proofs from it."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from oneoff._audit.checkpoint import (
    Checkpoint,
    ConsistencyProofDoc,
    InclusionProofDoc,
    verify_checkpoint,
)
from oneoff._audit.merkle import TreeBuilder, consistency_proof, inclusion_proof
from oneoff._record import dataclass
from oneoff._store.sqlite_audit import checkpoint_from_row
from oneoff.errors import AuditError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from oneoff._store.sqlite import SQLiteStore

__all__ = ["VerifyReport", "prove_consistency", "prove_inclusion", "verify_log"]

_GENESIS = b"\x00" * 32
_FLUSH = 65536  # leaf hashes handed to the tree builder at once


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verification saw."""

    events: int
    checkpoints: int
    checkpointed: int  # events covered by the newest signed checkpoint
    head: bytes

    @property
    def uncovered(self) -> int:
        """Events after the newest checkpoint: chained, but not yet signed."""
        return self.events - self.checkpointed


def _bad_event(seq: int, gap: int | None, row: tuple[Any, ...] | None, prev: bytes) -> AuditError:
    if gap is not None and seq >= gap:
        what = "is missing (deleted, or events were renumbered)"
    elif row is None:
        what = "is malformed"
    elif type(row[0]) is not bytes or not hmac.compare_digest(row[0], prev):
        what = "does not follow the event before it (inserted, deleted or reordered events)"
    elif type(row[1]) is not bytes or type(row[2]) is not bytes:
        what = "is malformed (a column has the wrong type)"
    else:
        what = "does not match its hash (modified)"
    return AuditError(
        f"audit event {gap if what.startswith('is missing') else seq} {what}",
        hint="the audit log was tampered with",
    )


def _checkpoints(store: SQLiteStore, key: Ed25519PublicKey | None) -> list[tuple[Checkpoint, Any]]:
    out = []
    rows = store.audit_checkpoint_rows()
    if rows and key is None:
        raise AuditError(
            "the log has signed checkpoints but there is no audit public key to check them",
            hint="pass --key with the public key you kept (`oneoff audit key` printed it)",
        )
    for row in rows:
        try:
            cp, frontier = checkpoint_from_row(tuple(row))
        except (AuditError, TypeError, AttributeError) as exc:
            raise AuditError(f"checkpoint {row[0]!r} is malformed: {exc}") from None
        assert key is not None
        verify_checkpoint(cp, key)
        out.append((cp, frontier))
    return out


def verify_log(store: SQLiteStore, key: Ed25519PublicKey | None) -> VerifyReport:
    """Recompute the chain, the Merkle tree and every checkpoint; AuditError names the first fault.

    Every stored byte of every event is covered: the chain catches a changed, deleted,
    inserted or reordered event; the signed checkpoints catch a rewritten or truncated log
    (as long as the signing key was not used to re-sign it: keep a checkpoint elsewhere).
    """
    checkpoints = _checkpoints(store, key)
    sizes = [cp.size for cp, _ in checkpoints]
    gap = store.audit_first_gap()  # numbers are checked in SQL, off the hot loop
    bounds = iter([*sizes, -1])
    next_cp, bound = 0, next(bounds)
    tree = TreeBuilder()
    prev, seq = _GENESIS, 0
    hashes: list[bytes] = []
    append = hashes.append
    rewritten: AuditError | None = None
    flush = _FLUSH if bound < 0 else min(bound, _FLUSH)
    sha256, zero = hashlib.sha256, b"\x00"
    # The hot loop: one SHA-256 per event, nothing decoded, rows straight off the cursor.
    for row in store.audit_chain_rows():
        seq += 1
        p, body, digest = row
        try:
            good = p == prev and sha256(zero + p + body).digest() == digest
        except TypeError:  # a column of the wrong type (text, NULL) where bytes belong
            good = False
        if not good:
            raise _bad_event(seq, gap, tuple(row), prev)
        append(digest)
        prev = digest
        if seq == flush:
            tree.extend(hashes)
            hashes.clear()
            if seq == bound:
                # A root mismatch is reported after the chain: a broken link names the event.
                rewritten = rewritten or _check_checkpoint(*checkpoints[next_cp], tree)
                next_cp, bound = next_cp + 1, next(bounds)
            flush = seq + _FLUSH if bound < 0 else min(bound, seq + _FLUSH)
    tree.extend(hashes)
    if gap is not None:
        raise _bad_event(gap, gap, None, prev)
    if rewritten is not None:
        raise rewritten
    if next_cp < len(sizes):
        cp = checkpoints[next_cp][0]
        raise AuditError(
            f"audit event {seq + 1} is missing: checkpoint {cp.size} was signed over "
            f"{cp.size} events but the log holds {seq} (events deleted)",
            hint="the audit log was truncated",
        )
    covered = sizes[-1] if sizes else 0
    return VerifyReport(events=seq, checkpoints=len(sizes), checkpointed=covered, head=prev)


def _check_checkpoint(
    cp: Checkpoint, frontier: tuple[bytes, ...], tree: TreeBuilder
) -> AuditError | None:
    if not hmac.compare_digest(tree.root(), cp.root):
        return AuditError(
            f"checkpoint {cp.size} does not match the log: events 1..{cp.size} were "
            "rewritten after it was signed",
            hint="the audit log was tampered with",
        )
    if tree.frontier != frontier:
        return AuditError(f"checkpoint {cp.size}: stored tree state is corrupt")
    return None


def _stored_checkpoint(store: SQLiteStore, size: int | None) -> Checkpoint:
    if size is None:
        latest = store.audit_latest_checkpoint()
        if latest is None:
            raise AuditError("no signed checkpoint yet", hint="run `oneoff audit checkpoint`")
        return latest[0]
    rows = store.audit_checkpoint_rows(size=size)
    if not rows:
        raise AuditError(f"no checkpoint of size {size}")
    return checkpoint_from_row(tuple(rows[0]))[0]


def prove_inclusion(
    store: SQLiteStore, key: Ed25519PublicKey, seq: int
) -> tuple[InclusionProofDoc, bytes]:
    """Proof that event ``seq`` is in the newest signed checkpoint, and the event's entry."""
    cp = _stored_checkpoint(store, None)
    verify_checkpoint(cp, key)
    if not 1 <= seq <= cp.size:
        raise AuditError(f"event {seq} is not covered by the newest checkpoint ({cp.size} events)")
    leaves = store.audit_leaf_hashes(cp.size)
    found = next(iter(store.audit_rows(since=seq - 1)), None)
    if found is None or found[0] != seq:
        raise AuditError(f"audit event {seq} is missing")
    entry = bytes(found[1]) + bytes(found[2])
    doc = InclusionProofDoc(
        leaf_hash=leaves[seq - 1],
        index=seq - 1,
        checkpoint=cp,
        path=tuple(inclusion_proof(seq - 1, leaves)),
    )
    return doc, entry


def prove_consistency(
    store: SQLiteStore, key: Ed25519PublicKey, old: Checkpoint, new_size: int | None = None
) -> ConsistencyProofDoc:
    """Proof that the stored checkpoint ``new_size`` (default newest) extends ``old``."""
    new = _stored_checkpoint(store, new_size)
    verify_checkpoint(old, key)
    verify_checkpoint(new, key)
    if old.size > new.size:
        raise AuditError(f"old checkpoint ({old.size} events) is newer than {new.size}")
    leaves = store.audit_leaf_hashes(new.size)
    return ConsistencyProofDoc(old=old, new=new, path=tuple(consistency_proof(old.size, leaves)))


def stored_checkpoint(store: SQLiteStore, size: int | None) -> Checkpoint:
    """The stored checkpoint of ``size`` events (newest if None)."""
    return _stored_checkpoint(store, size)
