"""Attacks on a server's audit log, caught by a CLI that saw it before (issue #13, part 5).

Each test runs a REAL server process; the CLI remembers the newest checkpoint it verified
(``oneoff._client.witness``). Rewinding the server's store together with its checkpoints,
forking the log, or a consistency proof that does not verify: each is exit 8, though the
server's own verification of its (rewritten) store passes.
"""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _serverproc import ServerProc
from oneoff.cli import main

KEYS = dict[str, Path]


@pytest.fixture
def as_alice(server_keys: KEYS, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI signs (sessions, co-signatures) with alice's SSH key."""
    monkeypatch.setenv("ONEOFF_SIGNING_KEY", str(server_keys["alice"]))


@pytest.fixture
def witness_key(tmp_path: Path) -> Path:
    from oneoff._audit.checkpoint import generate_keypair

    generate_keypair(tmp_path / "witness.key", tmp_path / "witness.pub")
    return tmp_path / "witness.key"


def url(server: ServerProc) -> str:
    return f"http://127.0.0.1:{server.port}"


def cli(*argv: str) -> int:
    return main(list(argv))


def checkpoint_size(server: ServerProc) -> int:
    return int(server.call("GET", "/v1/audit/checkpoint").json["checkpoint"]["size"])


def grow(server: ServerProc, key: Path, events: int = 3) -> None:
    """Append events on the server (each refused envelope is an audited event)."""
    for _ in range(events):
        answer = server.call("POST", "/v1/session", body=b"{}")
        assert answer.status == 401, answer


def stored_db(app_dir: Path) -> Path:
    return app_dir / ".oneoff" / "state.db"


def test_verify_and_witness_pass_on_an_honest_server(
    server: ServerProc, as_alice: None, witness_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An honest, growing log: verify extends what it saw, the witness co-signs, and
    verify --witness finds that co-signature extended by the newest checkpoint."""
    assert cli("audit", "verify", "--server", url(server)) == 0
    grow(server, witness_key)
    assert cli("audit", "witness", "--server", url(server), "--key", str(witness_key)) == 0
    grow(server, witness_key)
    pub = str(witness_key.with_suffix(".pub"))
    assert cli("audit", "verify", "--server", url(server), "--witness", pub) == 0
    out = capsys.readouterr().out
    assert "hash chain intact" in out
    assert "verified here before" in out
    assert "co-signed the first" in out


def test_a_store_cut_back_with_its_checkpoints_is_refused(
    server: ServerProc, server_app: Path, as_alice: None, witness_key: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The server's store restored from an older copy (events and checkpoints cut back
    together, so the server's own verify passes): every CLI that saw more exits 8."""
    assert cli("audit", "verify", "--server", url(server)) == 0
    server.stop()
    backup = server_app.parent / "state.db.old"
    shutil.copy(stored_db(server_app), backup)
    server.start()
    grow(server, witness_key, 5)
    assert cli("audit", "verify", "--server", url(server)) == 0
    seen = checkpoint_size(server)
    server.stop()
    for suffix in ("-wal", "-shm"):
        Path(f"{stored_db(server_app)}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, stored_db(server_app))
    server.start()
    capsys.readouterr()
    assert cli("audit", "witness", "--server", url(server), "--key", str(witness_key)) == 8
    err = capsys.readouterr().err
    assert "shorter than when you verified it" in err, err
    assert f"{seen} then" in err
    assert cli("audit", "verify", "--server", url(server)) == 8


def test_a_forked_log_is_refused(
    server: ServerProc, server_app: Path, as_alice: None, witness_key: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The store rewound and grown again with other events past what the CLI saw, all
    re-signed with the audit key: the log is long enough but does not extend the old one."""
    assert cli("audit", "verify", "--server", url(server)) == 0
    server.stop()
    backup = server_app.parent / "state.db.old"
    shutil.copy(stored_db(server_app), backup)
    server.start()
    grow(server, witness_key, 2)
    assert cli("audit", "verify", "--server", url(server)) == 0
    seen = checkpoint_size(server)
    server.stop()
    for suffix in ("-wal", "-shm"):
        Path(f"{stored_db(server_app)}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, stored_db(server_app))
    server.start()
    while checkpoint_size(server) <= seen:  # another history, longer than the one seen
        grow(server, witness_key, 4)
    capsys.readouterr()
    assert cli("audit", "witness", "--server", url(server), "--key", str(witness_key)) == 8
    err = capsys.readouterr().err
    assert "does not extend the checkpoint" in err, err


class _Proxy(http.server.BaseHTTPRequestHandler):
    """Forwards to the real server; ``tamper(path, body)`` may rewrite an answer."""

    upstream = ""
    tamper: Callable[[str, bytes], bytes] = staticmethod(lambda path, body: body)

    def _forward(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
        request = urllib.request.Request(
            self.upstream + self.path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        body = type(self).tamper(self.path, body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def lying_proxy(server: ServerProc) -> Iterator[tuple[str, type[_Proxy]]]:
    """A real HTTP server in front of the real one, whose answers a test may rewrite."""
    handler = type("Proxy", (_Proxy,), {"upstream": url(server)})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}", handler
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


def _flip_first_hash(path: str, body: bytes) -> bytes:
    if not path.startswith("/v1/audit/proof/consistency"):
        return body
    doc = json.loads(body)
    first = bytearray(base64.b64decode(doc["path"][0]))
    first[0] ^= 1
    doc["path"][0] = base64.b64encode(bytes(first)).decode()
    return json.dumps(doc).encode()


def test_a_consistency_proof_that_does_not_verify_is_refused(
    server: ServerProc, lying_proxy: tuple[str, type[_Proxy]], as_alice: None,
    witness_key: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A server (here a proxy) whose consistency proof does not recompute to the signed
    roots is refused with exit 8, before anything is co-signed."""
    proxied, handler = lying_proxy
    assert cli("audit", "verify", "--server", proxied) == 0
    grow(server, witness_key, 3)
    handler.tamper = staticmethod(_flip_first_hash)
    capsys.readouterr()
    assert cli("audit", "witness", "--server", proxied, "--key", str(witness_key)) == 8
    assert "does not extend the checkpoint" in capsys.readouterr().err
    assert not server.call("GET", "/v1/audit/checkpoint").json["cosignatures"]


def test_a_witness_catches_a_rewind_for_a_cli_that_never_saw_the_log(
    server: ServerProc, server_app: Path, as_alice: None, witness_key: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A newcomer (nothing remembered) who requires witness W's co-signature refuses a
    store cut back to before what W co-signed: W's co-signature no longer vouches for it."""
    server.stop()
    backup = server_app.parent / "state.db.old"
    shutil.copy(stored_db(server_app), backup)
    server.start()
    grow(server, witness_key, 3)
    assert cli("audit", "witness", "--server", url(server), "--key", str(witness_key)) == 0
    pub = str(witness_key.with_suffix(".pub"))
    assert cli("audit", "verify", "--server", url(server), "--witness", pub) == 0
    server.stop()
    for suffix in ("-wal", "-shm"):
        Path(f"{stored_db(server_app)}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, stored_db(server_app))
    server.start()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "newcomer"))
    capsys.readouterr()
    assert cli("audit", "verify", "--server", url(server), "--witness", pub) == 8
    assert "does not vouch for this log" in capsys.readouterr().err


def test_forget_drops_what_was_remembered_for_a_server(
    server: ServerProc, server_app: Path, as_alice: None, witness_key: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """After a reset you meant, `audit forget --server URL` lets verify accept the new log
    (and says so loudly). (The restarted test server listens on another port: the log is
    still recognised by its audit key, so it is the old URL's memory that is forgotten.)"""
    assert cli("audit", "verify", "--server", url(server)) == 0
    server.stop()
    backup = server_app.parent / "state.db.old"
    shutil.copy(stored_db(server_app), backup)
    server.start()
    grow(server, witness_key, 3)
    assert cli("audit", "verify", "--server", url(server)) == 0
    old_url = url(server)
    server.stop()
    for suffix in ("-wal", "-shm"):
        Path(f"{stored_db(server_app)}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, stored_db(server_app))
    server.start()
    assert cli("audit", "verify", "--server", url(server)) == 8
    capsys.readouterr()
    assert cli("audit", "forget", "--server", old_url) == 0
    assert "forgot the checkpoint remembered for server:" in capsys.readouterr().err
    assert cli("audit", "verify", "--server", url(server)) == 0
