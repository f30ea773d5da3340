"""Attacks on the server's pinned set through its checkout: an edit that the pinned rules
would not let its author make must not become the pinned set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _access_kit import events
from _serverproc import ServerProc

KEYS = dict[str, Path]


def test_a_developer_cannot_repin_by_renaming_production(
    server: ServerProc, server_app: Path, server_keys: KEYS, cli_env: dict[str, str]
) -> None:
    """alice (a developer, whom the pinned policy lets release only in development) edits
    the checkout so that production's config is an environment named development and the
    protected ones are gone; her `oneoff server pin` is refused (exit 3), nothing re-pinned."""
    server.stop()
    manifest = server_app / "oneoff.toml"
    text = manifest.read_text()
    head, _, _ = text.partition("[environments.development]")
    _, _, tasks = text.partition("[tasks.noop]")
    manifest.write_text(
        head + '[environments.development]\nconfig = [{ dotenv = ".env.production" }]\n\n'
        "[tasks.noop]" + tasks
    )  # fmt: skip
    argv = [sys.executable, "-m", "oneoff", "server", "pin", "--app", str(server_app)]
    done = subprocess.run(
        [*argv, "--key", str(server_keys["alice"])], capture_output=True, text=True,
        env=cli_env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert len(events(server_app, "server.pinned")) == 1
