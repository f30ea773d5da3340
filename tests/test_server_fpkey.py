"""The server's fingerprint key: the same plan hash on every machine that talks to a server.

Two checkouts of one app (their own ``.oneoff/`` and their own user state directory, i.e.
two machines) fingerprint config values with their own local keys, so the same release and
config hash differently; against one server both use its key and agree.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _access_kit import events, make_access_app
from _serverproc import ServerProc
from oneoff._app import open_app
from oneoff._fpkey import (
    cache_file,
    fetch_answer,
    parse_answer,
    server_fingerprint_key,
    use_server_key,
)
from oneoff._pipeline import RunRequest, make_plan
from oneoff.errors import NotPermitted, StoreError, UsageError

KEYS = dict[str, Path]


def checkout(served: Path, where: Path) -> Path:
    """Another machine's checkout of the served app: same files, releases and store
    contents, but its own ``fingerprint.key`` (made on first use)."""
    shutil.copytree(served, where, ignore=shutil.ignore_patterns("fingerprint.key"))
    return where


def plan_on(root: Path, *, server: ServerProc | None = None, token: str = "") -> dict[str, Any]:
    """``oneoff plan --json`` of a production migrate made on ``root``; against ``server``
    (fingerprinting with its key, fetched with ``token``) when given."""
    app = open_app(root)
    try:
        if server is not None:
            url = f"http://{server.host}:{server.port}"
            use_server_key(app, server.server_id, lambda: fetch_answer(url, token))
        return make_plan(app, RunRequest("migrate", "production")).to_json()
    finally:
        app.close()


def machine(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Act as another machine's user: their own state directory (and key cache)."""
    home.mkdir(mode=0o700, exist_ok=True)
    monkeypatch.setenv("XDG_STATE_HOME", str(home))


@pytest.fixture
def two_machines(
    tmp_path: Path, server_keys: KEYS, server_factory: Callable[..., ServerProc]
) -> tuple[ServerProc, Path, Path]:
    """A server and two other checkouts of its app (a laptop and a deploy host)."""
    served = make_access_app(tmp_path / "served", server_keys)
    # The app is named after its directory: each machine's checkout is ``.../served``.
    laptop = checkout(served, tmp_path / "laptop" / "served")
    deploy = checkout(served, tmp_path / "deploy" / "served")
    return server_factory(served), laptop, deploy


def test_two_machines_hash_alike_against_the_server_and_apart_locally(
    two_machines: tuple[ServerProc, Path, Path],
    server_keys: KEYS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same release and config plan to different hashes on two machines' own keys, and
    to one hash on both when each fingerprints with the server's key (alice on her laptop,
    bob on the deploy host), which the server then verifies the shown values against."""
    server, laptop, deploy = two_machines
    machine(monkeypatch, tmp_path / "home-laptop")
    local_laptop = plan_on(laptop)
    remote_laptop = plan_on(laptop, server=server, token=server.token(server_keys["alice"]))
    machine(monkeypatch, tmp_path / "home-deploy")
    local_deploy = plan_on(deploy)
    remote_deploy = plan_on(deploy, server=server, token=server.token(server_keys["bob"]))
    assert local_laptop["hash"] != local_deploy["hash"]
    assert remote_laptop["hash"] == remote_deploy["hash"]
    assert remote_laptop["document"] == remote_deploy["document"]
    assert remote_laptop["hash"] != local_laptop["hash"]

    from test_server_access import request_body

    def shown(plan: dict[str, Any]) -> dict[str, Any]:
        """The variables the server recorded for a request of ``plan``."""
        body = {"plan": plan, "plan_hash": plan["hash"], **request_body(server_keys, "alice", plan)}
        answer = server.signed(server_keys["alice"], "POST", "/v1/requests", body)
        assert answer.status == 201, answer
        return dict(answer.json["request"]["plan"]["env"])

    # A value the redactor leaves alone (PATH) is checked against the plan's fingerprint:
    # shown as is with the server's key, masked as unverified with a machine's own key.
    assert shown(remote_laptop)["PATH"]["value"] == remote_laptop["env"]["PATH"]["value"]
    assert "unverified" in shown(local_laptop)["PATH"]["value"]


def test_the_key_needs_a_valid_session(server: ServerProc, server_keys: KEYS) -> None:
    """Without a token, with a forged one or one from another key material, the key is
    refused (401, audited); with alice's session it is given, marked no-store, audited."""
    missing = server.call("GET", "/v1/fingerprint-key")
    assert missing.status == 401, missing
    assert "key" not in (missing.json or {})
    token = server.token(server_keys["alice"])
    body, mac = token.split(".")
    forged = server.read(f"{body}.{mac[::-1]}", "/v1/fingerprint-key")
    assert forged.status == 401, forged
    with pytest.raises(NotPermitted, match="session token refused"):
        fetch_answer(f"http://{server.host}:{server.port}", f"{body}.{mac[::-1]}")
    given = server.read(token, "/v1/fingerprint-key")
    assert given.status == 200, given
    assert given.headers["cache-control"] == "no-store"
    assert given.json["server_id"] == server.server_id
    kinds = [e.kind for e in events(server.app_dir)]
    assert kinds.count("auth.refused") == 3  # missing, forged, forged via the client
    assert "server.fingerprint_key" in kinds


def test_the_key_is_the_servers_own_and_stays_across_restarts(
    server_app: Path, server_keys: KEYS, server_factory: Callable[..., ServerProc]
) -> None:
    """The key is kept in the server's store: a restarted server gives the same key, the
    served checkout's own local key is never made, and local commands there use the key."""
    first = server_factory(server_app)
    key = first.read(server_keys["carol"], "/v1/fingerprint-key").json["key"]
    first.stop()
    again = server_factory(server_app)
    assert again.read(server_keys["dave"], "/v1/fingerprint-key").json["key"] == key
    # The server never made (nor used) the served checkout's own local key, and local
    # commands on its store fingerprint with the server's key, as its clients do.
    assert not (server_app / ".oneoff" / "fingerprint.key").exists()
    app = open_app(server_app)
    try:
        assert base64.b64encode(app.fingerprint_key).decode() == key
    finally:
        app.close()


def test_the_cached_key_is_per_server_id(
    tmp_path: Path, server_keys: KEYS, server_factory: Callable[..., ServerProc]
) -> None:
    """A key fetched from server A is cached under A's id and never used for server B:
    B's key is fetched; A's file renamed to B's name, a file others may write, a
    symlink, or an answer from A when B was asked are all refused or ignored."""
    a = server_factory(make_access_app(tmp_path / "a", server_keys))
    b = server_factory(make_access_app(tmp_path / "b", server_keys))
    fetched: list[str] = []

    def fetcher(proc: ServerProc) -> Callable[[], dict[str, Any]]:
        def fetch() -> dict[str, Any]:
            fetched.append(proc.server_id)
            return dict(proc.read(server_keys["alice"], "/v1/fingerprint-key").json)

        return fetch

    key_a = server_fingerprint_key(a.server_id, fetcher(a))
    assert server_fingerprint_key(a.server_id, fetcher(a)) == key_a  # from the cache
    assert fetched == [a.server_id]
    with pytest.raises(UsageError, match="not " + b.server_id):
        server_fingerprint_key(b.server_id, fetcher(a))
    file_a, file_b = cache_file(a.server_id), cache_file(b.server_id)
    assert file_a is not None
    assert file_b is not None
    assert file_a.stat().st_mode & 0o777 == 0o600
    assert not file_b.exists()
    shutil.copyfile(file_a, file_b)  # A's key under B's name: it names server A
    os.chmod(file_b, 0o600)
    key_b = server_fingerprint_key(b.server_id, fetcher(b))
    assert key_b != key_a
    assert fetched == [a.server_id, a.server_id, b.server_id]
    os.chmod(file_b, 0o620)  # group-writable: not trusted, fetched again
    assert server_fingerprint_key(b.server_id, fetcher(b)) == key_b
    file_a.unlink()
    file_a.symlink_to(file_b)  # a symlink is not followed
    assert server_fingerprint_key(a.server_id, fetcher(a)) == key_a
    assert fetched == [a.server_id, a.server_id, b.server_id, b.server_id, a.server_id]


def test_a_fingerprint_key_of_the_wrong_size_is_refused(server_app: Path) -> None:
    """An App refuses a fingerprint key that is not 32 bytes; by default it uses its own."""
    app = open_app(server_app)
    try:
        own = app.fingerprint_key
        with pytest.raises(StoreError, match="32 bytes"):
            app.use_fingerprint_key(b"short")
        assert app.fingerprint_key == own
        app.use_fingerprint_key(b"k" * 32)
        assert app.fingerprint_key == b"k" * 32
    finally:
        app.close()


def test_bad_server_ids_and_answers_are_refused() -> None:
    """A server id that is not 32 hex digits (a path, say) and a malformed key are refused."""
    with pytest.raises(UsageError, match="32 hex"):
        server_fingerprint_key("../../etc/passwd", dict)
    sid = "0" * 32
    for answer in (
        {"server_id": sid, "key": "AAAA", "key_id": "sha256:00"},
        {"server_id": sid, "key": "not base64!", "key_id": ""},
    ):
        with pytest.raises(UsageError, match="malformed"):
            server_fingerprint_key(sid, lambda answer=answer: answer)  # type: ignore[misc]


def test_requested_on_a_laptop_approved_on_another_and_hashed_alike_on_the_host(
    two_machines: tuple[ServerProc, Path, Path],
    server_keys: KEYS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`oneoff request --server` on alice's laptop and `oneoff approve --server` on bob's
    machine (each its own checkout and state dir): bob's client verifies the shown plan
    (with a machine's own key it would call it tampered), and the deploy host plans the
    very hash that was approved."""
    from oneoff.cli import main

    server, laptop, other = two_machines
    url = f"http://{server.host}:{server.port}"
    machine(monkeypatch, tmp_path / "home-alice")
    capsys.readouterr()
    argv = ["request", "migrate", "-e", "production", "--app", str(laptop), "--server", url]
    assert main([*argv, "--key", str(server_keys["alice"])]) == 0
    rid = capsys.readouterr().out.strip()
    machine(monkeypatch, tmp_path / "home-bob")
    argv = ["approve", rid, "--yes", "--app", str(other), "--server", url]
    code = main([*argv, "--key", str(server_keys["bob"])])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "tampered" not in err
    approved = server.read(server_keys["carol"], f"/v1/requests/{rid}").json
    assert [a["approver"] for a in approved["approvals"]] == ["bob"]
    machine(monkeypatch, tmp_path / "home-host")
    host = checkout(laptop, tmp_path / "host" / "served")
    token = server.token(server_keys["dave"])
    assert plan_on(host, server=server, token=token)["hash"] == approved["request"]["plan_hash"]
    assert plan_on(host)["hash"] != approved["request"]["plan_hash"]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=8,
)


@settings(deadline=None)  # the machine is shared: no per-example time limit
@given(
    answer=st.dictionaries(
        st.sampled_from(["server_id", "key", "key_id", "other"]),
        _JSON | st.binary(min_size=0, max_size=40).map(lambda b: base64.b64encode(b).decode()),
    )
)
def test_any_answer_is_a_whole_key_of_that_server_or_refused(answer: dict[str, Any]) -> None:
    """Whatever a server answers, the client gets a 32-byte key named for the server it
    asked, or a UsageError: never another exception, never a key of another size."""
    sid = "a" * 32
    answer.setdefault("server_id", sid)
    try:
        key = parse_answer(answer, sid)
    except UsageError:
        return
    assert len(key) == 32
    assert answer["server_id"] == sid


@pytest.mark.postgres
def test_two_servers_on_one_database_give_one_key(
    server_app: Path, server_keys: KEYS, server_factory: Callable[..., ServerProc], pg_url: str
) -> None:
    """Two server processes on one PostgreSQL database are one server: the same 32-byte
    fingerprint key from either, so plans hash alike whichever one a machine asks."""
    first, second = server_factory(server_app, pg_url), server_factory(server_app, pg_url)
    token = first.token(server_keys["carol"])
    one = first.read(token, "/v1/fingerprint-key").json
    assert one == second.read(token, "/v1/fingerprint-key").json
    assert len(parse_answer(one, first.server_id)) == 32
