"""`oneoff audit ...` as real processes: verify, prove, consistency, verify-proof, export, tail."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from oneoff.testing import CliResult, run_cli


def cli(app: Path, env: dict[str, str], *args: str, stdin: str | None = None) -> CliResult:
    return run_cli(list(args), cwd=app, env=env, stdin=stdin)


@pytest.fixture
def ran(app: Path, cli_env: dict[str, str]) -> Path:
    """The basic app after two runs (so four events and two checkpoints)."""
    for name in ("a", "b"):
        result = cli(app, cli_env, "run", "hello", "--env", "development", "-p", f"name={name}")
        assert result.exit_code == 0, result.stderr
    return app


def db(app: Path) -> sqlite3.Connection:
    return sqlite3.connect(app / ".oneoff" / "state.db", isolation_level=None)


def test_verify_passes_on_an_untouched_log(ran: Path, cli_env: dict[str, str]) -> None:
    """After runs, verify reports every event chained and checkpointed, exit 0."""
    result = cli(ran, cli_env, "audit", "verify", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["events"], report["checkpoints"], report["uncovered"]) == (4, 2, 0)


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("UPDATE audit_events SET body = body || x'20' WHERE seq = 2", "audit event 2 "),
        ("DELETE FROM audit_events WHERE seq = 1", "audit event 1 is missing"),
        ("DELETE FROM audit_events WHERE seq = 4", "audit event 4 is missing"),
        ("UPDATE audit_events SET seq = seq + 10 WHERE seq = 3", "audit event 3 "),
        ("UPDATE audit_checkpoints SET signature = zeroblob(64) WHERE size = 2", "signature"),
    ],
)
def test_verify_exits_8_naming_the_first_bad_event(
    ran: Path, cli_env: dict[str, str], sql: str, named: str
) -> None:
    """A modified, deleted or renumbered event or a forged checkpoint: exit 8, named."""
    db(ran).execute(sql)
    result = cli(ran, cli_env, "audit", "verify")
    assert result.exit_code == 8, result.output
    assert named in result.stderr
    assert result.stderr.startswith("oneoff: error: ")


def test_verify_with_no_public_key_but_checkpoints_fails(
    ran: Path, cli_env: dict[str, str]
) -> None:
    """Checkpoints that cannot be checked (public and private key gone) fail verify."""
    (ran / ".oneoff" / "audit.pub").unlink()
    (ran / ".oneoff" / "audit.key").unlink()
    result = cli(ran, cli_env, "audit", "verify")
    assert result.exit_code == 8
    assert "no audit public key" in result.stderr


def test_strict_verify_fails_on_unsigned_tail(ran: Path, cli_env: dict[str, str]) -> None:
    """An event appended after the newest checkpoint is a warning, or exit 8 with --strict."""
    from oneoff._audit.log import AuditLog
    from oneoff._store.sqlite import SQLiteStore

    AuditLog(SQLiteStore(ran / ".oneoff" / "state.db")).append("x", actor="y")
    assert "not yet covered" in cli(ran, cli_env, "audit", "verify").stderr
    assert cli(ran, cli_env, "audit", "verify", "--strict").exit_code == 8


def test_inclusion_proof_verifies_offline_and_fails_when_tampered(
    ran: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """`prove` output checks with `verify-proof` and the exported event; any change fails."""
    pub = tmp_path / "audit.pub"
    pub.write_text(cli(ran, cli_env, "audit", "key").stdout)
    proof = cli(ran, cli_env, "audit", "prove", "2").stdout
    (tmp_path / "proof.json").write_text(proof)
    lines = cli(ran, cli_env, "audit", "export", "--format", "jsonl").stdout.splitlines()
    (tmp_path / "event.json").write_text(lines[1])
    args = ["audit", "verify-proof", str(tmp_path / "proof.json"), "--key", str(pub)]
    ok = cli(ran, cli_env, *args, "--event", str(tmp_path / "event.json"))
    assert ok.exit_code == 0, ok.stderr
    # The number `prove` was given is the number the result names (not the 0-based index).
    assert ok.stdout.startswith("OK: event 2 (leaf index 1,")

    wrong_event = tmp_path / "other.json"
    wrong_event.write_text(lines[0])
    assert cli(ran, cli_env, *args, "--event", str(wrong_event)).exit_code == 8
    doc = json.loads(proof)
    doc["index"] = 0
    (tmp_path / "proof.json").write_text(json.dumps(doc))
    assert cli(ran, cli_env, *args).exit_code == 8


def test_consistency_proves_a_kept_checkpoint_is_extended(
    ran: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A checkpoint kept outside is extended by later ones; a rewritten history is caught."""
    kept = tmp_path / "kept.json"
    kept.write_text(cli(ran, cli_env, "audit", "checkpoint").stdout)
    pub = tmp_path / "audit.pub"
    pub.write_text(cli(ran, cli_env, "audit", "key").stdout)
    cli(ran, cli_env, "run", "hello", "--env", "development")
    proof = cli(ran, cli_env, "audit", "consistency", str(kept))
    assert proof.exit_code == 0, proof.stderr
    check = ["audit", "verify-proof", "-", "--key", str(pub)]
    assert cli(ran, cli_env, *check, stdin=proof.stdout).exit_code == 0
    by_size = cli(ran, cli_env, "audit", "consistency", "2", "4")
    assert cli(ran, cli_env, *check, stdin=by_size.stdout).exit_code == 0

    # Someone holding the key rewrites event 1, re-chains, re-signs: the kept one exposes it.
    conn = db(ran)
    body = conn.execute("SELECT body FROM audit_events WHERE seq = 1").fetchone()[0]
    conn.execute("UPDATE audit_events SET body = ? WHERE seq = 1", (body.replace(b"os:", b"xx:"),))
    _rechain(conn)
    conn.execute("DELETE FROM audit_checkpoints")
    # Another account, which never verified this log, remembers nothing to compare with.
    fresh = {**cli_env, "XDG_STATE_HOME": str(tmp_path / "never-saw-it")}
    assert cli(ran, fresh, "audit", "checkpoint").exit_code == 0
    assert cli(ran, fresh, "audit", "verify").exit_code == 0  # the local log looks fine...
    forged = cli(ran, fresh, "audit", "consistency", str(kept))
    result = cli(ran, fresh, *check, stdin=forged.stdout)
    assert result.exit_code == 8  # ...but not to whoever kept the old checkpoint
    assert "rewritten or forked" in result.stderr
    remembered = cli(ran, cli_env, "audit", "verify")  # nor to the account that signed it
    assert remembered.exit_code == 8
    assert "events were rewritten and re-signed" in remembered.stderr


def _rechain(conn: sqlite3.Connection) -> None:
    from oneoff._audit.log import chain_hash

    prev = b"\x00" * 32
    for seq, body in conn.execute("SELECT seq, body FROM audit_events ORDER BY seq").fetchall():
        digest = chain_hash(prev, body)
        conn.execute(
            "UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq)
        )
        prev = digest


def test_export_writes_one_event_a_line_and_is_audited(ran: Path, cli_env: dict[str, str]) -> None:
    """Export writes every event with its hashes and exact body, then records the export."""
    result = cli(ran, cli_env, "audit", "export", "--format", "jsonl")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert events[1]["prev_hash"] == events[0]["hash"]
    assert json.loads(events[0]["body"])["kind"] == "run.started"
    again = cli(ran, cli_env, "audit", "export", "--kind", "audit.exported").stdout.splitlines()
    assert json.loads(again[0])["payload"]["events"] == 4
    only = cli(ran, cli_env, "audit", "export", "--run", events[0]["run_id"]).stdout.splitlines()
    assert len(only) == 2


def test_tail_shows_newest_events_escaped_and_follows(ran: Path, cli_env: dict[str, str]) -> None:
    """`tail -n 1` shows the newest event; `tail -f` prints events appended later."""
    tail = cli(ran, cli_env, "audit", "tail", "-n", "1")
    assert tail.stdout.count("\n") == 1
    assert "run.finished" in tail.stdout
    follow = subprocess.Popen(
        [sys.executable, "-m", "oneoff", "audit", "tail", "-n", "4", "-f", "--json"],
        cwd=ran, env=cli_env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert follow.stdout is not None
    try:
        # Reading the four existing events proves tail is following before we append.
        assert [json.loads(follow.stdout.readline())["seq"] for _ in range(4)] == [1, 2, 3, 4]
        from oneoff._audit.log import AuditLog
        from oneoff._store.sqlite import SQLiteStore

        AuditLog(SQLiteStore(ran / ".oneoff" / "state.db")).append(
            "evil\nkind", actor="a\x1b[2J", payload={"x": "\r\n"}
        )
        line = follow.stdout.readline()
    finally:
        follow.terminate()
        follow.wait(timeout=30)
        follow.stdout.close()
    assert json.loads(line)["kind"] == "evil\nkind"
    human = cli(ran, cli_env, "audit", "tail", "-n", "1").stdout
    assert human.count("\n") == 1
    assert "\x1b" not in human
    assert "evil\\nkind" in human


def test_break_glass_lists_runs_for_review(ran: Path, cli_env: dict[str, str]) -> None:
    """`audit break-glass` lists each break-glass run, newest first, with its reason and end."""
    from oneoff._audit.log import AuditLog
    from oneoff._store.sqlite import SQLiteStore

    assert cli(ran, cli_env, "audit", "break-glass").stdout == "no break-glass runs\n"
    run_id = json.loads(cli(ran, cli_env, "runs", "--json").stdout)[0]["id"]
    log = AuditLog(SQLiteStore(ran / ".oneoff" / "state.db"))
    log.append("run.break_glass", actor="dave", environment="development", task="hello",
               run_id=run_id, payload={"reason": "orders\x1b[2J locked"})  # fmt: skip
    log.append("run.break_glass", actor="erin", environment="development", task="hello",
               run_id="r-refused", payload={"reason": "late"})  # fmt: skip
    listed = cli(ran, cli_env, "audit", "break-glass")
    assert listed.exit_code == 0, listed.stderr
    first, second = listed.stdout.splitlines()
    assert "r-refused  erin  hello on development  not started  reason: late" in first
    assert f"{run_id}  dave  hello on development  succeeded  reason: orders\\x1b[2J" in second
    rows = json.loads(cli(ran, cli_env, "audit", "break-glass", "--json").stdout)
    assert [(r["actor"], r["status"]) for r in rows] == [
        ("erin", "not started"),
        ("dave", "succeeded"),
    ]
    assert rows[1]["reason"] == "orders\x1b[2J locked"


def test_verify_all_signatures_finds_a_forged_row_with_the_right_root(
    ran: Path, cli_env: dict[str, str]
) -> None:
    """An old checkpoint with the true root but a bad signature fails with --all-signatures."""
    db(ran).execute("UPDATE audit_checkpoints SET timestamp = timestamp + 1 WHERE size = 2")
    for flags in ((), ("--all-signatures",)):
        result = cli(ran, cli_env, "audit", "verify", *flags)
        assert result.exit_code == 8, result.output
        assert "signature does not verify" in result.stderr
