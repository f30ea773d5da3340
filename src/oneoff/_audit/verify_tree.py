"""The Merkle tree side of ``audit verify``: the events' tree hashed a level at a time, and
each checkpoint's stored tree state compared with it as it grows (verify.py has the chain).

Why the shape: verify must cost a few microseconds per event at any size (issue #11), and
with a checkpoint every few events the checkpoints cost as much as the events: each one's
tree state is built from the previous one's, not from scratch.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from oneoff._audit.merkle import EMPTY_ROOT
from oneoff.errors import AuditError

__all__ = ["BLOCK", "Tree"]

BLOCK_BITS = 12
BLOCK = 1 << BLOCK_BITS  # leaf hashes held and hashed at once (~300 KB: they stay in the CPU cache)

_sha256 = hashlib.sha256
_NODE = b"\x01"


# A checkpoint's (size, frontier bytes), as the store read it.
_State = tuple[Any, ...]


class Tree:
    """The Merkle tree of the events, checked against each checkpoint row as it grows.

    Leaves come in aligned blocks of BLOCK: every level of a block is hashed once, and a
    checkpoint inside it reads its tree state (frontier) from those levels instead of the tree
    being rebuilt leaf by leaf, which matters when there is a checkpoint every few events.
    """

    def __init__(
        self,
        checkpoints: list[_State],
        roots: dict[int, bytes],
        root_of: Callable[[int], bytes],
    ) -> None:
        self.checkpoints = checkpoints
        self.roots = roots  # the signed roots of the rows whose roots are recomputed, by index
        self.root_of = root_of  # the stored root of a checkpoint by size, for the other rows
        self.next_cp = 0
        self.size = 0
        self.outer: list[bytes] = []  # frontier of the complete blocks, largest first
        self.rewritten: AuditError | None = None
        self._restart()

    def _restart(self) -> None:
        # The tree state of the last checkpoint looked at, as the outer frontier followed by
        # the block's subtree roots, for the next one to share.
        self._m = 0
        self._state = self.outer.copy()

    def add_block(self, leaves: list[bytes]) -> None:
        levels = [leaves]
        level = leaves
        while len(level) > 1:  # complete pairs only: a partial block's odd node has no parent
            it = iter(level)
            level = [_sha256(_NODE + a + b).digest() for a, b in zip(it, it, strict=False)]
            levels.append(level)
        end = self.size + len(leaves)
        complete = len(leaves) == BLOCK
        # Inside the block, its subtrees just follow the outer ones; at its end (a complete
        # block) they merge into one, so those checkpoints are checked after the carry.
        self._restart()
        self._check_upto(end - complete, levels)
        if complete:
            h, n = levels[-1][0], self.size >> BLOCK_BITS
            while n & 1:  # carry, as a binary counter does
                h = _sha256(_NODE + self.outer.pop() + h).digest()
                n >>= 1
            self.outer.append(h)
        self.size = end
        self._restart()
        self._check_upto(end, levels)

    def _check_upto(self, size: int, levels: list[list[bytes]]) -> None:
        """Compare the checkpoints of up to ``size`` events with the tree state after
        ``self.size`` + m leaves: the outer frontier, then one perfect subtree per set bit
        b of m, largest first, the level-b node over leaves [(m >> (b + 1)) << (b + 1),
        ... + 2**b), at index (m >> (b + 1)) << 1 of that level. A subtree depends only on
        the bits of m above its own, so the ones above the highest bit that differs from
        the previous checkpoint's m are kept (checkpoints every few events share nearly
        all): one hot loop, as it runs once per checkpoint."""
        cps, roots, first = self.checkpoints, self.roots, self.next_cp
        base, last, state, join = self.size, self._m, self._state, b"".join
        outer, limit, i = len(self.outer), size - self.size, len(cps)
        for i in range(first, len(cps)):  # (islice would walk the rows before ``first``)
            row = cps[i]
            m = row[0] - base  # leaves of this block under the checkpoint
            if m > limit:
                break
            if self.rewritten is not None:
                continue  # the first fault is the one reported
            if m < 0:  # a checkpoint row sized below the events already seen
                self.rewritten = AuditError(f"checkpoint {row[0]}: stored tree state is corrupt")
                continue
            changed = (m ^ last).bit_length()  # bits >= changed are as they were
            del state[outer + (m >> changed).bit_count() :]
            low = m & ((1 << changed) - 1)
            while low:  # the set bits below, largest first
                b = low.bit_length() - 1
                state.append(levels[b][(m >> (b + 1)) << 1])
                low ^= 1 << b
            last = m
            if i in roots or join(state) != row[1]:
                root = roots[i] if i in roots else self.root_of(row[0])
                self.rewritten = _check_root(row, root, state)
        else:
            i = len(cps)  # every row was looked at (or there was none)
        self.next_cp, self._m = i, last


def _check_root(row: _State, root: bytes, state: list[bytes]) -> AuditError | None:
    """A checkpoint whose root is checked, or whose tree state differs from the computed
    one: recomputing the root tells a rewritten log from a corrupt stored state."""
    size, frontier = row
    computed = state[-1] if state else EMPTY_ROOT
    for h in state[-2::-1]:
        computed = _sha256(_NODE + h + computed).digest()
    if not hmac.compare_digest(computed, root):
        return AuditError(
            f"checkpoint {size} does not match the log: events 1..{size} were "
            "rewritten after it was signed",
            hint="the audit log was tampered with",
        )
    if b"".join(state) != frontier:
        return AuditError(f"checkpoint {size}: stored tree state is corrupt")
    return None
