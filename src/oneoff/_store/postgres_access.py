"""Run requests, approvals and seen nonces in PostgreSQL.

A duplicate is reported by ``ON CONFLICT DO NOTHING`` and the row count, never by catching
a unique violation: in PostgreSQL a failed statement aborts the whole transaction, which
would doom the caller's other writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from oneoff._store._prefix import row_by_id_or_prefix
from oneoff._store.interface import ApprovalRecord, RequestRecord
from oneoff._store.sqlite_access import _APPROVAL_COLUMNS, _REQUEST_COLUMNS, _request

if TYPE_CHECKING:
    import psycopg

__all__ = ["AccessMixin"]


class AccessMixin:
    db: psycopg.Connection[tuple[Any, ...]]

    def create_request(self, request: RequestRecord) -> None:
        self.db.execute(
            f"INSERT INTO requests ({_REQUEST_COLUMNS})"  # noqa: S608
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (request.id, request.task, request.environment, request.plan_hash,
             json.dumps(request.plan, sort_keys=True), request.requester, request.created_at,
             request.status, request.policy_version, request.used_by_run),
        )  # fmt: skip

    def get_request(self, request_id: str) -> RequestRecord:
        """The request with this id or unique id prefix; UsageError otherwise."""
        select = f"SELECT {_REQUEST_COLUMNS} FROM requests"  # noqa: S608
        return _request(row_by_id_or_prefix(self.db, select, request_id, "request", mark="%s"))

    def list_requests(self, *, status: str | None = "pending") -> Sequence[RequestRecord]:
        sql = f"SELECT {_REQUEST_COLUMNS} FROM requests"  # noqa: S608
        args: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE status = %s"
            args = (status,)
        rows = self.db.execute(sql + " ORDER BY created_at DESC, id DESC", args).fetchall()
        return [_request(r) for r in rows]

    def set_request_status(self, request_id: str, status: str, *, expect: str) -> bool:
        """Move a request from ``expect`` to ``status``; False if it was no longer ``expect``."""
        cur = self.db.execute(
            "UPDATE requests SET status = %s WHERE id = %s AND status = %s",
            (status, request_id, expect),
        )
        return cur.rowcount == 1

    def use_request(self, request_id: str, run_id: str, approvers: Sequence[str]) -> bool:
        """Spend a request and the approvals that made its quorum, at most once ever: the
        conditional UPDATE is the one place that decides, whichever process asks first."""
        cur = self.db.execute(
            "UPDATE requests SET status = 'used', used_by_run = %s"
            " WHERE id = %s AND status = 'pending' AND used_by_run IS NULL",
            (run_id, request_id),
        )
        if cur.rowcount != 1:
            return False
        self.db.execute(
            "UPDATE approvals SET used = 1 WHERE request_id = %s AND approver = ANY(%s)",
            (request_id, list(approvers)),
        )
        return True

    def add_approval(self, approval: ApprovalRecord) -> bool:
        """Store an approval; False when this approver already approved this request."""
        cur = self.db.execute(
            f"INSERT INTO approvals ({_APPROVAL_COLUMNS})"  # noqa: S608
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (approval.request_id, approval.approver, approval.plan_hash, approval.signature,
             approval.created_at, approval.expires_at, int(approval.used)),
        )  # fmt: skip
        return cur.rowcount == 1

    def add_approval_spending(
        self, approval: ApprovalRecord, nonce: str, principal: str, seen_at: str
    ) -> tuple[bool, bool]:
        """One statement: the approval is inserted only if the nonce's row was (a CTE sees
        its siblings' RETURNING rows), each ``ON CONFLICT DO NOTHING``."""
        row = self.db.execute(
            "WITH n AS (INSERT INTO nonces (nonce, principal, seen_at) VALUES (%s, %s, %s)"  # noqa: S608
            " ON CONFLICT DO NOTHING RETURNING 1),"
            f" a AS (INSERT INTO approvals ({_APPROVAL_COLUMNS})"
            " SELECT %s, %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM n)"
            " ON CONFLICT DO NOTHING RETURNING 1)"
            " SELECT EXISTS (SELECT 1 FROM n), EXISTS (SELECT 1 FROM a)",
            (nonce, principal, seen_at, approval.request_id, approval.approver,
             approval.plan_hash, approval.signature, approval.created_at, approval.expires_at,
             int(approval.used)),
        ).fetchone()  # fmt: skip
        assert row is not None  # a SELECT of two EXISTS always has its row
        return bool(row[0]), bool(row[1])

    def approvals_for(self, request_id: str) -> Sequence[ApprovalRecord]:
        rows = self.db.execute(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE request_id = %s"  # noqa: S608
            " ORDER BY created_at, approver",
            (request_id,),
        ).fetchall()
        return [ApprovalRecord(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    def remember_nonce(self, nonce: str, principal: str, seen_at: str) -> bool:
        """Record a request nonce; False if it was seen before (a replay)."""
        cur = self.db.execute(
            "INSERT INTO nonces (nonce, principal, seen_at) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (nonce, principal, seen_at),
        )
        return cur.rowcount == 1

    def forget_nonces(self, before: str) -> None:
        """Drop nonces older than the accepted clock skew: their statements are stale anyway."""
        self.db.execute("DELETE FROM nonces WHERE seen_at < %s", (before,))

    def server_value(self, name: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM server_state WHERE name = %s", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_server_value(self, name: str, value: bytes, updated_at: str, *, replace: bool) -> bool:
        """Store a server value; without ``replace``, only where it has none yet."""
        conflict = (
            "DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at"
            if replace
            else "DO NOTHING"
        )
        cur = self.db.execute(
            "INSERT INTO server_state (name, value, updated_at) VALUES (%s, %s, %s)"  # noqa: S608
            f" ON CONFLICT (name) {conflict}",
            (name, value, updated_at),
        )
        return cur.rowcount == 1
