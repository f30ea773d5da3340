"""Attacks on authorization, approvals and releases (issue 10, items 1, 2, 3, 6 and 8).

The attacker is an operator with their own key, and, where a test says so, one who can
also write ``.oneoff/`` (the store) but not the code. Each attack is refused with a
clear message, the documented exit code and an audit event.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _access_kit import PEOPLE, Keys, events, make_access_app, release, run_as, signers_text
from oneoff._app import open_app
from oneoff._identity import parse_iso, utc_now
from oneoff.errors import ApprovalError
from oneoff.testing import CliResult, run_cli

pytest_plugins = ["_access_kit"]

EXIT_NOT_PERMITTED, EXIT_APPROVAL, EXIT_RELEASE = 3, 4, 6

CONSOLE_TASK = """
[tasks.shell]
argv = ["python", "-c", "print('console opened')"]
interactive = true
risk = "high"
"""

NO_CONSOLES = """
@id("no-consoles-in-production")
forbid (principal, action == Oneoff::Action::"console", resource)
when { context.environment == "production" };
"""


def cli(root: Path, env: dict[str, str], *args: str) -> CliResult:
    return run_cli(list(args), cwd=root, env=env)


def db(root: Path) -> sqlite3.Connection:
    """The store, opened as an attacker who can write .oneoff/ would."""
    return sqlite3.connect(root / ".oneoff" / "state.db")


def decided(root: Path, action: str) -> list[dict[str, object]]:
    return [
        dict(e.payload) for e in events(root, "access.decided") if e.payload["action"] == action
    ]


def release_key(keys: Keys) -> Path:
    return keys["alice"].parent / "release.key"


@pytest.fixture
def console_app(tmp_path: Path, keys: Keys) -> Path:
    """The kit's app plus an interactive task and the example's no-consoles policy."""
    root = make_access_app(tmp_path / "app", keys)
    with (root / "oneoff.toml").open("a") as fh:
        fh.write(CONSOLE_TASK)
    (root / "policies" / "consoles.cedar").write_text(NO_CONSOLES)
    release(root, "production", release_key(keys))
    return root


# -- 1. every action is decided ----------------------------------------------------------


def test_console_in_production_is_refused(
    console_app: Path, keys: Keys, env: dict[str, str]
) -> None:
    """A developer allowed to run high-risk tasks cannot open a console in production."""
    ran = cli(console_app, env, "run", "shell", "--env", "production", "--key", str(keys["alice"]))
    assert ran.exit_code == EXIT_NOT_PERMITTED, ran.stdout + ran.stderr
    assert "console opened" not in ran.stdout
    assert "forbidden by no-consoles-in-production" in ran.stderr
    denial = decided(console_app, "console")[-1]
    assert denial["allowed"] is False
    assert denial["reasons"] == ["no-consoles-in-production"]
    assert not events(console_app, "run.started")


def test_policy_test_and_enforcement_agree_on_consoles(
    console_app: Path, keys: Keys, env: dict[str, str]
) -> None:
    """A table row about running an interactive task is decided as the run is: both deny."""
    table = console_app / "consoles.toml"
    table.write_text(
        '[[case]]\nprincipal = "alice"\naction = "run"\ntask = "shell"\n'
        'environment = "production"\nexpect = "allow"\n'
    )
    tested = cli(console_app, env, "policy", "test", str(table))
    assert tested.exit_code == 1
    assert "expected allow, got deny" in tested.stdout
    assert "no-consoles-in-production" in tested.stdout


def test_policy_test_refuses_a_question_no_command_asks(root: Path, env: dict[str, str]) -> None:
    """A console row about a task that is not interactive fails instead of passing vacuously,
    and so do rows about undeclared tasks or attributes the app does not have."""
    table = root / "vacuous.toml"
    table.write_text(
        '[[case]]\nprincipal = "alice"\ngroups = ["developers"]\naction = "console"\n'
        'task = "noop"\nenvironment = "production"\nexpect = "deny"\n'
        '[[case]]\nprincipal = "alice"\ngroups = ["developers"]\naction = "run"\n'
        'task = "console"\ninteractive = true\nenvironment = "production"\nexpect = "deny"\n'
        '[[case]]\nprincipal = "alice"\ngroups = ["developers"]\naction = "run"\n'
        'task = "migrate"\nrisk = "critical"\nenvironment = "production"\nexpect = "deny"\n'
    )
    tested = cli(root, env, "policy", "test", str(table))
    assert tested.exit_code == 1
    assert "0 passed, 3 failed" in tested.stdout
    assert "no command asks console for noop" in tested.stdout
    assert "declares no task 'console'" in tested.stdout
    assert "the row says risk='critical', oneoff.toml says 'high'" in tested.stdout


def test_plan_is_decided(root: Path, keys: Keys, env: dict[str, str]) -> None:
    """`oneoff plan` in production needs a key and a plan permission; both refusals audited."""
    anonymous = cli(root, env, "plan", "noop", "--env", "production")
    assert anonymous.exit_code == EXIT_NOT_PERMITTED
    assert "accepts only signed requests" in anonymous.stderr
    assert events(root, "auth.refused")
    dave = cli(root, env, "plan", "noop", "--env", "production", "--key", str(keys["dave"]))
    assert dave.exit_code == EXIT_NOT_PERMITTED
    assert "denied dave to plan noop in production" in dave.stderr
    assert decided(root, "plan")[-1]["allowed"] is False
    assert not events(root, "run.planned")
    alice = cli(root, env, "plan", "noop", "--env", "production", "--key", str(keys["alice"]))
    assert alice.exit_code == 0, alice.stderr
    assert [e.actor for e in events(root, "run.planned")] == ["alice"]


def test_request_needs_the_plan_permission(root: Path, keys: Keys, env: dict[str, str]) -> None:
    """Asking for approval is planning: someone who may not plan cannot make a request."""
    made = cli(root, env, "request", "noop", "--env", "production", "--key", str(keys["dave"]))
    assert made.exit_code == EXIT_NOT_PERMITTED
    assert "denied dave to plan noop" in made.stderr
    assert decided(root, "plan")[-1]["allowed"] is False
    assert not events(root, "request.created")


def test_release_create_is_decided(root: Path, keys: Keys, env: dict[str, str]) -> None:
    """Holding the release key is not enough: the person creating a release in production
    must sign, and policy must allow them to release."""
    key = str(release_key(keys))
    unsigned = cli(root, env, "release", "create", "--env", "production", "--key", key)
    assert unsigned.exit_code == EXIT_NOT_PERMITTED
    assert "accepts only signed requests" in unsigned.stderr
    alice = cli(root, env, "release", "create", "--env", "production", "--key", key,
                "--person-key", str(keys["alice"]))  # fmt: skip
    assert alice.exit_code == EXIT_NOT_PERMITTED
    assert "denied alice to release oneoff:app in production" in alice.stderr
    assert decided(root, "release")[-1]["allowed"] is False
    assert len(events(root, "release.created")) == 2  # production and staging from setup
    bob = cli(root, env, "release", "create", "--env", "production", "--key", key,
              "--person-key", str(keys["bob"]))  # fmt: skip
    assert bob.exit_code == 0, bob.stderr
    assert events(root, "release.created")[-1].actor == "bob"


def test_audit_export_is_decided(root: Path, keys: Keys, env: dict[str, str]) -> None:
    """Exporting the audit log of an app with [access] needs a key and an audit-export
    permission; a refusal exports nothing and is audited."""
    anonymous = cli(root, env, "audit", "export")
    assert anonymous.exit_code == EXIT_NOT_PERMITTED
    assert anonymous.stdout == ""
    bob = cli(root, env, "audit", "export", "--key", str(keys["bob"]))
    assert bob.exit_code == EXIT_NOT_PERMITTED
    assert bob.stdout == ""
    assert "denied bob to audit-export oneoff:app in *" in bob.stderr
    assert decided(root, "audit-export")[-1]["allowed"] is False
    (root / "policies" / "audit.cedar").write_text(
        '@id("dba-export")\npermit (principal in Oneoff::Group::"dba", '
        'action == Oneoff::Action::"audit-export", resource);\n'
    )
    allowed = cli(root, env, "audit", "export", "--key", str(keys["bob"]))
    assert allowed.exit_code == 0, allowed.stderr
    assert allowed.stdout.count("\n") > 5
    assert events(root, "audit.exported")[-1].actor == "bob"


# -- 3. approval expiry comes from the signed time ---------------------------------------


def test_editing_expires_at_does_not_revive_an_approval(tmp_path: Path, keys: Keys) -> None:
    """An attacker who can write the store extends expires_at; the expiry is recomputed
    from the signed approval time plus the TTL, so the run is refused and audited."""
    from test_access_approvals import approve_as, request

    root = make_access_app(tmp_path / "app", keys, ttl="1")
    rid = request(root, keys, "alice")
    approve_as(root, keys, "bob", rid)
    approve_as(root, keys, "carol", rid)
    with db(root) as conn:
        conn.execute("UPDATE approvals SET expires_at = '2999-01-01T00:00:00Z'")
        signed = [parse_iso(t) for (t,) in conn.execute("SELECT created_at FROM approvals")]
    # Wait for the real condition: both signed times are more than the TTL in the past.
    deadline = time.monotonic() + 30
    while max(signed).timestamp() + 1 >= utc_now().timestamp() and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(ApprovalError, match="expired at") as refused:
        run_as(root, keys, "alice", "migrate", "production", request_id=rid)
    assert refused.value.exit_code == EXIT_APPROVAL
    reasons = [str(e.payload["reason"]) for e in events(root, "approval.refused")]
    assert any("expired at" in r for r in reasons)
    assert not events(root, "run.started")


# -- 6. releases: rollback is decided, old releases can be revoked ------------------------


def test_rollback_needs_a_person_and_a_release_decision(
    root: Path, keys: Keys, env: dict[str, str]
) -> None:
    """Rolling production back without a key, or as someone policy does not let release,
    is refused and audited; a dba may."""
    release(root, "production", release_key(keys))
    anonymous = cli(root, env, "release", "rollback", "--env", "production")
    assert anonymous.exit_code == EXIT_NOT_PERMITTED
    assert "accepts only signed requests" in anonymous.stderr
    assert events(root, "auth.refused")
    alice = cli(root, env, "release", "rollback", "--env", "production",
                "--person-key", str(keys["alice"]))  # fmt: skip
    assert alice.exit_code == EXIT_NOT_PERMITTED
    assert decided(root, "release")[-1]["allowed"] is False
    assert not events(root, "release.rolled_back")
    bob = cli(root, env, "release", "rollback", "--env", "production",
              "--person-key", str(keys["bob"]))  # fmt: skip
    assert bob.exit_code == 0, bob.stderr
    assert events(root, "release.rolled_back")[-1].actor == "bob"


def test_rollback_of_a_protected_environment_without_access_is_refused(
    tmp_path: Path, keys: Keys, env: dict[str, str]
) -> None:
    """Without [access] nobody can be verified, so a protected environment is not rolled back."""
    root = make_access_app(tmp_path / "app", keys)
    release(root, "production", release_key(keys))
    manifest = root / "oneoff.toml"
    text = manifest.read_text()
    start = text.index("[access]")
    manifest.write_text(text[:start] + text[text.index("[environments.development]") :])
    refused = cli(root, env, "release", "rollback", "--env", "production")
    assert refused.exit_code == EXIT_NOT_PERMITTED
    assert "nobody can be verified to roll it back" in refused.stderr
    assert not events(root, "release.rolled_back")


def test_a_revoked_release_cannot_run(root: Path, keys: Keys, env: dict[str, str]) -> None:
    """v2 signed with --min-version 2 revokes v1: `run --release v1` is refused (exit 6),
    audited."""
    release(root, "production", release_key(keys), min_version=2)
    ran = cli(root, env, "run", "noop", "--env", "production", "--release", "v1",
              "--key", str(keys["alice"]))  # fmt: skip
    assert ran.exit_code == EXIT_RELEASE
    assert "release production v1" in ran.stderr
    assert "is revoked" in ran.stderr
    assert "noop ran" not in ran.stdout
    failed = events(root, "release.verify_failed")[-1]
    assert "revoked" in str(failed.payload["error"])
    current = cli(root, env, "run", "noop", "--env", "production", "--key", str(keys["alice"]))
    assert current.exit_code == 0, current.stderr


def test_rollback_cannot_undercut_the_floor(root: Path, keys: Keys, env: dict[str, str]) -> None:
    """A dba allowed to release still cannot roll back below the signed minimum."""
    release(root, "production", release_key(keys), min_version=2)
    rolled = cli(root, env, "release", "rollback", "--env", "production",
                 "--person-key", str(keys["bob"]))  # fmt: skip
    assert rolled.exit_code == EXIT_RELEASE
    assert "is revoked" in rolled.stderr
    assert "revoked" in str(events(root, "release.refused")[-1].payload["reason"])
    assert not events(root, "release.rolled_back")


def test_moving_the_current_pointer_back_in_the_store_is_refused(
    root: Path, keys: Keys, env: dict[str, str]
) -> None:
    """An attacker who writes .oneoff/ points production back at v1; runs refuse it."""
    release(root, "production", release_key(keys), min_version=2)
    with db(root) as conn:
        (v1,) = conn.execute(
            "SELECT id FROM releases WHERE environment = 'production' AND version = 1"
        ).fetchone()
        conn.execute(
            "UPDATE current_releases SET release_id = ? WHERE environment = 'production'", (v1,)
        )
    ran = cli(root, env, "run", "noop", "--env", "production", "--key", str(keys["alice"]))
    assert ran.exit_code == EXIT_RELEASE
    assert "is revoked" in ran.stderr
    assert events(root, "release.verify_failed")


def test_editing_the_floor_in_the_store_voids_that_release(
    root: Path, keys: Keys, env: dict[str, str]
) -> None:
    """Rewriting v2's signed min_version changes its id: v2 is refused as tampered, and v1
    is not revived by a floor-lowering edit since the edited row proves nothing."""
    release(root, "production", release_key(keys), min_version=2)
    with db(root) as conn:
        conn.execute(
            "UPDATE releases SET document = replace(document, '\"min_version\":2', "
            "'\"min_version\":1') WHERE environment = 'production' AND version = 2"
        )
    ran = cli(root, env, "run", "noop", "--env", "production", "--key", str(keys["alice"]))
    assert ran.exit_code == EXIT_RELEASE
    assert "tampered" in ran.stderr
    assert events(root, "release.verify_failed")


def test_the_floor_never_goes_down(root: Path, keys: Keys, env: dict[str, str]) -> None:
    """A new release carries the floor forward, and --min-version below it is refused."""
    release(root, "production", release_key(keys), min_version=2)
    lowered = cli(root, env, "release", "create", "--env", "production", "--key",
                  str(release_key(keys)), "--person-key", str(keys["bob"]),
                  "--min-version", "1")  # fmt: skip
    assert lowered.exit_code == 2
    assert "a floor never goes down" in lowered.stderr
    release(root, "production", release_key(keys))  # v3, no --min-version: floor stays 2
    app = open_app(root)
    try:
        from oneoff._release.floor import environment_floor

        floor = environment_floor(app, app.project.environment("production"))
    finally:
        app.close()
    assert floor.version == 2
    assert floor.set_by is not None
    assert floor.set_by.version == 3


# -- 2. the approver is shown what they sign ---------------------------------------------


def edit_request_plan(root: Path, rid: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a request's stored plan as an attacker who writes .oneoff/ would."""
    with db(root) as conn:
        (text,) = conn.execute("SELECT plan FROM requests WHERE id = ?", (rid,)).fetchone()
        plan = json.loads(text)
        change(plan)
        conn.execute("UPDATE requests SET plan = ? WHERE id = ?", (json.dumps(plan), rid))


def ask(root: Path, keys: Keys, env: dict[str, str], *args: str) -> str:
    made = cli(root, env, "request", *args, "--key", str(keys["alice"]))
    assert made.exit_code == 0, made.stderr
    return made.stdout.strip()


def test_an_edited_plan_document_is_refused_before_signing(
    root: Path, keys: Keys, env: dict[str, str]
) -> None:
    """The store shows `--to latest` while the hash is of `--to 0001`: bob is refused (exit 4,
    audited) instead of signing a hash of something he was not shown."""
    rid = ask(root, keys, env, "migrate", "--env", "production", "-p", "target=0001")

    def to_latest(plan: dict[str, Any]) -> None:
        plan["document"]["argv"][-1] = "latest"
        plan["document"]["params"]["target"] = "latest"

    edit_request_plan(root, rid, to_latest)
    shown = cli(root, env, "approve", rid, "--yes", "--key", str(keys["bob"]))
    assert shown.exit_code == EXIT_APPROVAL
    assert "does not match its plan hash" in shown.stderr
    assert "latest" not in shown.stdout
    refused = events(root, "approval.refused")[-1]
    assert "does not match its plan hash" in str(refused.payload["reason"])
    assert not events(root, "request.approved")


def test_unhashed_display_fields_cannot_mislead_the_approver(
    root: Path, keys: Keys, env: dict[str, str]
) -> None:
    """Edited readable copies (argv, params, release) beside the hashed document are not
    shown: the approver sees the hashed plan, `--to 0001`."""
    rid = ask(root, keys, env, "migrate", "--env", "production", "-p", "target=0001")

    def relabel(plan: dict[str, Any]) -> None:
        plan["argv"] = ["python", "-m", "notes.migrate", "--to", "latest"]
        plan["params"] = {"target": "latest"}
        plan["release"] = "rel_" + "0" * 64

    edit_request_plan(root, rid, relabel)
    shown = cli(root, env, "approve", rid, "--yes", "--key", str(keys["bob"]))
    assert shown.exit_code == 0, shown.stderr
    assert "latest" not in shown.stdout
    assert "target=0001" in shown.stdout
    assert "rel_0000" not in shown.stdout


def test_an_edited_variable_value_is_refused(root: Path, keys: Keys, env: dict[str, str]) -> None:
    """A shown variable whose value the plan's fingerprint does not hold is refused."""
    rid = ask(root, keys, env, "migrate", "--env", "development")

    def greet(plan: dict[str, Any]) -> None:
        plan["env"]["GREETING"]["value"] = "something harmless"

    edit_request_plan(root, rid, greet)
    shown = cli(root, env, "approve", rid, "--yes", "--key", str(keys["bob"]))
    assert shown.exit_code == EXIT_APPROVAL
    assert "'GREETING' is shown with a value the plan does not hold" in shown.stderr
    assert events(root, "approval.refused")
    assert not events(root, "request.approved")


# -- 8. audit gaps ------------------------------------------------------------------------


def test_run_started_names_the_request_and_the_approvals_spent(
    root: Path, keys: Keys, env: dict[str, str]
) -> None:
    """The run.started event says which request ran and whose approvals it spent."""
    rid = ask(root, keys, env, "migrate", "--env", "production")
    for who in ("bob", "carol"):
        assert cli(root, env, "approve", rid, "--yes", "--key", str(keys[who])).exit_code == 0
    ran = cli(root, env, "run", "--request", rid, "--key", str(keys["alice"]))
    assert ran.exit_code == 0, ran.stderr
    started = events(root, "run.started")[-1].payload
    assert started["request"] == rid
    assert sorted(started["approvals"]) == ["bob", "carol"]
    assert started["break_glass"] is False


def test_a_request_for_another_task_is_audited(root: Path, keys: Keys, env: dict[str, str]) -> None:
    """`run noop --request ID` with a request for migrate is refused (exit 2) and audited."""
    rid = ask(root, keys, env, "migrate", "--env", "production")
    ran = cli(root, env, "run", "noop", "--request", rid, "--key", str(keys["alice"]))
    assert ran.exit_code == 2
    assert "is for task 'migrate'" in ran.stderr
    refused = events(root, "approval.refused")[-1]
    assert refused.payload["request"] == rid
    assert "is for task 'migrate'" in str(refused.payload["reason"])


def test_break_glass_with_a_request_is_audited(root: Path, keys: Keys, env: dict[str, str]) -> None:
    """Break-glass together with a request is refused (exit 2) and audited. (Break-glass
    without a reason is tests/test_attacks_inputs.py's.)"""
    rid = ask(root, keys, env, "migrate", "--env", "production")
    ran = cli(root, env, "run", "migrate", "--env", "production", "--break-glass",
              "--reason", "down", "--request", rid, "--key", str(keys["dave"]))  # fmt: skip
    assert ran.exit_code == 2
    assert "exclude each other" in ran.stderr
    refused = events(root, "auth.refused")[-1]
    assert "exclude each other" in str(refused.payload["reason"])
    assert refused.payload["request"] == rid
    assert refused.actor == "dave"
    assert not events(root, "run.started")


def test_an_untrusted_or_missing_release_key_is_audited(
    root: Path, keys: Keys, env: dict[str, str], tmp_path: Path
) -> None:
    """Creating a production release with an untrusted key, or with none, is refused
    (exit 6) and leaves a release.refused event."""
    from oneoff._audit.checkpoint import generate_keypair

    other = tmp_path / "other" / "release.key"
    other.parent.mkdir()
    generate_keypair(other, other.with_suffix(".pub"))
    for key in (["--key", str(other)], []):
        made = cli(root, {**env, "ONEOFF_RELEASE_KEY_FILE": ""}, "release", "create",
                   "--env", "production", *key, "--person-key", str(keys["bob"]))  # fmt: skip
        assert made.exit_code == EXIT_RELEASE, made.stderr
        refused = events(root, "release.refused")[-1]
        assert refused.actor == "bob"
        assert refused.payload["operation"] == "create"
    reasons = [str(e.payload["reason"]) for e in events(root, "release.refused")]
    assert any("is not trusted" in r for r in reasons)
    assert any("requires a signed release" in r for r in reasons)


def test_a_removed_person_does_not_count_again_through_an_old_release(
    root: Path, keys: Keys, env: dict[str, str]
) -> None:
    """Alice is removed from the people in a newer release; with her old checkout she runs
    against the old release that still lists her. Without revocation that works; once a
    release sets --min-version, it is refused (exit 6, audited)."""
    manifest, people = root / "oneoff.toml", root / "people" / "allowed_signers"
    manifest.write_text(manifest.read_text().replace('"policies/", "people/",', '"policies/",'))
    key = release_key(keys)
    with_alice = people.read_text()
    without_alice = signers_text(keys, {k: v for k, v in PEOPLE.items() if k != "alice"})
    release(root, "production", key)  # v2: the people, alice included, are now released
    people.write_text(without_alice)
    release(root, "production", key)  # v3: alice removed, no revocation

    def alice_runs_v2() -> CliResult:
        people.write_text(with_alice)  # her checkout of v2
        try:
            return cli(root, env, "run", "noop", "--env", "production", "--release", "v2",
                       "--key", str(keys["alice"]))  # fmt: skip
        finally:
            people.write_text(without_alice)

    hole = alice_runs_v2()
    assert hole.exit_code == 0, hole.stderr  # what revocation exists to close
    release(root, "production", key, min_version=4)  # v4 revokes v1-v3
    refused = alice_runs_v2()
    assert refused.exit_code == EXIT_RELEASE
    assert "release production v2" in refused.stderr
    assert "is revoked" in refused.stderr
    assert "revoked" in str(events(root, "release.verify_failed")[-1].payload["error"])
    assert len(events(root, "run.started")) == 1
