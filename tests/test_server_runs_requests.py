"""A request approved on the server runs through it once: the grant spends the approvals
in the transaction that creates the run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from _grant_kit import ask_grant, cli, plan_for, runner_checkout
from _serverproc import ServerProc
from oneoff._canonical import canonical_json
from oneoff._identity import (
    NAMESPACE_APPROVE,
    NAMESPACE_REQUEST,
    Signer,
    approval_statement,
    iso,
    request_statement,
    utc_now,
)
from oneoff._store.interface import RequestRecord

KEYS = dict[str, Path]


@pytest.fixture
def served(
    server_app: Path, server_factory: Callable[..., ServerProc], tmp_path: Path
) -> tuple[ServerProc, Path]:
    return server_factory(server_app), runner_checkout(server_app, tmp_path / "runner")


def _approved_request(server: ServerProc, runner: Path, keys: KEYS) -> str:
    """bob asks to run migrate in production; carol and erin (dba) approve its plan."""
    plan = plan_for(runner, "migrate", "production")
    statement = request_statement(
        "request", app=plan.project.name, task="migrate", environment="production",
        plan_hash=plan.hash,
    )  # fmt: skip
    signature = Signer(keys["bob"], agent=False).sign(canonical_json(statement), NAMESPACE_REQUEST)
    body = {"plan": plan.to_json(), "plan_hash": plan.hash, "statement": statement,
            "signature": signature.decode()}  # fmt: skip
    created = server.signed(keys["bob"], "POST", "/v1/requests", body)
    assert created.status in (200, 201), created
    request = created.json["request"]
    record = RequestRecord(**request)
    for who in ("carol", "erin"):
        when = iso(utc_now())
        signed = approval_statement(record, request["policy_version"], when)
        approval = Signer(keys[who], agent=False).sign(signed, NAMESPACE_APPROVE)
        answer = server.signed(
            keys[who], "POST", f"/v1/requests/{record.id}/approvals",
            {"time": when, "policy_version": request["policy_version"],
             "signature": approval.decode()},
        )  # fmt: skip
        assert answer.status in (200, 201), answer
    return record.id


def test_an_approved_request_runs_through_the_server_once(
    served: tuple[ServerProc, Path], server_keys: KEYS
) -> None:
    """`run --request ID --server` runs the approved plan; the approvals are spent, so a
    second run of the same request is refused (exit 4)."""
    server, runner = served
    request_id = _approved_request(server, runner, server_keys)
    bob = str(server_keys["bob"])
    ran = cli(runner, "run", "--request", request_id, "--key", bob, server=server)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "migrated to latest\n"
    again = cli(runner, "run", "--request", request_id, "--key", bob, server=server)
    assert again.returncode == 4, again.stderr
    assert "already used" in again.stderr
    shown = server.read(server_keys["bob"], f"/v1/requests/{request_id}").json["request"]
    assert shown["status"] == "used"


def test_a_migrate_without_approvals_gets_no_grant(
    served: tuple[ServerProc, Path], server_keys: KEYS
) -> None:
    """The quorum is the server's to check: a plan that needs approvals and names no
    approved request is refused (409, exit 4) and nothing is run or locked."""
    server, runner = served
    answer = ask_grant(server, server_keys["bob"], plan_for(runner, "migrate", "production"))
    assert answer.status == 409, answer
    assert answer.error["exit"] == 4
    assert server.read(server_keys["bob"], "/v1/locks").json["locks"] == []
