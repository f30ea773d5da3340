"""Audit events as OCSF 1.3 events, for a SIEM: runs as Process Activity, the rest as API
Activity.

Each event keeps what is needed to check it against the hash chain in ``unmapped.oneoff``
(seq, kind, hashes, exact body), so a SIEM copy can be traced back to `oneoff audit
verify` and `oneoff audit prove SEQ`. Payloads hold no secret values (the log never does),
so nothing here needs redacting.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from oneoff._audit.log import AuditEvent

__all__ = ["OCSF_VERSION", "to_ocsf"]

OCSF_VERSION = "1.3.0"

_SYSTEM, _APPLICATION = 1, 6
_PROCESS_ACTIVITY, _API_ACTIVITY = 1007, 6003
_LAUNCH, _TERMINATE = 1, 2
_CREATE, _READ, _UPDATE, _DELETE, _OTHER = 1, 2, 3, 4, 99
_ACTIVITY_NAMES = {
    _PROCESS_ACTIVITY: {_LAUNCH: "Launch", _TERMINATE: "Terminate"},
    _API_ACTIVITY: {_CREATE: "Create", _READ: "Read", _UPDATE: "Update", _DELETE: "Delete",
                    _OTHER: "Other"},
}  # fmt: skip
_PROCESS_KINDS = {"run.started": _LAUNCH, "process.exec": _LAUNCH, "run.finished": _TERMINATE,
                  "run.lost": _TERMINATE}  # fmt: skip
_API_ACTIVITY_OF = {
    "request.created": _CREATE, "release.created": _CREATE, "release.promoted": _CREATE,
    "run.planned": _READ, "policy.explained": _READ, "audit.exported": _READ,
    "request.approved": _UPDATE, "request.denied": _UPDATE, "release.rolled_back": _UPDATE,
    "lock.reaped": _DELETE,
}  # fmt: skip
_FAILED_SUFFIXES = ("denied", "refused", "failed", "lost", "lost_unaudited")
_SEVERITY = {1: "Informational", 2: "Low", 4: "High"}


def to_ocsf(event: AuditEvent, *, hostname: str, version: str) -> dict[str, Any]:
    """One OCSF event for one audit event."""
    process_activity = event.kind in _PROCESS_KINDS
    class_uid = _PROCESS_ACTIVITY if process_activity else _API_ACTIVITY
    if process_activity:
        activity_id = _PROCESS_KINDS[event.kind]
    else:
        activity_id = _API_ACTIVITY_OF.get(event.kind, _OTHER)
    failed = _failed(event)
    severity_id = 4 if event.kind == "run.break_glass" else 2 if failed else 1
    out: dict[str, Any] = {
        "activity_id": activity_id,
        "activity_name": _ACTIVITY_NAMES[class_uid][activity_id],
        "category_uid": _SYSTEM if process_activity else _APPLICATION,
        "category_name": "System Activity" if process_activity else "Application Activity",
        "class_uid": class_uid,
        "class_name": "Process Activity" if process_activity else "API Activity",
        "type_uid": class_uid * 100 + activity_id,
        "type_name": ("Process Activity: " if process_activity else "API Activity: ")
        + _ACTIVITY_NAMES[class_uid][activity_id],
        "severity_id": severity_id,
        "severity": _SEVERITY[severity_id],
        "status_id": 2 if failed else 1,
        "status": "Failure" if failed else "Success",
        "time": _epoch_ms(event.ts),
        "message": _message(event),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "oneoff", "version": version},
            "uid": str(event.seq),
            "log_name": "oneoff audit",
            "original_time": event.ts,
        },
        "actor": {"user": {"name": event.actor}},
        "unmapped": {"oneoff": event.to_json()},
    }
    if process_activity:
        out["device"] = {"hostname": hostname, "type_id": 0}
        process: dict[str, Any] = {"name": event.task or str(event.payload.get("process", ""))}
        if event.run_id:
            process["uid"] = event.run_id
        pid = event.payload.get("pid")
        if isinstance(pid, int):
            process["pid"] = pid
        argv = event.payload.get("argv")
        if isinstance(argv, list):
            process["cmd_line"] = " ".join(str(a) for a in argv)
        out["process"] = process
        exit_code = event.payload.get("exit_code")
        if isinstance(exit_code, int):
            out["exit_code"] = exit_code
    else:
        out["api"] = {"operation": event.kind, "service": {"name": "oneoff", "version": version}}
        out["src_endpoint"] = {"hostname": hostname}
        resources = [
            {"type": kind, "name": name}
            for kind, name in (("task", event.task), ("environment", event.environment))
            if name
        ] + [
            {"type": kind, "uid": uid}
            for kind, uid in (("run", event.run_id), ("release", event.release_id),
                              ("plan", event.plan_hash))
            if uid
        ]  # fmt: skip
        if resources:
            out["resources"] = resources
    return out


def _failed(event: AuditEvent) -> bool:
    if event.kind == "run.finished":
        return event.payload.get("status") != "succeeded"
    if event.kind == "access.decided":
        return event.payload.get("allowed") is False
    return event.kind.endswith(_FAILED_SUFFIXES)


def _message(event: AuditEvent) -> str:
    parts = [event.kind, "by", event.actor]
    if event.task:
        parts += ["task", event.task]
    if event.environment:
        parts += ["on", event.environment]
    if event.run_id:
        parts += ["run", event.run_id]
    return " ".join(parts)


def _epoch_ms(ts: str) -> int:
    when = _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return int(when.timestamp() * 1000)
