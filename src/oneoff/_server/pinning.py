"""The people and policy files a server trusts: pinned in its store, not read from its disk.

On its first start a server copies its checkout's people and policy files (their bytes and
their digest, the access version approvals bind) into its store, with the digest of its
manifest (tasks, approval rules, trusted release keys), and audits ``server.pinned``.
Every later start compares the checkout with the pinned set and refuses to serve if they
differ: whoever can edit the checkout (a deploy, a stray commit) cannot add a key, loosen
a policy, lower a quorum or trust another release key. The pinned set changes only
through ``oneoff server pin``: a statement (namespace ``oneoff-pin``) signed by a person
whom the *pinned* policy lets release, audited. Every request's Gate is built from the
pinned bytes.
"""

from __future__ import annotations

import base64
import json
import secrets
from functools import cached_property
from typing import TYPE_CHECKING, Any

from oneoff._auth.files import AccessFiles, _rel, read_access_files
from oneoff._auth.gate import Gate
from oneoff._canonical import canonical_json
from oneoff.errors import NotPermitted, StoreError

if TYPE_CHECKING:
    from oneoff._access import AccessConfig
    from oneoff._app import App
    from oneoff._auth.cache import AccessCache

__all__ = [
    "PIN_NAMESPACE",
    "PinnedGate",
    "load_pin",
    "pin_document",
    "release_keys",
    "server_secret",
]

PIN_NAMESPACE = "oneoff-pin"
PINNED = "pinned_access"
REPIN_HINT = (
    "review the change; then, on the server host, `oneoff server pin --key K` as a person "
    "whom the pinned policy lets release"
)


class PinnedGate(Gate):
    """A Gate that decides with the pinned bytes, never the checkout's files."""

    def __init__(self, app: App, config: AccessConfig, files: AccessFiles) -> None:
        from pathlib import Path

        from oneoff._record import replace

        # Messages name the files relative to the app: callers learn no server paths.
        relative = replace(
            config,
            signers=Path(_rel(config.root, config.signers)),
            policies=Path(_rel(config.root, config.policies)),
        )
        super().__init__(app, relative)
        self._pinned = files

    @cached_property
    def files(self) -> AccessFiles:
        return self._pinned

    def _cache(self, name: str) -> AccessCache:
        from oneoff._auth.cache import AccessCache

        # Memoised in this process only: the server's threads would race on one file.
        return AccessCache(self.app.state_dir / name, key=None)


def manifest_of(app: App) -> str:
    """The digest of the manifest as this server loaded it (what it decides with) and of
    the release keys each environment trusts (key files are read apart from it)."""
    from oneoff._canonical import canonical_hash
    from oneoff._release.check import manifest_digest

    return canonical_hash({"manifest": manifest_digest(app.project), "keys": release_keys(app)})


def release_keys(app: App) -> dict[str, list[str]]:
    """The fingerprints of the release keys each environment trusts, as read now."""
    from oneoff._release.settings import env_settings

    project = app.project
    return {
        name: sorted(key.fingerprint for key in env_settings(project, env).trusted_keys)
        for name, env in project.environments.items()
    }


def environments_of(app: App) -> dict[str, bool]:
    """Each environment of the app's manifest and whether it is protected: pinned beside
    the files, so a re-pin is judged by the environments the OLD rules protect."""
    return {name: bool(env.protected) for name, env in app.project.environments.items()}


def pinned_environments(data: bytes) -> dict[str, bool] | None:
    """The environments a stored pin document records (None: a document made before they
    were pinned)."""
    try:
        found = json.loads(data).get("environments")
    except (ValueError, AttributeError):
        return None
    if not isinstance(found, dict):
        return None
    return {str(name): protected is True for name, protected in found.items()}


def pin_document(files: AccessFiles, manifest: str, environments: dict[str, bool]) -> bytes:
    """The pinned set as stored: paths relative to the app, bytes in base64, the version,
    the manifest's digest, the environments and which of them are protected."""
    signers = None if files.signers is None else base64.b64encode(files.signers).decode()
    return canonical_json(
        {
            "oneoff_pin_set": 1,
            "version": files.version(),
            "manifest": manifest,
            "environments": dict(sorted(environments.items())),
            "signers": {"path": _rel(files.root, files.signers_path), "data": signers},
            "policies": {
                "dir": _rel(files.root, files.policies_dir),
                "files": {name: base64.b64encode(data).decode() for name, data in files.policies},
            },
        }
    )


def files_from_document(config: AccessConfig, data: bytes) -> tuple[AccessFiles, str]:
    """The AccessFiles and manifest digest a stored pin document holds; StoreError if it
    is damaged."""
    manifest = ""
    try:
        doc = json.loads(data)
        manifest = str(doc["manifest"])
        signers, policies = doc["signers"], doc["policies"]
        raw = signers["data"]
        files = AccessFiles(
            root=config.root,
            signers_path=config.root / signers["path"],
            signers=None if raw is None else base64.b64decode(raw, validate=True),
            policies_dir=config.root / policies["dir"],
            policies=tuple(
                (name, base64.b64decode(b64, validate=True))
                for name, b64 in sorted(policies["files"].items())
            ),
        )
        intact = files.version() == doc["version"]
    except (ValueError, KeyError, TypeError, AttributeError):
        intact = False
    if not intact:
        raise StoreError("the server's pinned people and policy files are damaged in its store")
    return files, manifest


def server_secret(app: App, name: str, make: Any) -> bytes:
    """A value made once per store (``make()``), the same for every server process on it."""
    from oneoff._identity import iso, utc_now

    store = app.store
    value = store.server_value(name)
    if value is None:
        with store.tx():
            store.put_server_value(name, make(), iso(utc_now()), replace=False)
        value = store.server_value(name)
        if value is None:
            raise StoreError(f"the store did not keep the server's {name}")
    return value


def server_id(app: App) -> str:
    return server_secret(app, "server_id", lambda: secrets.token_hex(16).encode()).decode()


def load_pin(app: App, config: AccessConfig) -> AccessFiles:
    """The pinned access files, pinning the checkout's on first start; NotPermitted (and
    audited) when the checkout differs from the pinned set."""
    from oneoff._identity import iso, utc_now

    checkout, manifest = read_access_files(config), manifest_of(app)
    store = app.store
    stored = store.server_value(PINNED)
    if stored is None:
        _parse(app, config, checkout)  # a broken policy is refused before it is pinned
        with store.tx():
            first = store.put_server_value(
                PINNED,
                pin_document(checkout, manifest, environments_of(app)),
                iso(utc_now()),
                replace=False,
            )
            if first:
                payload = {
                    "version": checkout.version(),
                    "manifest": manifest,
                    "previous": None,
                    "first": True,
                }
                app.audit.append("server.pinned", actor="server", payload=payload)
        stored = store.server_value(PINNED)
        if stored is None:
            raise StoreError("the store did not keep the server's pinned access files")
    pinned, pinned_manifest = files_from_document(config, stored)
    what = None
    if pinned.version() != checkout.version():
        what = f"people and policy files ({checkout.version()}, pinned {pinned.version()})"
    elif pinned_manifest != manifest:
        what = f"manifest (sha256 {manifest[:16]}, pinned {pinned_manifest[:16]})"
    if what is not None:
        error = NotPermitted(
            f"the {what} in {config.root} differ from those pinned in the server's store; "
            "refusing to serve",
            hint=REPIN_HINT,
        )
        payload = {"reason": error.message, "checkout": checkout.version()}
        app.audit.append("server.refused", actor="server", payload=payload)
        raise error
    return pinned


def _parse(app: App, config: AccessConfig, files: AccessFiles) -> None:
    """Parse the people and policies (ManifestError and the like if either is broken)."""
    gate = PinnedGate(app, config, files)
    gate.policies  # noqa: B018 - parsing is the check
    gate.signers  # noqa: B018
