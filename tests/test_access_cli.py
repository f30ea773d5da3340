"""The access commands end to end as real processes with real ssh-keygen keys."""

from __future__ import annotations

import json
from pathlib import Path

from _access_kit import Keys, events, make_access_app
from oneoff.testing import CliResult, run_cli

pytest_plugins = ["_access_kit"]


def cli(root: Path, env: dict[str, str], *args: str) -> CliResult:
    return run_cli(list(args), cwd=root, env=env)


def test_two_person_flow(root: Path, keys: Keys, env: dict[str, str]) -> None:
    """Alice requests, bob and carol (dba) approve the plan they are shown, alice runs once."""
    made = cli(root, env, "request", "migrate", "--env", "production", "-p", "target=0002",
               "--key", str(keys["alice"]))  # fmt: skip
    assert made.exit_code == 0, made.stderr
    rid = made.stdout.strip()
    listed = cli(root, env, "requests")
    assert rid in listed.stdout
    assert "approvals: none" in listed.stdout
    for who in ("bob", "carol"):
        shown = cli(root, env, "approve", rid, "--yes", "--key", str(keys[who]))
        assert shown.exit_code == 0, shown.stderr
        assert "argv       python -c" in shown.stdout
        assert "0002" in shown.stdout
        assert "DATABASE_URL = postgres://app:****" in shown.stdout
    ran = cli(root, env, "run", "--request", rid, "--key", str(keys["alice"]))
    assert ran.exit_code == 0, ran.stderr
    assert "migrated to 0002" in ran.stdout
    again = cli(root, env, "run", "--request", rid, "--key", str(keys["alice"]))
    assert again.exit_code == 4
    assert "already used by run" in again.stderr
    assert rid not in cli(root, env, "requests").stdout
    kinds = [e.kind for e in events(root)]
    assert kinds.count("request.approved") == 2
    assert "approval.refused" in kinds


def test_approve_needs_confirmation_off_a_terminal(
    root: Path, keys: Keys, env: dict[str, str]
) -> None:
    """Without a terminal to confirm on, approving needs --yes; nothing is signed otherwise."""
    rid = cli(root, env, "request", "migrate", "--env", "production",
              "--key", str(keys["alice"])).stdout.strip()  # fmt: skip
    result = cli(root, env, "approve", rid, "--key", str(keys["bob"]))
    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert not events(root, "request.approved")


def test_denied_request_cannot_run(root: Path, keys: Keys, env: dict[str, str]) -> None:
    """A request denied by a dba with a reason is audited and can no longer be approved or run."""
    rid = cli(root, env, "request", "migrate", "--env", "production",
              "--key", str(keys["alice"])).stdout.strip()  # fmt: skip
    denied = cli(
        root, env, "deny", rid, "--reason", "not during the sale", "--key", str(keys["bob"]),
        "--json",
    )  # fmt: skip
    assert denied.exit_code == 0, denied.stderr
    assert json.loads(denied.stdout)["status"] == "denied"
    assert events(root, "request.denied")[-1].payload["reason"] == "not during the sale"
    late = cli(root, env, "approve", rid, "--yes", "--key", str(keys["carol"]))
    assert late.exit_code == 4
    assert "denied" in late.stderr
    ran = cli(root, env, "run", "--request", rid, "--key", str(keys["alice"]))
    assert ran.exit_code == 4


def test_a_secret_in_a_denial_reason_is_redacted(
    root: Path, keys: Keys, env: dict[str, str]
) -> None:
    """A password pasted into `deny --reason` is audited redacted: requesters, approvers
    and auditors read the reason, and it goes wherever the audit log goes."""
    rid = cli(root, env, "request", "migrate", "--env", "production",
              "--key", str(keys["alice"])).stdout.strip()  # fmt: skip
    denied = cli(
        root, env, "deny", rid, "--reason", "it would log prod-pass-999 in clear",
        "--key", str(keys["bob"]),
    )  # fmt: skip
    assert denied.exit_code == 0, denied.stderr
    reason = events(root, "request.denied")[-1].payload["reason"]
    assert "prod-pass-999" not in reason
    assert reason.startswith("it would log [REDACTED")


def test_break_glass_runs_audited_and_announced(
    root: Path, keys: Keys, env: dict[str, str]
) -> None:
    """On call skips the quorum with a reason; it is audited, announced and listed for review."""
    ran = cli(root, env, "run", "migrate", "--env", "production", "--break-glass",
              "--reason", "orders table locked", "--key", str(keys["dave"]))  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    assert (root / "notified").read_text() == "orders table locked"
    assert events(root, "run.break_glass")[-1].actor == "dave"
    assert events(root, "break_glass.notified")
    listed = cli(root, env, "audit", "break-glass")
    assert "dave  migrate on production  succeeded  reason: orders table locked" in listed.stdout
    runs = json.loads(cli(root, env, "runs", "--json").stdout)
    assert runs[0]["break_glass"] is True


def test_break_glass_refused_outside_oncall(root: Path, keys: Keys, env: dict[str, str]) -> None:
    """A dba not on call cannot break the glass; the denial names the forbidding policy."""
    ran = cli(root, env, "run", "migrate", "--env", "production", "--break-glass",
              "--reason", "in a hurry", "--key", str(keys["bob"]))  # fmt: skip
    assert ran.exit_code == 3
    assert "break-glass-is-for-oncall" in ran.stderr
    assert not (root / "notified").exists()
    decided = events(root, "access.decided")[-1]
    assert decided.payload["allowed"] is False
    assert decided.payload["break_glass"] is True


def test_policy_explain_shows_decision_and_policies(root: Path, env: dict[str, str]) -> None:
    """`policy explain --as` prints the decision and the policies that made it."""
    allowed = cli(root, env, "policy", "explain", "migrate", "--env", "production",
                  "--as", "bob", "--action", "approve")  # fmt: skip
    assert allowed.exit_code == 0, allowed.stderr
    assert allowed.stdout.startswith("ALLOW: bob (groups: dba) approve migrate")
    assert "dba-approve-migrate" in allowed.stdout
    denied = cli(root, env, "policy", "explain", "migrate", "--env", "production",
                 "--as", "alice", "--action", "approve")  # fmt: skip
    assert denied.exit_code == 3
    assert "no policy permits this" in denied.stdout
    assert events(root, "policy.explained")


def test_policy_test_table_passes_and_fails(
    tmp_path: Path, example_app: Path, keys: Keys, env: dict[str, str]
) -> None:
    """The example's policy table passes in the example app; a wrong expectation fails with
    the actual decision."""
    ok = cli(example_app, env, "policy", "test", "policies/tests.toml")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert "8 passed, 0 failed" in ok.stdout
    root = make_access_app(tmp_path / "app", keys)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(
        '[[case]]\nprincipal = "alice"\ngroups = ["developers"]\naction = "approve"\n'
        'task = "migrate"\nenvironment = "production"\nexpect = "allow"\n'
    )
    failed = cli(root, env, "policy", "test", str(wrong))
    assert failed.exit_code == 1
    assert "FAIL case 1" in failed.stdout
    assert "expected allow, got deny" in failed.stdout


def test_example_development_needs_no_key(example_app: Path, env: dict[str, str]) -> None:
    """The example app with [access] still migrates development with zero setup."""
    result = run_cli(["run", "migrate", "--env", "development"], cwd=example_app, env=env)
    assert result.exit_code == 0, result.stderr
    assert "applied 0001_notes.sql" in result.stdout
