"""request/approve/deny/requests through a REAL server: the same output and exit codes as
the same commands run locally (on the server's own store, so both see the same records)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from _access_kit import events
from _serverproc import ServerProc
from oneoff.cli import main

KEYS = dict[str, Path]


def url(server: ServerProc) -> str:
    return f"http://127.0.0.1:{server.port}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[Any]]:
    """Exit code, stdout, and stderr's log records without their time stamps."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    records = []
    for line in err.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            records.append(line)
            continue
        record.pop("ts", None)
        records.append(record)
    return code, out, records


def both(
    capsys: pytest.CaptureFixture[str], server: ServerProc, *argv: str
) -> tuple[tuple[int, str, list[Any]], tuple[int, str, list[Any]]]:
    """The command run locally on the server's app, then through the server."""
    local = run(capsys, *argv, "--app", str(server.app_dir))
    remote = run(capsys, *argv, "--server", url(server))
    return local, remote


def request_via_server(
    capsys: pytest.CaptureFixture[str], server: ServerProc, key: Path, task: str = "migrate"
) -> str:
    code, out, err = run(
        capsys, "request", task, "-e", "production", "--app", str(server.app_dir),
        "--server", url(server), "--key", str(key),
    )  # fmt: skip
    assert code == 0, err
    return out.strip()


def test_a_request_made_through_the_server_is_listed_the_same_both_ways(
    server: ServerProc, server_keys: KEYS, capsys: pytest.CaptureFixture[str]
) -> None:
    """The request is recorded by the server (audited there, by the signer) and `requests`
    prints the same rows, text and JSON, locally and through the server."""
    rid = request_via_server(capsys, server, server_keys["alice"])
    assert rid.startswith("q")
    created = events(server.app_dir, "request.created")[-1]
    assert (created.actor, created.payload["request"]) == ("alice", rid)
    key = str(server_keys["bob"])
    for extra in ((), ("--json",), ("--all",)):
        local, remote = both(capsys, server, "requests", "--key", key, *extra)
        assert local == remote
        assert local[0] == 0
        assert rid in local[1]


def test_approvals_through_the_server_match_local_mode(
    server: ServerProc, server_keys: KEYS, capsys: pytest.CaptureFixture[str]
) -> None:
    """bob approves through the server (the shown plan and message as locally); a second
    approval, a self-approval and an outsider are refused with the same exit code and
    message in both modes."""
    rid = request_via_server(capsys, server, server_keys["alice"])
    bob, alice = str(server_keys["bob"]), str(server_keys["alice"])
    code, shown, err = run(
        capsys, "approve", rid, "--yes", "--server", url(server), "--key", bob,
        "--app", str(server.app_dir),
    )  # fmt: skip
    assert code == 0, err
    assert f"request    {rid}  (pending)" in shown
    assert f"bob approved {rid}" in str(err)
    assert events(server.app_dir, "request.approved")[-1].actor == "bob"
    for key, exit_code, words in (
        (bob, 4, "already approved"), (alice, 4, "self-approval"),
        (str(server_keys["mallory"]), 3, ""),
    ):  # fmt: skip
        local = run(capsys, "approve", rid, "--yes", "--key", key, "--app", str(server.app_dir))
        remote = run(
            capsys, "approve", rid, "--yes", "--key", key, "--app", str(server.app_dir),
            "--server", url(server),
        )  # fmt: skip
        assert local[0] == remote[0] == exit_code, (local, remote)
        assert words in str(local[2])
        # The server names its files relative to its app (it shows strangers no paths).
        here = local[2][-1]["msg"].replace(f"{server.app_dir.resolve()}/", "")
        assert here == remote[2][-1]["msg"]


def test_deny_through_the_server_matches_local_mode(
    server: ServerProc, server_keys: KEYS, capsys: pytest.CaptureFixture[str]
) -> None:
    """A denial through the server ends the request (audited with the reason); denying it
    again is exit 4 with the same message both ways."""
    rid = request_via_server(capsys, server, server_keys["alice"])
    carol = str(server_keys["carol"])
    code, _, err = run(
        capsys, "deny", rid, "--reason", "not now", "--key", carol, "--server", url(server)
    )
    assert code == 0, err
    assert err[-1] == f"oneoff: request {rid} denied"
    denied = events(server.app_dir, "request.denied")[-1]
    assert (denied.actor, denied.payload["reason"]) == ("carol", "not now")
    local, remote = both(capsys, server, "deny", rid, "--reason", "again", "--key", carol)
    assert local[0] == remote[0] == 4
    assert local[2][-1]["msg"] == remote[2][-1]["msg"]


def test_an_unknown_request_is_the_same_usage_error_both_ways(
    server: ServerProc, server_keys: KEYS, capsys: pytest.CaptureFixture[str]
) -> None:
    """A request id nobody made: exit 2 and the same message locally and remotely; an id
    that tries to climb out of its path segment reaches no other endpoint."""
    key = str(server_keys["bob"])
    local, remote = both(capsys, server, "deny", "q-nope", "--reason", "x", "--key", key)
    assert local[0] == remote[0] == 2, (local, remote)
    assert local[2][-1]["msg"] == remote[2][-1]["msg"]
    code, _, err = run(
        capsys, "deny", "../../v1/server", "--reason", "x", "--key", key, "--server", url(server)
    )
    assert code != 0
    assert "404" in err[-1]["msg"] or "no request" in err[-1]["msg"]


def test_a_refused_session_token_is_renewed_once(
    server: ServerProc, server_keys: KEYS, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cached token the server refuses (forged, or its key rotated) is dropped and a
    new one asked for: the command still works, and the cache holds the new token."""
    from oneoff._client.session import _file, cached_token
    from oneoff._identity import Signer

    key = server_keys["dave"]
    signer = Signer(key, agent=False)
    assert run(capsys, "requests", "--key", str(key), "--server", url(server))[0] == 0
    good = cached_token(url(server), signer)
    assert good is not None
    path = _file(url(server), signer)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "token": "forged." + good.split(".")[-1]}))
    code, _, err = run(capsys, "requests", "--key", str(key), "--server", url(server))
    assert code == 0, err
    renewed = cached_token(url(server), signer)
    assert renewed is not None
    assert not renewed.startswith("forged.")
