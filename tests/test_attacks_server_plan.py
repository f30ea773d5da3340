"""A client that hashes and signs a plan document of its own making, against a REAL server:
a working directory, argv, params or settings other than the server's manifest declares
are refused (400) before anything is stored or granted, and a readable path beside the
document is never kept in its place."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _access_kit import events
from _serverproc import Response, ServerProc
from oneoff._app import open_app
from oneoff._canonical import canonical_hash
from test_attacks_server import ask, plan_json, signed_statement

KEYS = dict[str, Path]


def rehashed(plan: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``plan`` with its document changed and hashed again, as a client of its own would."""
    forged = copy.deepcopy(plan)
    forged["document"].update(changes)
    forged["hash"] = "sha256:" + canonical_hash(forged["document"])
    return forged


def requests_stored(server: ServerProc) -> int:
    app = open_app(server.app_dir)
    try:
        return len(app.store.list_requests(status=None))
    finally:
        app.close()


@pytest.mark.parametrize("cwd", ["../../../tmp", "/etc", "evil", "", None])
def test_a_request_for_another_working_directory_is_refused(
    server: ServerProc, server_keys: KEYS, cwd: str | None
) -> None:
    """A plan whose working directory is not the task's (outside the app, absolute, or
    just another directory, where `python -m` would find other code) is refused: 400,
    exit 2, nothing stored or audited as created."""
    plan = rehashed(plan_json(server.app_dir), cwd=cwd)
    answer = ask(server, server_keys, "alice", plan)
    assert answer.status == 400, answer
    assert answer.error["exit"] == 2
    assert "working directory" in answer.error["message"]
    assert requests_stored(server) == 0
    assert events(server.app_dir, "request.created") == []


def _other_code(plan: dict[str, Any]) -> dict[str, Any]:
    argv = list(plan["document"]["argv"])
    argv[2] = "import shutil; shutil.rmtree('/srv/data')"
    return {"argv": argv}


EDITS = {
    "argv": _other_code,
    "interactive": lambda plan: {"interactive": True},
    "grace": lambda plan: {"grace": 1},
    "timeout": lambda plan: {"timeout": 604800},
    "risk": lambda plan: {"risk": "low"},
    "locks": lambda plan: {"locks": []},
    "executor": lambda plan: {"executor": {"kind": "sandbox", "writable": ["/"]}},
    "unknown-param": lambda plan: {"params": {**plan["document"]["params"], "extra": "1"}},
    "param-pattern": lambda plan: {"params": {"target": "0001; rm -rf ~"}},
}


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_a_request_whose_plan_differs_from_the_manifest_is_refused(
    server: ServerProc, server_keys: KEYS, edit: Any
) -> None:
    """argv, settings or params other than the server's manifest declares (here of
    `migrate`) are refused with 400 and nothing is stored: approvers are never asked to
    approve, and no grant could spend, a plan the manifest does not allow."""
    plan = plan_json(server.app_dir)
    answer = ask(server, server_keys, "alice", rehashed(plan, **edit(plan)))
    assert answer.status == 400, answer
    assert answer.error["exit"] == 2
    assert requests_stored(server) == 0


@pytest.mark.parametrize("value", ["a\u202etxt.exe", "a\x9bb", "../../etc/passwd\x1b[8m"])
def test_a_request_with_a_param_no_cli_would_accept_is_refused(
    server: ServerProc, server_keys: KEYS, value: str
) -> None:
    """A param value carrying a bidi override or a control character, made by a client
    that skips the CLI's checks, is refused by the server too (400)."""
    plan = plan_json(server.app_dir, task="hold", env="production")
    params = {**plan["document"]["params"], "pidfile": value}
    argv = list(plan["document"]["argv"])
    argv[2] = value
    answer = ask(server, server_keys, "alice", rehashed(plan, params=params, argv=argv))
    assert answer.status == 400, answer
    assert "pidfile" in answer.error["message"]
    assert requests_stored(server) == 0


def test_the_stored_working_directory_is_the_documents(
    server: ServerProc, server_keys: KEYS
) -> None:
    """The readable `cwd` a client sends beside the document (a path on its machine) is not
    kept: the request holds the document's, which the manifest vouches for."""
    plan = plan_json(server.app_dir)
    plan["cwd"] = "/etc/evil"
    answer = ask(server, server_keys, "alice", plan)
    assert answer.status == 201, answer
    assert answer.json["request"]["plan"]["cwd"] == plan["document"]["cwd"] == "."


def grant(server: ServerProc, keys: KEYS, plan: dict[str, Any]) -> Response:
    body = {"plan": plan, "plan_hash": plan["hash"], **signed_statement(keys, "alice", plan, "run")}
    return server.signed(keys["alice"], "POST", "/v1/grants", body)


@pytest.mark.parametrize("cwd", ["evil", "../../../tmp", "/"])
def test_no_grant_for_a_run_in_another_working_directory(
    server: ServerProc, server_keys: KEYS, cwd: str
) -> None:
    """A runner whose plan runs the task from another directory gets no grant (400): no
    run is created, no lock taken, nothing audited as granted. The honest plan still gets
    one, so the refusal is the working directory's."""
    plan = plan_json(server.app_dir, task="noop", env="production")
    answer = grant(server, server_keys, rehashed(plan, cwd=cwd))
    assert answer.status == 400, answer
    assert "working directory" in answer.error["message"]
    assert events(server.app_dir, "run.granted") == []
    honest = grant(server, server_keys, plan)
    assert honest.status in (200, 201), honest


PROCFILE = (
    'release: python -c "import sys; print(sys.argv[1:])" --database=$DB_NAME ${MODE:-safe}\n'
)


@pytest.fixture
def release_server(
    tmp_path: Path, server_keys: KEYS, server_factory: Callable[..., ServerProc]
) -> ServerProc:
    """A server whose app has a Procfile `release:` line with $VARs from its config."""
    from _access_kit import make_access_app

    env = "DATABASE_URL=postgres://app:prod-pass-999@db/app\nDB_NAME=main\n"
    files = {"Procfile": PROCFILE, ".env.production": env}
    return server_factory(make_access_app(tmp_path / "served", server_keys, extra_files=files))


def test_a_release_lines_expanded_argv_is_accepted(
    release_server: ServerProc, server_keys: KEYS
) -> None:
    """The release task's argv, its $VARs filled from config on the client, is accepted:
    the server checks the values against the document's fingerprints of them."""
    plan = plan_json(release_server.app_dir, task="release")
    assert plan["document"]["argv"][3:] == ["--database=main", "safe"]
    answer = ask(release_server, server_keys, "alice", plan)
    assert answer.status == 201, answer


RELEASE_EDITS = {
    "other-value": ["--database=other", "safe"],
    "other-flag": ["--flush=main", "safe"],
    "default-over-a-set-value": ["--database=main", "fast"],
    "extra-text": ["--database=main --noinput", "safe"],
}


@pytest.mark.parametrize("tail", RELEASE_EDITS.values(), ids=RELEASE_EDITS.keys())
def test_a_release_line_with_other_arguments_is_refused(
    release_server: ServerProc, server_keys: KEYS, tail: list[str]
) -> None:
    """A client that rewrites the release line's arguments (another database, another
    flag, extra text) and hashes and signs that document itself is refused (400): the
    server used to check only argv[0] of a Procfile line."""
    plan = plan_json(release_server.app_dir, task="release")
    argv = plan["document"]["argv"][:3] + tail
    answer = ask(release_server, server_keys, "alice", rehashed(plan, argv=argv))
    assert answer.status == 400, answer
    assert "argv" in answer.error["message"]
    assert requests_stored(release_server) == 0


def test_a_release_line_checked_against_forged_fingerprints_is_refused(
    release_server: ServerProc, server_keys: KEYS
) -> None:
    """Forging the document's fingerprint of a variable to match another value does not
    help: without the server's key the fingerprint is not the server's."""
    from oneoff._plan import fingerprint

    plan = plan_json(release_server.app_dir, task="release")
    argv = [*plan["document"]["argv"][:3], "--database=other", "safe"]
    env = {**plan["document"]["env"], "DB_NAME": fingerprint(b"\0" * 32, "DB_NAME", "other")}
    answer = ask(release_server, server_keys, "alice", rehashed(plan, argv=argv, env=env))
    assert answer.status == 400, answer
    assert requests_stored(release_server) == 0
