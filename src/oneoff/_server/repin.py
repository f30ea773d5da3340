"""`oneoff server pin`: replace the server's pinned people and policy files, signed and audited.

Run on the server host (it writes the server's store directly). The person signs
``{"oneoff_pin": 1, "server", "from", "to", "time", "nonce"}`` (namespace ``oneoff-pin``);
the statement is verified against the CURRENTLY pinned people and the person must be
allowed to ``release`` in every protected environment (every environment, in an app with
none) by the CURRENTLY pinned policy: a change to who decides is decided by the old rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oneoff._auth.files import read_access_files
from oneoff._canonical import canonical_json
from oneoff._identity import iso, utc_now
from oneoff._server.pinning import (
    PIN_NAMESPACE,
    PINNED,
    PinnedGate,
    _parse,
    environments_of,
    files_from_document,
    load_pin,
    manifest_of,
    pin_document,
    pinned_environments,
    server_id,
)
from oneoff.errors import NotPermitted, UsageError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._identity import Signer
    from oneoff._manifest import Environment

__all__ = ["repin"]


def repin(app: App, signer: Signer) -> tuple[str, str, str]:
    """Pin the checkout's access files; ``(previous version, new version, person)``."""
    import base64
    import secrets

    from oneoff._access import access_config
    from oneoff._auth.gate import MAX_SKEW, _key_of
    from oneoff._auth.operations import app_resource
    from oneoff._auth.sshsig import verify

    config = access_config(app.project)
    if config is None:
        raise UsageError("the app has no [access] section: there is nothing to pin")
    store = app.store
    stored = store.server_value(PINNED)
    if stored is None:  # never served: the first start pins, as the server would
        load_pin(app, config)
        stored = store.server_value(PINNED)
        assert stored is not None
    pinned, pinned_manifest = files_from_document(config, stored)
    checkout, manifest = read_access_files(config), manifest_of(app)
    _parse(app, config, checkout)
    gate = PinnedGate(app, config, pinned)
    now = utc_now()
    nonce = secrets.token_hex(16)
    statement = {
        "oneoff_pin": 1,
        "server": server_id(app),
        "from": pinned.version(),
        "to": checkout.version(),
        "manifest_from": pinned_manifest,
        "manifest_to": manifest,
        "time": iso(now),
        "nonce": nonce,
    }
    data = canonical_json(statement)
    signature = signer.sign(data, PIN_NAMESPACE)
    where = {"payload": {"from": pinned.version(), "to": checkout.version()}}
    try:
        person = verify(data, signature, namespace=PIN_NAMESPACE, allowed=gate.signers, now=now)
    except NotPermitted as exc:
        gate.refuse(exc, "auth.refused", actor=_key_of(signature), **where)
    with store.tx():
        store.forget_nonces(iso(now - 2 * MAX_SKEW))
        if not store.remember_nonce(nonce, person.name, iso(now)):
            gate.refuse(NotPermitted("pin statement replayed"), "auth.refused", actor=person.name)
    from oneoff._identity import Principal

    principal = Principal(person.name, person.groups, person.fingerprint)
    for env in _judged_environments(app, stored):
        try:
            gate.decide_operation(principal, "release", app_resource(), env)
        except NotPermitted as exc:
            gate.refuse(exc, "auth.refused", actor=person.name, **where)
    with store.tx():
        store.put_server_value(
            PINNED, pin_document(checkout, manifest, environments_of(app)), iso(now), replace=True
        )
        app.audit.append(
            "server.pinned",
            actor=person.name,
            payload={
                "version": checkout.version(),
                "manifest": manifest,
                "previous": pinned.version(),
                "first": False,
                "key": person.fingerprint,
                "statement": statement,
                "signature": base64.b64encode(signature).decode("ascii"),
            },
        )
    return pinned.version(), checkout.version(), person.name


def _judged_environments(app: App, stored: bytes) -> list[Environment]:
    """Where the person must be allowed to ``release``: every environment protected in the
    PINNED set or in the checkout (a protected environment renamed, unprotected or dropped
    in the checkout is still judged as the pinned rules protect it); every environment of
    both when neither protects any."""
    from oneoff._manifest import Environment
    from oneoff._record import replace

    current = app.project.environments
    # A pin document from before environments were pinned: judge every name it might have
    # protected, i.e. all of the checkout's, as protected.
    pinned = pinned_environments(stored)
    if pinned is None:
        pinned = {name: True for name in current}
    names = {n for n, p in pinned.items() if p} | {n for n, e in current.items() if e.protected}
    if not names:
        names = set(pinned) | set(current)
    judged = []
    for name in sorted(names):
        env = current.get(name)
        protected = pinned.get(name, False) or (env is not None and env.protected)
        if env is None:
            env = Environment(name=name, sources=())
        judged.append(replace(env, protected=protected))
    return judged
