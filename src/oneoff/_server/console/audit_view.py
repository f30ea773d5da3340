"""The console's audit page: events, newest first, each with its proof status.

An event's status says what a reader can rely on: "in checkpoint N" when the newest
signed checkpoint verifies under the server's audit key, its Merkle root recomputes from
the stored leaves, and the event's own hash (recomputed from its body) is the leaf at its
place; "after checkpoint N" when it is newer than every signed checkpoint (its hash chain
is still checked); "FAILS: ..." for anything else. The whole log is verified by
``oneoff audit verify``; this page is the same evidence for the rows on screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from oneoff._record import dataclass
from oneoff.errors import AuditError, StoreError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._audit.log import AuditEvent

__all__ = ["AuditRow", "audit_rows"]

MAX_LIMIT = 500


@dataclass(frozen=True)
class AuditRow:
    """One event as the page shows it, and how it is proven ("ok", "pending", "fails")."""

    event: AuditEvent
    proof: str
    status: str


def audit_rows(
    app: App, *, kind: str | None, run_id: str | None, limit: int
) -> tuple[list[AuditRow], str]:
    """The newest ``limit`` events matching the filters, and a line about the checkpoint."""
    from oneoff._audit.log import chain_hash

    limit = max(1, min(limit, MAX_LIMIT))
    events: list[AuditEvent] = []
    # Unfiltered, only the newest events are read; a filter reads its (indexed) matches.
    since = 0 if kind or run_id else max(0, app.audit.head() - limit)
    for event in app.audit.events(since=since, kind=kind or None, run_id=run_id or None):
        events.append(event)
        if len(events) > limit:
            events.pop(0)
    events.reverse()
    size, leaves, summary = _checkpoint(app)
    rows = []
    for event in events:
        recomputed = chain_hash(event.prev_hash, event.body)
        if recomputed != event.hash:
            rows.append(AuditRow(event, "FAILS: its hash does not match its body", "fails"))
        elif size and event.seq <= size:
            if leaves is not None and leaves[event.seq - 1] == recomputed:
                rows.append(AuditRow(event, f"in signed checkpoint {size}", "ok"))
            else:
                rows.append(
                    AuditRow(event, f"FAILS: not the leaf checkpoint {size} signed", "fails")
                )
        else:
            rows.append(AuditRow(event, "after the newest signed checkpoint", "pending"))
    return rows, summary


def _checkpoint(app: App) -> tuple[int, Sequence[bytes] | None, str]:
    from oneoff._audit.checkpoint import verify_checkpoint
    from oneoff._audit.merkle import root

    store = app.store
    latest = store.audit_latest_checkpoint()
    if latest is None:
        return 0, None, "no signed checkpoint yet"
    cp = latest[0]
    key = app.audit.key
    try:
        if key is None:
            raise AuditError("no audit key to check it with")
        verify_checkpoint(cp, key.public())
        leaves = store.audit_leaf_hashes(cp.size)
        if root(leaves) != cp.root:
            raise AuditError("its root does not recompute from the stored events")
    except (AuditError, StoreError) as exc:
        return cp.size, None, f"checkpoint {cp.size} FAILS: {exc.message}"
    return cp.size, leaves, f"checkpoint {cp.size} signed and its root recomputed"
