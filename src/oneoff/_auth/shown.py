"""What an approver is shown is what they sign: a request's stored plan, checked first.

A request stores the plan's hashed document beside readable extras (env values, masked).
The approval signs only the plan hash, so an approver must never read anything that hash
does not vouch for: :func:`shown_plan` refuses unless the stored document hashes to the
request's plan hash, and the display is built from that document alone. Shown variable
values are checked against the document's keyed fingerprints; a masked value (a secret,
a URL password) cannot be, and is marked so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from oneoff._record import dataclass
from oneoff.errors import ApprovalError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._store.interface import RequestRecord

__all__ = ["ShownPlan", "ShownVar", "shown_plan"]

# Variables the plan hash leaves out on purpose (see oneoff._plan.plan_document).
_UNHASHED_SOURCES = ("terminal", "oneoff run")


@dataclass(frozen=True)
class ShownVar:
    """One variable as shown: its value, where it comes from, and how it was checked:
    "ok" (its fingerprint in the plan matches), "secret" (always shown as ********),
    "masked" (a URL password hides part of it: not checkable), "outside" (not planned)."""

    value: str
    source: str
    checked: str


@dataclass(frozen=True)
class ShownPlan:
    """The checked plan of a request: the hashed document and the variables to show."""

    document: Mapping[str, Any]
    env: Mapping[str, ShownVar]


def shown_plan(app: App, request: RequestRecord) -> ShownPlan:
    """The plan ``request`` asks for, as an approver may see it; ApprovalError if the
    stored copy is not the plan its hash (the thing approvals sign) stands for."""
    from oneoff._canonical import canonical_hash

    stored = request.plan if isinstance(request.plan, Mapping) else {}
    document = stored.get("document")

    def tampered(what: str) -> ApprovalError:
        return ApprovalError(
            f"request {request.id}: {what}; the store was edited, nothing is signed",
            hint="investigate with `oneoff audit verify`; ask the requester to request again",
        )

    if not isinstance(document, dict):
        raise tampered("its stored plan has no plan document")
    try:
        digest = "sha256:" + canonical_hash(document)
    except (TypeError, ValueError):
        raise tampered("its stored plan document is not canonical JSON") from None
    if digest != request.plan_hash:
        raise tampered("its stored plan does not match its plan hash")
    for key, want in (
        ("app", app.project.name),
        ("task", request.task),
        ("environment", request.environment),
    ):
        if document.get(key) != want:
            raise tampered(f"its plan is for {key} {document.get(key)!r}, not {want!r}")
    return ShownPlan(document, _checked_env(app, document, stored.get("env"), tampered))


def _checked_env(
    app: App, document: Mapping[str, Any], shown: Any, tampered: Any
) -> dict[str, ShownVar]:
    from oneoff._plan import fingerprint

    hashed = document.get("env")
    if not isinstance(hashed, dict) or not isinstance(shown, dict):
        raise tampered("its stored variables are malformed")
    key = app.fingerprint_key
    out: dict[str, ShownVar] = {}
    for name, info in shown.items():
        if not isinstance(info, dict):
            raise tampered(f"variable {name!r} is malformed")
        value, source = str(info.get("value")), str(info.get("source"))
        if name not in hashed:
            if source not in _UNHASHED_SOURCES:
                raise tampered(f"variable {name!r} is shown but is not in the plan")
            out[name] = ShownVar(value, source, "outside")
            continue
        if info.get("secret"):
            # Whatever the store says, a secret is shown as a mask: nothing to mislead with.
            out[name] = ShownVar("********", source, "secret")
        elif fingerprint(key, name, value) == hashed[name]:
            out[name] = ShownVar(value, source, "ok")
        elif "****" in value:
            out[name] = ShownVar(value, source, "masked")
        else:
            raise tampered(f"variable {name!r} is shown with a value the plan does not hold")
    missing = sorted(set(hashed) - set(shown))
    if missing:
        raise tampered(f"variable(s) {', '.join(missing)} are in the plan but not shown")
    return out
