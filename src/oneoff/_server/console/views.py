"""What the console's pages show, gathered from the store: plain data, no HTTP here.

Every plan shown comes from ``oneoff._auth.shown.shown_plan``: the request's stored
document, refused unless it hashes to the plan hash an approval signs.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from oneoff._record import dataclass
from oneoff.errors import ApprovalError, OneoffError, UsageError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._auth.gate import Gate
    from oneoff._auth.shown import ShownPlan
    from oneoff._store.interface import ApprovalRecord, RequestRecord, RunRecord

__all__ = [
    "Change",
    "Decoder",
    "RequestView",
    "approval_to_sign",
    "output_pieces",
    "pending_requests",
    "plan_changes",
    "quorum_of",
    "request_view",
]


def quorum_of(app: App, request: RequestRecord) -> str:
    """The request's approval rule in words ("2 approval(s) from group 'dba' (...)")."""
    from oneoff._access import approval_rule

    try:
        rule = approval_rule(
            app.project.task(request.task), app.project.environment(request.environment)
        )
    except UsageError:
        return "unknown (the task or environment is no longer declared)"
    return rule.describe() if rule else "no approvals needed"


def pending_requests(app: App) -> list[tuple[RequestRecord, int, str]]:
    """Pending requests, newest first, with their approval count and rule."""
    store = app.store
    found = [
        (r, len(store.approvals_for(r.id)), quorum_of(app, r))
        for r in store.list_requests(status="pending")
    ]
    return sorted(found, key=lambda row: row[0].created_at, reverse=True)


@dataclass(frozen=True)
class Change:
    """One difference between a request's plan and the last run's: what, before, after."""

    field: str
    before: str
    after: str


@dataclass(frozen=True)
class RequestView:
    """A request page: the checked plan (or why it cannot be shown), approvals, the diff."""

    request: RequestRecord
    shown: ShownPlan | None
    problem: str | None
    approvals: Sequence[ApprovalRecord]
    quorum: str
    last_run: RunRecord | None
    changes: Sequence[Change] | None
    description: str


def request_view(app: App, gate: Gate, request_id: str, actor: str) -> RequestView:
    """Everything the request page shows; a tampered stored plan is audited and not shown."""
    from oneoff._auth.shown import shown_plan

    store = app.store
    request = store.get_request(request_id)
    shown: ShownPlan | None = None
    problem = None
    try:
        shown = shown_plan(app, request)
    except ApprovalError as exc:
        problem = exc.message
        app.audit.append(
            "approval.refused",
            actor=actor,
            environment=request.environment,
            task=request.task,
            plan_hash=request.plan_hash,
            payload={"request": request.id, "reason": exc.message, "via": "console"},
        )
    last = _last_run(app, request)
    changes = None
    if shown is not None and last is not None:
        changes = plan_changes(app, shown.document, last)
    return RequestView(
        request=request,
        shown=shown,
        problem=problem,
        approvals=store.approvals_for(request.id),
        quorum=quorum_of(app, request),
        last_run=last,
        changes=changes,
        description=_description(app, request.task),
    )


def _description(app: App, task: str) -> str:
    try:
        return app.project.task(task).description
    except UsageError:
        return ""


def _last_run(app: App, request: RequestRecord) -> RunRecord | None:
    for run in app.store.list_runs(limit=5, task=request.task, environment=request.environment):
        if run.request_id != request.id:
            return run
    return None


def plan_changes(app: App, document: Any, run: RunRecord) -> list[Change]:
    """How ``document`` differs from what ``run`` ran: the whole hashed document when the
    run came from a request whose stored document still matches its plan hash, else the
    argv, params and release the run's own record and ``run.started`` event hold."""
    from oneoff._canonical import canonical_hash

    before: dict[str, Any] | None = None
    if run.request_id is not None:
        try:
            old = app.store.get_request(run.request_id).plan.get("document")
            if isinstance(old, dict) and "sha256:" + canonical_hash(old) == run.plan_hash:
                before = old
        except (OneoffError, TypeError, ValueError):
            before = None
    if before is None:
        before = {"params": dict(run.params), "release": run.release_id}
        for event in app.audit.events(run_id=run.id, kind="run.started"):
            before["argv"] = event.payload.get("argv")
    changes: list[Change] = []
    for name in sorted(set(before) | set(document)):
        if name == "env":
            changes.extend(_env_changes(before.get("env"), document.get("env")))
        elif name in before and before.get(name) != document.get(name):
            changes.append(Change(name, _show(before.get(name)), _show(document.get(name))))
    return changes


def _env_changes(before: Any, after: Any) -> Iterator[Change]:
    # Values are keyed fingerprints: equal or not is all anyone (rightly) learns here.
    if not isinstance(before, dict) or not isinstance(after, dict):
        return
    for name in sorted(set(before) | set(after)):
        if name not in before:
            yield Change(f"env {name}", "(absent)", "(added)")
        elif name not in after:
            yield Change(f"env {name}", "(set)", "(removed)")
        elif before[name] != after[name]:
            yield Change(f"env {name}", "(one value)", "(another value)")


def _show(value: Any) -> str:
    import json

    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def approval_to_sign(request: RequestRecord, policy_version: str, time: str) -> dict[str, str]:
    """The exact bytes an approval signs (for ssh-keygen), as text and as base64."""
    from oneoff._identity import approval_statement

    data = approval_statement(request, policy_version, time)
    return {
        "time": time,
        "text": data.decode("utf-8"),
        "b64": base64.b64encode(data).decode("ascii"),
    }


def output_pieces(app: App, run_id: str, after: int = 0) -> tuple[list[tuple[int, bytes]], int]:
    """The run's stored (already redacted) output chunks after chunk ``after``, and the
    number of the last one read."""
    import zlib

    from oneoff.errors import StoreError

    pieces: list[tuple[int, bytes]] = []
    last = after
    for seq, stream, size, data in app.store.output_chunks(run_id):
        if seq <= after:
            continue
        try:
            # Never inflate more than the row says: a forged row cannot exhaust memory.
            raw = zlib.decompressobj().decompress(data, size + 1)
        except (zlib.error, TypeError):
            raise StoreError(f"run {run_id}: output chunk {seq} is corrupt") from None
        pieces.append((int(stream), raw))
        last = seq
    return pieces, last


class Decoder:
    """UTF-8 text of each stream across chunks: a character split between two chunks is
    decoded whole, not as two replacement characters."""

    def __init__(self) -> None:
        import codecs

        self._streams = {n: codecs.getincrementaldecoder("utf-8")("replace") for n in (1, 2)}

    def decode(self, pieces: list[tuple[int, bytes]], *, final: bool) -> list[tuple[int, str]]:
        out = [(n, self._streams[n if n in self._streams else 1].decode(b)) for n, b in pieces]
        if final:
            out += [(n, d.decode(b"", final=True)) for n, d in self._streams.items()]
        return [(n, text) for n, text in out if text]
