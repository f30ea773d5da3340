"""The client's HTTP layer: error bodies become oneoff errors, failures are one line, TLS."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneoff._client.http import Client, RemoteError, ServerUnreachable, error_from
from oneoff._client.session import cached_token, drop_token, sessions_dir, store_token
from oneoff._client.url import parse_server_url
from oneoff._identity import Signer
from oneoff.cli import main
from oneoff.errors import (
    ApprovalError,
    AuditError,
    LockBusy,
    NotPermitted,
    OneoffError,
    StoreError,
    UsageError,
)


@pytest.mark.parametrize("cls", [ApprovalError, AuditError, LockBusy, NotPermitted])
def test_a_server_error_body_becomes_the_same_oneoff_error(cls: type) -> None:
    """The error class, exit code, message and hint the server sent are the client's."""
    body = {"error": {"exit": cls.exit_code, "kind": cls.__name__, "message": "m", "hint": "h"}}
    error = error_from(409, body, "http://127.0.0.1:1")
    assert type(error) is cls
    assert (error.exit_code, error.message, error.hint) == (cls.exit_code, "m", "h")


def test_an_unknown_or_inconsistent_kind_keeps_the_servers_exit_code() -> None:
    """A kind this client does not know (or whose exit code differs) keeps the exit code."""
    error = error_from(500, {"error": {"exit": 42, "kind": "NewError", "message": "m"}}, "x")
    assert isinstance(error, RemoteError)
    assert error.exit_code == 42
    error = error_from(500, {"error": {"exit": 9, "kind": "AuditError", "message": "m"}}, "x")
    assert isinstance(error, RemoteError)
    assert error.exit_code == 9
    # A kind naming something in oneoff.errors that is not an error class is not trusted.
    error = error_from(500, {"error": {"exit": 1, "kind": "annotations", "message": "m"}}, "x")
    assert type(error) is RemoteError


def test_an_answer_without_an_error_body_is_a_store_error() -> None:
    """An HTML 502 from a proxy, or nothing at all, is exit 7 naming the status."""
    error = error_from(502, None, "https://oneoff.example")
    assert type(error) is StoreError
    assert "HTTP 502" in error.message


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_server_is_one_line_and_exit_7(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Nothing listening: `oneoff: error: cannot reach the oneoff server at URL` and exit 7."""
    monkeypatch.setenv("ONEOFF_SIGNING_KEY", str(tmp_path / "unused-key"))
    url = f"http://127.0.0.1:{_closed_port()}"
    assert main(["audit", "verify", "--server", url]) == 7
    err = capsys.readouterr().err
    assert f"cannot reach the oneoff server at {url}" in err
    assert "Traceback" not in err


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"server_id": "ab" * 16, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real HTTPS server on 127.0.0.1 with a self-signed certificate for localhost."""
    cert, key = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_https_certificate_is_verified(tls_server: tuple[int, Path]) -> None:
    """A certificate no trusted CA signed is refused (exit 7, TLS named); with
    $ONEOFF_SERVER_CA naming its CA the same server answers."""
    port, cert = tls_server
    server = parse_server_url(f"https://localhost:{port}/team")
    with pytest.raises(ServerUnreachable, match="TLS failed"):
        Client(server, {}).call("GET", "/v1/server")
    client = Client(server, {"ONEOFF_SERVER_CA": str(cert)})
    status, data = client.call("GET", "/v1/server", query="a=1")
    client.close()
    assert status == 200
    assert data["path"] == "/team/v1/server?a=1"


def test_a_session_token_is_cached_privately_and_renewed_30_s_early(tmp_path: Path) -> None:
    """The token file is 0600 in a 0700 directory, keyed by server and key; it is not
    used within 30 s of its expiry, nor for another key or server."""
    from oneoff._identity import iso, utc_now

    alice, bob = Signer(tmp_path / "alice", agent=False), Signer(tmp_path / "bob", agent=False)
    url = "http://127.0.0.1:8421"
    expires = utc_now() + dt.timedelta(minutes=10)
    store_token(url, alice, {"token": "t1", "person": "alice", "expires_at": iso(expires)})
    assert cached_token(url, alice) == "t1"
    assert cached_token(url, bob) is None
    assert cached_token("http://127.0.0.1:8422", alice) is None
    assert cached_token(url, alice, now=expires - dt.timedelta(seconds=31)) == "t1"
    assert cached_token(url, alice, now=expires - dt.timedelta(seconds=29)) is None
    files = list(sessions_dir().glob("*.json"))
    assert files
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    assert sessions_dir().stat().st_mode & 0o777 == 0o700
    drop_token(url, alice)
    assert cached_token(url, alice) is None
    with pytest.raises(StoreError, match="without a valid token"):
        store_token(url, alice, {"token": "t2", "expires_at": "soon"})


def test_a_server_that_never_answers_times_out_with_exit_7(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that accepts the connection and then says nothing: after
    $ONEOFF_SERVER_TIMEOUT seconds, one line and exit 7."""
    monkeypatch.setenv("ONEOFF_SIGNING_KEY", str(tmp_path / "unused-key"))
    monkeypatch.setenv("ONEOFF_SERVER_TIMEOUT", "0.5")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel completes the handshake; nobody ever reads
        port = silent.getsockname()[1]
        assert main(["audit", "verify", "--server", f"http://127.0.0.1:{port}"]) == 7
    assert "no answer within 0.5 s" in capsys.readouterr().err


def test_a_bad_timeout_variable_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """$ONEOFF_SERVER_TIMEOUT must be a positive number of seconds (at most an hour)."""
    for bad in ("0", "-1", "soon", "7200"):
        with pytest.raises(UsageError, match="ONEOFF_SERVER_TIMEOUT"):
            Client(parse_server_url("http://127.0.0.1:1"), {"ONEOFF_SERVER_TIMEOUT": bad})


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    status=st.integers(100, 599),
    body=_JSON | st.fixed_dictionaries({"error": st.dictionaries(
        st.sampled_from(["exit", "kind", "message", "hint"]), _JSON, max_size=4)}),
)  # fmt: skip
def test_any_error_body_maps_to_a_oneoff_error_with_a_valid_exit_code(
    status: int, body: object
) -> None:
    """Whatever a server (or a proxy in front of it) answers, the client raises a oneoff
    error whose exit code is 1..255 and whose message is text; it never crashes."""
    error = error_from(status, body, "http://127.0.0.1:1")
    assert isinstance(error, OneoffError)
    assert 1 <= error.exit_code <= 255
    assert isinstance(error.message, str)


@given(content=st.binary(max_size=200) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_any_session_file_is_a_token_or_nothing(content: bytes) -> None:
    """A damaged or hostile session cache file is ignored (a new session is asked for)."""
    from oneoff._client.session import _file

    signer = Signer(Path("/nonexistent/key"), agent=False)
    url = "http://127.0.0.1:9"
    path = _file(url, signer)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    token = cached_token(url, signer)
    assert token is None or isinstance(token, str)
