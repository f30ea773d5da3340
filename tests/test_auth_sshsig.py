"""SSHSIG signing and verification, against real ssh-keygen and ssh-agent, and under attack."""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from _agent import ssh_agent
from oneoff._auth import Signers, decode, sign, verify
from oneoff._auth.sshsig import armor, dearmor
from oneoff.errors import NotPermitted, UsageError

DATA = b"oneoff run migrate --env production\n"
NS = "oneoff"


def keygen(directory: Path, name: str, key_type: str = "ed25519", passphrase: str = "") -> Path:
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", passphrase, "-C", f"{name}@test", "-f", path],
        check=True,
    )
    return path


def pub_fields(key: Path) -> str:
    return " ".join(Path(f"{key}.pub").read_text().split()[:2])


def signers_file(directory: Path, lines: list[str]) -> Path:
    path = directory / "allowed_signers"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def keygen_sign(key: Path, data: bytes, namespace: str = NS) -> str:
    done = subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", key],
        input=data,
        capture_output=True,
        check=True,
    )
    return done.stdout.decode()


def keygen_verify(allowed: Path, principal: str, sig: bytes, data: bytes) -> bool:
    sig_path = allowed.parent / "request.sig"
    sig_path.write_bytes(sig)
    done = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", allowed, "-I", principal, "-n", NS, "-s", sig_path],
        input=data,
        capture_output=True,
        check=False,
    )
    return done.returncode == 0 and b"Good" in done.stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("keys")
    return {name: keygen(directory, name) for name in ("alice", "bob", "mallory")}


@pytest.fixture
def allowed(tmp_path: Path, keys: dict[str, Path]) -> Signers:
    path = signers_file(
        tmp_path,
        [
            f"alice {pub_fields(keys['alice'])} alice@laptop groups=dba",
            f"bob {pub_fields(keys['bob'])} groups=ops",
        ],
    )
    return Signers.load(path)


def reblob(armored: str | bytes, **changes: bytes) -> str:
    """Re-encode a signature with some fields replaced, to forge variants."""
    blob = dearmor(armored)
    fields, pos = [blob[:6], blob[6:10]], 10
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        fields.append(blob[pos + 4 : pos + 4 + length])
        pos += 4 + length
    names = ["magic", "version", "public_key", "namespace", "reserved", "hash", "signature"]
    values = dict(zip(names, fields, strict=True))
    values.update(changes)
    out = values["magic"] + values["version"]
    for name in names[2:]:
        out += struct.pack(">I", len(values[name])) + values[name]
    return armor(out)


# --- interop -----------------------------------------------------------------------------


def test_signature_made_by_ssh_keygen_verifies_as_its_signer(
    keys: dict[str, Path], allowed: Signers
) -> None:
    """A signature from `ssh-keygen -Y sign` verifies and names the person who signed."""
    person = verify(DATA, keygen_sign(keys["alice"], DATA), namespace=NS, allowed=allowed)
    assert person.name == "alice"
    assert person.groups == frozenset({"dba"})


def test_signature_made_here_verifies_with_ssh_keygen(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    """A signature from sign() passes `ssh-keygen -Y verify` for the right principal only."""
    path = signers_file(tmp_path, [f"alice {pub_fields(keys['alice'])} groups=dba,ops"])
    sig = sign(DATA, namespace=NS, key_path=keys["alice"])
    assert keygen_verify(path, "alice", sig, DATA)
    assert not keygen_verify(path, "bob", sig, DATA)
    assert not keygen_verify(path, "alice", sig, DATA + b"x")


def test_sign_writes_the_armor_ssh_keygen_writes(keys: dict[str, Path]) -> None:
    """sign() emits the standard armor with 76-column base64 lines and sha512."""
    text = sign(DATA, namespace=NS, key_path=keys["alice"]).decode()
    lines = text.splitlines()
    assert lines[0] == "-----BEGIN SSH SIGNATURE-----"
    assert lines[-1] == "-----END SSH SIGNATURE-----"
    assert all(len(line) <= 76 for line in lines[1:-1])
    assert decode(text).hash_algorithm == "sha512"
    assert decode(text).namespace == NS


def test_sha256_signatures_from_ssh_keygen_verify(
    keys: dict[str, Path], allowed: Signers, tmp_path: Path
) -> None:
    """Signatures using the sha256 hash (ssh-keygen -O hashalg=sha256) are accepted too."""
    done = subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", NS, "-O", "hashalg=sha256", "-f", keys["bob"]],
        input=DATA,
        capture_output=True,
        check=True,
    )
    assert decode(done.stdout).hash_algorithm == "sha256"
    assert verify(DATA, done.stdout, namespace=NS, allowed=allowed).name == "bob"


# --- ssh-agent ---------------------------------------------------------------------------


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with ssh_agent(tmp_path / "agent.sock") as sock:
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield str(sock)


def ssh_add(key: Path) -> None:
    subprocess.run(["ssh-add", "-q", key], check=True, capture_output=True, env=os.environ)


def test_agent_signs_with_the_identity_named_by_its_public_key(
    agent: str, keys: dict[str, Path], allowed: Signers, tmp_path: Path
) -> None:
    """With two keys loaded, the agent signs with the one whose .pub is given; both tools agree."""
    ssh_add(keys["alice"])
    ssh_add(keys["bob"])
    sig = sign(DATA, namespace=NS, key_path=Path(f"{keys['bob']}.pub"), agent=True)
    assert verify(DATA, sig, namespace=NS, allowed=allowed).name == "bob"
    path = signers_file(tmp_path, [f"bob {pub_fields(keys['bob'])}"])
    assert keygen_verify(path, "bob", sig, DATA)


def test_agent_key_may_be_named_by_its_private_key_path(
    agent: str, keys: dict[str, Path], allowed: Signers
) -> None:
    """Naming the private key path picks its .pub sibling in the agent."""
    ssh_add(keys["alice"])
    sig = sign(DATA, namespace=NS, key_path=keys["alice"], agent=True)
    assert verify(DATA, sig, namespace=NS, allowed=allowed).name == "alice"


def test_agent_with_one_key_needs_no_key_path(
    agent: str, keys: dict[str, Path], allowed: Signers
) -> None:
    """An agent holding a single Ed25519 key signs without being told which."""
    ssh_add(keys["alice"])
    sig = sign(DATA, namespace=NS, agent=True)
    assert verify(DATA, sig, namespace=NS, allowed=allowed).name == "alice"


def test_agent_with_several_keys_and_no_key_path_is_refused(
    agent: str, keys: dict[str, Path]
) -> None:
    """An ambiguous agent signing request is refused rather than guessing."""
    ssh_add(keys["alice"])
    ssh_add(keys["bob"])
    with pytest.raises(UsageError, match="several Ed25519 keys"):
        sign(DATA, namespace=NS, agent=True)


def test_agent_without_the_wanted_key_is_refused(agent: str, keys: dict[str, Path]) -> None:
    """Asking the agent for a key it does not hold says to ssh-add it."""
    ssh_add(keys["alice"])
    with pytest.raises(UsageError, match="does not hold key") as caught:
        sign(DATA, namespace=NS, key_path=keys["bob"], agent=True)
    assert caught.value.hint is not None
    assert "ssh-add" in caught.value.hint


def test_agent_signing_without_an_agent_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No SSH_AUTH_SOCK, or a dead socket, is a clear usage error."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(UsageError, match="SSH_AUTH_SOCK"):
        sign(DATA, namespace=NS, agent=True)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "nothing"))
    with pytest.raises(UsageError, match="cannot talk to ssh-agent"):
        sign(DATA, namespace=NS, agent=True)


# --- key files ---------------------------------------------------------------------------


def test_passphrase_protected_key_file_points_to_the_agent(tmp_path: Path) -> None:
    """An encrypted key file cannot be used directly; the hint says to use ssh-agent."""
    key = keygen(tmp_path, "locked", passphrase="correct horse battery")
    with pytest.raises(UsageError, match="passphrase") as caught:
        sign(DATA, namespace=NS, key_path=key)
    assert "ssh-agent" in (caught.value.hint or "")


def test_non_ed25519_key_file_is_refused_for_signing(tmp_path: Path) -> None:
    """Signing with an ECDSA key is refused: only Ed25519 is supported."""
    key = keygen(tmp_path, "ec", key_type="ecdsa")
    with pytest.raises(UsageError, match="not Ed25519"):
        sign(DATA, namespace=NS, key_path=key)


def test_signing_needs_a_namespace_and_a_key(keys: dict[str, Path]) -> None:
    """An empty namespace or no key source is a usage error."""
    with pytest.raises(UsageError, match="namespace"):
        sign(DATA, namespace="", key_path=keys["alice"])
    with pytest.raises(UsageError, match="key file"):
        sign(DATA, namespace=NS)


# --- attacks -----------------------------------------------------------------------------


def test_forged_signature_bytes_are_rejected(keys: dict[str, Path], allowed: Signers) -> None:
    """Flipping one bit of the Ed25519 signature makes verification fail."""
    good = sign(DATA, namespace=NS, key_path=keys["alice"])
    raw = bytearray(decode(good).signature)
    raw[10] ^= 0x01
    sig_blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 64) + bytes(raw)
    with pytest.raises(NotPermitted, match="bad signature from alice"):
        verify(DATA, reblob(good, signature=sig_blob), namespace=NS, allowed=allowed)


def test_swapping_in_another_persons_key_does_not_make_it_theirs(
    keys: dict[str, Path], allowed: Signers
) -> None:
    """Mallory's signature relabelled with Bob's public key fails as a bad signature."""
    by_mallory = sign(DATA, namespace=NS, key_path=keys["mallory"])
    bobs_key = decode(sign(b"x", namespace=NS, key_path=keys["bob"])).public_key
    with pytest.raises(NotPermitted, match="bad signature"):
        verify(DATA, reblob(by_mallory, public_key=bobs_key), namespace=NS, allowed=allowed)


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
def test_truncated_signature_is_rejected(
    keys: dict[str, Path], allowed: Signers, keep: float
) -> None:
    """A signature cut short anywhere is refused, never half-trusted."""
    good = sign(DATA, namespace=NS, key_path=keys["alice"]).decode()
    with pytest.raises(NotPermitted):
        verify(DATA, good[: int(len(good) * keep)], namespace=NS, allowed=allowed)


def test_truncated_blob_inside_intact_armor_is_rejected(
    keys: dict[str, Path], allowed: Signers
) -> None:
    """Well-formed armor around a truncated SSHSIG blob says it is truncated."""
    blob = dearmor(sign(DATA, namespace=NS, key_path=keys["alice"]))
    with pytest.raises(NotPermitted, match="truncated"):
        verify(DATA, armor(blob[:-5]), namespace=NS, allowed=allowed)


def test_signature_by_unknown_key_is_rejected(keys: dict[str, Path], allowed: Signers) -> None:
    """A valid signature by a key missing from allowed_signers names the key's fingerprint."""
    sig = keygen_sign(keys["mallory"], DATA)
    with pytest.raises(NotPermitted, match=r"SHA256:\S+ is not in .*allowed_signers"):
        verify(DATA, sig, namespace=NS, allowed=allowed)


def test_signature_over_other_data_is_rejected(keys: dict[str, Path], allowed: Signers) -> None:
    """A genuine signature cannot be replayed for a different request."""
    sig = sign(b"oneoff run report", namespace=NS, key_path=keys["alice"])
    with pytest.raises(NotPermitted, match="bad signature"):
        verify(DATA, sig, namespace=NS, allowed=allowed)


def test_signature_for_another_namespace_is_rejected(
    keys: dict[str, Path], allowed: Signers
) -> None:
    """A signature made for git (namespace "git") is not accepted as a oneoff request."""
    sig = keygen_sign(keys["alice"], DATA, namespace="git")
    with pytest.raises(NotPermitted, match="namespace 'git', not 'oneoff'"):
        verify(DATA, sig, namespace=NS, allowed=allowed)


def test_relabelled_namespace_breaks_the_signature(keys: dict[str, Path], allowed: Signers) -> None:
    """Editing the namespace field of a git signature to "oneoff" fails: it is signed."""
    sig = keygen_sign(keys["alice"], DATA, namespace="git")
    with pytest.raises(NotPermitted, match="bad signature"):
        verify(DATA, reblob(sig, namespace=NS.encode()), namespace=NS, allowed=allowed)


def test_removed_key_no_longer_verifies(tmp_path: Path, keys: dict[str, Path]) -> None:
    """Once a person's line is deleted from allowed_signers their signatures stop verifying."""
    sig = sign(DATA, namespace=NS, key_path=keys["alice"])
    line = f"alice {pub_fields(keys['alice'])}"
    before = Signers.parse(line + f"\nbob {pub_fields(keys['bob'])}\n")
    after = Signers.parse(f"bob {pub_fields(keys['bob'])}\n")
    assert verify(DATA, sig, namespace=NS, allowed=before).name == "alice"
    with pytest.raises(NotPermitted, match="is not in"):
        verify(DATA, sig, namespace=NS, allowed=after)


def test_verify_names_the_real_signer_not_the_claimed_one(
    keys: dict[str, Path], allowed: Signers
) -> None:
    """Bob signing a request that claims to come from Alice is reported as Bob."""
    claim = b"principal=alice\naction=run\ntask=migrate\n"
    person = verify(claim, sign(claim, namespace=NS, key_path=keys["bob"]), namespace=NS,
                    allowed=allowed)  # fmt: skip
    assert person.name == "bob"
    assert person.name != "alice"


def test_wrong_magic_and_version_are_rejected(keys: dict[str, Path], allowed: Signers) -> None:
    """Only SSHSIG version 1 blobs are accepted."""
    good = sign(DATA, namespace=NS, key_path=keys["alice"])
    with pytest.raises(NotPermitted, match="bad magic"):
        verify(DATA, reblob(good, magic=b"SSHSIH"), namespace=NS, allowed=allowed)
    with pytest.raises(NotPermitted, match="version 2"):
        verify(DATA, reblob(good, version=struct.pack(">I", 2)), namespace=NS, allowed=allowed)


def test_unknown_hash_algorithm_is_rejected(keys: dict[str, Path], allowed: Signers) -> None:
    """A hash other than sha256/sha512 (e.g. sha1) is refused."""
    good = sign(DATA, namespace=NS, key_path=keys["alice"])
    with pytest.raises(NotPermitted, match="hash algorithm 'sha1'"):
        verify(DATA, reblob(good, hash=b"sha1"), namespace=NS, allowed=allowed)


def test_non_ed25519_signature_is_refused(tmp_path: Path, allowed: Signers) -> None:
    """An ECDSA signature from ssh-keygen is refused by key type, before any lookup."""
    key = keygen(tmp_path, "ec", key_type="ecdsa")
    with pytest.raises(NotPermitted, match="'ecdsa-sha2-nistp256' keys are refused"):
        verify(DATA, keygen_sign(key, DATA), namespace=NS, allowed=allowed)


def test_key_options_limit_namespace_and_validity(tmp_path: Path, keys: dict[str, Path]) -> None:
    """namespaces=, valid-after= and valid-before= are enforced at the verification time."""
    key = pub_fields(keys["alice"])
    sig = sign(DATA, namespace=NS, key_path=keys["alice"])
    git_only = Signers.parse(f'alice namespaces="git" {key}\n')
    with pytest.raises(NotPermitted, match="not allowed to sign in namespace 'oneoff'"):
        verify(DATA, sig, namespace=NS, allowed=git_only)
    window = Signers.parse(f'alice valid-after="20240101Z",valid-before="20241231Z" {key}\n')
    inside = datetime(2024, 6, 1, tzinfo=UTC)
    assert verify(DATA, sig, namespace=NS, allowed=window, now=inside).name == "alice"
    with pytest.raises(NotPermitted, match="expired"):
        verify(DATA, sig, namespace=NS, allowed=window, now=datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(NotPermitted, match="not valid before"):
        verify(DATA, sig, namespace=NS, allowed=window, now=datetime(2023, 12, 31, tzinfo=UTC))
    with pytest.raises(UsageError, match="timezone-aware"):
        verify(DATA, sig, namespace=NS, allowed=window, now=datetime(2024, 6, 1))


@pytest.mark.parametrize(
    ("armored", "message"),
    [
        ("", "does not start with"),
        ("hello", "does not start with"),
        ("-----BEGIN SSH SIGNATURE-----\nAAAA", "does not end with"),
        ("-----BEGIN SSH SIGNATURE-----\n%%%%\n-----END SSH SIGNATURE-----", "not valid base64"),
        ("-----BEGIN SSH SIGNATURE-----\n\n-----END SSH SIGNATURE-----", "empty"),
        (b"\xff\xfe", "not ASCII"),
        (
            "-----BEGIN SSH SIGNATURE-----\n" + "A" * 20000 + "\n-----END SSH SIGNATURE-----",
            "larger",
        ),
    ],
)
def test_malformed_armor_is_rejected_with_a_reason(
    armored: str | bytes, message: str, allowed: Signers
) -> None:
    """Each kind of malformed armor is refused with a message saying what is wrong."""
    with pytest.raises(NotPermitted, match=message):
        verify(DATA, armored, namespace=NS, allowed=allowed)


# --- property tests ----------------------------------------------------------------------


def _outcome(candidate: str | bytes) -> str:
    """ "decoded" or "refused"; any exception other than NotPermitted escapes and fails."""
    try:
        sig = decode(candidate)
    except NotPermitted:
        return "refused"
    return "decoded" if sig.namespace and len(sig.signature) == 64 else "inconsistent"


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_decoding_random_bytes_only_ever_raises_not_permitted(data: bytes) -> None:
    """Arbitrary input either decodes or raises NotPermitted, never anything else."""
    for candidate in (data, armor(data)):
        assert _outcome(candidate) in {"decoded", "refused"}


@settings(max_examples=300)
@given(st.text(max_size=600))
def test_decoding_random_text_only_ever_raises_not_permitted(text: str) -> None:
    """Arbitrary text, with or without armor lines around it, raises only NotPermitted."""
    for candidate in (
        text,
        f"-----BEGIN SSH SIGNATURE-----\n{text}\n-----END SSH SIGNATURE-----\n",
    ):
        assert _outcome(candidate) in {"decoded", "refused"}


def _ssh_string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _independent_blob() -> tuple[bytes, str]:
    """A valid SSHSIG blob built straight from PROTOCOL.sshsig, and its allowed_signers line."""
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    raw_public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    public = _ssh_string(b"ssh-ed25519") + _ssh_string(raw_public)
    digest = hashlib.sha512(DATA).digest()
    to_sign = b"SSHSIG" + b"".join(map(_ssh_string, [NS.encode(), b"", b"sha512", digest]))
    sig = _ssh_string(b"ssh-ed25519") + _ssh_string(key.sign(to_sign))
    fields = [public, NS.encode(), b"", b"sha512", sig]
    blob = b"SSHSIG" + struct.pack(">I", 1) + b"".join(map(_ssh_string, fields))
    return blob, f"carol ssh-ed25519 {base64.b64encode(public).decode()}"


_GOOD_BLOB, _GOOD_LINE = _independent_blob()


def test_blob_built_from_the_spec_verifies() -> None:
    """A signature assembled by hand from PROTOCOL.sshsig verifies as its signer."""
    person = verify(DATA, armor(_GOOD_BLOB), namespace=NS, allowed=Signers.parse(_GOOD_LINE))
    assert person.name == "carol"


def test_protocol_document_example_without_hash_field_is_rejected() -> None:
    """The example in PROTOCOL.sshsig predates the hash field; it is refused as malformed."""
    example = (
        "-----BEGIN SSH SIGNATURE-----\n"
        "U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgJKxoLBJBivUPNTUJUSslQTt2hD\n"
        "jozKvHarKeN8uYFqgAAAADZm9vAAAAAAAAAFMAAAALc3NoLWVkMjU1MTkAAABAKNC4IEbt\n"
        "Tq0Fb56xhtuE1/lK9H9RZJfON4o6hE9R4ZGFX98gy0+fFJ/1d2/RxnZky0Y7GojwrZkrHT\n"
        "FgCqVWAQ==\n"
        "-----END SSH SIGNATURE-----\n"
    )
    with pytest.raises(NotPermitted, match="malformed signature"):
        decode(example)


@settings(max_examples=500)
@given(st.integers(0, len(_GOOD_BLOB) - 1), st.integers(0, 255), st.integers(0, len(_GOOD_BLOB)))
def test_mutated_valid_blobs_only_ever_raise_not_permitted(
    position: int, value: int, cut: int
) -> None:
    """A real signature with one byte changed and its tail cut raises at most NotPermitted."""
    mutated = bytearray(_GOOD_BLOB)
    mutated[position] = value
    assert _outcome(armor(bytes(mutated[:cut]))) in {"decoded", "refused"}
