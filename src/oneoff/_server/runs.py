"""The server's side of a granted run: start, output, heartbeat, finish, and lost runs.

Each call but ``start`` proves itself with the run token (``oneoff._remote.grant``);
``start`` presents the grant itself, once. Every call is idempotent or refused, so a
runner may retry any of them after a timeout, a restart of the server or of its database:

- ``start``: the grant's id is remembered as a nonce in the same transaction as the
  ``run.started`` event; a second start is a replay (409).
- ``output``: chunks carry the runner's sequence numbers (1, 2, ...); what the server has
  is skipped, a gap is refused (409 naming the next number it expects). Stored output is
  redacted AGAIN here (see ``redactor``), chunk by chunk.
- ``heartbeat``: renews every lock of the run (its private ``run:<id>`` lock included);
  once any of them was reaped the lease is lost (409) and the runner stops its task.
- ``finish``: the first outcome is recorded with ``run.finished`` and the locks dropped;
  the same outcome again answers the same; a run already marked lost refuses it (409,
  audited as ``run.finish_refused`` with the outcome, so nothing is silently dropped).

What the server knows of an environment's secrets: the values of the secret keys (and
passwords embedded in URLs) of that environment's *dotenv* sources present in the server's
own checkout. It runs no command source and reads nothing of its own process environment,
so usually it knows none, and the runner's redaction is the one that counts.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from oneoff._clock import utc_iso
from oneoff._known_secrets import known_secrets
from oneoff._output import stored_digest
from oneoff._pipeline import audit_run
from oneoff._remote.grant import check_run_token, verify_grant
from oneoff._server.errors import RefusedCredential
from oneoff._server.run_output import parse_chunk, seq_of
from oneoff.errors import LockBusy, NotPermitted, OneoffError, StoreError, UsageError

if TYPE_CHECKING:
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from oneoff._app import App
    from oneoff._manifest import Environment
    from oneoff._redact import Redactor
    from oneoff._store.interface import RunRecord

__all__ = ["LEASE_VAR", "Conflict", "RunDesk", "object_field"]

LEASE_VAR = "ONEOFF_SERVER_LEASE"  # seconds a runner's lease lasts without a heartbeat
_STATUSES = ("succeeded", "failed", "timed_out", "cancelled", "lost")


class Conflict(OneoffError):
    """Wraps an error the API answers with 409 (replay, gap, lease lost, already ended)."""

    def __init__(self, error: OneoffError) -> None:
        super().__init__(error.message, hint=error.hint)
        self.error = error


def lease_seconds(environ: Mapping[str, str]) -> int:
    raw = environ.get(LEASE_VAR, "")
    if not raw:
        from oneoff._locks import LEASE

        return int(LEASE)
    if not raw.isdigit() or not 1 <= int(raw) <= 3600:
        raise UsageError(f"{LEASE_VAR} must be whole seconds from 1 to 3600, not {raw!r}")
    return int(raw)


class RunDesk:
    """Granted runs of one server process; caches only what the store can rebuild."""

    def __init__(self, state_dir: Path, server_id: str) -> None:
        # Handlers run in worker threads, each with its own App (store connection): every
        # method takes the caller's ``app``; the caches here are shared and locked.
        self.state_dir, self.server_id = state_dir, server_id
        self.lease = lease_seconds(os.environ)
        self._mutex = threading.Lock()
        self._key: Ed25519PrivateKey | None = None
        self._next: dict[str, int] = {}  # run id -> the next output chunk it expects
        self._granted: dict[str, Mapping[str, Any]] = {}
        self._redactors: dict[str, Redactor] = {}

    # -- keys and secrets ------------------------------------------------------------------

    def signing_key(self) -> Ed25519PrivateKey:
        if self._key is None:
            from oneoff._audit.keys import AuditKey

            self._key = AuditKey(self.state_dir).private()
        return self._key

    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key().public_key()

    def redactor(self, app: App, environment: Environment) -> Redactor:
        """The secrets this server knows for ``environment`` (see the module docstring)."""
        with self._mutex:
            found = self._redactors.get(environment.name)
        if found is None:
            found = known_secrets(app, environment)
            with self._mutex:
                self._redactors[environment.name] = found
        return found

    # -- the runner's calls ------------------------------------------------------------------

    def authorize(self, app: App, run_id: str, token: object) -> RunRecord:
        if not isinstance(token, str) or not check_run_token(self.public_key(), run_id, token):
            raise RefusedCredential(403, NotPermitted(f"no valid run token for run {run_id}"))
        return app.store.get_run(run_id)

    def granted(self, app: App, run_id: str) -> Mapping[str, Any]:
        """The payload (and ``seq``) of the run's ``run.granted`` event."""
        with self._mutex:
            found = self._granted.get(run_id)
        if found is None:
            found = _event(app, run_id, "run.granted")
            if found is None:
                raise UsageError(f"run {run_id} was not granted by this server")
            with self._mutex:
                self._granted[run_id] = found
        return found

    def start(self, app: App, run_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        store = app.store
        run = store.get_run(run_id)
        now = _dt.datetime.now(_dt.UTC)
        plan_hash = body.get("plan_hash")
        if not isinstance(plan_hash, str):
            raise UsageError("start needs the plan_hash the runner is about to run")
        try:
            doc = verify_grant(
                self.public_key(), body.get("grant"), body.get("signature"), run_id=run_id,
                plan_hash=plan_hash, now=now, server_id=self.server_id,
            )  # fmt: skip
        except NotPermitted as exc:
            raise RefusedCredential(403, exc) from None
        if plan_hash != run.plan_hash:  # cannot differ for a genuine grant; belt and braces
            raise NotPermitted(f"run {run_id} is for plan {run.plan_hash}, not {plan_hash}")
        self._running(run)
        started = object_field(body, "started")
        granted = self.granted(app, run_id)
        with store.tx():
            if not store.remember_nonce("grant:" + doc["id"], run.principal, utc_iso(now)):
                raise RefusedCredential(
                    409, NotPermitted(f"run grant refused: grant {doc['id']} was already used")
                )
            self._renew(app, run, granted)
            audit_run(
                app, "run.started", run, actor=run.principal,
                payload={
                    "grant": doc["id"], "fencing": granted["seq"], "locks": granted["locks"],
                    "request": run.request_id, "approvals": granted.get("approvals", []),
                    "break_glass": run.break_glass, "argv": started.get("argv"),
                    "executor": started.get("executor"), "runner": granted.get("runner"),
                },
            )  # fmt: skip
        return {"run": run_id, "fencing": granted["seq"], "lease_seconds": self.lease}

    def heartbeat(self, app: App, run: RunRecord) -> dict[str, Any]:
        self._running(run)
        with app.store.tx():
            self._renew(app, run, self.granted(app, run.id))
        return {"run": run.id, "lease_seconds": self.lease}

    def _renew(self, app: App, run: RunRecord, granted: Mapping[str, Any]) -> None:
        until = utc_iso(_dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=self.lease))
        held = app.store.renew_locks(run.id, until)
        if held < len(granted["locks"]) + 1:
            raise Conflict(
                LockBusy(
                    f"run {run.id} lost its lease (not renewed within {self.lease}s): its "
                    "locks may be another run's now; stop the task",
                )
            )

    def _running(self, run: RunRecord) -> None:
        if run.status == "lost":  # reaped: its locks may be another run's already
            raise Conflict(LockBusy(f"run {run.id} is lost: its lease ran out; stop the task"))
        if run.status != "running":
            raise Conflict(UsageError(f"run {run.id} is {run.status}, not running"))

    def output(self, app: App, run: RunRecord, chunks: object) -> dict[str, Any]:
        """Store the chunks not stored yet, in order; answers the next number expected."""
        self._running(run)
        if not isinstance(chunks, list):
            raise UsageError("chunks must be a list of {seq, stream, data}")
        want = self._next_seq(app, run.id)
        if chunks and min(map(seq_of, chunks)) > want:
            # A gap by this process's count: another server process (worker) may have
            # stored the chunks between; count again from the store before refusing.
            self._forget(run.id, keep_granted=True)
            want = self._next_seq(app, run.id)
        redactor = self.redactor(app, app.project.environment(run.environment))
        rows: list[tuple[int, int, int, bytes]] = []
        for chunk in sorted(chunks, key=seq_of):
            seq, stream, data = parse_chunk(chunk)
            if seq < want:
                continue  # sent again after a lost answer: already stored
            if seq > want:
                break
            piece = redactor.redact(data)
            rows.append((seq, stream, len(piece), zlib.compress(piece, 1)))
            want += 1
        if rows:
            try:
                with app.store.tx():
                    app.store.add_output_chunks(run.id, rows)
            except StoreError:
                self._forget(
                    run.id, keep_granted=True
                )  # another server process may have stored them
                raise
            with self._mutex:
                self._next[run.id] = want
        if chunks and max(map(seq_of, chunks)) >= want and not rows:
            raise Conflict(UsageError(f"output of run {run.id}: next chunk expected is {want}"))
        return {"run": run.id, "next": want}

    def _next_seq(self, app: App, run_id: str) -> int:
        with self._mutex:
            found = self._next.get(run_id)
        if found is None:
            found = sum(1 for _ in app.store.output_chunks(run_id)) + 1
            with self._mutex:
                self._next[run_id] = found
        return found

    def finish(self, app: App, run: RunRecord, body: Mapping[str, Any]) -> dict[str, Any]:
        status, code = body.get("status"), body.get("exit_code")
        out = object_field(body, "output")
        if status not in _STATUSES or not (code is None or type(code) is int):
            raise UsageError(f"finish needs a status ({', '.join(_STATUSES)}) and an exit code")
        if run.status != "running":
            if (run.status, run.exit_code) == (status, code):  # a retry: the same answer
                return {"run": run.id, "status": status, "run_record": _as_dict(run)}
            audit_run(
                app, "run.finish_refused", run, actor=run.principal,
                payload={"status": status, "exit_code": code, "recorded": run.status},
            )  # fmt: skip
            if run.status == "lost":  # fenced off: its locks may have been another run's
                raise Conflict(
                    LockBusy(f"run {run.id} is lost: its lease ran out before its outcome came")
                )
            raise Conflict(UsageError(f"run {run.id} is already {run.status}"))
        sent = out.get("chunks", 0)
        self._forget(run.id, keep_granted=True)  # count again from the store: the truth
        have = self._next_seq(app, run.id) - 1
        if type(sent) is not int or sent != have:
            raise Conflict(
                UsageError(f"output of run {run.id} is incomplete: {have} of {sent} chunks")
            )
        digest = stored_digest(app.store, run.id)
        payload = {
            "status": status, "exit_code": code, "output_bytes": out.get("bytes"),
            "output_digest": digest, "runner_output_digest": out.get("digest"),
            "output_truncated": bool(out.get("truncated")), "output_chunks": have,
            **({"error": str(body["error"])[:500]} if body.get("error") else {}),
        }  # fmt: skip
        store = app.store
        with store.tx():
            store.finish_run(
                run.id, status=status, exit_code=code, ended_at=utc_iso(),
                output_bytes=out.get("bytes") if type(out.get("bytes")) is int else None,
                output_digest=digest, output_truncated=bool(out.get("truncated")),
            )  # fmt: skip
            audit_run(app, "run.finished", run, actor=run.principal, payload=payload)
            store.drop_locks(run.id)
        self._forget(run.id)
        app.audit.checkpoint_or_warn()
        return {"run": run.id, "status": status, "run_record": _as_dict(store.get_run(run.id))}

    def _forget(self, run_id: str, *, keep_granted: bool = False) -> None:
        with self._mutex:
            self._next.pop(run_id, None)
            if not keep_granted:
                self._granted.pop(run_id, None)

    # -- lost runners --------------------------------------------------------------------------

    def reap(self, app: App) -> list[str]:
        """Free the locks of runners whose lease ran out; their runs are marked lost."""
        from oneoff._locks import reap_locks

        return reap_locks(app)


def _event(app: App, run_id: str, kind: str) -> dict[str, Any] | None:
    for seq, _prev, body, _hash in app.store.audit_rows(run_id=run_id, kind=kind):
        return {**json.loads(body).get("payload", {}), "seq": seq}
    return None


def _as_dict(run: RunRecord) -> dict[str, object]:
    from oneoff.cli._runs import run_as_dict

    return run_as_dict(run)


def object_field(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    return value if isinstance(value, dict) else {}
