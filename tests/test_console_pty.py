"""An interactive task on a real terminal: the operator types, the console answers."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from oneoff.testing import run_cli


def read_until(fd: int, needle: bytes, timeout: float = 60) -> bytes:
    # Generous: two Python start-ups and a REPL's on a loaded 2-core CI machine.
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_console_on_a_terminal(example_app: Path, cli_env: dict[str, str]) -> None:
    """`oneoff run console` relays keystrokes to the REPL and its answers back, then ends."""
    assert (
        run_cli(["run", "migrate", "--env", "development"], cwd=example_app, env=cli_env).exit_code
        == 0
    )
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "oneoff", "run", "console", "--env", "development"],
        cwd=example_app,
        env={**cli_env, "TERM": "dumb"},
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    try:
        banner = read_until(primary, b">>> ")
        assert b"notes console" in banner
        os.write(primary, b"print(6 * 7)\r")
        assert b"42" in read_until(primary, b"42")
        os.write(primary, b"\x04")  # ^D ends the REPL
        proc.wait(timeout=60)
        tail = read_until(primary, b"succeeded", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)
    assert proc.returncode == 0
    assert b"console on development: succeeded" in tail
