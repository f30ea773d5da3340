"""Signed tree heads (checkpoints), offline proof documents and Ed25519 key handling."""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from oneoff._audit import merkle
from oneoff._record import dataclass
from oneoff.errors import AuditError, ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "CHECKPOINT_HEADER",
    "Checkpoint",
    "ConsistencyProofDoc",
    "InclusionProofDoc",
    "ProofDoc",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_proof_doc",
    "load_public_key",
    "sign_checkpoint",
    "verify_checkpoint",
    "verify_proof_doc",
]

CHECKPOINT_HEADER = "oneoff-audit-checkpoint/v1"
INCLUSION_TYPE = "oneoff-audit-inclusion-proof/v1"
CONSISTENCY_TYPE = "oneoff-audit-consistency-proof/v1"

SIGNATURE_SIZE = 64
KEY_ID_HEX_LEN = 32
# Sizes and indexes are stored as 64-bit signed integers by most databases.
MAX_SIZE = 2**63 - 1
# 9999-12-31T23:59:59Z: the last instant an RFC 3339 summary line can show.
MAX_TIMESTAMP = 253_402_300_799
# A tree of < 2**63 leaves is at most 63 levels high: an audit path has <= 63 hashes
# and a consistency proof <= 64 (one per level plus its starting node).
MAX_PATH_LEN = 64


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, size: int, field: str) -> bytes:
    if not isinstance(value, str):
        raise AuditError(f"{field} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AuditError(f"{field} is not valid base64") from None
    # Only the canonical encoding is accepted, so one value has one spelling.
    if _b64(raw) != value:
        raise AuditError(f"{field} is not canonical base64")
    if len(raw) != size:
        raise AuditError(f"{field} must be {size} bytes, not {len(raw)}")
    return raw


def _int(value: object, field: str, maximum: int) -> int:
    # bool is an int subclass; "true" must not parse as the size 1.
    if type(value) is not int or not 0 <= value <= maximum:
        raise AuditError(f"{field} must be an integer in 0..{maximum}")
    return value


def _fields(obj: object, what: str, names: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise AuditError(f"{what} must be a JSON object")
    keys = set(obj)
    if keys != names:
        problems = []
        if missing := sorted(names - keys):
            problems.append("missing " + ", ".join(missing))
        if unknown := sorted(keys - names):
            problems.append("unknown " + ", ".join(repr(k) for k in unknown))
        raise AuditError(f"{what}: " + "; ".join(problems))
    return obj


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Two parsers could pick different copies of a duplicated key.
            raise AuditError(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise AuditError(f"JSON constant {name} is not allowed")


def _parse_int(text: str) -> int:
    # Every integer field fits in 63 bits; refusing long digit strings up front also
    # avoids Python's slow (and limit-raising) big-integer conversion.
    if len(text.lstrip("-")) > 20:
        raise AuditError(f"JSON integer with {len(text)} digits is out of range")
    return int(text)


def _parse_json(text: str | bytes, what: str) -> object:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise AuditError(f"{what} is not UTF-8") from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
        )
    except ValueError as exc:  # JSONDecodeError, or a conversion limit
        raise AuditError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise AuditError(f"{what} is nested too deeply") from None


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def _rfc3339(timestamp: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _path_from(value: object, field: str) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise AuditError(f"{field} must be a JSON array")
    if len(value) > MAX_PATH_LEN:
        raise AuditError(f"{field} has {len(value)} hashes, more than {MAX_PATH_LEN}")
    return tuple(_unb64(v, merkle.HASH_SIZE, f"{field}[{i}]") for i, v in enumerate(value))


def _check_path(path: object, field: str) -> None:
    if not isinstance(path, tuple):
        raise AuditError(f"{field} must be a tuple of hashes")
    if len(path) > MAX_PATH_LEN:
        raise AuditError(f"{field} has more than {MAX_PATH_LEN} hashes")
    for i, h in enumerate(path):
        if type(h) is not bytes or len(h) != merkle.HASH_SIZE:
            raise AuditError(f"{field}[{i}] is not a {merkle.HASH_SIZE}-byte hash")


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 bytes, in hex, of SHA-256 over the raw 32-byte public key."""
    # public_bytes_raw() keeps the serialization module (~15 ms of imports) off the path
    # every run takes to sign its checkpoint.
    raw = public_key.public_bytes_raw()
    return hashlib.sha256(raw).digest()[:16].hex()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head: "the log had ``size`` entries with Merkle root ``root``".

    ``timestamp`` is integer Unix seconds (UTC) at signing time: no time zones, no
    sub-second formatting, one spelling per instant. ``key_id`` is :func:`key_id` of
    the signer and ``signature`` the 64-byte Ed25519 signature over
    :meth:`signed_payload`. Construction validates every field (AuditError).
    """

    size: int
    root: bytes
    timestamp: int
    key_id: str
    signature: bytes

    def __post_init__(self) -> None:
        _int(self.size, "checkpoint size", MAX_SIZE)
        _int(self.timestamp, "checkpoint timestamp", MAX_TIMESTAMP)
        if type(self.root) is not bytes or len(self.root) != merkle.HASH_SIZE:
            raise AuditError(f"checkpoint root must be {merkle.HASH_SIZE} bytes")
        if type(self.signature) is not bytes or len(self.signature) != SIGNATURE_SIZE:
            raise AuditError(f"checkpoint signature must be {SIGNATURE_SIZE} bytes")
        if (
            type(self.key_id) is not str
            or len(self.key_id) != KEY_ID_HEX_LEN
            or self.key_id.strip("0123456789abcdef")
        ):
            raise AuditError(f"checkpoint key_id must be {KEY_ID_HEX_LEN} lowercase hex digits")

    def signed_payload(self) -> bytes:
        """The exact signed bytes: ``oneoff-audit-checkpoint/v1\n<size>\n<b64 root>\n<ts>\n``."""
        return _payload(self.size, self.root, self.timestamp)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, bytes as standard base64."""
        return {
            "size": self.size,
            "root": _b64(self.root),
            "timestamp": self.timestamp,
            "key_id": self.key_id,
            "signature": _b64(self.signature),
        }

    @classmethod
    def from_dict(cls, obj: object, what: str = "checkpoint") -> Checkpoint:
        """Strict inverse of :meth:`to_dict`: exact field set, exact lengths."""
        fields = _fields(obj, what, {"size", "root", "timestamp", "key_id", "signature"})
        return cls(
            size=_int(fields["size"], f"{what} size", MAX_SIZE),
            root=_unb64(fields["root"], merkle.HASH_SIZE, f"{what} root"),
            timestamp=_int(fields["timestamp"], f"{what} timestamp", MAX_TIMESTAMP),
            key_id=fields["key_id"],
            signature=_unb64(fields["signature"], SIGNATURE_SIZE, f"{what} signature"),
        )

    def to_json(self) -> str:
        """Stable, human-readable JSON (sorted keys, trailing newline)."""
        return _dump(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> Checkpoint:
        """Parse :meth:`to_json` output; anything else raises AuditError."""
        return cls.from_dict(_parse_json(text, "checkpoint"))


def _payload(size: int, root: bytes, timestamp: int) -> bytes:
    # Line-based like a C2SP signed-note body: a versioned header line, then one
    # decimal or base64 value per line, each newline-terminated, so no two
    # (size, root, timestamp) triples share an encoding.
    return f"{CHECKPOINT_HEADER}\n{size}\n{_b64(root)}\n{timestamp}\n".encode("ascii")


def sign_checkpoint(
    size: int, root: bytes, timestamp: int, private_key: Ed25519PrivateKey
) -> Checkpoint:
    """Sign ``(size, root, timestamp)`` with ``private_key``; ``timestamp`` in Unix seconds."""
    _int(size, "checkpoint size", MAX_SIZE)
    _int(timestamp, "checkpoint timestamp", MAX_TIMESTAMP)
    if type(root) is not bytes or len(root) != merkle.HASH_SIZE:
        raise AuditError(f"checkpoint root must be {merkle.HASH_SIZE} bytes")
    signature = private_key.sign(_payload(size, root, timestamp))
    return Checkpoint(size, root, timestamp, key_id(private_key.public_key()), signature)


def verify_checkpoint(cp: Checkpoint, public_key: Ed25519PublicKey) -> None:
    """Raise AuditError unless ``cp`` carries a valid signature by ``public_key``."""
    _verify_checkpoint(cp, public_key, "checkpoint")


def _verify_checkpoint(cp: Checkpoint, public_key: Ed25519PublicKey, label: str) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not isinstance(public_key, Ed25519PublicKey):
        raise AuditError(f"{label}: the verification key is not an Ed25519 public key")
    expected = key_id(public_key)
    if not hmac.compare_digest(cp.key_id, expected):
        raise AuditError(
            f"{label} names signing key {cp.key_id}, but the given key is {expected}",
            hint="verify with the public key that signed the checkpoint",
        )
    try:
        public_key.verify(cp.signature, cp.signed_payload())
    except InvalidSignature:
        raise AuditError(
            f"{label} signature does not verify: the checkpoint "
            f"(size {cp.size}, timestamp {cp.timestamp}) was altered or forged"
        ) from None


@dataclass(frozen=True, slots=True)
class InclusionProofDoc:
    """Offline evidence that the leaf ``leaf_hash`` sits at ``index`` under ``checkpoint``.

    ``leaf_hash`` is :func:`merkle.leaf_hash` of the event's canonical bytes; ``path``
    is the RFC 6962 audit path, bottom sibling first.
    """

    leaf_hash: bytes
    index: int
    checkpoint: Checkpoint
    path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if type(self.leaf_hash) is not bytes or len(self.leaf_hash) != merkle.HASH_SIZE:
            raise AuditError(f"leaf_hash must be {merkle.HASH_SIZE} bytes")
        _int(self.index, "index", MAX_SIZE)
        if not isinstance(self.checkpoint, Checkpoint):
            raise AuditError("checkpoint must be a Checkpoint")
        _check_path(self.path, "path")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, tagged with its ``type``."""
        return {
            "type": INCLUSION_TYPE,
            "leaf_hash": _b64(self.leaf_hash),
            "index": self.index,
            "checkpoint": self.checkpoint.to_dict(),
            "path": [_b64(h) for h in self.path],
        }

    @classmethod
    def from_dict(cls, obj: object) -> InclusionProofDoc:
        """Strict inverse of :meth:`to_dict`."""
        fields = _fields(
            obj, "inclusion proof", {"type", "leaf_hash", "index", "checkpoint", "path"}
        )
        if fields["type"] != INCLUSION_TYPE:
            raise AuditError(f"inclusion proof type must be {INCLUSION_TYPE!r}")
        return cls(
            leaf_hash=_unb64(fields["leaf_hash"], merkle.HASH_SIZE, "leaf_hash"),
            index=_int(fields["index"], "index", MAX_SIZE),
            checkpoint=Checkpoint.from_dict(fields["checkpoint"]),
            path=_path_from(fields["path"], "path"),
        )

    def to_json(self) -> str:
        """Stable, human-readable JSON (sorted keys, trailing newline)."""
        return _dump(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> InclusionProofDoc:
        """Parse :meth:`to_json` output; anything else raises AuditError."""
        return cls.from_dict(_parse_json(text, "inclusion proof"))


@dataclass(frozen=True, slots=True)
class ConsistencyProofDoc:
    """Offline evidence that the log at ``new`` extends the log at ``old`` unchanged."""

    old: Checkpoint
    new: Checkpoint
    path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.old, Checkpoint) or not isinstance(self.new, Checkpoint):
            raise AuditError("old and new must be Checkpoints")
        _check_path(self.path, "path")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, tagged with its ``type``."""
        return {
            "type": CONSISTENCY_TYPE,
            "old_checkpoint": self.old.to_dict(),
            "new_checkpoint": self.new.to_dict(),
            "path": [_b64(h) for h in self.path],
        }

    @classmethod
    def from_dict(cls, obj: object) -> ConsistencyProofDoc:
        """Strict inverse of :meth:`to_dict`."""
        fields = _fields(
            obj, "consistency proof", {"type", "old_checkpoint", "new_checkpoint", "path"}
        )
        if fields["type"] != CONSISTENCY_TYPE:
            raise AuditError(f"consistency proof type must be {CONSISTENCY_TYPE!r}")
        return cls(
            old=Checkpoint.from_dict(fields["old_checkpoint"], "old_checkpoint"),
            new=Checkpoint.from_dict(fields["new_checkpoint"], "new_checkpoint"),
            path=_path_from(fields["path"], "path"),
        )

    def to_json(self) -> str:
        """Stable, human-readable JSON (sorted keys, trailing newline)."""
        return _dump(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> ConsistencyProofDoc:
        """Parse :meth:`to_json` output; anything else raises AuditError."""
        return cls.from_dict(_parse_json(text, "consistency proof"))


ProofDoc: TypeAlias = InclusionProofDoc | ConsistencyProofDoc


def load_proof_doc(text: str | bytes) -> ProofDoc:
    """Parse either proof document, chosen by its ``type`` field."""
    obj = _parse_json(text, "proof document")
    kind = obj.get("type") if isinstance(obj, dict) else None
    if kind == INCLUSION_TYPE:
        return InclusionProofDoc.from_dict(obj)
    if kind == CONSISTENCY_TYPE:
        return ConsistencyProofDoc.from_dict(obj)
    raise AuditError(
        f"not a oneoff audit proof: type must be {INCLUSION_TYPE!r} or {CONSISTENCY_TYPE!r}"
    )


def verify_proof_doc(
    doc: ProofDoc, public_key: Ed25519PublicKey, *, leaf_data: bytes | None = None
) -> str:
    """Check signature(s) and Merkle proof; return a one-line summary or raise AuditError.

    For an inclusion proof, ``leaf_data`` (the event's canonical bytes), when given,
    must hash to the document's ``leaf_hash``.
    """
    if isinstance(doc, InclusionProofDoc):
        return _verify_inclusion_doc(doc, public_key, leaf_data)
    if isinstance(doc, ConsistencyProofDoc):
        if leaf_data is not None:
            raise AuditError("leaf_data only applies to an inclusion proof")
        return _verify_consistency_doc(doc, public_key)
    raise AuditError(f"not a proof document: {type(doc).__name__}")


def _verify_inclusion_doc(
    doc: InclusionProofDoc, public_key: Ed25519PublicKey, leaf_data: bytes | None
) -> str:
    cp = doc.checkpoint
    _verify_checkpoint(cp, public_key, "checkpoint")
    if leaf_data is not None and not hmac.compare_digest(
        merkle.leaf_hash(leaf_data), doc.leaf_hash
    ):
        raise AuditError("the event does not hash to the proof's leaf_hash")
    # Messages name the event by its number (seq = leaf index + 1), as `audit prove SEQ`,
    # `audit export` and `audit verify` do; the proof document keeps RFC 6962's index.
    seq = doc.index + 1
    if doc.index >= cp.size:
        raise AuditError(f"event {seq} is beyond the checkpoint's {cp.size} events")
    if not merkle.verify_inclusion(doc.leaf_hash, doc.index, cp.size, doc.path, cp.root):
        raise AuditError(
            f"inclusion proof failed: leaf {doc.leaf_hash.hex()[:16]} is not event "
            f"{seq} of the signed log of {cp.size} events"
        )
    return (
        f"OK: event {seq} (leaf index {doc.index}, leaf {doc.leaf_hash.hex()[:16]}) is in the "
        f"audit log of {cp.size} events signed at {_rfc3339(cp.timestamp)} by key {cp.key_id}"
    )


def _verify_consistency_doc(doc: ConsistencyProofDoc, public_key: Ed25519PublicKey) -> str:
    old, new = doc.old, doc.new
    _verify_checkpoint(old, public_key, "old checkpoint")
    _verify_checkpoint(new, public_key, "new checkpoint")
    if old.size > new.size:
        raise AuditError(
            f"the log shrank: old checkpoint has {old.size} entries, new has {new.size}"
        )
    if not merkle.verify_consistency(old.size, new.size, old.root, new.root, doc.path):
        raise AuditError(
            f"consistency proof failed: the signed log of {new.size} entries does not "
            f"extend the signed log of {old.size} entries (rewritten or forked history)"
        )
    return (
        f"OK: the audit log of {new.size} entries signed at {_rfc3339(new.timestamp)} "
        f"extends the log of {old.size} entries signed at {_rfc3339(old.timestamp)} "
        f"without rewriting it (key {new.key_id})"
    )


# --- keys -----------------------------------------------------------------------------

PathLike: TypeAlias = str | os.PathLike[str]


def _read_key_file(path: PathLike, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {os.fspath(path)}: {exc.strerror}") from None


def load_private_key(path: PathLike) -> Ed25519PrivateKey:
    """Load an Ed25519 private key: unencrypted PKCS#8 PEM, or exactly 32 raw bytes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    data = _read_key_file(path, "private key")
    name = os.fspath(path)
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{name} is not a usable PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{name} holds a {type(key).__name__}, not an Ed25519 key")
        return key
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    raise ConfigError(
        f"{name} is neither a PKCS#8 PEM Ed25519 key nor 32 raw bytes ({len(data)} bytes)"
    )


def load_public_key(source: PathLike | bytes) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a file path, or from key bytes given directly.

    Accepts SubjectPublicKeyInfo PEM or exactly 32 raw bytes. ``bytes`` are always key
    material, never a path; so is a ``str`` that starts with a PEM header.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        # PEM text pasted where a path was expected: it can never be a file name.
        source = source.encode("ascii", "replace")
    if isinstance(source, bytes):
        data, name = source, "public key"
    else:
        data, name = _read_key_file(source, "public key"), os.fspath(source)
    if data.lstrip().startswith(b"-----BEGIN"):
        if b"PRIVATE KEY" in data:
            raise ConfigError(f"{name} is a private key; give the public key instead")
        try:
            key = load_pem_public_key(data)
        except ValueError as exc:
            raise ConfigError(f"{name} is not a usable PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{name} holds a {type(key).__name__}, not an Ed25519 key")
        return key
    if len(data) == 32:
        try:
            return Ed25519PublicKey.from_public_bytes(data)
        except ValueError as exc:
            raise ConfigError(f"{name} is not a valid Ed25519 public key: {exc}") from None
    raise ConfigError(
        f"{name} is neither a SubjectPublicKeyInfo PEM Ed25519 key nor 32 raw bytes "
        f"({len(data)} bytes)"
    )


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    # Write a temp file in the same directory, then hard-link it into place: the
    # name appears atomically with full contents and final mode, and link() fails
    # instead of replacing an existing file (rename() would silently overwrite).
    import tempfile  # only key generation needs it; keep it off the CLI import path

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
                raise
            # Filesystems without hard links: O_EXCL still refuses to overwrite.
            _write_exclusive(path, data, mode)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_keypair(priv_path: PathLike, pub_path: PathLike) -> str:
    """Create a new Ed25519 key pair as PEM files and return its key id.

    The private key (PKCS#8, unencrypted) gets mode 0600, the public key
    (SubjectPublicKeyInfo) 0644. Refuses, with ConfigError, to overwrite either file.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    priv, pub = Path(priv_path), Path(pub_path)
    if priv.resolve() == pub.resolve():
        raise ConfigError("the private and public key paths must differ")
    for p in (priv, pub):
        if p.exists() or p.is_symlink():
            raise ConfigError(f"refusing to overwrite existing key file {p}")
    key = Ed25519PrivateKey.generate()
    priv_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    pub_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    try:
        _write_new_file(priv, priv_pem, 0o600)
    except FileExistsError:
        raise ConfigError(f"refusing to overwrite existing key file {priv}") from None
    except OSError as exc:
        raise ConfigError(f"cannot write private key {priv}: {exc.strerror}") from None
    try:
        _write_new_file(pub, pub_pem, 0o644)
    except OSError as exc:
        # Leave no orphan private key whose public half nobody has.
        priv.unlink()
        if isinstance(exc, FileExistsError):
            raise ConfigError(f"refusing to overwrite existing key file {pub}") from None
        raise ConfigError(f"cannot write public key {pub}: {exc.strerror}") from None
    return key_id(key.public_key())
