"""Signed checkpoints, proof documents and key files in oneoff._audit.checkpoint."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from oneoff import _record as dataclasses
from oneoff._audit import merkle
from oneoff._audit.checkpoint import (
    Checkpoint,
    ConsistencyProofDoc,
    InclusionProofDoc,
    generate_keypair,
    key_id,
    load_private_key,
    load_proof_doc,
    load_public_key,
    sign_checkpoint,
    verify_checkpoint,
    verify_proof_doc,
)
from oneoff.errors import AuditError, ConfigError

# Fixed seeds keep the tests deterministic; Ed25519 signing is deterministic too.
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
PUB = KEY.public_key()
TS = 1_790_000_000
ROOT = merkle.leaf_hash(b"root")


def events(n: int, tag: bytes = b"") -> list[bytes]:
    return [b"event-%d" % i + tag for i in range(n)]


def leaves_of(data: list[bytes]) -> list[bytes]:
    return [merkle.leaf_hash(d) for d in data]


def flip(data: bytes, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- checkpoints ----------------------------------------------------------------------


def test_signed_payload_is_the_documented_text_form() -> None:
    """The signature covers header, size, base64 root and timestamp, one per line."""
    cp = sign_checkpoint(7, ROOT, TS, KEY)
    expected = f"oneoff-audit-checkpoint/v1\n7\n{base64.b64encode(ROOT).decode()}\n{TS}\n"
    assert cp.signed_payload() == expected.encode()
    PUB.verify(cp.signature, cp.signed_payload())


def test_key_id_is_the_truncated_sha256_of_the_raw_public_key() -> None:
    """key_id is the first 16 bytes of SHA-256(raw public key), as 32 hex digits."""
    import hashlib

    raw = PUB.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(PUB) == hashlib.sha256(raw).hexdigest()[:32]
    assert sign_checkpoint(0, merkle.EMPTY_ROOT, TS, KEY).key_id == key_id(PUB)


def test_sign_then_verify_roundtrip() -> None:
    """A freshly signed checkpoint verifies under its own public key."""
    cp = sign_checkpoint(3, ROOT, TS, KEY)
    assert (cp.size, cp.root, cp.timestamp) == (3, ROOT, TS)
    verify_checkpoint(cp, PUB)


def test_forged_signature_is_rejected() -> None:
    """A signature with one flipped bit fails verification."""
    cp = sign_checkpoint(3, ROOT, TS, KEY)
    with pytest.raises(AuditError, match="signature does not verify"):
        verify_checkpoint(dataclasses.replace(cp, signature=flip(cp.signature, 9)), PUB)


def test_wrong_key_is_rejected_by_key_id() -> None:
    """Verifying with another key fails and names both key ids."""
    cp = sign_checkpoint(3, ROOT, TS, KEY)
    with pytest.raises(AuditError, match=key_id(OTHER.public_key())):
        verify_checkpoint(cp, OTHER.public_key())


def test_signature_from_another_key_under_our_key_id_is_rejected() -> None:
    """Relabelling another key's checkpoint with our key id still fails the signature."""
    forged = dataclasses.replace(sign_checkpoint(3, ROOT, TS, OTHER), key_id=key_id(PUB))
    with pytest.raises(AuditError, match="signature does not verify"):
        verify_checkpoint(forged, PUB)


def test_truncated_signature_is_rejected() -> None:
    """A 63-byte signature cannot form a Checkpoint, directly or from JSON."""
    cp = sign_checkpoint(3, ROOT, TS, KEY)
    with pytest.raises(AuditError, match="64 bytes"):
        dataclasses.replace(cp, signature=cp.signature[:-1])
    obj = cp.to_dict()
    obj["signature"] = base64.b64encode(cp.signature[:-1]).decode()
    with pytest.raises(AuditError, match="64 bytes"):
        Checkpoint.from_json(json.dumps(obj))


@pytest.mark.parametrize(
    "change",
    [
        {"size": 4},
        {"size": 2},
        {"root": flip(ROOT)},
        {"root": merkle.EMPTY_ROOT},
        {"timestamp": TS + 1},
    ],
)
def test_edited_checkpoint_fields_are_rejected(change: dict[str, Any]) -> None:
    """Changing size, root or timestamp after signing breaks the signature."""
    cp = sign_checkpoint(3, ROOT, TS, KEY)
    with pytest.raises(AuditError, match="signature does not verify"):
        verify_checkpoint(dataclasses.replace(cp, **change), PUB)


def test_non_ed25519_verification_key_is_rejected() -> None:
    """Passing a key of another algorithm raises AuditError instead of crashing."""
    cp = sign_checkpoint(3, ROOT, TS, KEY)
    ec_pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(AuditError, match="not an Ed25519"):
        verify_checkpoint(cp, ec_pub)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "root", "ts"),
    [(-1, ROOT, TS), (2**63, ROOT, TS), (1, ROOT[:31], TS), (1, ROOT, -5), (True, ROOT, TS)],
)
def test_signing_rejects_out_of_range_fields(size: Any, root: Any, ts: Any) -> None:
    """Negative or oversized sizes and timestamps, short roots and bools are refused."""
    with pytest.raises(AuditError):
        sign_checkpoint(size, root, ts, KEY)


@settings(deadline=None)
@given(
    size=st.integers(0, 2**63 - 1),
    root=st.binary(min_size=32, max_size=32),
    ts=st.integers(0, 253_402_300_799),
)
def test_checkpoint_json_roundtrip(size: int, root: bytes, ts: int) -> None:
    """to_json then from_json gives back an equal checkpoint that still verifies."""
    cp = sign_checkpoint(size, root, ts, KEY)
    again = Checkpoint.from_json(cp.to_json())
    assert again == cp
    assert Checkpoint.from_json(cp.to_json().encode()) == cp
    verify_checkpoint(again, PUB)


def _cp_json(**edits: Any) -> str:
    obj: dict[str, Any] = sign_checkpoint(3, ROOT, TS, KEY).to_dict()
    for k, v in edits.items():
        if v is _DROP:
            del obj[k]
        else:
            obj[k] = v
    return json.dumps(obj)


_DROP = object()


STRICT_CASES = [
    (_cp_json(size=_DROP), "missing size"),
    (_cp_json(extra=1), "unknown 'extra'"),
    (_cp_json(size=True), "size must be an integer"),
    (_cp_json(size=3.0), "size must be an integer"),
    (_cp_json(size="3"), "size must be an integer"),
    (_cp_json(size=-3), "size must be an integer"),
    (_cp_json(timestamp="2026-01-01T00:00:00Z"), "timestamp must be an integer"),
    (_cp_json(root=base64.b64encode(ROOT[:31]).decode()), "root must be 32 bytes"),
    (_cp_json(root=ROOT.hex()), "root must be 32 bytes, not 48"),
    (_cp_json(root=base64.urlsafe_b64encode(b"\xff" * 32).decode()), "base64"),
    (_cp_json(key_id="ABCDEF" * 5 + "AB"), "key_id"),
    (_cp_json(key_id="ab"), "key_id"),
    ('{"size": 1, "size": 2}', "duplicate JSON key"),
    ("[]", "must be a JSON object"),
    ("{", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (_cp_json(size=float("nan")), "NaN"),
    ('{"size": ' + "9" * 5000 + "}", "out of range"),
    (_cp_json().replace('"size": 3', '"size": 3e0'), "size must be an integer"),
]


@pytest.mark.parametrize(
    ("text", "message"), STRICT_CASES, ids=[f"{i}-{m}" for i, (_, m) in enumerate(STRICT_CASES)]
)
def test_checkpoint_json_parsing_is_strict(text: str | bytes, message: str) -> None:
    """Missing, unknown, duplicated or mistyped fields and bad encodings raise AuditError."""
    with pytest.raises(AuditError, match=message):
        Checkpoint.from_json(text)


def test_non_canonical_base64_is_rejected() -> None:
    """A root whose base64 has non-zero padding bits (a second spelling) is refused."""
    good = base64.b64encode(ROOT).decode()
    # The last character before "=" carries 2 unused bits; setting one keeps the bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(good[-2]) ^ 1]
    bad = good[:-2] + last + "="
    assert base64.b64decode(bad) == ROOT
    with pytest.raises(AuditError, match="canonical"):
        Checkpoint.from_json(_cp_json(root=bad))


# --- proof documents ------------------------------------------------------------------


def make_inclusion_doc(n: int, index: int) -> tuple[InclusionProofDoc, list[bytes]]:
    data = events(n)
    leaves = leaves_of(data)
    cp = sign_checkpoint(n, merkle.root(leaves), TS, KEY)
    doc = InclusionProofDoc(
        leaf_hash=leaves[index],
        index=index,
        checkpoint=cp,
        path=tuple(merkle.inclusion_proof(index, leaves)),
    )
    return doc, data


def make_consistency_doc(m: int, n: int) -> ConsistencyProofDoc:
    leaves = leaves_of(events(n))
    old = sign_checkpoint(m, merkle.root(leaves[:m]), TS, KEY)
    new = sign_checkpoint(n, merkle.root(leaves), TS + 60, KEY)
    return ConsistencyProofDoc(old, new, tuple(merkle.consistency_proof(m, leaves)))


def test_inclusion_doc_verifies_and_summarises() -> None:
    """An honest inclusion document verifies, with the event bytes, to a one-line OK."""
    doc, data = make_inclusion_doc(10, 6)
    summary = verify_proof_doc(doc, PUB, leaf_data=data[6])
    assert summary.startswith("OK: event 7 (leaf index 6,")
    assert "10 events" in summary
    assert "\n" not in summary


def test_inclusion_doc_rejects_wrong_event_bytes() -> None:
    """Event bytes that do not hash to the document's leaf hash are reported."""
    doc, data = make_inclusion_doc(10, 6)
    with pytest.raises(AuditError, match="does not hash"):
        verify_proof_doc(doc, PUB, leaf_data=data[5])


@pytest.mark.parametrize(
    ("field", "message"),
    [("path", "inclusion proof failed"), ("leaf_hash", "inclusion proof failed")],
)
def test_inclusion_doc_with_tampered_proof_is_rejected(field: str, message: str) -> None:
    """A flipped bit in the path or the leaf hash fails the Merkle check."""
    doc, _ = make_inclusion_doc(10, 6)
    if field == "path":
        bad = dataclasses.replace(doc, path=(flip(doc.path[0]), *doc.path[1:]))
    else:
        bad = dataclasses.replace(doc, leaf_hash=flip(doc.leaf_hash))
    with pytest.raises(AuditError, match=message):
        verify_proof_doc(bad, PUB)


def test_inclusion_doc_index_beyond_size_is_rejected() -> None:
    """An index at or past the checkpoint size is named as the failure."""
    doc, _ = make_inclusion_doc(10, 6)
    with pytest.raises(AuditError, match="beyond"):
        verify_proof_doc(dataclasses.replace(doc, index=10), PUB)


def test_inclusion_doc_with_foreign_checkpoint_is_rejected() -> None:
    """A document whose checkpoint another key signed fails on the key id."""
    doc, _ = make_inclusion_doc(10, 6)
    with pytest.raises(AuditError, match="names signing key"):
        verify_proof_doc(doc, OTHER.public_key())


def test_consistency_doc_verifies_and_summarises() -> None:
    """An honest consistency document verifies to a one-line OK naming both sizes."""
    summary = verify_proof_doc(make_consistency_doc(5, 12), PUB)
    assert summary.startswith("OK: the audit log of 12 entries")
    assert "log of 5 entries" in summary


def test_rewritten_log_fails_the_consistency_doc() -> None:
    """A re-signed checkpoint over a log with an edited old entry is caught."""
    honest = events(12)
    forged = list(honest)
    forged[2] = b"event-2 but different"
    old = sign_checkpoint(5, merkle.root(leaves_of(honest[:5])), TS, KEY)
    forged_leaves = leaves_of(forged)
    new = sign_checkpoint(12, merkle.root(forged_leaves), TS + 60, KEY)
    doc = ConsistencyProofDoc(old, new, tuple(merkle.consistency_proof(5, forged_leaves)))
    with pytest.raises(AuditError, match="consistency proof failed"):
        verify_proof_doc(doc, PUB)


def test_shrunken_log_fails_the_consistency_doc() -> None:
    """A new checkpoint smaller than the old one is reported as a shrinking log."""
    doc = make_consistency_doc(5, 12)
    with pytest.raises(AuditError, match="shrank"):
        verify_proof_doc(ConsistencyProofDoc(doc.new, doc.old, ()), PUB)


def test_consistency_doc_names_the_checkpoint_with_a_bad_signature() -> None:
    """A forged signature on either checkpoint is reported as old or new."""
    doc = make_consistency_doc(5, 12)
    bad_old = dataclasses.replace(doc.old, signature=flip(doc.old.signature))
    bad_new = dataclasses.replace(doc.new, signature=flip(doc.new.signature))
    with pytest.raises(AuditError, match="old checkpoint signature"):
        verify_proof_doc(dataclasses.replace(doc, old=bad_old), PUB)
    with pytest.raises(AuditError, match="new checkpoint signature"):
        verify_proof_doc(dataclasses.replace(doc, new=bad_new), PUB)


@settings(deadline=None)
@given(n=st.integers(1, 40), data=st.data())
def test_proof_documents_roundtrip_through_json(n: int, data: st.DataObject) -> None:
    """Both document kinds survive to_json and load_proof_doc unchanged and still verify."""
    i = data.draw(st.integers(0, n - 1))
    m = data.draw(st.integers(0, n))
    inc, _ = make_inclusion_doc(n, i)
    con = make_consistency_doc(m, n)
    for doc in (inc, con):
        again = load_proof_doc(doc.to_json())
        assert again == doc
        assert type(doc).from_json(doc.to_json()) == doc
        assert verify_proof_doc(again, PUB).startswith("OK: ")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"type": "something-else"}, "not a oneoff audit proof"),
        ({"path": "AAAA"}, "must be a JSON array"),
        ({"path": ["AAAA"]}, r"path\[0\] must be 32 bytes"),
        ({"path": [base64.b64encode(ROOT).decode()] * 65}, "more than 64"),
        ({"index": -1}, "index must be an integer"),
        ({"extra": 0}, "unknown 'extra'"),
        ({"checkpoint": {}}, "missing"),
    ],
)
def test_proof_document_parsing_is_strict(edit: dict[str, Any], message: str) -> None:
    """Wrong types, lengths, extra fields and unknown document types raise AuditError."""
    doc, _ = make_inclusion_doc(10, 6)
    obj = doc.to_dict()
    obj.update(edit)
    with pytest.raises(AuditError, match=message):
        load_proof_doc(json.dumps(obj))


def test_consistency_document_names_which_checkpoint_is_malformed() -> None:
    """A broken nested checkpoint is reported as old_checkpoint or new_checkpoint."""
    obj = make_consistency_doc(3, 9).to_dict()
    del obj["new_checkpoint"]["root"]
    with pytest.raises(AuditError, match="new_checkpoint: missing root"):
        load_proof_doc(json.dumps(obj))


# --- keys -----------------------------------------------------------------------------


def test_generate_keypair_writes_private_key_0600_and_loads_back(tmp_path: Path) -> None:
    """The private key file gets mode 0600 and both files load as the same key pair."""
    priv, pub = tmp_path / "audit.key", tmp_path / "audit.pub"
    kid = generate_keypair(priv, pub)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    private_key, public_key = load_private_key(priv), load_public_key(pub)
    assert key_id(public_key) == kid == key_id(private_key.public_key())
    verify_checkpoint(sign_checkpoint(1, ROOT, TS, private_key), public_key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.key", "audit.pub"]


def test_generate_keypair_refuses_to_overwrite(tmp_path: Path) -> None:
    """Existing key files are left untouched and no partial key pair is left behind."""
    priv, pub = tmp_path / "audit.key", tmp_path / "audit.pub"
    pub.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keypair(priv, pub)
    assert pub.read_bytes() == b"keep me"
    assert not priv.exists()
    priv.write_bytes(b"keep me too")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keypair(priv, tmp_path / "new.pub")
    assert priv.read_bytes() == b"keep me too"
    assert not (tmp_path / "new.pub").exists()


def test_keys_load_from_raw_32_byte_forms(tmp_path: Path) -> None:
    """Raw 32-byte private and public keys load from files, and public ones from bytes."""
    raw_priv = KEY.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    raw_pub = PUB.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    (tmp_path / "k").write_bytes(raw_priv)
    (tmp_path / "p").write_bytes(raw_pub)
    assert key_id(load_private_key(tmp_path / "k").public_key()) == key_id(PUB)
    assert key_id(load_public_key(str(tmp_path / "p"))) == key_id(PUB)
    assert key_id(load_public_key(raw_pub)) == key_id(PUB)
    pem = PUB.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_id(load_public_key(pem)) == key_id(PUB)
    assert key_id(load_public_key(pem.decode())) == key_id(PUB)


def test_key_loading_rejects_wrong_material(tmp_path: Path) -> None:
    """Missing files, other algorithms, private-for-public and odd lengths raise ConfigError."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_private_key(tmp_path / "missing")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "ec").write_bytes(ec_pem)
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_private_key(tmp_path / "ec")
    ec_pub = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_public_key(ec_pub)
    priv_pem = KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigError, match="is a private key"):
        load_public_key(priv_pem)
    with pytest.raises(ConfigError, match="33 bytes"):
        load_public_key(b"\x01" * 33)
    (tmp_path / "garbage").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n")
    with pytest.raises(ConfigError, match="not a usable PEM"):
        load_private_key(tmp_path / "garbage")


def test_encrypted_private_key_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    """A password-protected PEM raises ConfigError rather than prompting or crashing."""
    pem = KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (tmp_path / "enc").write_bytes(pem)
    with pytest.raises(ConfigError, match="not a usable PEM"):
        load_private_key(tmp_path / "enc")
    assert os.path.exists(tmp_path / "enc")
