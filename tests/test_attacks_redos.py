"""ReDoS: a crafted param value against a pattern with nested repetition (`(a+)+$`), which
takes a backtracking matcher 2^n steps, is refused at once by the real CLI and by a real
team server checking a client's plan document, instead of hanging either."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from _access_kit import events, make_access_app
from _serverproc import ServerProc
from oneoff.testing import make_app
from test_attacks_server import ask, plan_json, signed_statement
from test_attacks_server_plan import rehashed, requests_stored

KEYS = dict[str, Path]

# 255 `a`s then `!`: every split of the `a`s between the two `+`s is tried before `$`
# fails, about 2^255 of them for a backtracking matcher; RE2 reads the value once.
CRAFTED = "a" * 255 + "!"
# Seconds: the refusal takes milliseconds; the old matcher would not finish in a lifetime.
TIMEOUT = 20

CLI_MANIFEST = """
[environments.development]
config = [{ dotenv = ".env" }]

[tasks.find]
argv = ["python", "-c", "import sys; print('found', sys.argv[1])", "{word}"]
params.word = { type = "string", pattern = "(a+)+$" }
"""

FIND_TASK = """
[tasks.find]
argv = ["python", "-c", "import sys; print('found', sys.argv[1])", "{word}"]
params.word = { type = "string", pattern = "(a+)+$" }
"""


def test_the_cli_refuses_a_crafted_value_at_once(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """`oneoff run find -p word=aaaa...!` exits 2 with the pattern mismatch well within
    the timeout (the backtracking matcher this replaced never returned), and the task
    never runs; an honest value still runs it."""
    root = make_app(tmp_path / "app", CLI_MANIFEST, {".env": "GREETING=hi\n"})
    done = subprocess.run(
        [sys.executable, "-m", "oneoff", "run", "find", "-p", f"word={CRAFTED}"],
        cwd=root, env=cli_env, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("oneoff: error: param 'word' does not match pattern '(a+)+$'")
    assert "found" not in done.stdout
    honest = subprocess.run(
        [sys.executable, "-m", "oneoff", "run", "find", "-p", "word=aaaa"],
        cwd=root, env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert honest.returncode == 0, honest.stderr
    assert "found aaaa" in honest.stdout


def test_the_server_refuses_a_crafted_value_at_once(
    tmp_path: Path, server_keys: KEYS, server_factory: Callable[..., ServerProc]
) -> None:
    """A client's plan document carrying the crafted value (hashed and signed by the
    client itself, as an API caller can) is refused by the server's check of the params
    against its own manifest: 400, exit 2, the pattern mismatch, within the timeout and
    nothing stored; the server still answers afterwards."""
    server: ServerProc = server_factory(
        make_access_app(tmp_path / "served", server_keys, extra=FIND_TASK)
    )
    plan = plan_json(server.app_dir, task="find", env="production", word="aaaa")
    argv = [*plan["document"]["argv"][:-1], CRAFTED]
    forged = rehashed(plan, params={"word": CRAFTED}, argv=argv)
    body = {
        "plan": forged,
        "plan_hash": forged["hash"],
        **signed_statement(server_keys, "alice", forged),
    }
    answer = server.signed(server_keys["alice"], "POST", "/v1/requests", body, timeout=TIMEOUT)
    assert answer.status == 400, answer
    assert answer.error["exit"] == 2
    assert "param 'word' does not match pattern" in answer.error["message"]
    assert requests_stored(server) == 0
    assert events(server.app_dir, "request.created") == []
    honest = ask(server, server_keys, "alice", plan)
    assert honest.status == 201, honest
