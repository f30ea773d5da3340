"""Release documents: canonical round trip, content ids, signatures and hostile rows."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oneoff._audit.checkpoint import generate_keypair, key_id, load_private_key
from oneoff._canonical import canonical_json
from oneoff._release.configdigest import config_digest
from oneoff._release.deps import DepsSnapshot, Distribution
from oneoff._release.document import (
    Release,
    build_document,
    code_entries,
    content_id,
    release_from_record,
    sign_release,
    verify_signature,
)
from oneoff._release.settings import EnvReleaseSettings, TrustedKey
from oneoff._release.tree import Entry, TreeSnapshot
from oneoff._store.interface import ReleaseRecord
from oneoff._store.sqlite import SQLiteStore
from oneoff.errors import ReleaseError, UsageError

HMAC_KEY = b"k" * 32
names = st.text(st.characters(codec="utf-8", exclude_characters="\x00=/"), min_size=1, max_size=8)


CODE = TreeSnapshot.build([Entry("a.py", "file", 0o644, 1, "0" * 64)])


def document(**over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "app": "notes",
        "environment": "staging",
        "version": 3,
        "code": CODE,
        "deps": DepsSnapshot.build(
            "cpython", "3.11.9", {"flask": Distribution("flask", "3.1", None, False)}
        ),
        "config": config_digest({"SECRET_KEY": "x" * 20, "DEBUG": "0"}, {"SECRET_KEY"}, HMAC_KEY),
        "manifest": "ab" * 32,
        "git_commit": None,
        "created_by": "os:alice",
        "created_at": "2026-01-01T00:00:00.000Z",
        "promoted_from": None,
    }
    fields.update(over)
    return build_document(**fields)


def record(
    doc: dict[str, Any], *, signature: bytes | None = None, kid: str | None = None
) -> ReleaseRecord:
    raw = canonical_json(doc)
    return ReleaseRecord(
        content_id(raw), doc["environment"], doc["version"], raw.decode(), signature, kid,
        doc["created_at"], doc["created_by"], code_entries(CODE),
    )  # fmt: skip


def parse(rec: ReleaseRecord) -> Release:
    return release_from_record(rec, lambda: rec.code_entries)


@given(
    version=st.integers(1, 2**31),
    app=names,
    user=names,
    config=st.dictionaries(names, st.text(max_size=20), max_size=4),
)
@settings(max_examples=50)
def test_document_round_trips_through_a_stored_row(
    version: int, app: str, user: str, config: dict[str, str]
) -> None:
    """Any well-formed document parses back to the same release with the same id."""
    doc = document(
        version=version, app=app, created_by=user, config=config_digest(config, (), HMAC_KEY)
    )
    rec = record(doc)
    release = parse(rec)
    assert release.id == rec.id
    assert (release.app, release.version, release.created_by) == (app, version, user)
    assert set(release.config.values) == set(config)
    assert release.document == doc
    assert release.code == CODE


def test_code_entries_that_do_not_match_the_signed_digest_are_refused() -> None:
    """Edited per-file entries stored beside the document fail against its Merkle digest."""
    rec = record(document())
    other = TreeSnapshot.build([Entry("a.py", "file", 0o644, 1, "1" * 64)])
    release = release_from_record(rec, lambda: code_entries(other))
    assert release.code_digest == CODE.digest
    with pytest.raises(ReleaseError, match="do not match its signed digest"):
        _ = release.code


FIELD_CHANGES: dict[str, Any] = {
    "app": "other",
    "environment": "production",
    "version": 4,
    "code": TreeSnapshot.build([Entry("a.py", "file", 0o755, 1, "0" * 64)]),
    "deps": DepsSnapshot.build("cpython", "3.11.10", {}),
    "config": config_digest({"SECRET_KEY": "y" * 20}, {"SECRET_KEY"}, HMAC_KEY),
    "manifest": "cd" * 32,
    "git_commit": "f" * 40,
    "created_by": "os:bob",
    "created_at": "2026-01-01T00:00:00.001Z",
    "promoted_from": "rel_" + "1" * 64,
}


@given(st.sampled_from(sorted(FIELD_CHANGES)))
def test_any_field_change_makes_another_release(field: str) -> None:
    """Changing any one field of a document gives a different content id."""
    base = record(document())
    changed = record(document(**{field: FIELD_CHANGES[field]}))
    assert changed.id != base.id


@given(st.sampled_from(sorted(FIELD_CHANGES)))
def test_a_row_edited_under_its_old_id_is_refused(field: str) -> None:
    """A document edited in place (id kept) is refused as tampered."""
    base = record(document())
    edited = record(document(**{field: FIELD_CHANGES[field]}))
    forged = ReleaseRecord(**{**base.__dict__, "document": edited.document})
    with pytest.raises(ReleaseError, match="does not match its id"):
        parse(forged)


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_never_crash_the_parser(junk: bytes) -> None:
    """Garbage stored under its own id is a clear ReleaseError, never another exception."""
    text = junk.decode("utf-8", "surrogateescape")
    rid = content_id(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ReleaseError):
        parse(ReleaseRecord(rid, "e", 1, text, None, None, "t", "u"))


def test_row_columns_must_agree_with_the_document() -> None:
    """A row moved to another environment or version than its document says is refused."""
    rec = record(document())
    moved = ReleaseRecord(**{**rec.__dict__, "environment": "production"})
    with pytest.raises(ReleaseError, match="disagree"):
        parse(moved)


@pytest.fixture
def signer(tmp_path: Path) -> tuple[Any, EnvReleaseSettings]:
    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    key = load_private_key(tmp_path / "k")
    trusted = TrustedKey("k.pub", (tmp_path / "k.pub").read_bytes())
    return key, EnvReleaseSettings(require_signed=True, trusted_keys=(trusted,))


def test_signature_verifies_and_a_flipped_bit_does_not(
    signer: tuple[Any, EnvReleaseSettings],
) -> None:
    """A real Ed25519 signature verifies; any change to it is reported as forged."""
    key, env_settings = signer
    rec = record(document())
    sig = sign_release(rec.id, key)
    kid = key_id(key.public_key())
    signed = parse(ReleaseRecord(**{**rec.__dict__, "signature": sig, "key_id": kid}))
    assert verify_signature(signed, env_settings, "staging") == kid
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    forged = parse(ReleaseRecord(**{**rec.__dict__, "signature": bad, "key_id": kid}))
    with pytest.raises(ReleaseError, match="does not verify"):
        verify_signature(forged, env_settings, "staging")
    with pytest.raises(ReleaseError, match="unsigned"):
        verify_signature(parse(rec), env_settings, "staging")


def test_store_resolves_ids_by_unique_prefix(tmp_path: Path) -> None:
    """Releases are found by full id or unique prefix; an unknown or malformed ref is refused."""
    store = SQLiteStore(tmp_path / "state.db")
    recs = [record(document(version=v)) for v in (1, 2)]
    with store.tx():
        for rec in recs:
            store.add_release(rec)
        store.set_current_release("staging", recs[1].id, updated_at="t")
    assert store.get_release(recs[0].id).document == recs[0].document
    assert store.get_release(recs[0].id[4:14]).id == recs[0].id
    assert store.release_code_entries(recs[0].id) == recs[0].code_entries
    assert store.current_release_id("staging") == recs[1].id
    assert [r.version for r in store.list_releases("staging")] == [2, 1]
    assert store.next_release_version("staging") == 3
    with pytest.raises(UsageError, match="no release"):
        store.get_release("rel_" + hashlib.sha256(b"x").hexdigest())
    with pytest.raises(UsageError, match="invalid release id"):
        store.get_release("rel_%")
    store.close()
