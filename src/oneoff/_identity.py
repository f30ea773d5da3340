"""Who is acting: a person proven by their SSH key's signature, or (where allowed) the OS user.

The caller never says who it is. It holds a key and signs a *statement* (what it asks for,
when, a fresh nonce); oneoff verifies the signature against the app's allowed signers and
the key's entry names the person. ``$USER`` and flags claim nothing.
"""

from __future__ import annotations

import datetime as _dt
import os
import pwd
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneoff._clock import utc_iso
from oneoff._record import dataclass

if TYPE_CHECKING:
    from oneoff._store.interface import RequestRecord

__all__ = [
    "NAMESPACE_APPROVE",
    "NAMESPACE_REQUEST",
    "Principal",
    "Signer",
    "approval_statement",
    "os_user",
    "parse_iso",
    "request_statement",
    "signer_from",
    "utc_now",
]

NAMESPACE_REQUEST = "oneoff"
NAMESPACE_APPROVE = "oneoff-approve"
STATEMENT_VERSION = 1


def os_user() -> str:
    return "os:" + pwd.getpwuid(os.getuid()).pw_name


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def iso(when: _dt.datetime) -> str:
    """Signed statements carry whole seconds."""
    return utc_iso(when, timespec="seconds")


def parse_iso(stamp: str) -> _dt.datetime:
    """The inverse of ``iso`` (and of the store's millisecond stamps)."""
    return _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Principal:
    """An authenticated person (``key`` is their key's fingerprint) or the bare OS user."""

    name: str
    groups: frozenset[str] = frozenset()
    key: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.key is not None

    def describe(self) -> str:
        return f"{self.name} (key {self.key})" if self.key else f"{self.name} (OS user, no key)"


@dataclass(frozen=True)
class Signer:
    """A private key the operator holds: a key file, or an identity in ssh-agent.

    Possession is the proof: naming a key claims nothing unless the signature checks out.
    """

    key_path: Path | None
    agent: bool

    def sign(self, data: bytes, namespace: str) -> bytes:
        from oneoff._auth.sshsig import sign

        return sign(data, namespace=namespace, key_path=self.key_path, agent=self.agent)


def signer_from(key: str | Path | None, environ: Mapping[str, str] | None = None) -> Signer | None:
    """The operator's signer from ``--key`` or ``$ONEOFF_SIGNING_KEY``; None when neither.

    A ``.pub`` file (or any key while only ssh-agent holds the private half) means "sign
    with ssh-agent using this identity"; a private key file signs directly.
    """
    env = os.environ if environ is None else environ
    chosen = key if key is not None else env.get("ONEOFF_SIGNING_KEY") or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if path.suffix == ".pub":
        return Signer(path, agent=True)
    return Signer(path, agent=False)


def request_statement(
    action: str,
    *,
    app: str,
    task: str,
    environment: str,
    plan_hash: str,
    request_id: str | None = None,
    now: _dt.datetime | None = None,
) -> dict[str, Any]:
    """What a person signs to ask for one action on one plan, now, once (the nonce)."""
    import secrets

    return {
        "oneoff_statement": STATEMENT_VERSION,
        "action": action,
        "app": app,
        "task": task,
        "environment": environment,
        "plan_hash": plan_hash,
        "request": request_id,
        "time": iso(now or utc_now()),
        "nonce": secrets.token_hex(16),
    }


def approval_statement(request: RequestRecord, policy_version: str, time: str) -> bytes:
    """The bytes an approver signs: one request, one plan hash, one policy version.

    Signed with the ``oneoff-approve`` namespace, so it can never pass for a request
    statement, nor one for it.
    """
    from oneoff._canonical import canonical_json

    return canonical_json(
        {
            "oneoff_approval": 1,
            "request": request.id,
            "task": request.task,
            "environment": request.environment,
            "plan_hash": request.plan_hash,
            "policy_version": policy_version,
            "time": time,
        }
    )
