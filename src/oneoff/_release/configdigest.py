"""Config snapshot without values: a keyed HMAC per variable, so drift shows but values don't.

Each variable is recorded as HMAC-SHA256(key, name || 0x00 || value) with a ``secret``
flag. The key is a per-app secret held outside the record, so a low-entropy value
(``DEBUG=true``, a short password) cannot be brute-forced from a stolen record. The
snapshot carries a ``key_id`` (an HMAC of a fixed label) so a comparison across different
keys is reported as such instead of as every variable having changed. Names and values are
encoded as UTF-8 with ``surrogateescape``, matching how ``os.environ`` decodes them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from oneoff._record import dataclass
from oneoff.errors import ReleaseError

__all__ = ["MIN_KEY_BYTES", "ConfigSnapshot", "ConfigValue", "config_digest", "diff_config"]

FORMAT: Final = "oneoff-config-v1"
MIN_KEY_BYTES: Final = 16
_KEY_ID_LABEL: Final = b"oneoff-config-key-id-v1"
_DIGEST_PREFIX: Final = b"oneoff-config-v1\x00"
_HEX64: Final = re.compile(r"[0-9a-f]{64}")


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class ConfigValue:
    """One variable: its keyed MAC (hex) and whether it is a secret."""

    mac: str
    secret: bool


def _overall(key_id: str, values: Mapping[str, ConfigValue]) -> str:
    h = hashlib.sha256(_DIGEST_PREFIX + bytes.fromhex(key_id))
    for name in sorted(values, key=_enc):
        raw = _enc(name)
        v = values[name]
        h.update(len(raw).to_bytes(8, "big") + raw + (b"s" if v.secret else b"p"))
        h.update(bytes.fromhex(v.mac))
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """Per-variable MACs, the id of the key that made them, and an overall digest (hex)."""

    values: Mapping[str, ConfigValue]
    key_id: str
    digest: str

    @classmethod
    def build(cls, key_id: str, values: Mapping[str, ConfigValue]) -> ConfigSnapshot:
        """A snapshot with its overall digest computed."""
        frozen = MappingProxyType(dict(sorted(values.items(), key=lambda kv: _enc(kv[0]))))
        return cls(frozen, key_id, _overall(key_id, frozen))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; contains no values, only MACs."""
        return {
            "format": FORMAT,
            "key_id": self.key_id,
            "digest": self.digest,
            "values": {n: {"hmac": v.mac, "secret": v.secret} for n, v in self.values.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConfigSnapshot:
        """Parse ``to_dict()`` output strictly; raises ``ReleaseError`` on anything off."""
        _expect_keys(data, {"format", "key_id", "digest", "values"}, "config snapshot")
        if data["format"] != FORMAT:
            raise ReleaseError(f"config snapshot: unsupported format {data['format']!r}")
        key_id, digest, raw_values = data["key_id"], data["digest"], data["values"]
        for label, hex_value in (("key_id", key_id), ("digest", digest)):
            _check_hex(hex_value, label)
        if not isinstance(raw_values, Mapping):
            raise ReleaseError("config snapshot: values must be an object")
        values: dict[str, ConfigValue] = {}
        for name, item in raw_values.items():
            _check_name(name)
            _expect_keys(item, {"hmac", "secret"}, f"config snapshot value {name!r}")
            _check_hex(item["hmac"], f"hmac of {name!r}")
            if not isinstance(item["secret"], bool):
                raise ReleaseError(f"config snapshot: secret flag of {name!r} must be a boolean")
            values[name] = ConfigValue(item["hmac"], item["secret"])
        snap = cls.build(key_id, values)
        if snap.digest != digest:
            raise ReleaseError("config snapshot: digest does not match its values")
        return snap


def _expect_keys(data: Any, keys: set[str], what: str) -> None:
    if not isinstance(data, Mapping) or set(data) != keys:
        raise ReleaseError(f"{what}: expected an object with keys {sorted(keys)}")


def _check_hex(value: Any, what: str) -> None:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ReleaseError(f"config snapshot: {what} is not 64 lowercase hex digits")


def _check_name(name: Any) -> None:
    # NUL separates name from value in the MAC input; "=" cannot be in an env name.
    if not isinstance(name, str) or not name or "\x00" in name or "=" in name:
        raise ReleaseError(f"config: bad variable name {name!r}")


def key_id(key: bytes) -> str:
    """A public fingerprint of the HMAC key (reveals nothing about it)."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()


def config_digest(
    values: Mapping[str, str], secret_keys: Collection[str], key: bytes
) -> ConfigSnapshot:
    """Snapshot ``values`` as keyed MACs; names in ``secret_keys`` are flagged secret."""
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise ReleaseError(
            f"config HMAC key must be at least {MIN_KEY_BYTES} bytes",
            hint="generate one with: python -c 'import secrets; print(secrets.token_hex(32))'",
        )
    secret = frozenset(secret_keys)
    out: dict[str, ConfigValue] = {}
    for name, value in values.items():
        _check_name(name)
        if not isinstance(value, str):
            raise ReleaseError(f"config: value of {name!r} is not a string")
        mac = hmac.new(key, _enc(name) + b"\x00" + _enc(value), hashlib.sha256).hexdigest()
        out[name] = ConfigValue(mac, name in secret)
    return ConfigSnapshot.build(key_id(key), out)


def diff_config(old: ConfigSnapshot, new: ConfigSnapshot) -> list[str]:
    """Human lines such as ``DATABASE_URL (changed)``, sorted by name; empty if identical."""
    if old.key_id != new.key_id:
        return ["config HMAC key differs: values cannot be compared"]
    if old.digest == new.digest:
        return []
    return list(_lines(old.values, new.values))


def _lines(old: Mapping[str, ConfigValue], new: Mapping[str, ConfigValue]) -> Iterable[str]:
    for name in sorted(old.keys() | new.keys(), key=_enc):
        shown = name.encode("unicode_escape").decode("ascii") if not name.isprintable() else name
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if a is None:
            yield f"{shown} (added)"
        elif b is None:
            yield f"{shown} (removed)"
        elif a.mac != b.mac:
            yield f"{shown} (changed)"
        else:
            yield f"{shown} (now secret)" if b.secret else f"{shown} (no longer secret)"
