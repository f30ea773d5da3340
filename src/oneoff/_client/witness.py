"""The CLI as a witness of a server's audit log: remember what it saw, refuse a rewind.

Each time the CLI reads a server's checkpoint it checks the log's signature on it, then
requires it to extend the newest checkpoint this account verified before for that server
(``oneoff._audit.remembered``, keyed ``server:<url>``; a memory signed by the same audit
key under another name applies too): not shorter, and an RFC 6962 consistency proof,
fetched from the server but recomputed here, from the remembered root to the new one.
Then it remembers the new checkpoint. A server (or whoever controls its database) that
deletes its store, cuts the log back together with its checkpoints, or forks it (rewrites
events and re-signs) is refused with exit 8 by every CLI that saw the old log.

The audit key is the one given (``--key``/``--log-key``), else the one remembered, else
the one the server announces on first contact (trust on first use: the memory pins it).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from oneoff._audit.checkpoint import Checkpoint, verify_checkpoint
from oneoff._audit.merkle import HASH_SIZE
from oneoff.errors import AuditError, ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from oneoff._audit.remembered import Remembered
    from oneoff._client.remote import Remote

__all__ = ["Seen", "check_witnessed", "cosign_remote", "identity", "see_checkpoint"]

# The largest proof a well-formed log of < 2**63 events has (checkpoint.MAX_PATH_LEN).
_MAX_PATH = 64


def identity(url: str) -> str:
    """The name a server's log is remembered under."""
    return "server:" + url


class Seen:
    """A server checkpoint checked against this account's memory (and now remembered)."""

    def __init__(
        self, cp: Checkpoint, key: Ed25519PublicKey, doc: dict[str, Any], memories: list[Remembered]
    ) -> None:
        self.checkpoint = cp
        self.key = key
        witnessed = doc.get("witnessed")
        self.witnessed: list[Any] = witnessed if isinstance(witnessed, list) else []
        self.memories = memories

    @property
    def recalled(self) -> int:
        """The largest remembered size it was checked against (0: first contact)."""
        return max((m.checkpoint.size for m in self.memories), default=0)


def _announced_key(remote: Remote) -> Ed25519PublicKey:
    from oneoff._audit.checkpoint import load_public_key

    value = remote.info().get("audit_public_key")
    if not isinstance(value, str) or not value:
        raise AuditError(f"the server at {remote.url} announces no audit public key")
    data = value.encode("ascii", "replace")
    if not value.lstrip().startswith("-----BEGIN"):
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise AuditError("the server's audit public key is neither PEM nor base64") from None
    try:
        return load_public_key(data)
    except ConfigError as exc:
        raise AuditError(f"the server's audit public key is unusable: {exc.message}") from None


def _trusted_key(remote: Remote, given: Ed25519PublicKey | None) -> Ed25519PublicKey:
    if given is not None:
        return given
    from oneoff._audit.remembered import remembered

    own = [m for m in remembered(identity(remote.url), None)]
    if own:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        # The key this account verified the server's log with before: a server that now
        # announces another is refused by check_extends (the key changed).
        announced = _announced_key(remote)
        if announced.public_bytes_raw() != own[0].public_key:
            return Ed25519PublicKey.from_public_bytes(own[0].public_key)
        return announced
    return _announced_key(remote)


def _path(doc: Any, first: int, second: int) -> tuple[bytes, ...]:
    if not isinstance(doc, dict) or doc.get("first") != first or doc.get("second") != second:
        raise AuditError(f"the server's consistency proof is not for {first} -> {second} events")
    raw = doc.get("path")
    if not isinstance(raw, list) or len(raw) > _MAX_PATH:
        raise AuditError("the server's consistency proof is malformed")
    out = []
    for item in raw:
        try:
            h = base64.b64decode(str(item), validate=True)
        except (binascii.Error, ValueError):
            raise AuditError("the server's consistency proof is not base64") from None
        if len(h) != HASH_SIZE:
            raise AuditError("the server's consistency proof holds a hash of the wrong size")
        out.append(h)
    return tuple(out)


def see_checkpoint(
    remote: Remote, given_key: Ed25519PublicKey | None = None, *, keep: bool = True
) -> Seen:
    """The server's newest checkpoint, signature checked, held to every remembered
    checkpoint that applies (AuditError, exit 8, otherwise), then remembered."""
    from oneoff._audit.remembered import check_extends, remember, remembered

    key = _trusted_key(remote, given_key)
    doc = remote.public("/v1/audit/checkpoint")
    if not isinstance(doc, dict):
        raise AuditError(f"the server at {remote.url} sent no checkpoint")
    cp = Checkpoint.from_dict(doc.get("checkpoint"))
    name = identity(remote.url)
    memories = remembered(name, key)
    if all(m.public_key == key.public_bytes_raw() for m in memories):
        verify_checkpoint(cp, key)  # a changed key is reported by check_extends instead

    def prove(old: Checkpoint, new: Checkpoint) -> tuple[bytes, ...]:
        if old.size in (0, new.size):
            return ()
        query = {"first": old.size, "second": new.size}
        return _path(remote.public("/v1/audit/proof/consistency", query), old.size, new.size)

    check_extends(memories, key, name, cp, prove, what="server")
    if keep:
        remember(name, key, cp)
    return Seen(cp, key, doc, memories)


def _consistent(remote: Remote, old: Checkpoint, new: Checkpoint) -> bool:
    from oneoff._audit.merkle import verify_consistency

    if old.size > new.size:
        return False
    path: tuple[bytes, ...] = ()
    if old.size not in (0, new.size):
        query = {"first": old.size, "second": new.size}
        path = _path(remote.public("/v1/audit/proof/consistency", query), old.size, new.size)
    return verify_consistency(old.size, new.size, old.root, new.root, path)


def _vouch(remote: Remote, seen: Seen, entry: Any, public: Ed25519PublicKey) -> str | None:
    """Why the witness entry does not vouch for the log ``seen`` (None: it does)."""
    from oneoff._audit.checkpoint import key_id
    from oneoff._audit.witness import Cosignature, valid_cosignature

    if not isinstance(entry, dict):
        return "it has no co-signature on this server (never asked, or they were deleted)"
    try:
        cp = Checkpoint.from_dict(entry.get("checkpoint"))
        verify_checkpoint(cp, seen.key)
        signature = base64.b64decode(str(entry.get("signature")), validate=True)
    except (AuditError, binascii.Error, ValueError):
        return "the checkpoint it names is not one the log's key signed"
    timestamp = entry.get("timestamp")
    if type(timestamp) is not int:
        return "its co-signature is malformed"
    if not valid_cosignature(
        cp, Cosignature(cp.size, key_id(public), timestamp, signature), public
    ):
        return "its co-signature does not match the checkpoint it names"
    if not _consistent(remote, cp, seen.checkpoint):
        return f"the log no longer extends the checkpoint of {cp.size} events it co-signed"
    return None


def check_witnessed(
    remote: Remote, seen: Seen, witnesses: list[Ed25519PublicKey]
) -> dict[str, int]:
    """For each witness key, the size of its newest co-signed checkpoint, which must be
    signed by the log's key, validly co-signed, and extended by the newest checkpoint;
    AuditError (exit 8) naming the first witness that does not vouch for this log."""
    from oneoff._audit.checkpoint import key_id

    found: dict[str, int] = {}
    for public in witnesses:
        kid = key_id(public)
        entry = next((w for w in seen.witnessed
                      if isinstance(w, dict) and w.get("witness_key_id") == kid), None)  # fmt: skip
        problem = _vouch(remote, seen, entry, public)
        if problem is not None:
            raise AuditError(
                f"witness {kid} does not vouch for this log: {problem}",
                hint="the log was tampered with, or the witness has yet to run `audit witness`",
            )
        assert isinstance(entry, dict)
        found[kid] = int(entry["checkpoint"]["size"])
    return found


def cosign_remote(
    remote: Remote, log_key: Ed25519PublicKey | None, witness: Ed25519PrivateKey
) -> tuple[Seen, dict[str, Any], bool]:
    """Check the server's newest checkpoint as :func:`see_checkpoint` does, co-sign it with
    the witness's key and send the co-signature; ``(seen, cosignature, newly stored)``."""
    import time

    from oneoff._audit.witness import cosign

    own = witness.public_key().public_bytes_raw()
    if log_key is not None and log_key.public_bytes_raw() == own:
        raise AuditError("--key is the log's own audit key: a witness co-signs with its own")
    seen = see_checkpoint(remote, log_key)
    if seen.key.public_bytes_raw() == own:
        raise AuditError("--key is the log's own audit key: a witness co-signs with its own")
    cos = cosign(seen.checkpoint, witness, int(time.time()))
    body = {
        "size": cos.size,
        "timestamp": cos.timestamp,
        "signature": base64.b64encode(cos.signature).decode("ascii"),
        "public_key": base64.b64encode(own).decode("ascii"),
    }
    answer = remote.act("/v1/audit/cosignatures", body)
    stored = bool(answer.get("stored")) if isinstance(answer, dict) else False
    return seen, {"witness_key_id": cos.witness_key_id, "size": cos.size}, stored
