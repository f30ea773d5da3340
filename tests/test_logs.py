"""oneoff's own log lines: JSON off a terminal, text on one, one line per event, never forged."""

from __future__ import annotations

import io
import json
import os
import pty
from pathlib import Path

import pytest

from oneoff._log import escape, log, log_format
from oneoff.testing import run_cli

HOSTILE = "x\r\nfake: line\x1b[31m\u202e\x00\x85"


def test_json_lines_when_not_on_a_terminal(app: Path, cli_env: dict[str, str]) -> None:
    """With stderr captured, the run summary and errors are one JSON object a line."""
    env = {k: v for k, v in cli_env.items() if k != "ONEOFF_LOG_FORMAT"}
    ok = run_cli(["run", "hello", "--env", "development"], cwd=app, env=env)
    summary = json.loads(ok.stderr.splitlines()[-1])
    assert summary["event"] == "run.finished"
    assert summary["status"] == "succeeded"
    assert summary["exit_code"] == 0
    hostile = HOSTILE.replace("\x00", "")  # argv cannot carry NUL
    bad = run_cli(["run", hostile, "--env", "development"], cwd=app, env=env)
    assert bad.exit_code == 2
    (line,) = bad.stderr.splitlines()
    record = json.loads(line)
    assert (record["level"], record["error"], record["exit_code"]) == ("error", "UsageError", 2)
    assert repr(hostile) in record["msg"]
    assert line.isascii()
    assert "\x1b" not in line


def test_text_lines_escape_control_characters() -> None:
    """In text form a hostile value cannot start a new line or drive the terminal."""
    out = io.StringIO()
    os.environ["ONEOFF_LOG_FORMAT"] = "text"
    try:
        log("error", f"unknown task {HOSTILE}", level="error", hint="try\nagain", stream=out)
    finally:
        del os.environ["ONEOFF_LOG_FORMAT"]
    first, second = out.getvalue().splitlines()
    assert first == "oneoff: error: unknown task x\\r\\nfake: line\\x1b[31m\\u202e\\x00\\x85"
    assert second == "  hint: try\\nagain"


def test_format_follows_the_terminal_unless_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal gets text and anything else JSON, unless ONEOFF_LOG_FORMAT says otherwise."""
    monkeypatch.delenv("ONEOFF_LOG_FORMAT", raising=False)
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as tty:
        assert log_format(tty) == "text"
        monkeypatch.setenv("ONEOFF_LOG_FORMAT", "json")
        assert log_format(tty) == "json"
    os.close(leader)
    monkeypatch.setenv("ONEOFF_LOG_FORMAT", "bogus")
    assert log_format(io.StringIO()) == "json"


def test_escape_leaves_printable_text_alone() -> None:
    """Printable text, quotes and backslashes included, is shown as is."""
    assert escape("run r1 on prod: ok 'x' \\ é") == "run r1 on prod: ok 'x' \\ é"
    assert escape("a\tb") == "a\\tb"
