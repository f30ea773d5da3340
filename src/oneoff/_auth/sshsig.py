"""SSHSIG (openssh PROTOCOL.sshsig) with Ed25519 keys: sign via key file or ssh-agent, verify."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from oneoff._record import dataclass
from oneoff.errors import NotPermitted, UsageError

if TYPE_CHECKING:
    import socket

    from oneoff._auth.signers import Person, Signers

__all__ = [
    "ED25519",
    "SshSignature",
    "agent_identities",
    "armor",
    "dearmor",
    "decode",
    "ed25519_public_key",
    "fingerprint",
    "public_key_blob",
    "sign",
    "signed_data",
    "verify",
]

ED25519 = "ssh-ed25519"
MAGIC = b"SSHSIG"
VERSION = 1
HASH_ALGORITHM = "sha512"
_HASHES = frozenset({"sha256", "sha512"})
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"
# A real Ed25519 SSHSIG armor is ~300 bytes; anything huge is hostile or a mistake.
_MAX_ARMOR = 16 * 1024
_MAX_AGENT_REPLY = 256 * 1024

# ssh-agent protocol (draft-miller-ssh-agent), the only messages we need.
_AGENT_FAILURE = 5
_AGENTC_REQUEST_IDENTITIES = 11
_AGENT_IDENTITIES_ANSWER = 12
_AGENTC_SIGN_REQUEST = 13
_AGENT_SIGN_RESPONSE = 14


class _Malformed(ValueError):
    pass


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def take(self, n: int) -> bytes:
        if n > len(self._data) - self._pos:
            raise _Malformed(f"{self._what} is truncated")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def text(self) -> str:
        try:
            return self.string().decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"{self._what} has a field that is not UTF-8") from None

    def end(self) -> None:
        if self._pos != len(self._data):
            raise _Malformed(f"{self._what} has trailing bytes")


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def public_key_blob(raw: bytes) -> bytes:
    """The SSH wire encoding of a raw 32-byte Ed25519 public key."""
    return _string(ED25519.encode()) + _string(raw)


def ed25519_public_key(blob: bytes) -> bytes:
    """The raw 32-byte key inside an SSH ``ssh-ed25519`` public key blob; ValueError otherwise."""
    reader = _Reader(blob, "public key")
    key_type = reader.text()
    if key_type != ED25519:
        raise _Malformed(f"key type {key_type!r} is not supported (only {ED25519})")
    raw = reader.string()
    if len(raw) != 32:
        raise _Malformed("Ed25519 public key is not 32 bytes")
    reader.end()
    return raw


def fingerprint(blob: bytes) -> str:
    """The key fingerprint as ``ssh-keygen -l`` prints it (``SHA256:`` + unpadded base64)."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


@dataclass(frozen=True)
class SshSignature:
    """A decoded SSHSIG blob; ``signature`` is the raw 64-byte Ed25519 signature."""

    public_key: bytes
    namespace: str
    hash_algorithm: str
    signature: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


def armor(blob: bytes) -> str:
    """Wrap an SSHSIG blob in the armor ``ssh-keygen -Y sign`` writes (76-column lines)."""
    body = base64.b64encode(blob).decode()
    lines = [body[i : i + 76] for i in range(0, len(body), 76)]
    return "\n".join([_BEGIN, *lines, _END]) + "\n"


def dearmor(armored: str | bytes) -> bytes:
    """The SSHSIG blob inside an armored signature; NotPermitted if the armor is malformed."""
    if isinstance(armored, bytes):
        try:
            armored = armored.decode("ascii")
        except UnicodeDecodeError:
            raise NotPermitted("signature armor is not ASCII text") from None
    if len(armored) > _MAX_ARMOR:
        raise NotPermitted(f"signature is larger than {_MAX_ARMOR} bytes")
    text = armored.strip()
    if not text.startswith(_BEGIN + "\n") and not text.startswith(_BEGIN + "\r\n"):
        raise NotPermitted(f"signature does not start with {_BEGIN}")
    if not text.endswith("\n" + _END):
        raise NotPermitted(f"signature does not end with {_END} (truncated?)")
    body = "".join(text[len(_BEGIN) : -len(_END)].split())
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise NotPermitted("signature armor is not valid base64 (truncated or altered?)") from None
    if not blob:
        raise NotPermitted("signature armor is empty")
    return blob


def decode(armored: str | bytes) -> SshSignature:
    """Parse an armored SSHSIG; NotPermitted for anything but a well-formed Ed25519 signature.

    Only ``ssh-ed25519`` keys are accepted: RSA, ECDSA, FIDO (``sk-*``) keys and
    certificates are refused so that a single, well-understood algorithm guards every run.
    """
    blob = dearmor(armored)
    try:
        return _decode_blob(blob)
    except _Malformed as exc:
        raise NotPermitted(f"malformed signature: {exc}") from None


def _decode_blob(blob: bytes) -> SshSignature:
    reader = _Reader(blob, "signature")
    if reader.take(6) != MAGIC:
        raise _Malformed("not an SSHSIG signature (bad magic)")
    version = reader.uint32()
    if version != VERSION:
        raise _Malformed(f"unsupported SSHSIG version {version} (expected {VERSION})")
    public_key = reader.string()
    namespace = reader.text()
    reader.string()  # reserved: the spec says to ignore it
    hash_algorithm = reader.text()
    sig_blob = reader.string()
    reader.end()
    if not namespace:
        raise _Malformed("signature has an empty namespace")
    if hash_algorithm not in _HASHES:
        raise _Malformed(f"unsupported hash algorithm {hash_algorithm!r}")
    key_type = _Reader(public_key, "public key").text()
    if key_type != ED25519:
        raise _Malformed(f"{key_type!r} keys are refused; only {ED25519} signatures are accepted")
    ed25519_public_key(public_key)
    sig_reader = _Reader(sig_blob, "signature value")
    sig_type = sig_reader.text()
    if sig_type != ED25519:
        raise _Malformed(f"signature algorithm {sig_type!r} is refused; only {ED25519}")
    raw_sig = sig_reader.string()
    sig_reader.end()
    if len(raw_sig) != 64:
        raise _Malformed("Ed25519 signature is not 64 bytes")
    return SshSignature(public_key, namespace, hash_algorithm, raw_sig)


def signed_data(namespace: str, hash_algorithm: str, data: bytes) -> bytes:
    """The bytes the key actually signs: the SSHSIG preamble, namespace and H(data)."""
    digest = hashlib.new(hash_algorithm, data).digest()
    return (
        MAGIC
        + _string(namespace.encode())
        + _string(b"")
        + _string(hash_algorithm.encode())
        + _string(digest)
    )


def _encode_blob(public_key: bytes, namespace: str, signature_blob: bytes) -> bytes:
    return (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(public_key)
        + _string(namespace.encode())
        + _string(b"")
        + _string(HASH_ALGORITHM.encode())
        + _string(signature_blob)
    )


def _check_namespace(namespace: str) -> None:
    if not namespace:
        raise UsageError("an SSHSIG namespace must not be empty")


def verify(
    data: bytes,
    armored_sig: str | bytes,
    *,
    namespace: str,
    allowed: Signers,
    now: datetime | None = None,
) -> Person:
    """Who signed ``data``: the allowed signer whose key made ``armored_sig``.

    Raises NotPermitted when the signature is malformed, made with a key that is not in
    ``allowed`` (or not Ed25519), made for another namespace, does not match ``data``,
    or the signer's ``namespaces``/``valid-after``/``valid-before`` options exclude it.
    The caller must compare the returned person with whoever the request claims to be.
    """
    _check_namespace(namespace)
    if now is not None and now.tzinfo is None:
        raise UsageError("verify() needs a timezone-aware time")
    sig = decode(armored_sig)
    if sig.namespace != namespace:
        raise NotPermitted(
            f"signature is for namespace {sig.namespace!r}, not {namespace!r}",
        )
    person = allowed.by_key(sig.public_key)
    if person is None:
        raise NotPermitted(
            f"signature key {sig.fingerprint} is not in {allowed.source}",
            hint="ask for your public key to be added to the allowed signers file",
        )
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(ed25519_public_key(sig.public_key))
    try:
        key.verify(sig.signature, signed_data(namespace, sig.hash_algorithm, data))
    except InvalidSignature:
        raise NotPermitted(
            f"bad signature from {person.name} ({sig.fingerprint}): forged, or made for other data"
        ) from None
    person.check_usable(namespace, now if now is not None else datetime.now(UTC))
    return person


def sign(
    data: bytes,
    *,
    namespace: str,
    key_path: Path | None = None,
    agent: bool = False,
) -> bytes:
    """An armored SSHSIG (sha512) of ``data`` by an Ed25519 key.

    Without ``agent`` the key is read from ``key_path``, an unencrypted OpenSSH private
    key. With ``agent`` the signature is made by the ssh-agent at ``$SSH_AUTH_SOCK``;
    ``key_path`` (a ``.pub`` file, or a private key whose ``.pub`` sits beside it) picks
    the identity, and may be omitted when the agent holds exactly one Ed25519 key.
    Returns the armor as ASCII bytes, exactly what ``ssh-keygen -Y sign`` writes.
    """
    _check_namespace(namespace)
    to_sign = signed_data(namespace, HASH_ALGORITHM, data)
    if agent:
        public_key, signature_blob = _sign_with_agent(to_sign, key_path)
    else:
        if key_path is None:
            raise UsageError("signing needs a key file or agent=True")
        public_key, signature_blob = _sign_with_file(to_sign, key_path)
    return armor(_encode_blob(public_key, namespace, signature_blob)).encode("ascii")


_OPENSSH_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_OPENSSH_END = b"-----END OPENSSH PRIVATE KEY-----"


def _parse_plain_openssh_ed25519(pem: bytes) -> tuple[bytes, bytes] | None:
    """(public, 32-byte seed) of an unencrypted ssh-keygen Ed25519 key, else None.

    openssh PROTOCOL.key: a fast path that spares each run importing cryptography's
    serialization package (~9 ms); anything unusual falls back to cryptography.
    """
    text = pem.strip()
    if not (text.startswith(_OPENSSH_BEGIN) and text.endswith(_OPENSSH_END)):
        return None
    try:
        blob = base64.b64decode(b"".join(text[len(_OPENSSH_BEGIN) : -len(_OPENSSH_END)].split()))
        if not blob.startswith(b"openssh-key-v1\x00"):
            return None
        reader = _Reader(blob[len(b"openssh-key-v1\x00") :], "private key")
        if (reader.string(), reader.string(), reader.string()) != (b"none", b"none", b""):
            return None  # encrypted: let cryptography say so
        if reader.uint32() != 1:
            return None
        public = ed25519_public_key(reader.string())
        private = _Reader(reader.string(), "private key section")
        if private.uint32() != private.uint32():
            return None  # check-ints differ: corrupt (or wrongly decrypted)
        if private.text() != ED25519 or private.string() != public:
            return None
        secret = private.string()
        if len(secret) != 64 or secret[32:] != public:
            return None
    except (_Malformed, binascii.Error, ValueError):
        return None
    return public, secret[:32]


def _load_private_key(key_path: Path) -> tuple[bytes, bytes]:
    """(raw public key, raw private key) of an unencrypted OpenSSH Ed25519 key file."""
    try:
        fast = _parse_plain_openssh_ed25519(key_path.read_bytes())
    except OSError:
        fast = None
    if fast is not None:
        return fast
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
        load_ssh_private_key,
    )

    try:
        pem = key_path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read key {key_path}: {exc.strerror}") from None
    try:
        key = load_ssh_private_key(pem, password=None)
    except TypeError:
        raise UsageError(
            f"key {key_path} is passphrase-protected",
            hint="load it into ssh-agent with ssh-add and sign with the agent",
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UsageError(f"cannot load {key_path} as an OpenSSH private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"key {key_path} is not Ed25519; only {ED25519} keys are supported")
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return public, private


def _sign_with_file(to_sign: bytes, key_path: Path) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public, private = _load_private_key(key_path)
    raw_sig = Ed25519PrivateKey.from_private_bytes(private).sign(to_sign)
    return public_key_blob(public), _string(ED25519.encode()) + _string(raw_sig)


def _read_public_key_line(text: str, where: Path) -> bytes:
    fields = text.split()
    if len(fields) < 2 or fields[0] != ED25519:
        raise UsageError(f"{where} is not an {ED25519} public key")
    try:
        blob = base64.b64decode(fields[1], validate=True)
        ed25519_public_key(blob)
    except (binascii.Error, ValueError):
        raise UsageError(f"{where} holds a malformed public key") from None
    return blob


def _wanted_public_key(key_path: Path) -> bytes:
    """The public key blob named by ``key_path``: a .pub file, its sibling, or the private key."""
    candidates = [key_path] if key_path.suffix == ".pub" else [Path(f"{key_path}.pub")]
    for path in candidates:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        return _read_public_key_line(text, path)
    public, _ = _load_private_key(key_path)
    return public_key_blob(public)


def _agent_call(sock_path: str, message: bytes) -> tuple[int, bytes]:
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            # Generous: an agent may ask the human to confirm (ssh-add -c) or touch a token.
            sock.settimeout(60)
            sock.connect(sock_path)
            sock.sendall(struct.pack(">I", len(message)) + message)
            length = struct.unpack(">I", _recv_exact(sock, 4))[0]
            if not 0 < length <= _MAX_AGENT_REPLY:
                raise UsageError(f"ssh-agent sent an invalid reply length {length}")
            reply = _recv_exact(sock, length)
    except OSError as exc:
        raise UsageError(
            f"cannot talk to ssh-agent at {sock_path}: {exc.strerror or exc}",
            hint="is ssh-agent running and SSH_AUTH_SOCK set?",
        ) from None
    return reply[0], reply[1:]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise UsageError("ssh-agent closed the connection mid-reply")
        chunks += chunk
    return bytes(chunks)


def agent_identities(sock_path: str | None = None) -> list[tuple[bytes, str]]:
    """The (public key blob, comment) pairs of every key the ssh-agent holds."""
    sock_path = sock_path or _agent_socket()
    kind, body = _agent_call(sock_path, bytes([_AGENTC_REQUEST_IDENTITIES]))
    if kind != _AGENT_IDENTITIES_ANSWER:
        raise UsageError(f"ssh-agent refused to list its keys (reply type {kind})")
    reader = _Reader(body, "ssh-agent identities reply")
    try:
        count = reader.uint32()
        found = [
            (reader.string(), reader.string().decode("utf-8", "replace")) for _ in range(count)
        ]
        reader.end()
    except _Malformed as exc:
        raise UsageError(f"ssh-agent sent a malformed reply: {exc}") from None
    return found


def _agent_socket() -> str:
    sock_path = os.environ.get("SSH_AUTH_SOCK")
    if not sock_path:
        raise UsageError(
            "agent signing needs ssh-agent, but SSH_AUTH_SOCK is not set",
            hint="start ssh-agent and ssh-add your key, or sign with a key file",
        )
    return sock_path


def _sign_with_agent(to_sign: bytes, key_path: Path | None) -> tuple[bytes, bytes]:
    sock_path = _agent_socket()
    held = [blob for blob, _ in agent_identities(sock_path) if _is_ed25519(blob)]
    if key_path is not None:
        wanted = _wanted_public_key(key_path)
        if wanted not in held:
            raise UsageError(
                f"ssh-agent does not hold key {fingerprint(wanted)} ({key_path})",
                hint=f"run: ssh-add {key_path}",
            )
    elif len(held) == 1:
        wanted = held[0]
    elif not held:
        raise UsageError("ssh-agent holds no Ed25519 key", hint="run: ssh-add ~/.ssh/id_ed25519")
    else:
        prints = ", ".join(fingerprint(blob) for blob in held)
        raise UsageError(
            f"ssh-agent holds several Ed25519 keys ({prints}); name one with a key path"
        )
    request = bytes([_AGENTC_SIGN_REQUEST]) + _string(wanted) + _string(to_sign)
    request += struct.pack(">I", 0)  # flags: none apply to Ed25519
    kind, body = _agent_call(sock_path, request)
    if kind == _AGENT_FAILURE:
        raise UsageError(f"ssh-agent refused to sign with {fingerprint(wanted)}")
    if kind != _AGENT_SIGN_RESPONSE:
        raise UsageError(f"ssh-agent sent an unexpected reply type {kind}")
    try:
        reader = _Reader(body, "ssh-agent signature reply")
        signature_blob = reader.string()
        reader.end()
        _check_agent_signature(wanted, signature_blob, to_sign)
    except _Malformed as exc:
        raise UsageError(f"ssh-agent sent a bad signature: {exc}") from None
    return wanted, signature_blob


def _is_ed25519(blob: bytes) -> bool:
    try:
        ed25519_public_key(blob)
    except _Malformed:
        return False
    return True


def _check_agent_signature(public_key: bytes, signature_blob: bytes, to_sign: bytes) -> None:
    # Never hand out a signature that will not verify: a broken agent should fail here, loudly.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    reader = _Reader(signature_blob, "signature value")
    if reader.text() != ED25519:
        raise _Malformed(f"not an {ED25519} signature")
    raw_sig = reader.string()
    reader.end()
    try:
        Ed25519PublicKey.from_public_bytes(ed25519_public_key(public_key)).verify(raw_sig, to_sign)
    except InvalidSignature:
        raise _Malformed("it does not verify") from None
