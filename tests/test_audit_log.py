"""The audit log over a real SQLite store: every tampering with a stored event is caught."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oneoff._audit.keys import AuditKey
from oneoff._audit.log import AuditLog, chain_hash
from oneoff._audit.verify import verify_log
from oneoff._store.sqlite import SQLiteStore
from oneoff.errors import AuditError

TEXT = st.text(st.characters(max_codepoint=0x2FFF, exclude_categories=["Cs"]), max_size=12)
PAYLOADS = st.dictionaries(st.text(max_size=6), st.one_of(TEXT, st.integers(-999, 999)), max_size=3)
EVENTS = st.lists(st.tuples(st.sampled_from(["run.started", "run.finished", "x"]), PAYLOADS),
                  min_size=2, max_size=10)  # fmt: skip


@contextmanager
def audit_log(events: list[tuple[str, dict[str, object]]]) -> Iterator[AuditLog]:
    """A fresh store holding ``events``, checkpointed after the 2nd event and at the end."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "state.db")
        log = AuditLog(store, AuditKey(Path(tmp)))
        for i, (kind, payload) in enumerate(events, 1):
            log.append(kind, actor="os:alice", task="t\n", run_id=f"r{i}", payload=payload)
            if i == 2:
                log.checkpoint()
        log.checkpoint()
        try:
            yield log
        finally:
            store.close()


def first_bad(log: AuditLog) -> str:
    assert log.key is not None
    with pytest.raises(AuditError) as caught:
        verify_log(log.store, log.key.public())
    return caught.value.message


def row(db: sqlite3.Connection, seq: int) -> tuple[bytes, bytes, bytes]:
    got = db.execute("SELECT prev_hash, body, hash FROM audit_events WHERE seq = ?", (seq,))
    prev, body, digest = got.fetchone()
    return prev, body, digest


@settings(max_examples=60, deadline=None)
@given(EVENTS, st.data())
def test_flipping_any_byte_of_any_event_is_caught(
    events: list[tuple[str, dict[str, object]]], data: st.DataObject
) -> None:
    """Flipping any bit of any stored column of any event makes verify name that event."""
    with audit_log(events) as log:
        db = log.store.db
        seq = data.draw(st.integers(1, len(events)))
        index = data.draw(st.integers(0, 2))
        column = ("prev_hash", "body", "hash")[index]
        value = bytearray(row(db, seq)[index])
        at = data.draw(st.integers(0, len(value) - 1))
        value[at] ^= 1 << data.draw(st.integers(0, 7))
        db.execute(f"UPDATE audit_events SET {column} = ? WHERE seq = ?", (bytes(value), seq))
        assert first_bad(log).startswith(f"audit event {seq} ")


@settings(max_examples=40, deadline=None)
@given(EVENTS, st.data())
def test_deleting_any_event_is_caught(
    events: list[tuple[str, dict[str, object]]], data: st.DataObject
) -> None:
    """Deleting any event, the newest included, makes verify name it as missing."""
    with audit_log(events) as log:
        seq = data.draw(st.integers(1, len(events)))
        log.store.db.execute("DELETE FROM audit_events WHERE seq = ?", (seq,))
        message = first_bad(log)
        assert message.startswith(f"audit event {seq} is missing"), message


@settings(max_examples=40, deadline=None)
@given(EVENTS, st.data())
def test_inserting_a_well_chained_event_is_caught(
    events: list[tuple[str, dict[str, object]]], data: st.DataObject
) -> None:
    """An event forged into the middle, correctly chained to its predecessor, is caught."""
    with audit_log(events) as log:
        db = log.store.db
        at = data.draw(st.integers(1, len(events)))
        db.execute("UPDATE audit_events SET seq = -seq WHERE seq >= ?", (at,))
        db.execute("UPDATE audit_events SET seq = 1 - seq WHERE seq < 0")
        prev = row(db, at - 1)[2] if at > 1 else b"\x00" * 32
        body = b'{"forged":true}'
        db.execute(
            "INSERT INTO audit_events (seq, prev_hash, body, hash) VALUES (?, ?, ?, ?)",
            (at, prev, body, chain_hash(prev, body)),
        )
        assert first_bad(log).startswith(f"audit event {at + 1} ")


@settings(max_examples=40, deadline=None)
@given(EVENTS, st.data())
def test_swapping_two_events_is_caught(
    events: list[tuple[str, dict[str, object]]], data: st.DataObject
) -> None:
    """Reordering two events (their contents swapped) makes verify name the earlier one."""
    with audit_log(events) as log:
        db = log.store.db
        i = data.draw(st.integers(1, len(events) - 1))
        j = data.draw(st.integers(i + 1, len(events)))
        a, b = row(db, i), row(db, j)
        for seq, values in ((i, b), (j, a)):
            db.execute(
                "UPDATE audit_events SET prev_hash = ?, body = ?, hash = ? WHERE seq = ?",
                (*values, seq),
            )
        assert first_bad(log).startswith(f"audit event {i} ")


@settings(max_examples=30, deadline=None)
@given(EVENTS, st.data())
def test_renumbering_an_event_is_caught(
    events: list[tuple[str, dict[str, object]]], data: st.DataObject
) -> None:
    """Changing an event's number leaves a gap that verify names."""
    with audit_log(events) as log:
        seq = data.draw(st.integers(1, len(events)))
        log.store.db.execute("UPDATE audit_events SET seq = 1000 WHERE seq = ?", (seq,))
        assert first_bad(log).startswith(f"audit event {seq} ")


def test_a_rewritten_and_rechained_history_fails_its_checkpoint() -> None:
    """Rewriting an event and re-chaining everything after it still fails the signed root."""
    with audit_log([("a", {}), ("b", {}), ("c", {})]) as log:
        db = log.store.db
        prev = b"\x00" * 32
        for seq in (1, 2, 3):
            _, body, _ = row(db, seq)
            if seq == 1:
                body = body.replace(b'"a"', b'"z"')
            digest = chain_hash(prev, body)
            db.execute(
                "UPDATE audit_events SET prev_hash = ?, body = ?, hash = ? WHERE seq = ?",
                (prev, body, digest, seq),
            )
            prev = digest
        assert "checkpoint 2 does not match the log" in first_bad(log)


CHECKPOINT_TAMPERING = [
    "UPDATE audit_checkpoints SET root = zeroblob(32) WHERE size = 2",
    "UPDATE audit_checkpoints SET signature = zeroblob(64)",
    "UPDATE audit_checkpoints SET timestamp = timestamp + 1",
    "UPDATE audit_checkpoints SET size = 1 WHERE size = 2",
    "UPDATE audit_checkpoints SET key_id = 'x'",
    "UPDATE audit_checkpoints SET frontier = zeroblob(length(frontier))",
    "UPDATE audit_checkpoints SET frontier = x'00'",
    "UPDATE audit_checkpoints SET root = 'text'",
]

# Each field of the wrong type or range, in an older row.
MALFORMED_CHECKPOINTS = [
    "UPDATE audit_checkpoints SET timestamp = 'soon' WHERE size = 2",
    "UPDATE audit_checkpoints SET timestamp = -1 WHERE size = 2",
    "UPDATE audit_checkpoints SET timestamp = 253402300800 WHERE size = 2",
    "UPDATE audit_checkpoints SET size = -2 WHERE size = 2",
    "UPDATE audit_checkpoints SET signature = zeroblob(63) WHERE size = 2",
    "UPDATE audit_checkpoints SET signature = 'sig' WHERE size = 2",
    "UPDATE audit_checkpoints SET root = zeroblob(31) WHERE size = 2",
    "UPDATE audit_checkpoints SET key_id = CAST(key_id AS BLOB) WHERE size = 2",
    "UPDATE audit_checkpoints SET key_id = upper(key_id) WHERE size = 2",
    "UPDATE audit_checkpoints SET frontier = 'text' WHERE size = 2",
    "UPDATE audit_checkpoints SET frontier = CAST(frontier || frontier AS BLOB) WHERE size = 2",
]


@pytest.mark.parametrize("sql", CHECKPOINT_TAMPERING)
def test_tampered_checkpoints_are_caught(sql: str) -> None:
    """A checkpoint row altered in any field, or badly signed, fails verification."""
    with audit_log([("a", {}), ("b", {}), ("c", {})]) as log:
        log.store.db.execute(sql)
        assert "checkpoint" in first_bad(log)


@pytest.mark.parametrize("sql", MALFORMED_CHECKPOINTS)
def test_malformed_checkpoint_rows_are_caught_unsampled(
    sql: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older checkpoint row with a field of the wrong type, size or range fails
    verification even when its signature is not among those checked."""
    import oneoff._audit.verify as verify

    monkeypatch.setattr(verify, "SIGNATURE_SAMPLE", 0)
    with audit_log([("a", {}), ("b", {}), ("c", {})]) as log:
        log.store.db.execute(sql)
        assert "checkpoint" in first_bad(log)


def test_a_checkpoint_by_another_key_is_refused(tmp_path: Path) -> None:
    """Verifying with a different public key than the signer's fails, naming both keys."""
    from oneoff._audit.checkpoint import generate_keypair, load_public_key

    generate_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    with audit_log([("a", {}), ("b", {})]) as log, pytest.raises(AuditError, match="names signing"):
        verify_log(log.store, load_public_key(tmp_path / "other.pub"))


def test_checkpoints_refuse_to_sign_over_a_broken_chain() -> None:
    """A new checkpoint is refused when events since the last one do not chain."""
    with audit_log([("a", {}), ("b", {})]) as log:
        log.append("c", actor="x")
        log.store.db.execute("UPDATE audit_events SET body = x'00' WHERE seq = 3")
        with pytest.raises(AuditError, match="event 3 does not chain"):
            log.checkpoint()


def test_uncovered_events_are_counted_and_text_bodies_are_malformed() -> None:
    """Events after the newest checkpoint are reported; a body stored as text is malformed."""
    with audit_log([("a", {}), ("b", {})]) as log:
        log.append("c", actor="x")
        assert log.key is not None
        report = verify_log(log.store, log.key.public())
        assert (report.events, report.checkpointed, report.uncovered) == (3, 2, 1)
        log.store.db.execute("UPDATE audit_events SET body = CAST(body AS TEXT) WHERE seq = 3")
        assert first_bad(log) == "audit event 3 is malformed (a column has the wrong type)"


def test_a_fault_deep_in_a_later_page_names_its_event() -> None:
    """Verify reads the chain a page of rows at a time: a hash stored as text, or a modified
    body, several pages in is reported with its own event number, and nothing before it."""
    with audit_log([("e", {"i": i}) for i in range(700)]) as log:
        log.store.db.execute("UPDATE audit_events SET hash = hex(hash) WHERE seq = 517")
        assert first_bad(log) == "audit event 517 is malformed (a column has the wrong type)"
        log.store.db.execute(  # put the right hash back: the next event's prev_hash
            "UPDATE audit_events SET hash = (SELECT prev_hash FROM audit_events WHERE seq = 518)"
            " WHERE seq = 517"
        )
        assert verify_log(log.store, log.key.public()).events == 700  # type: ignore[union-attr]
        log.store.db.execute(
            "UPDATE audit_events SET body = CAST(body || ' ' AS BLOB) WHERE seq = 300"
        )
        assert first_bad(log) == "audit event 300 does not match its hash (modified)"


def test_events_decode_from_their_verified_bodies() -> None:
    """Filtering columns are computed from the body; events read back exactly as appended."""
    with audit_log([("run.started", {"k": "v\x1b"})]) as log:
        (event,) = log.events(run_id="r1")
        assert (event.kind, event.task, dict(event.payload)) == (
            "run.started",
            "t\n",
            {"k": "v\x1b"},
        )
        assert event.hash == hashlib.sha256(b"\x00" + event.prev_hash + event.body).digest()
        kind = log.store.db.execute("SELECT kind FROM audit_events WHERE seq = 1").fetchone()
        assert kind == ("run.started",)


APPENDER = """
import sys
from pathlib import Path
from oneoff._audit.keys import AuditKey
from oneoff._audit.log import AuditLog
from oneoff._store.sqlite import SQLiteStore
root = Path(sys.argv[1])
log = AuditLog(SQLiteStore(root / "state.db"), AuditKey(root))
for i in range(40):
    log.append("test.append", actor=sys.argv[2], payload={"i": i})
    if i % 10 == 9:
        log.checkpoint()
"""


def test_concurrent_appenders_never_fork_the_chain(tmp_path: Path) -> None:
    """Four processes appending and checkpointing at once leave one intact chain."""
    SQLiteStore(tmp_path / "state.db").close()
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(tmp_path), f"p{n}"]) for n in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    store = SQLiteStore(tmp_path / "state.db")
    report = verify_log(store, AuditKey(tmp_path).public())
    assert (report.events, report.checkpointed) == (160, 160)
    actors = [e.actor for e in AuditLog(store).events()]
    assert sorted(set(actors)) == ["p0", "p1", "p2", "p3"]


def test_default_verify_checks_every_tree_state_and_the_newest_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """By default only the newest checkpoint's signature and root (and a sample's) are
    checked; every checkpoint's tree state is still checked against the events."""
    import oneoff._audit.verify as verify

    monkeypatch.setattr(verify, "SIGNATURE_SAMPLE", 0)
    with audit_log([("a", {}), ("b", {}), ("c", {})]) as log:
        assert log.key is not None
        public = log.key.public()
        assert verify_log(log.store, public).signatures == 1
        assert verify_log(log.store, public, all_signatures=True).signatures == 2
        # A forged old row that keeps the true root: the events are still proven by the
        # newest signature; only --all-signatures sees the forgery.
        log.store.db.execute("UPDATE audit_checkpoints SET signature = zeroblob(64) WHERE size = 2")
        assert verify_log(log.store, public).events == 3
        with pytest.raises(AuditError, match="checkpoint signature does not verify"):
            verify_log(log.store, public, all_signatures=True)
        # An old row with another root but the true tree state is such a forgery too: its
        # signature no longer verifies, so nothing that uses it would accept it.
        log.store.db.execute("UPDATE audit_checkpoints SET root = zeroblob(32) WHERE size = 2")
        assert verify_log(log.store, public).events == 3
        with pytest.raises(AuditError, match="checkpoint signature does not verify"):
            verify_log(log.store, public, all_signatures=True)
        # An old row whose tree state differs from the events' fails in either mode.
        log.store.db.execute(
            "UPDATE audit_checkpoints SET frontier = zeroblob(length(frontier)) WHERE size = 2"
        )
        with pytest.raises(AuditError, match="checkpoint 2 does not match the log"):
            verify_log(log.store, public)
        # The newest row's signature is always checked.
        log.store.db.execute(
            "UPDATE audit_checkpoints SET root = ?, timestamp = timestamp + 1 WHERE size = 3",
            (log.store.db.execute("SELECT root FROM audit_checkpoints WHERE size = 3").fetchone()),
        )
        with pytest.raises(AuditError, match="checkpoint signature does not verify"):
            verify_log(log.store, public)


def test_signatures_checked_by_default_do_not_depend_on_the_checkpoint_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """By default verify checks the newest signature and a sample of the others, whatever
    the count (a threshold at 10,000 checkpoints made 9,999 ten times slower than 10,000)."""
    import oneoff._audit.verify as verify

    monkeypatch.setattr(verify, "SIGNATURE_SAMPLE", 2)
    with tempfile.TemporaryDirectory() as tmp:
        log = AuditLog(SQLiteStore(Path(tmp) / "state.db"), AuditKey(Path(tmp)))
        assert log.key is not None
        counts = []
        for _ in range(6):
            log.append("run.finished", actor="os:alice")
            log.checkpoint()
            counts.append(verify_log(log.store, log.key.public()).signatures)
        assert counts == [1, 2, 3, 3, 3, 3]
        assert verify_log(log.store, log.key.public(), all_signatures=True).signatures == 6
        log.store.close()


def test_the_signature_sample_grows_with_the_checkpoints_between_its_bounds() -> None:
    """Every older row up to 32 is checked, then 32, one more per 128 older rows, at most 64."""
    from oneoff._audit.verify import sample_size

    sizes = [0, 1, 31, 32, 33, 4_095, 4_096, 4_224, 8_191, 8_192, 8_193, 1_000_000]
    assert [sample_size(n) for n in sizes] == [0, 1, 31, 32, 32, 32, 32, 33, 63, 64, 64, 64]


@contextmanager
def checkpointed_log(count: int) -> Iterator[AuditLog]:
    """A log of ``count`` checkpoints, one per event, written through AuditLog."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "state.db")
        log = AuditLog(store, AuditKey(Path(tmp)))
        for _ in range(count):
            log.append("run.finished", actor="os:alice")
            log.checkpoint()
        try:
            yield log
        finally:
            store.close()


def test_a_forged_older_checkpoint_is_found_with_the_stated_probability() -> None:
    """An older row with the true tree state but a forged signature is always found by
    --all-signatures, and by default with probability k/N (k = 32 of N = 48 older rows, so
    2/3): over 60 runs, between 20 and 58 find it (outside: probability < 1e-8)."""
    with checkpointed_log(49) as log:
        assert log.key is not None
        public = log.key.public()
        log.store.db.execute("UPDATE audit_checkpoints SET signature = zeroblob(64) WHERE size = 7")
        for _ in range(3):
            with pytest.raises(AuditError, match="checkpoint signature does not verify"):
                verify_log(log.store, public, all_signatures=True)
        outcomes = []
        for _ in range(60):
            try:
                outcomes.append(f"passed, {verify_log(log.store, public).signatures} signatures")
            except AuditError as exc:
                outcomes.append(exc.message)
        found = outcomes.count(
            "checkpoint signature does not verify: the checkpoint (size 7, timestamp "
            f"{log.store.audit_checkpoint_rows(size=7)[0][2]}) was altered or forged"
        )
        # A run that misses the forged row checks the newest and 32 of the 48 older rows.
        assert outcomes.count("passed, 33 signatures") == 60 - found
        assert 20 <= found <= 58, outcomes


def test_forging_more_older_checkpoints_than_the_sample_skips_is_always_found() -> None:
    """With more than N - k of the N older rows forged, every sample holds one: the default
    mode fails every time."""
    with checkpointed_log(49) as log:
        assert log.key is not None
        public = log.key.public()
        # 17 = 48 - 32 + 1 of the 48 older rows: no sample of 32 misses them all.
        log.store.db.execute(
            "UPDATE audit_checkpoints SET signature = zeroblob(64) WHERE size <= 17"
        )
        for _ in range(20):
            with pytest.raises(AuditError, match="checkpoint signature does not verify"):
                verify_log(log.store, public)


def test_every_row_must_name_the_trusted_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even unsampled, a row naming another signing key fails verification."""
    import oneoff._audit.verify as verify

    monkeypatch.setattr(verify, "SIGNATURE_SAMPLE", 0)
    with audit_log([("a", {}), ("b", {}), ("c", {})]) as log:
        assert log.key is not None
        log.store.db.execute("UPDATE audit_checkpoints SET key_id = ? WHERE size = 2", ("0" * 32,))
        with pytest.raises(AuditError, match="names signing key 0000"):
            verify_log(log.store, log.key.public())


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=40), st.sets(st.integers(min_value=1, max_value=40)))
def test_checkpoints_anywhere_in_or_across_blocks_verify(n: int, at: set[int]) -> None:
    """Checkpoints at any sizes, in small blocks of leaves, check their roots and tree state."""
    import oneoff._audit.verify_tree as verify_tree

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify_tree, "BLOCK_BITS", 2)
        patch.setattr(verify_tree, "BLOCK", 4)
        store = SQLiteStore(Path(tmp) / "state.db")
        log = AuditLog(store, AuditKey(Path(tmp)))
        sizes = sorted(s for s in at if s <= n)
        for i in range(1, n + 1):
            log.append("e", actor="a", payload={"i": i})
            if i in at:
                log.checkpoint()
        assert log.key is not None
        log.key.ensure()
        public = log.key.public()
        report = verify_log(store, public)
        assert (report.events, report.checkpoints) == (n, len(sizes))
        if sizes:
            size = sizes[len(sizes) // 2]
            store.db.execute(
                "UPDATE audit_checkpoints SET frontier = zeroblob(length(frontier))"
                " WHERE size = ?", (size,),
            )  # fmt: skip
            with pytest.raises(AuditError, match=f"checkpoint {size}: stored tree state"):
                verify_log(store, public)
        store.close()
