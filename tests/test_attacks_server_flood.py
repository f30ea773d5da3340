"""A flood of failed authentications against REAL server processes: once an address has
failed too often in a window, it is answered 429 with Retry-After before its credentials
are looked at, the count is shared by every process on the store, and the flood stops
growing the audit log."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from _access_kit import events
from _serverproc import Response, ServerProc
from test_attacks_server import console_login, console_post

KEYS = dict[str, Path]
LIMIT = 4


@pytest.fixture(autouse=True)
def _low_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers started by these tests allow LIMIT failures per address and window."""
    monkeypatch.setenv("ONEOFF_SERVER_AUTH_FAILURES", str(LIMIT))


def audited(server: ServerProc, kind: str) -> int:
    """How many ``kind`` events the server's store holds (read there: the API would answer
    this throttled address 429)."""
    saved = os.environ.pop("ONEOFF_STORE_URL", None)
    if server.store_url is not None:
        os.environ["ONEOFF_STORE_URL"] = server.store_url
    try:
        return len(events(server.app_dir, kind))
    finally:
        os.environ.pop("ONEOFF_STORE_URL", None)
        if saved is not None:
            os.environ["ONEOFF_STORE_URL"] = saved


def forged_read(server: ServerProc) -> Response:
    return server.call("GET", "/v1/requests", headers={"Authorization": "Bearer forged.token"})


def retry_after(answer: Response) -> int:
    found = {k.lower(): v for k, v in answer.headers.items()}.get("retry-after")
    assert found is not None, answer.headers
    return int(found)


def in_one_window(needed: float = 15.0) -> None:
    """Wait, if need be, for a fresh one-minute count window: a test's failures and the
    refusals they cause must fall in one window (the count starts afresh in the next).
    Called once the test's servers are up, so their start-up is not counted."""
    from oneoff._server.ratelimit import WINDOW

    left = WINDOW - time.time() % WINDOW
    if left < needed:
        time.sleep(left + 0.05)  # the window's end is a clock condition, not a guess


BOTH_STORES = pytest.mark.parametrize(
    "server", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@BOTH_STORES
def test_an_address_that_keeps_failing_is_throttled(server: ServerProc, server_keys: KEYS) -> None:
    """LIMIT forged tokens are refused (401) and audited; then the address is answered 429
    with Retry-After, even with valid credentials, and nothing more is audited."""
    in_one_window()
    for _ in range(LIMIT):
        assert forged_read(server).status == 401
    throttled = forged_read(server)
    assert throttled.status == 429, throttled
    assert 1 <= retry_after(throttled) <= 60
    assert throttled.error["exit"] == 3
    assert "too many failed authentications" in throttled.error["message"]
    assert audited(server, "auth.refused") == LIMIT
    assert audited(server, "auth.throttled") == 1
    valid = server.signed(server_keys["bob"], "POST", "/v1/session")
    assert valid.status == 429, valid
    for _ in range(20):
        assert forged_read(server).status == 429
    assert audited(server, "auth.refused") == LIMIT
    assert audited(server, "auth.throttled") == 1


def test_successes_are_not_counted(server: ServerProc, server_keys: KEYS) -> None:
    """Many good calls from one address are never throttled: only failures count."""
    token = server.token(server_keys["bob"])
    for _ in range(3 * LIMIT):
        answer = server.call("GET", "/v1/requests", headers={"Authorization": f"Bearer {token}"})
        assert answer.status == 200, answer
    assert server.signed(server_keys["bob"], "POST", "/v1/session").status == 200


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_count_is_shared_by_every_server_process(
    request: pytest.FixtureRequest,
    server_app: Path,
    server_factory: Callable[..., ServerProc],
    server_keys: KEYS,
    backend: str,
) -> None:
    """Failures spread over two server processes on one store add up: the address is
    throttled by both, and by a third that never saw a failure."""
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    first = server_factory(server_app, url)
    second = server_factory(server_app, url)
    third = server_factory(server_app, url)  # sees no failure itself
    in_one_window()
    for index in range(LIMIT):
        assert forged_read((first, second)[index % 2]).status == 401
    assert forged_read(first).status == 429
    assert forged_read(second).status == 429
    answer = third.signed(server_keys["bob"], "POST", "/v1/session")
    assert answer.status == 429, answer


def test_login_links_are_throttled_too(server: ServerProc, server_keys: KEYS) -> None:
    """Forged login links count as failures: after LIMIT of them even a valid link is
    answered 429 with Retry-After, without being spent or audited."""
    in_one_window()
    for _ in range(LIMIT):
        refused = console_post(server, "/console/login", {"token": "forged.link"}, {})
        assert refused.status == 401, refused
    answer = console_post(server, "/console/login", {"token": "forged.link"}, {})
    assert answer.status == 429, answer
    assert 1 <= retry_after(answer) <= 60
    assert b"too many failed authentications" in answer.raw
    logins = len(events(server.app_dir, "console.login"))
    with pytest.raises(AssertionError):
        console_login(server, server_keys["bob"])
    assert len(events(server.app_dir, "console.login")) == logins


def test_forged_run_tokens_are_throttled_too(server: ServerProc) -> None:
    """A runner's calls carry a run token, not a signature: LIMIT forged tokens are
    refused (403) and counted, then the address is answered 429 before its token is
    checked (they used to be refused forever at the cost of a check each)."""
    path = "/v1/runs/r20261207000000deadbeef/heartbeat"
    body = json.dumps({"run_token": "forged"}).encode()
    in_one_window()
    for _ in range(LIMIT):
        refused = server.call("POST", path, body=body)
        assert refused.status == 403, refused
        assert "no valid run token" in refused.error["message"]
    throttled = server.call("POST", path, body=body)
    assert throttled.status == 429, throttled
    assert 1 <= retry_after(throttled) <= 60
    assert audited(server, "auth.throttled") == 1


def test_forged_and_replayed_grants_count_as_failures(
    server_app: Path, server_factory: Callable[..., ServerProc], server_keys: KEYS, tmp_path: Path
) -> None:
    """Starting a run with an altered grant, or with a grant spent already, counts toward
    the limit like a bad signature: the address is throttled once it reaches it."""
    from _grant_kit import ask_grant, plan_for, runner_checkout, start

    server = server_factory(server_app)
    runner = runner_checkout(server_app, tmp_path / "runner")
    answer = ask_grant(server, server_keys["alice"], plan_for(runner, "noop", "development"))
    assert answer.status == 200, answer
    in_one_window()
    assert start(server, answer).status == 200
    statuses = [start(server, answer).status for _ in range(LIMIT - 1)]  # replays
    answer.json["grant"]["locks"] = ["forged"]  # no longer what the server signed
    statuses.append(start(server, answer).status)
    assert statuses == [409] * (LIMIT - 1) + [403], statuses
    assert start(server, answer).status == 429
