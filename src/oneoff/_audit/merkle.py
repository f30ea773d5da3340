"""RFC 6962 / RFC 9162 Merkle tree hashing, audit paths and consistency proofs over SHA-256."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from itertools import islice

from oneoff.errors import AuditError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "TreeBuilder",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
# MTH({}) = SHA-256() per RFC 6962 section 2.1.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_LEAF = b"\x00"
_NODE = b"\x01"
# extend() hashes aligned runs of 2**_CHUNK_BITS leaves as one perfect subtree.
_CHUNK_BITS = 8
_CHUNK = 1 << _CHUNK_BITS


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one log entry."""
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return _sha256(_NODE + left + right).digest()


def _check_hashes(hashes: Sequence[bytes], what: str) -> None:
    # Fixed-width hashes are what make "left || right" unambiguous; a 31- or 33-byte
    # value would let two different trees concatenate to the same node preimage.
    if set(map(type, hashes)) <= {bytes} and set(map(len, hashes)) <= {HASH_SIZE}:
        return
    for i, h in enumerate(hashes):
        if type(h) is not bytes or len(h) != HASH_SIZE:
            raise AuditError(f"{what} #{i} is not a {HASH_SIZE}-byte hash")


def _mth_level(level: list[bytes]) -> bytes:
    # Pairing neighbours level by level and promoting an odd last node unchanged is
    # equal to RFC 6962's "split at the largest power of two below n" recursion, and
    # it needs no recursion and no per-node objects beyond the digests themselves.
    n = len(level)
    if n == 0:
        return EMPTY_ROOT
    sha = _sha256
    while n > 1:
        it = iter(level)
        nxt = [sha(_NODE + a + b).digest() for a, b in zip(it, it, strict=False)]
        if n & 1:
            nxt.append(level[-1])
        level = nxt
        n = len(level)
    return level[0]


def _subtree(leaf_hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    if hi - lo == 1:
        return leaf_hashes[lo]
    return _mth_level(list(leaf_hashes[lo:hi]))


def _split(n: int) -> int:
    # The largest power of two strictly smaller than n (n >= 2).
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash (MTH) of the given leaf hashes; ``EMPTY_ROOT`` for none."""
    _check_hashes(leaf_hashes, "leaf hash")
    return _mth_level(list(leaf_hashes))


class TreeBuilder:
    """Incremental MTH over appended leaf hashes, keeping O(log n) state.

    The state is the "frontier": the roots of the perfect subtrees that make up the
    tree so far, largest first, one per set bit of ``size``. It can be saved with
    ``frontier`` and restored with ``from_frontier`` so a store need not re-read old
    leaves to keep appending.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[bytes] = []

    @classmethod
    def from_frontier(cls, size: int, frontier: Sequence[bytes]) -> TreeBuilder:
        """A builder resumed from a saved ``(size, frontier)``."""
        if type(size) is not int or size < 0:
            raise AuditError(f"tree size must be a non-negative integer, not {size!r}")
        if len(frontier) != size.bit_count():
            raise AuditError(
                f"a tree of size {size} has {size.bit_count()} frontier hashes, not {len(frontier)}"
            )
        _check_hashes(frontier, "frontier hash")
        tb = cls()
        tb._size = size
        tb._stack = list(frontier)
        return tb

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def frontier(self) -> tuple[bytes, ...]:
        """Roots of the perfect subtrees covering the tree, largest (leftmost) first."""
        return tuple(self._stack)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash (as returned by :func:`leaf_hash`) on the right."""
        if type(leaf_hash) is not bytes or len(leaf_hash) != HASH_SIZE:
            raise AuditError(f"leaf hash must be {HASH_SIZE} bytes")
        stack = self._stack
        n = self._size
        h = leaf_hash
        # Each trailing 1-bit of the old size is a perfect subtree of the same height
        # as the one being carried: merge them like a binary counter increment.
        while n & 1:
            h = _sha256(_NODE + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append many leaf hashes; same result as calling :meth:`append` on each."""
        it = iter(leaf_hashes)
        # Until the size is a multiple of the chunk, go leaf by leaf.
        while self._size % _CHUNK:
            head = list(islice(it, 1))
            if not head:
                return
            self.append(head[0])
        stack = self._stack
        while True:
            batch = list(islice(it, _CHUNK))
            if len(batch) < _CHUNK:
                for h in batch:
                    self.append(h)
                return
            _check_hashes(batch, "leaf hash")
            # A full aligned chunk is a perfect subtree: hash it level by level (fast
            # list comprehensions), then carry it into the frontier like one big leaf.
            h = _mth_level(batch)
            n = self._size >> _CHUNK_BITS
            while n & 1:
                h = _sha256(_NODE + stack.pop() + h).digest()
                n >>= 1
            stack.append(h)
            self._size += _CHUNK

    def root(self) -> bytes:
        """The MTH of everything appended so far."""
        stack = self._stack
        if not stack:
            return EMPTY_ROOT
        r = stack[-1]
        for h in reversed(stack[:-1]):
            r = _sha256(_NODE + h + r).digest()
        return r


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The audit path (RFC 6962 PATH) for leaf ``index``, bottom sibling first.

    Costs O(n) hashes: the siblings are disjoint subtrees whose sizes sum to < n.
    """
    n = len(leaf_hashes)
    if type(index) is not int or not 0 <= index < n:
        raise AuditError(f"leaf index {index!r} is outside a tree of size {n}")
    _check_hashes(leaf_hashes, "leaf hash")
    path: list[bytes] = []
    lo, hi = 0, n
    while hi - lo > 1:
        k = _split(hi - lo)
        mid = lo + k
        if index < mid:
            path.append(_subtree(leaf_hashes, mid, hi))
            hi = mid
        else:
            path.append(_subtree(leaf_hashes, lo, mid))
            lo = mid
    path.reverse()
    return path


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The RFC 6962 PROOF(old_size, D[n]) that the first ``old_size`` leaves are a prefix.

    Empty when ``old_size`` is 0 or equals the current size. Costs O(n) hashes.
    """
    n = len(leaf_hashes)
    if type(old_size) is not int or not 0 <= old_size <= n:
        raise AuditError(f"old size {old_size!r} is outside 0..{n}")
    _check_hashes(leaf_hashes, "leaf hash")
    if old_size in (0, n):
        return []
    path: list[bytes] = []
    lo, hi, m = 0, n, old_size
    # ``whole`` is SUBPROOF's b flag: true while the old tree is a complete left subtree
    # of the current range, whose hash the verifier already has as the old root.
    whole = True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(_subtree(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            path.append(_subtree(leaf_hashes, lo, lo + k))
            lo += k
            m -= k
            whole = False
    if not whole:
        path.append(_subtree(leaf_hashes, lo, hi))
    path.reverse()
    return path


def _is_hash(h: object) -> bool:
    return isinstance(h, bytes) and len(h) == HASH_SIZE


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows ``leaf_hash`` at ``index`` of the tree ``(size, root)``.

    RFC 9162 section 2.1.3.2; never raises for malformed input, it just says no.
    """
    if type(index) is not int or type(size) is not int or not 0 <= index < size:
        return False
    if not (_is_hash(leaf_hash) and _is_hash(root)):
        return False
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0 or not _is_hash(p):
            return False
        if fn & 1 or fn == sn:
            r = _sha256(_NODE + p + r).digest()
            # A right-edge node with no sibling at this level is promoted unchanged.
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(_NODE + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(r, root)


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> bool:
    """Whether ``proof`` shows tree ``(old_size, old_root)`` is a prefix of the new one.

    RFC 9162 section 2.1.4.2, plus the trivial cases: an empty old tree (its root must
    be ``EMPTY_ROOT``) and equal sizes (roots must be equal); both need an empty proof.
    Never raises for malformed input.
    """
    if type(old_size) is not int or type(new_size) is not int:
        return False
    if not 0 <= old_size <= new_size:
        return False
    if not (_is_hash(old_root) and _is_hash(new_root)):
        return False
    if not all(_is_hash(c) for c in proof):
        return False
    if old_size == 0:
        return len(proof) == 0 and hmac.compare_digest(old_root, EMPTY_ROOT)
    if old_size == new_size:
        return len(proof) == 0 and hmac.compare_digest(old_root, new_root)
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        # The old tree is a complete subtree of the new one: its root is the first node.
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE + c + fr).digest()
            sr = _sha256(_NODE + c + sr).digest()
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(_NODE + sr + c).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(fr, old_root) and hmac.compare_digest(sr, new_root)
