"""The [release] table and per-environment release settings: trusted keys, ignores, signing.

::

    [release]
    trusted_keys = ["keys/release.pub", "ed25519:<base64 of the 32 raw bytes>"]
    ignore = ["var/", "*.log"]

    [environments.staging]
    release = { require_signed = true, trusted_keys = ["keys/staging.pub"] }

A protected environment always requires a release signed by a key it trusts. An
environment's own ``trusted_keys`` replaces the app-wide list for it. Key files are paths
relative to the app root, inside it (they are committed with the code). Nothing here
imports ``cryptography`` until a key is actually parsed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from oneoff._record import dataclass
from oneoff.errors import ConfigError, ManifestError, ReleaseError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from oneoff._manifest import Environment, Project

__all__ = [
    "KEY_FILE_VARIABLE",
    "EnvReleaseSettings",
    "TrustedKey",
    "env_settings",
    "load_signing_key",
    "release_ignore",
    "validate_release_tables",
]

KEY_FILE_VARIABLE = "ONEOFF_RELEASE_KEY_FILE"
_INLINE = "ed25519:"


@dataclass(frozen=True)
class TrustedKey:
    """One trusted public key as written in oneoff.toml, and the bytes it was read from."""

    source: str
    material: bytes

    @property
    def fingerprint(self) -> str:
        # Lets a cache remember "verified with these keys" without parsing them.
        return hashlib.sha256(self.material).hexdigest()

    def load(self) -> Ed25519PublicKey:
        from oneoff._audit.checkpoint import load_public_key

        try:
            return load_public_key(self.material)
        except ConfigError as exc:
            raise ReleaseError(f"trusted key {self.source}: {exc.message}") from None


@dataclass(frozen=True)
class EnvReleaseSettings:
    """What an environment demands of its release."""

    require_signed: bool
    trusted_keys: tuple[TrustedKey, ...]


def validate_release_tables(path: Path, data: Mapping[str, Any]) -> None:
    """Check [release] and every environment's ``release`` table; called at manifest load."""
    table = data.get("release", {})
    where = f"{path}: [release]"
    if not isinstance(table, dict):
        raise ManifestError(f"{where}: must be a table")
    _keys(table, {"trusted_keys", "ignore"}, where)
    _key_list(table.get("trusted_keys", []), f"{where} trusted_keys")
    ignore = _str_list(table.get("ignore", []), f"{where} ignore")
    for pattern in ignore:
        if not pattern.strip("/") or "\x00" in pattern:
            raise ManifestError(f"{where} ignore: bad pattern {pattern!r}")
    envs = data.get("environments", {})
    for name, env in envs.items() if isinstance(envs, dict) else ():
        raw = env.get("release") if isinstance(env, dict) else None
        if raw is None:
            continue
        ewhere = f"{path}: [environments.{name}] release"
        if not isinstance(raw, dict):
            raise ManifestError(f"{ewhere}: must be a table like {{ require_signed = true }}")
        _keys(raw, {"require_signed", "trusted_keys"}, ewhere)
        if not isinstance(raw.get("require_signed", False), bool):
            raise ManifestError(f"{ewhere}: require_signed must be true or false")
        if "trusted_keys" in raw:
            _key_list(raw["trusted_keys"], f"{ewhere} trusted_keys")


def _keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    from oneoff._keys import check_keys

    check_keys(table, allowed, where)


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where}: must be a list of strings")
    return value


def _key_list(value: Any, where: str) -> None:
    for item in _str_list(value, where):
        if item.startswith(_INLINE):
            _inline_bytes(item, where)
            continue
        pure = PurePosixPath(item)
        if not item or pure.is_absolute() or ".." in pure.parts:
            raise ManifestError(
                f"{where}: {item!r} must be a path inside the app (committed with the code) "
                f"or {_INLINE}<base64>"
            )


def _inline_bytes(item: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(item[len(_INLINE) :], validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ManifestError(f"{where}: {item!r} is not {_INLINE} + base64 of 32 key bytes")
    return raw


def release_ignore(project: Project) -> tuple[str, ...]:
    """Ignore patterns for the code tree: [release] ignore plus every dotenv config file.

    Dotenv files are config (factor III), checked through the config snapshot; counting
    them as code too would report one change twice and tie a release to one machine's file.
    """
    patterns = list(project.section("release").get("ignore", []))
    for env in project.environments.values():
        for source in env.sources:
            if source.kind == "dotenv":
                # Anchored ("/x"): only that file, not every file of that name below it.
                patterns.append("/" + os.path.normpath(source.path).lstrip("/"))
    return tuple(dict.fromkeys(patterns))


def env_settings(project: Project, environment: Environment) -> EnvReleaseSettings:
    own = environment.extra.get("release") or {}
    sources = own.get("trusted_keys", project.section("release").get("trusted_keys", []))
    keys = tuple(_trusted(project.root, s) for s in sources)
    require = environment.protected or bool(own.get("require_signed", False))
    return EnvReleaseSettings(require_signed=require, trusted_keys=keys)


def _trusted(root: Path, source: str) -> TrustedKey:
    if source.startswith(_INLINE):
        return TrustedKey(source, _inline_bytes(source, "[release] trusted_keys"))
    path = root / source
    try:
        resolved = path.resolve(strict=True)
        if root.resolve() not in resolved.parents:
            raise ReleaseError(f"trusted key {source} resolves outside the app")
        return TrustedKey(source, resolved.read_bytes())
    except OSError as exc:
        raise ReleaseError(f"cannot read trusted key {source}: {exc.strerror}") from None


def load_signing_key(
    project: Project, key_file: str | None, environ: Mapping[str, str] | None = None
) -> tuple[Ed25519PrivateKey, str] | None:
    """The release signing key from ``--key`` or $ONEOFF_RELEASE_KEY_FILE, with its key id.

    Refuses a key file inside the app (it would be committed) or readable by others.
    """
    env = os.environ if environ is None else environ
    chosen = key_file or env.get(KEY_FILE_VARIABLE) or None
    if chosen is None:
        return None
    path = Path(chosen).absolute()
    try:
        st = path.stat()
        real = path.resolve(strict=True)
    except OSError as exc:
        raise ConfigError(f"release signing key {chosen}: {exc.strerror}") from None
    root = project.root.resolve()
    if real == root or root in real.parents:
        raise ConfigError(
            f"release signing key {chosen} is inside the app, where it would be committed",
            hint="keep private keys outside the repository, e.g. ~/.config/oneoff/release.key",
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(
            f"release signing key {chosen} is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"chmod 600 {chosen}",
        )
    from oneoff._audit.checkpoint import key_id, load_private_key

    key = load_private_key(real)
    return key, key_id(key.public_key())


def public_key_line(pub_path: Path) -> str:
    """The ``ed25519:<base64>`` form of a public key file, for pasting into oneoff.toml."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from oneoff._audit.checkpoint import load_public_key

    raw = load_public_key(pub_path).public_bytes(Encoding.Raw, PublicFormat.Raw)
    return _INLINE + base64.b64encode(raw).decode("ascii")
