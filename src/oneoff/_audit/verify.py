"""Verify a stored audit log end to end, and build inclusion and consistency proofs from it.

Checkpoints: every row must be well formed and name the trusted key, and its stored tree state
(the frontier: the roots of its perfect subtrees) must equal the one recomputed from the
events, a byte comparison. The newest row and a random sample of older ones also have their
root recomputed from that state (one hash per subtree) and their Ed25519 signature (~0.1 ms)
checked; with ``all_signatures``, every row. The sample (:func:`sample_size`) is every older
row up to SIGNATURE_SAMPLE_MIN (32) of them, then 32, growing by one per
SIGNATURE_SAMPLE_EVERY (128) older rows, to SIGNATURE_SAMPLE (64) from 8,192 of them on. So
signatures cost at most ~4 ms (33 checks) below 4,096 checkpoints and ~8 ms (65) above, a
fixed cost that stays a small share of the work at every size (65 checks at every size were a
quarter of the time at 10k events); there is no threshold (one at 10,000 checkpoints made
9,999 ten times slower than 10,000); and a checkpoint per run does not triple the hashing.

Why that is sound for the events: the newest signature vouches for its root, the root fixes
every event it covers (each one is recomputed and chained here), and every older checkpoint
must carry the tree state of its prefix of those same events. So no event, and no older
checkpoint's size or tree state, can differ from what the key holder signed. What the default
mode can miss is a forged or altered older row that still carries the correct tree state: a
wrong root or timestamp, a broken signature, or a row the key never signed (inserted). Such a
row is refused by whatever later uses it (proofs check its signature); ``--all-signatures``
finds it always. The sample is drawn anew on each run, uniformly without replacement, from
the OS's random source, so a forger cannot know which rows it will hold: if f of the N older
rows are forged, a sample of k misses all of them with probability C(N-f, k) / C(N, k) <=
(1 - f/N)^k. One forged row among N is found with probability k/N; a forgery of a tenth of
the rows escapes a sample of 32 with probability < 3.5 % and one of 64 with < 0.12 %; more
than N - k forged rows are always found. (Deleting a checkpoint row is undetectable in both
modes: rows are not chained.)
"""

from __future__ import annotations

import hashlib
import hmac
import random
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from oneoff._audit import verify_tree
from oneoff._audit.checkpoint import (
    Checkpoint,
    ConsistencyProofDoc,
    InclusionProofDoc,
    key_id,
    verify_checkpoint,
)
from oneoff._audit.merkle import consistency_proof, inclusion_proof
from oneoff._audit.verify_tree import Tree
from oneoff._record import dataclass
from oneoff._store.sqlite_audit import checkpoint_from_row
from oneoff.errors import AuditError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from oneoff._store.interface import Store

__all__ = [
    "SIGNATURE_SAMPLE",
    "VerifyReport",
    "prove_consistency",
    "prove_inclusion",
    "sample_size",
    "verify_log",
]

#: Older checkpoints whose signatures are checked besides the newest's, chosen at random
#: each time: at most SIGNATURE_SAMPLE, at least SIGNATURE_SAMPLE_MIN (all of them when
#: there are fewer), and one per SIGNATURE_SAMPLE_EVERY older rows in between.
SIGNATURE_SAMPLE = 64
SIGNATURE_SAMPLE_MIN = 32
SIGNATURE_SAMPLE_EVERY = 128


def sample_size(older: int) -> int:
    """How many of ``older`` checkpoint rows (all but the newest) have their signatures
    checked in the default mode (module docstring: what that finds)."""
    return min(older, SIGNATURE_SAMPLE, max(SIGNATURE_SAMPLE_MIN, older // SIGNATURE_SAMPLE_EVERY))


_GENESIS = b"\x00" * 32


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verification saw."""

    events: int
    checkpoints: int
    checkpointed: int  # events covered by the newest signed checkpoint
    head: bytes
    signatures: int = 0  # checkpoint signatures checked (all of them, or newest + a sample)

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


def _first_bad_event(
    page: list[tuple[Any, ...]], seq: int, gap: int | None, prev: bytes
) -> AuditError:
    """The first fault in a page of rows that failed the hot loop, named by its event."""
    sha256, zero = hashlib.sha256, b"\x00"
    for row in page:
        seq += 1
        try:
            p, body, digest = row
            good = p == prev and sha256(zero + p + body).digest() == digest
        except (TypeError, ValueError):  # a column of the wrong type (text, NULL)
            good = False
        if not good:
            return _bad_event(seq, gap, tuple(row), prev)
        prev = digest
    return AuditError(f"audit events after {seq - len(page)} failed verification")


# A checkpoint's (size, frontier bytes), as audit_checkpoint_states reads it.
_State = tuple[Any, ...]


def _checkpoints(
    store: Store, key: Ed25519PublicKey | None, all_signatures: bool
) -> tuple[list[_State], dict[int, bytes]]:
    """Every checkpoint's ``(size, frontier)``, oldest first, each row well formed and naming
    ``key``, and the roots of the rows whose signatures were checked, by index (their roots
    are checked against the events too)."""
    states = store.audit_checkpoint_states(key_id(key) if key is not None else "")
    if not states:
        return states, {}
    if key is None:
        raise AuditError(
            "the log has signed checkpoints but there is no audit public key to check them",
            hint="pass --key with the public key you kept (`oneoff audit key` printed it)",
        )
    # The store checked every field in SQL but the frontier's length, which the tree checks:
    # the computed tree state of n events is popcount(n) hashes.
    if None in map(itemgetter(1), states):  # a row refused: the full parse names the fault
        bad = next(size for size, frontier in states if frontier is None)
        for row in store.audit_checkpoint_rows(size=bad):
            verify_checkpoint(_parse(row), key)  # every row must at least name the trusted key
        raise AuditError(f"checkpoint {bad!r} is malformed")
    checked: range | list[int]
    if all_signatures:
        checked = range(len(states))
        rows = store.audit_checkpoint_rows()
    else:
        # The newest anchors the events; the sample looks for forged older rows. Chosen
        # anew each time, so a forger cannot tell which rows will be looked at.
        older = random.SystemRandom().sample(range(len(states) - 1), sample_size(len(states) - 1))
        checked = sorted({*older, len(states) - 1})
        rows = store.audit_checkpoint_rows_at([states[i][0] for i in checked])
    by_size = {row[0]: row for row in rows}
    roots = {}
    for i in checked:
        size, frontier = states[i]
        found = by_size.get(size)
        if found is None or found[5] != frontier:  # read twice: it must not change between
            raise AuditError(f"checkpoint {size} changed while it was being verified")
        verify_checkpoint(_parse(tuple(found)), key)
        roots[i] = found[1]
    return states, roots


def _parse(row: tuple[Any, ...]) -> Checkpoint:
    try:
        return checkpoint_from_row(row)[0]
    except (AuditError, TypeError, AttributeError) as exc:
        raise AuditError(f"checkpoint {row[0]!r} is malformed: {exc}") from None


def _stored_root(store: Store, size: int) -> bytes:
    """The root of the checkpoint of ``size`` (whose tree state did not match the events)."""
    rows = store.audit_checkpoint_rows(size=size)
    return rows[0][1] if rows and type(rows[0][1]) is bytes else b""


def verify_log(
    store: Store, key: Ed25519PublicKey | None, *, all_signatures: bool = False
) -> VerifyReport:
    """Recompute the chain, the Merkle tree and every checkpoint; AuditError names the first fault.

    Every stored byte of every event is covered: the chain catches a changed, deleted,
    inserted or reordered event; the signed checkpoints catch a rewritten or truncated log
    (as long as the signing key was not used to re-sign it: keep a checkpoint elsewhere).
    ``all_signatures`` checks every checkpoint's signature, not only the newest's and a
    sample (module docstring).
    """
    checkpoints, roots = _checkpoints(store, key, all_signatures)
    tree = Tree(checkpoints, roots, lambda size: _stored_root(store, size))
    prev, seq = _GENESIS, 0
    hashes: list[bytes] = []
    append = hashes.append
    sha256, zero = hashlib.sha256, b"\x00"
    # The hot loop: one SHA-256 per event, nothing decoded, rows as the store fetched them;
    # Python work per page, not per row, where it can be.
    for page in store.audit_chain_pages():
        start = prev
        try:
            for p, body, digest in page:
                if p != prev or sha256(zero + p + body).digest() != digest:
                    break
                append(digest)
                prev = digest
            else:
                seq += len(page)  # every row of the page chains
                while len(hashes) >= verify_tree.BLOCK:
                    tree.add_block(hashes[: verify_tree.BLOCK])
                    del hashes[: verify_tree.BLOCK]
                continue
        except (TypeError, ValueError):  # a column of the wrong type (text, NULL)
            pass
        raise _first_bad_event(page, seq, store.audit_first_gap(), start)
    tree.add_block(hashes)
    # Numbers are checked in SQL, off the hot loop (seq is not hashed: renumbered events
    # still chain). The rows just counted spare a count.
    gap = store.audit_first_gap(counted=seq)
    if gap is not None:
        raise _bad_event(gap, gap, None, prev)
    # A root mismatch is reported after the chain: a broken link names the event.
    if tree.rewritten is not None:
        raise tree.rewritten
    if tree.next_cp < len(checkpoints):
        size = checkpoints[tree.next_cp][0]
        raise AuditError(
            f"audit event {seq + 1} is missing: checkpoint {size} was signed over "
            f"{size} events but the log holds {seq} (events deleted)",
            hint="the audit log was truncated",
        )
    covered = checkpoints[-1][0] if checkpoints else 0
    return VerifyReport(
        events=seq,
        checkpoints=len(checkpoints),
        checkpointed=covered,
        head=prev,
        signatures=len(roots),
    )


def _stored_checkpoint(store: Store, size: int | None) -> Checkpoint:
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
    store: Store, key: Ed25519PublicKey, seq: int
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
    store: Store, key: Ed25519PublicKey, old: Checkpoint, new_size: int | None = None
) -> ConsistencyProofDoc:
    """Proof that the stored checkpoint ``new_size`` (default newest) extends ``old``."""
    new = _stored_checkpoint(store, new_size)
    verify_checkpoint(old, key)
    verify_checkpoint(new, key)
    if old.size > new.size:
        raise AuditError(f"old checkpoint ({old.size} events) is newer than {new.size}")
    leaves = store.audit_leaf_hashes(new.size)
    return ConsistencyProofDoc(old=old, new=new, path=tuple(consistency_proof(old.size, leaves)))


def stored_checkpoint(store: Store, size: int | None) -> Checkpoint:
    """The stored checkpoint of ``size`` events (newest if None)."""
    return _stored_checkpoint(store, size)
