"""Attacks on the server's authentication, against a real server process: each forged,
moved, replayed, stale or oversized call is refused with the right status and audited."""

from __future__ import annotations

import datetime as _dt
import http.client
import json
from pathlib import Path
from typing import Any

import pytest

from _access_kit import events
from _serverproc import ServerProc, signed_headers
from oneoff._envelope import SIGNATURE_HEADER, STATEMENT_HEADER
from oneoff._identity import Principal, utc_now

KEYS = dict[str, Path]
EMPTY = b"{}"


def refusals(server: ServerProc) -> list[str]:
    return [e.payload["reason"] for e in events(server.app_dir, "auth.refused")]


def session_with(server: ServerProc, headers: dict[str, str], body: bytes = EMPTY) -> int:
    return server.call("POST", "/v1/session", body=body, headers=headers).status


def test_replayed_call_is_refused_and_audited(server: ServerProc, server_keys: KEYS) -> None:
    """The same signed call sent twice works once; the replay is 409 and audited."""
    headers = signed_headers(server_keys["bob"], "POST", "/v1/session", EMPTY, server.server_id)
    assert session_with(server, headers) == 200
    again = server.call("POST", "/v1/session", body=EMPTY, headers=headers)
    assert again.status == 409
    assert "replayed" in again.error["message"]
    assert any("replayed" in r for r in refusals(server))


@pytest.mark.parametrize(
    ("signed_for", "sent"),
    [
        (("POST", "/v1/requests", "", EMPTY), ("POST", "/v1/session", "", EMPTY)),
        (("POST", "/v1/session", "", b"{ }"), ("POST", "/v1/session", "", EMPTY)),
        (("POST", "/v1/session", "a=1", EMPTY), ("POST", "/v1/session", "", EMPTY)),
        (("PUT", "/v1/session", "", EMPTY), ("POST", "/v1/session", "", EMPTY)),
    ],
    ids=["other-path", "other-body", "other-query", "other-method"],
)
def test_statement_moved_to_another_call_is_refused(
    server: ServerProc,
    server_keys: KEYS,
    signed_for: tuple[str, str, str, bytes],
    sent: tuple[str, str, str, bytes],
) -> None:
    """A statement signed for one method, path, query or body does not authorise another."""
    method, path, query, body = signed_for
    headers = signed_headers(server_keys["bob"], method, path, body, server.server_id, query)
    answer = server.call(sent[0], sent[1], body=sent[3], query=sent[2], headers=headers)
    assert answer.status == 401, answer
    assert "it was signed for" in answer.error["message"]
    assert answer.error["exit"] == 3
    assert any("it was signed for" in r for r in refusals(server))


def test_statement_for_another_server_is_refused(server: ServerProc, server_keys: KEYS) -> None:
    """A statement naming another server id is refused (401)."""
    headers = signed_headers(server_keys["bob"], "POST", "/v1/session", EMPTY, "0" * 32)
    answer = server.call("POST", "/v1/session", body=EMPTY, headers=headers)
    assert answer.status == 401
    assert "signed for server" in answer.error["message"]


def test_signature_in_another_namespace_is_refused(server: ServerProc, server_keys: KEYS) -> None:
    """A signature made for namespace ``oneoff`` (a request statement) is not an API call."""
    from oneoff._canonical import canonical_json
    from oneoff._envelope import api_statement
    from oneoff._identity import Signer

    data = canonical_json(api_statement("POST", "/v1/session", "", EMPTY, server.server_id))
    signature = Signer(server_keys["bob"], agent=False).sign(data, "oneoff")
    headers = signed_headers(server_keys["bob"], "POST", "/v1/session", EMPTY, server.server_id)
    import base64

    headers[STATEMENT_HEADER] = base64.urlsafe_b64encode(data).decode().rstrip("=")
    headers[SIGNATURE_HEADER] = base64.b64encode(signature).decode()
    answer = server.call("POST", "/v1/session", body=EMPTY, headers=headers)
    assert answer.status == 401
    assert "namespace 'oneoff'" in answer.error["message"]


@pytest.mark.parametrize("minutes", [-6, 6])
def test_client_clock_off_by_more_than_the_skew(
    server: ServerProc, server_keys: KEYS, minutes: int
) -> None:
    """A statement dated more than 5 minutes from the server's clock is refused."""
    when = utc_now() + _dt.timedelta(minutes=minutes)
    headers = signed_headers(
        server_keys["bob"], "POST", "/v1/session", EMPTY, server.server_id, now=when
    )
    answer = server.call("POST", "/v1/session", body=EMPTY, headers=headers)
    assert answer.status == 401
    assert "more than 5 minutes" in answer.error["message"]


def test_unsigned_forged_and_unknown_signers_are_refused(
    server: ServerProc, server_keys: KEYS
) -> None:
    """No headers, garbage headers, a flipped signature byte and mallory's key: all 401,
    all audited."""
    before = len(refusals(server))
    assert session_with(server, {}) == 401
    assert session_with(server, {STATEMENT_HEADER: "!!", SIGNATURE_HEADER: "x"}) == 401
    headers = signed_headers(server_keys["bob"], "POST", "/v1/session", EMPTY, server.server_id)
    statement = headers[STATEMENT_HEADER]
    forged = statement[:-2] + ("A" if statement[-2] != "A" else "B") + statement[-1]
    assert session_with(server, {**headers, STATEMENT_HEADER: forged}) == 401
    mallory = signed_headers(server_keys["mallory"], "POST", "/v1/session", EMPTY, server.server_id)
    answer = server.call("POST", "/v1/session", body=EMPTY, headers=mallory)
    assert answer.status == 401
    assert "not in people/allowed_signers" in answer.error["message"]
    assert str(server.app_dir) not in answer.raw.decode()  # no server paths to strangers
    assert len(refusals(server)) == before + 4


def test_malformed_json_is_400(server: ServerProc, server_keys: KEYS) -> None:
    """A signed body that is not JSON, or has a duplicate key, is bad input (400, exit 2)."""
    for body in (b"{not json", b'{"a": 1, "a": 2}', b"\xff\xfe"):
        headers = signed_headers(server_keys["bob"], "POST", "/v1/requests", body, server.server_id)
        answer = server.call("POST", "/v1/requests", body=body, headers=headers)
        assert answer.status == 400, (body, answer)
        assert answer.error["exit"] == 2


def test_oversized_body_is_413_while_reading(server: ServerProc, server_keys: KEYS) -> None:
    """A body over 1 MiB is refused, whether its length is declared or streamed chunked."""
    big = b'{"x": "' + b"a" * (1024 * 1024) + b'"}'
    headers = signed_headers(server_keys["bob"], "POST", "/v1/requests", big, server.server_id)
    assert server.call("POST", "/v1/requests", body=big, headers=headers).status == 413
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    try:
        chunks = (b"a" * 65536 for _ in range(40))  # 2.5 MiB, no Content-Length
        conn.request("POST", "/v1/requests", body=chunks, headers=headers, encode_chunked=True)
        answer = conn.getresponse()
        assert answer.status == 413
        assert json.loads(answer.read())["error"]["kind"] == "UsageError"
    finally:
        conn.close()


def _token(server: ServerProc, *, person: str = "bob", minutes: int = 0, sid: str = "") -> str:
    """A token MAC'd with the server's real key (read from its store), dated as asked."""
    from oneoff._app import open_app
    from oneoff._server.auth import make_token

    app = open_app(server.app_dir)
    try:
        secret = app.store.server_value("session_key")
    finally:
        app.close()
    assert secret is not None
    when = utc_now() + _dt.timedelta(minutes=minutes)
    key = next(k for k in server_keys_of(server) if k[0] == person)[1]
    return make_token(secret, Principal(person, key=key), sid or server.server_id, now=when)[0]


def server_keys_of(server: ServerProc) -> list[tuple[str, str]]:
    from oneoff._auth.signers import Signers

    text = (server.app_dir / "people" / "allowed_signers").read_text()
    return [(p.name, p.fingerprint) for p in Signers.parse(text, source="people")]


def test_expired_forged_and_foreign_tokens_are_401(server: ServerProc) -> None:
    """A session token past its expiry, with a forged MAC, or made for another server id
    reads nothing; a good one reads."""
    assert server.read(_token(server), "/v1/requests").status == 200
    expired = _token(server, minutes=-16)
    body, mac = _token(server).split(".")
    forged = body + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    foreign = _token(server, sid="f" * 32)
    for token, words in ((expired, "expired"), (forged, "forged"), (foreign, "another server")):
        answer = server.read(token, "/v1/requests")
        assert answer.status == 401, answer
        assert words in answer.error["message"]
    assert server.call("GET", "/v1/requests").status == 401


@pytest.mark.postgres
def test_two_servers_on_one_database_share_identity_and_nonces(
    server_app: Path, server_keys: KEYS, server_factory: Any, pg_url: str
) -> None:
    """Two server processes on one PostgreSQL database are one server: the same id, and a
    call replayed from one to the other is refused (the nonce is in the shared store)."""
    first, second = server_factory(server_app, pg_url), server_factory(server_app, pg_url)
    assert first.server_id == second.server_id
    headers = signed_headers(server_keys["bob"], "POST", "/v1/session", EMPTY, first.server_id)
    assert first.call("POST", "/v1/session", body=EMPTY, headers=headers).status == 200
    replay = second.call("POST", "/v1/session", body=EMPTY, headers=headers)
    assert replay.status == 409, replay
    token = first.token(server_keys["carol"])
    assert second.read(token, "/v1/requests").status == 200  # one token key for both
