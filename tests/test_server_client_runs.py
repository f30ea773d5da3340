"""runs/show/logs/locks through a REAL server print what they print locally (the runs are
recorded in the server's own store, so both modes read the same records)."""

from __future__ import annotations

from pathlib import Path

import pytest

from _access_kit import run_as
from _serverproc import ServerProc
from oneoff.cli import main

KEYS = dict[str, Path]


def url(server: ServerProc) -> str:
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
def served(server: ServerProc) -> ServerProc:
    """The server, once the run-grant part's read endpoints are registered (they land
    separately: until then these tests have nothing to call)."""
    if "/v1/runs" not in server.call("GET", "/openapi.json").json["paths"]:
        pytest.skip("the server has no /v1/runs yet (run grants land separately)")
    return server


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_run_history_is_the_same_locally_and_through_the_server(
    served: ServerProc, server_keys: KEYS, capsys: pytest.CaptureFixture[str]
) -> None:
    """`runs`, `show` and `logs` (text and JSON) print the same bytes both ways."""
    server = served
    for _ in range(2):
        assert run_as(server.app_dir, server_keys, "alice", "noop", "development").exit_code == 0
    key = str(server_keys["bob"])
    local = run(capsys, "runs", "--json", "--app", str(server.app_dir))
    assert local[0] == 0
    newest = local[1].split('"id": "', 1)[1].split('"', 1)[0]
    for argv in (
        ("runs",), ("runs", "--json"), ("runs", "-n", "1", "--task", "noop"),
        ("show", newest), ("show", newest[:-2], "--json"),
        ("logs", newest), ("logs", newest, "--json"), ("locks",), ("locks", "--json"),
    ):  # fmt: skip
        here = run(capsys, *argv, "--app", str(server.app_dir))
        there = run(capsys, *argv, "--server", url(server), "--key", key)
        assert here == there, argv
        assert here[0] == 0, (argv, capsys.readouterr())
    assert "noop ran" in run(capsys, "logs", newest, "--server", url(server), "--key", key)[1]


def test_an_unknown_run_is_the_same_error_both_ways(
    served: ServerProc, server_keys: KEYS, capsys: pytest.CaptureFixture[str]
) -> None:
    """`show` of a run nobody ran is exit 2 with the same message locally and remotely."""
    server = served
    local = main(["show", "r-nope", "--app", str(server.app_dir)])
    err_local = capsys.readouterr().err
    remote = main(["show", "r-nope", "--server", url(server), "--key", str(server_keys["bob"])])
    err_remote = capsys.readouterr().err
    assert local == remote == 2
    assert (
        err_local.split('"msg": ')[1].split(",")[0] == err_remote.split('"msg": ')[1].split(",")[0]
    )
