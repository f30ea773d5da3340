"""Run requests, approvals and seen nonces in SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from oneoff._store._prefix import row_by_id_or_prefix
from oneoff._store.interface import ApprovalRecord, RequestRecord
from oneoff.errors import StoreError

__all__ = ["AccessMixin"]

_REQUEST_COLUMNS = (
    "id, task, environment, plan_hash, plan, requester, created_at, status, policy_version,"
    " used_by_run"
)
_APPROVAL_COLUMNS = "request_id, approver, plan_hash, signature, created_at, expires_at, used"


class AccessMixin:
    db: sqlite3.Connection

    def create_request(self, request: RequestRecord) -> None:
        self.db.execute(
            f"INSERT INTO requests ({_REQUEST_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
            (
                request.id,
                request.task,
                request.environment,
                request.plan_hash,
                json.dumps(request.plan, sort_keys=True),
                request.requester,
                request.created_at,
                request.status,
                request.policy_version,
                request.used_by_run,
            ),
        )

    def get_request(self, request_id: str) -> RequestRecord:
        """The request with this id or unique id prefix; UsageError otherwise."""
        select = f"SELECT {_REQUEST_COLUMNS} FROM requests"  # noqa: S608
        return _request(row_by_id_or_prefix(self.db, select, request_id, "request"))

    def list_requests(self, *, status: str | None = "pending") -> Sequence[RequestRecord]:
        sql = f"SELECT {_REQUEST_COLUMNS} FROM requests"  # noqa: S608
        args: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        rows = self.db.execute(sql + " ORDER BY created_at DESC, id DESC", args).fetchall()
        return [_request(r) for r in rows]

    def set_request_status(self, request_id: str, status: str, *, expect: str) -> bool:
        """Move a request from ``expect`` to ``status``; False if it was no longer ``expect``."""
        cur = self.db.execute(
            "UPDATE requests SET status = ? WHERE id = ? AND status = ?",
            (status, request_id, expect),
        )
        return cur.rowcount == 1

    def use_request(self, request_id: str, run_id: str, approvers: Sequence[str]) -> bool:
        """Spend a request and the approvals that made its quorum, at most once ever."""
        cur = self.db.execute(
            "UPDATE requests SET status = 'used', used_by_run = ?"
            " WHERE id = ? AND status = 'pending' AND used_by_run IS NULL",
            (run_id, request_id),
        )
        if cur.rowcount != 1:
            return False
        for approver in approvers:
            self.db.execute(
                "UPDATE approvals SET used = 1 WHERE request_id = ? AND approver = ?",
                (request_id, approver),
            )
        return True

    def add_approval_spending(
        self, approval: ApprovalRecord, nonce: str, principal: str, seen_at: str
    ) -> tuple[bool, bool]:
        if not self.remember_nonce(nonce, principal, seen_at):
            return False, False
        return True, self.add_approval(approval)

    def add_approval(self, approval: ApprovalRecord) -> bool:
        """Store an approval; False when this approver already approved this request."""
        try:
            self.db.execute(
                f"INSERT INTO approvals ({_APPROVAL_COLUMNS}) VALUES (?,?,?,?,?,?,?)",  # noqa: S608
                (
                    approval.request_id,
                    approval.approver,
                    approval.plan_hash,
                    approval.signature,
                    approval.created_at,
                    approval.expires_at,
                    int(approval.used),
                ),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def approvals_for(self, request_id: str) -> Sequence[ApprovalRecord]:
        rows = self.db.execute(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE request_id = ?"  # noqa: S608
            " ORDER BY created_at, approver",
            (request_id,),
        ).fetchall()
        return [ApprovalRecord(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    def remember_nonce(self, nonce: str, principal: str, seen_at: str) -> bool:
        """Record a request nonce; False if it was seen before (a replay)."""
        try:
            self.db.execute(
                "INSERT INTO nonces (nonce, principal, seen_at) VALUES (?, ?, ?)",
                (nonce, principal, seen_at),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def forget_nonces(self, before: str) -> None:
        """Drop nonces older than the accepted clock skew: their statements are stale anyway."""
        self.db.execute("DELETE FROM nonces WHERE seen_at < ?", (before,))

    def server_value(self, name: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM server_state WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_server_value(self, name: str, value: bytes, updated_at: str, *, replace: bool) -> bool:
        """Store a server value; without ``replace``, only where it has none yet."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        cur = self.db.execute(
            f"{verb} INTO server_state (name, value, updated_at) VALUES (?, ?, ?)",
            (name, value, updated_at),
        )
        return cur.rowcount == 1


def _request(row: Sequence[Any]) -> RequestRecord:
    try:
        plan = json.loads(row[4])
        if not isinstance(plan, dict):
            raise ValueError("plan is not an object")
    except ValueError as exc:
        raise StoreError(f"corrupt request row {row[0]!r}: {exc}") from None
    return RequestRecord(
        id=row[0],
        task=row[1],
        environment=row[2],
        plan_hash=row[3],
        plan=plan,
        requester=row[5],
        created_at=row[6],
        status=row[7],
        policy_version=row[8],
        used_by_run=row[9],
    )
