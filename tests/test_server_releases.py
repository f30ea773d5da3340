"""Releases pushed to a real server process: signed documents, next versions, the pointer."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import pytest

from _access_kit import events, release
from _serverproc import ServerProc
from oneoff._app import open_app

KEYS = dict[str, Path]


def built(
    server: ServerProc, tmp_path: Path, keys: KEYS, versions: int, key: Path | None = None
) -> list[dict[str, Any]]:
    """Release production ``versions`` times on a copy of the app (a build machine with
    its own store), signed with ``key`` (default: the trusted one); the push bodies."""
    machine = tmp_path / "build" / server.app_dir.name
    shutil.copytree(server.app_dir, machine, ignore=shutil.ignore_patterns(".oneoff"))
    key = key or keys["alice"].parent / "release.key"
    ids = [release(machine, "production", key) for _ in range(versions)]
    app = open_app(machine)
    try:
        out = []
        for rid in ids:
            record = app.store.get_release(rid)
            assert record.signature is not None
            out.append(
                {
                    "document": record.document,
                    "signature": base64.b64encode(record.signature).decode(),
                    "key_id": record.key_id,
                    "code_entries": app.store.release_code_entries(rid),
                }
            )
        return out
    finally:
        app.close()


def test_pushed_release_becomes_current(
    server: ServerProc, server_keys: KEYS, tmp_path: Path
) -> None:
    """The server's production is at v1: a pushed v1 is a conflict (409), the next one
    (v2, made and pushed by bob) is stored, current, listed and audited."""
    first, second = built(server, tmp_path, server_keys, 2)
    clash = server.signed(server_keys["bob"], "POST", "/v1/releases", first)
    assert clash.status == 409, clash
    assert "not production's next" in clash.error["message"]
    pushed = server.signed(server_keys["bob"], "POST", "/v1/releases", second)
    assert pushed.status == 201, pushed
    rid = pushed.json["release"]["id"]
    listed = server.read(server_keys["dave"], "/v1/releases", query="environment=production")
    assert listed.status == 200, listed
    assert listed.json["current"] == {"production": rid}
    assert [r["version"] for r in listed.json["releases"]] == [2, 1]
    created = [e for e in events(server.app_dir, "release.created") if e.release_id == rid]
    assert created[0].payload["via"] == "server"


def test_tampered_or_relayed_releases_are_refused(
    server: ServerProc, server_keys: KEYS, tmp_path: Path
) -> None:
    """A document changed after signing does not verify; bob's release pushed by carol is
    refused (the pusher must be its maker); nothing becomes current."""
    _, second = built(server, tmp_path, server_keys, 2)
    tampered = dict(second, document=second["document"].replace('"version":2', '"version":3'))
    answer = server.signed(server_keys["bob"], "POST", "/v1/releases", tampered)
    assert answer.status == 409, answer
    assert answer.error["exit"] == 6
    assert "signature does not verify" in answer.error["message"]
    relayed = server.signed(server_keys["carol"], "POST", "/v1/releases", second)
    assert relayed.status == 403, relayed
    listed = server.read(server_keys["dave"], "/v1/releases", query="environment=production")
    assert [r["version"] for r in listed.json["releases"]] == [1]


def test_a_trusted_key_file_swapped_after_start_is_refused(
    server: ServerProc, server_keys: KEYS, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Trust read from a key file is pinned too: a key file replaced while the server runs
    makes it refuse pushes, and a restart on it is refused until a re-pin."""
    import subprocess
    import sys

    from oneoff._audit.checkpoint import generate_keypair

    server.stop()
    app = server.app_dir
    (app / "keys").mkdir()
    shutil.copy(server_keys["alice"].parent / "release.pub", app / "keys" / "release.pub")
    manifest = app / "oneoff.toml"
    text = manifest.read_text()
    start = text.index('trusted_keys = ["') + len('trusted_keys = ["')
    manifest.write_text(text[:start] + "keys/release.pub" + text[text.index('"]', start) :])
    pin = [sys.executable, "-m", "oneoff", "server", "pin", "--app", str(app)]
    done = subprocess.run(
        [*pin, "--key", str(server_keys["bob"])], capture_output=True, text=True, env=cli_env,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = ServerProc(app).start()
    try:
        # Someone with write access to the checkout trusts their own key, and signs with it.
        other = server_keys["alice"].parent / "other.key"
        if not other.exists():
            generate_keypair(other, other.with_suffix(".pub"))
        shutil.copy(other.with_suffix(".pub"), app / "keys" / "release.pub")
        _, second = built(server, tmp_path, server_keys, 2, key=other)
        answer = again.signed(server_keys["bob"], "POST", "/v1/releases", second)
        assert answer.status == 409, answer
        assert "changed on the server's disk" in answer.error["message"]
    finally:
        again.stop()
    refused = ServerProc(app)
    try:
        with pytest.raises(RuntimeError, match="differ from those pinned"):
            refused.start()
    finally:
        refused.stop()
