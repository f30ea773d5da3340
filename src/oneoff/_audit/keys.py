"""The audit key: an Ed25519 key pair beside the store that signs checkpoints, made on first use."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import TYPE_CHECKING

from oneoff.errors import AuditError, ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = ["PRIVATE_NAME", "PUBLIC_NAME", "AuditKey", "public_key_from"]

PRIVATE_NAME = "audit.key"
PUBLIC_NAME = "audit.pub"

# DER prefixes of the only shapes generate_keypair writes: PKCS#8 and SubjectPublicKeyInfo
# wrapping a raw 32-byte Ed25519 key. Recognising them directly keeps the serialization
# module (about 15 ms of imports) off the path every run takes to sign its checkpoint.
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def _pem_der(data: bytes) -> bytes | None:
    lines = data.strip().splitlines()
    if len(lines) < 3 or not lines[0].startswith(b"-----BEGIN") or b"ENCRYPTED" in lines[0]:
        return None
    try:
        return base64.b64decode(b"".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        return None


class AuditKey:
    """The key pair in an app's state directory; private half mode 0600."""

    def __init__(self, state_dir: Path) -> None:
        self.private_path = state_dir / PRIVATE_NAME
        self.public_path = state_dir / PUBLIC_NAME
        self._private: Ed25519PrivateKey | None = None

    def exists(self) -> bool:
        return self.private_path.exists()

    def ensure(self) -> None:
        """Create the key pair unless it exists (another runner may create it concurrently)."""
        if self.private_path.exists():
            return
        from oneoff._audit.checkpoint import generate_keypair

        try:
            generate_keypair(self.private_path, self.public_path)
        except ConfigError:
            # Lost a race with another runner: use the pair it wrote.
            if not self.private_path.exists():
                raise

    def private(self) -> Ed25519PrivateKey:
        """The signing key, created on first use."""
        if self._private is None:
            self.ensure()
            data = self.private_path.read_bytes()
            der = _pem_der(data)
            if der is not None and len(der) == 48 and der.startswith(_PKCS8_PREFIX):
                from cryptography.hazmat.primitives.asymmetric.ed25519 import (
                    Ed25519PrivateKey,
                )

                self._private = Ed25519PrivateKey.from_private_bytes(der[16:])
            else:
                from oneoff._audit.checkpoint import load_private_key

                self._private = load_private_key(self.private_path)
        return self._private

    def public(self) -> Ed25519PublicKey:
        """The verification key: ``audit.pub`` (or the private key's half if that is gone)."""
        if self.public_path.exists():
            return public_key_from(self.public_path)
        if self.private_path.exists():
            return self.private().public_key()
        raise AuditError(
            f"no audit public key at {self.public_path}",
            hint="pass --key with the public key you kept (`oneoff audit key` prints it)",
        )

    def public_pem(self) -> str:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        pem = self.public().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        return pem.decode("ascii")


def public_key_from(path: Path | str) -> Ed25519PublicKey:
    """Load a public key file (PEM SubjectPublicKeyInfo or 32 raw bytes)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read public key {os.fspath(path)}: {exc.strerror}") from None
    der = _pem_der(data)
    if der is not None and len(der) == 44 and der.startswith(_SPKI_PREFIX):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        return Ed25519PublicKey.from_public_bytes(der[12:])
    from oneoff._audit.checkpoint import load_public_key

    return load_public_key(path)
