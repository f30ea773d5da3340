"""The release document: its canonical form, content id, Ed25519 signature and strict parsing.

A release is the canonical JSON (RFC 8785) of::

    {"oneoff_release": 1, "app", "environment", "version", "code", "deps", "config",
     "manifest", "git_commit", "created_by", "created_at", "promoted_from"}

``code`` holds the Merkle digest of the code tree, not its entries: those (one per file,
~150 bytes each) are stored beside the document and checked against that digest when a
diff needs them, so the check before every run parses kilobytes, not megabytes.

Its id is ``rel_`` + SHA-256 of those bytes, so any change to any field is another
release. The signature is Ed25519 over ``oneoff-release/v1\\n`` + the id: the domain
prefix keeps a release signature from ever being valid as an audit checkpoint or an
approval, and signing the id signs the whole document through the hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from oneoff._canonical import canonical_json
from oneoff._record import dataclass
from oneoff._release.configdigest import ConfigSnapshot
from oneoff._release.deps import DepsSnapshot
from oneoff._release.tree import FORMAT as TREE_FORMAT
from oneoff._release.tree import TreeSnapshot
from oneoff._store.interface import ReleaseRecord
from oneoff.errors import ReleaseError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from oneoff._release.settings import EnvReleaseSettings

__all__ = [
    "DOMAIN",
    "Release",
    "build_document",
    "code_entries",
    "content_id",
    "release_from_record",
    "short_id",
    "sign_release",
    "signed_message",
    "verify_signature",
]

FORMAT = 1
DOMAIN = b"oneoff-release/v1\n"
_FIELDS = frozenset(
    {"oneoff_release", "app", "environment", "version", "code", "deps", "config", "manifest",
     "git_commit", "created_by", "created_at", "promoted_from"}
)  # fmt: skip
# Optional: absent means 1. Present once an environment revoked its older releases.
_MIN_VERSION = "min_version"
_ID = re.compile(r"rel_[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def content_id(document_bytes: bytes) -> str:
    return "rel_" + hashlib.sha256(document_bytes).hexdigest()


def short_id(release_id: str) -> str:
    """``rel_`` and 8 hex digits: what people read; prefixes resolve back to the release."""
    return release_id[:12]


def signed_message(release_id: str) -> bytes:
    return DOMAIN + release_id.encode("ascii")


def build_document(
    *,
    app: str,
    environment: str,
    version: int,
    code: TreeSnapshot,
    deps: DepsSnapshot,
    config: ConfigSnapshot,
    manifest: str,
    git_commit: str | None,
    created_by: str,
    created_at: str,
    promoted_from: str | None = None,
    min_version: int = 1,
) -> dict[str, Any]:
    # The signed floor: releases of this environment older than ``min_version`` are
    # revoked wherever this release is known (see oneoff._release.floor). Left out at 1,
    # so documents without revocations keep the shape (and ids) they always had.
    floor = {_MIN_VERSION: min_version} if min_version > 1 else {}
    return {
        **floor,
        "oneoff_release": FORMAT,
        "app": app,
        "environment": environment,
        "version": version,
        "code": {"format": TREE_FORMAT, "source": code.source, "digest": code.digest},
        "deps": deps.to_dict(),
        "config": config.to_dict(),
        "manifest": manifest,
        "git_commit": git_commit,
        "created_by": created_by,
        "created_at": created_at,
        "promoted_from": promoted_from,
    }


def code_entries(code: TreeSnapshot) -> str:
    """The entries stored beside the document (JSON), as ``TreeSnapshot.to_dict`` writes them."""
    return json.dumps(code.to_dict()["entries"], separators=(",", ":"), ensure_ascii=False)


EntriesLoader = Callable[[], "str | None"]


@dataclass(frozen=True)
class Release:
    """A stored release whose id matches its document and whose fields parsed strictly.

    ``code`` (the per-file entries) is loaded on first use and must match ``code_digest``.
    """

    id: str
    app: str
    environment: str
    version: int
    code_source: str
    code_digest: str
    load_entries: EntriesLoader
    deps: DepsSnapshot
    config: ConfigSnapshot
    manifest: str
    git_commit: str | None
    created_by: str
    created_at: str
    promoted_from: str | None
    document: dict[str, Any]
    signature: bytes | None
    key_id: str | None
    min_version: int = 1

    @cached_property
    def code(self) -> TreeSnapshot:
        text = self.load_entries()
        if text is None:
            raise ReleaseError(f"release {self.label}: its code entries are missing from the store")
        try:
            items = json.loads(text, object_pairs_hook=_no_duplicates)
            return TreeSnapshot.from_dict(
                {"format": TREE_FORMAT, "source": self.code_source, "digest": self.code_digest,
                 "entries": items}
            )  # fmt: skip
        except (ValueError, ReleaseError) as exc:
            raise ReleaseError(
                f"release {self.label}: stored code entries do not match its signed digest "
                "(tampered with or corrupt)"
            ) from exc

    @property
    def short(self) -> str:
        return short_id(self.id)

    @property
    def label(self) -> str:
        return f"{self.environment} v{self.version} ({self.short})"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _text(value: Any, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ReleaseError(f"release document: {what} must be a non-empty string")
    return value


def _code(value: Any, where: str) -> tuple[str, str]:
    if (
        not isinstance(value, dict)
        or set(value) != {"format", "source", "digest"}
        or value["format"] != TREE_FORMAT
        or value["source"] not in ("git", "walk")
        or not isinstance(value["digest"], str)
        or not _HEX64.fullmatch(value["digest"])
    ):
        raise ReleaseError(f"{where}: malformed code digest")
    return value["source"], value["digest"]


def release_from_record(record: ReleaseRecord, load_entries: EntriesLoader) -> Release:
    """Parse and check one stored row; a tampered or corrupt row raises ``ReleaseError``.

    ``load_entries`` fetches the code entries if and when ``Release.code`` is used.
    """
    name = record.id if isinstance(record.id, str) and record.id.isprintable() else "?"
    where = f"stored release {name[:12]}"
    raw = record.document.encode("utf-8", "surrogateescape")
    if not _ID.fullmatch(str(record.id)) or content_id(raw) != record.id:
        raise ReleaseError(
            f"{where}: its document does not match its id (tampered with or corrupt)",
            hint="do not use this store's releases; investigate with `oneoff audit verify`",
        )
    try:
        doc = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
        if not isinstance(doc, dict) or canonical_json(doc) != raw:
            raise ValueError("not a canonical JSON object")
    except ValueError as exc:
        raise ReleaseError(f"{where}: document is not canonical JSON ({exc})") from None
    if set(doc) - {_MIN_VERSION} != _FIELDS or doc["oneoff_release"] != FORMAT:
        raise ReleaseError(f"{where}: unsupported or malformed release document")
    version = doc["version"]
    if type(version) is not int or version < 1:
        raise ReleaseError(f"{where}: bad version {version!r}")
    min_version = doc.get(_MIN_VERSION, 1)
    bad_floor = type(min_version) is not int or not 2 <= min_version <= version
    if _MIN_VERSION in doc and bad_floor:
        raise ReleaseError(f"{where}: bad min_version {min_version!r}")
    manifest = doc["manifest"]
    if not isinstance(manifest, str) or not _HEX64.fullmatch(manifest):
        raise ReleaseError(f"{where}: manifest digest is not 64 hex digits")
    promoted = _text(doc["promoted_from"], "promoted_from", optional=True)
    if promoted is not None and not _ID.fullmatch(promoted):
        raise ReleaseError(f"{where}: promoted_from is not a release id")
    code_source, code_digest = _code(doc["code"], where)
    release = Release(
        id=record.id,
        app=str(_text(doc["app"], "app")),
        environment=str(_text(doc["environment"], "environment")),
        version=version,
        code_source=code_source,
        code_digest=code_digest,
        load_entries=load_entries,
        deps=DepsSnapshot.from_dict(doc["deps"]),
        config=ConfigSnapshot.from_dict(doc["config"]),
        manifest=manifest,
        git_commit=_text(doc["git_commit"], "git_commit", optional=True),
        created_by=str(_text(doc["created_by"], "created_by")),
        created_at=str(_text(doc["created_at"], "created_at")),
        promoted_from=promoted,
        document=doc,
        signature=record.signature,
        key_id=record.key_id,
        min_version=min_version,
    )
    # The row's own columns are what lists and lookups use: they must agree with the
    # signed document, or a moved row could pose as another environment's release.
    columns = (record.environment, record.version, record.created_at, record.created_by)
    signed = (release.environment, release.version, release.created_at, release.created_by)
    if columns != signed:
        raise ReleaseError(f"{where}: row columns disagree with its document (tampered with?)")
    if (record.signature is None) != (record.key_id is None):
        raise ReleaseError(f"{where}: signature and key id must be stored together")
    if record.signature is not None and (
        len(record.signature) != 64 or not _KEY_ID.fullmatch(str(record.key_id))
    ):
        raise ReleaseError(f"{where}: malformed signature or key id")
    return release


def sign_release(release_id: str, key: Ed25519PrivateKey) -> bytes:
    return key.sign(signed_message(release_id))


def verify_signature(release: Release, settings: EnvReleaseSettings, environment: str) -> str:
    """Check the signature against the keys ``environment`` trusts; returns the key id used.

    Returns "" for an unsigned release where that is allowed. A signature present is
    always checked, whatever the environment: an unverifiable one is never ignored.
    """
    if release.signature is None or release.key_id is None:
        if settings.require_signed:
            raise ReleaseError(
                f"release {release.label} is unsigned and {environment!r} requires a signed "
                "release",
                hint=f"oneoff release create --env {environment} --key FILE",
            )
        return ""
    from cryptography.exceptions import InvalidSignature

    from oneoff._audit.checkpoint import key_id

    for trusted in settings.trusted_keys:
        public = trusted.load()
        if key_id(public) != release.key_id:
            continue
        try:
            public.verify(release.signature, signed_message(release.id))
        except InvalidSignature:
            raise ReleaseError(
                f"release {release.label}: signature does not verify (forged or tampered)"
            ) from None
        return release.key_id
    raise ReleaseError(
        f"release {release.label} is signed by key {release.key_id}, which {environment!r} "
        "does not trust",
        hint="add its public key to [release] trusted_keys in oneoff.toml if you trust it",
    )
