"""People are their keys: unknown, forged, replayed or absent signatures are refused and audited."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from _access_kit import Keys, events, release, run_as, signer
from _agent import ssh_agent
from oneoff._app import open_app
from oneoff._auth.gate import Gate
from oneoff._auth.grant import open_gate
from oneoff._canonical import canonical_json
from oneoff._identity import NAMESPACE_REQUEST, os_user, request_statement
from oneoff.errors import ManifestError, NotPermitted, UsageError
from oneoff.testing import make_app, run_cli

pytest_plugins = ["_access_kit"]


@pytest.fixture
def gate(root: Path) -> Iterator[Gate]:
    app = open_app(root)
    found = open_gate(app)
    assert found is not None
    yield found
    app.close()


def signed(keys: Keys, who: str, **overrides: object) -> tuple[dict[str, object], bytes]:
    statement = request_statement(
        "run", app="app", task="noop", environment="production", plan_hash="sha256:ab"
    )
    signature = signer(keys, who).sign(canonical_json(statement), NAMESPACE_REQUEST)
    statement.update(overrides)
    return statement, signature


def reasons(root: Path) -> list[str]:
    return [str(e.payload.get("reason")) for e in events(root, "auth.refused")]


def test_signed_request_names_the_person(root: Path, keys: Keys) -> None:
    """A run signed with bob's key is recorded as bob, with his key in the decision event."""
    outcome = run_as(root, keys, "bob", "noop", "development")
    assert outcome.run.principal == "bob"
    decided = events(root, "access.decided")[-1]
    assert decided.actor == "bob"
    assert str(decided.payload["key"]).startswith("SHA256:")


def test_unknown_key_is_refused(root: Path, keys: Keys) -> None:
    """Mallory's key is in no allowed_signers file: refused, audited under her key's fingerprint."""
    with pytest.raises(NotPermitted, match="is not in"):
        run_as(root, keys, "mallory", "noop", "production")
    refusal = events(root, "auth.refused")[-1]
    assert refusal.actor.startswith("key:SHA256:")


def test_forged_statement_is_refused(gate: Gate, keys: Keys, root: Path) -> None:
    """A statement changed after signing (another plan) fails the signature check."""
    statement, signature = signed(keys, "bob", plan_hash="sha256:ff")
    with pytest.raises(NotPermitted, match="bad signature from bob"):
        gate.authenticate(statement, signature, action="run", plan_hash="sha256:ff")
    assert any("bad signature" in r for r in reasons(root))


def test_truncated_signature_is_refused(gate: Gate, keys: Keys, root: Path) -> None:
    """A signature cut short is malformed, not a crash."""
    statement, signature = signed(keys, "bob")
    lines = signature.decode().splitlines()
    cut = "\n".join([*lines[:2], lines[2][:10], lines[-1]])
    with pytest.raises(NotPermitted, match=r"malformed|truncated|signature"):
        gate.authenticate(statement, cut, action="run", plan_hash="sha256:ab")
    assert reasons(root)


def test_replayed_statement_is_refused(gate: Gate, keys: Keys, root: Path) -> None:
    """The same signed statement accepted once is refused the second time (nonce)."""
    statement, signature = signed(keys, "bob")
    assert (
        gate.authenticate(statement, signature, action="run", plan_hash="sha256:ab").name == "bob"
    )
    with pytest.raises(NotPermitted, match="replayed"):
        gate.authenticate(statement, signature, action="run", plan_hash="sha256:ab")
    assert any("replayed" in r for r in reasons(root))


def test_statement_for_another_plan_is_refused(gate: Gate, keys: Keys) -> None:
    """A genuine signature over another plan's statement does not authorize this plan."""
    statement, signature = signed(keys, "bob")
    with pytest.raises(NotPermitted, match="plan_hash"):
        gate.authenticate(statement, signature, action="run", plan_hash="sha256:cd")


def test_stale_statement_is_refused(gate: Gate, keys: Keys) -> None:
    """A statement signed long ago (captured and kept) is refused on its time."""
    import datetime as dt

    statement, signature = signed(keys, "bob")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)
    with pytest.raises(NotPermitted, match="more than 5 minutes"):
        gate.authenticate(statement, signature, action="run", plan_hash="sha256:ab", now=later)


def test_protected_environment_refuses_the_os_user(root: Path) -> None:
    """Without a key, production refuses and says how to sign; the refusal is audited."""
    with pytest.raises(NotPermitted, match="accepts only signed requests") as caught:
        run_as(root, None, None, "noop", "production")
    assert "--key" in (caught.value.hint or "")
    assert reasons(root)


def test_development_accepts_the_os_user(root: Path) -> None:
    """Without a key, development runs as the OS user and the decision is audited."""
    outcome = run_as(root, None, None, "noop", "development")
    assert outcome.run.principal == os_user()
    assert events(root, "access.decided")[-1].actor == os_user()


def test_variables_claim_no_identity(root: Path, keys: Keys, cli_env: dict[str, str]) -> None:
    """USER=bob claims nothing, and naming bob's public key without his agent fails."""
    env = {**cli_env, "USER": "bob", "LOGNAME": "bob"}
    env.pop("SSH_AUTH_SOCK", None)
    result = run_cli(["run", "noop", "--env", "development"], cwd=root, env=env)
    assert result.exit_code == 0, result.stderr
    assert events(root, "run.started")[-1].actor == os_user()
    env["ONEOFF_SIGNING_KEY"] = f"{keys['bob']}.pub"
    result = run_cli(["run", "noop", "--env", "production"], cwd=root, env=env)
    assert result.exit_code == 2
    assert "SSH_AUTH_SOCK" in result.stderr
    assert events(root, "run.started")[-1].actor == os_user()


def test_ssh_agent_signs_for_its_holder(
    root: Path, keys: Keys, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """With dave's key in ssh-agent and ONEOFF_SIGNING_KEY naming it, the run is dave's."""
    with ssh_agent(tmp_path / "agent.sock") as sock:
        env = {**cli_env, "SSH_AUTH_SOCK": str(sock), "ONEOFF_SIGNING_KEY": f"{keys['dave']}.pub"}
        subprocess.run(["ssh-add", "-q", keys["dave"]], env=env, check=True, capture_output=True)
        result = run_cli(["run", "noop", "--env", "development"], cwd=root, env=env)
        assert result.exit_code == 0, result.stderr
        assert events(root, "run.started")[-1].actor == "dave"


def test_without_access_protected_environments_refuse(root: Path, keys: Keys) -> None:
    """Without [access], development runs as the OS user; production refuses, explaining setup."""
    manifest = root / "oneoff.toml"
    text = manifest.read_text()
    start = text.index("[access]")
    manifest.write_text(text[:start] + text[text.index("[environments.", start) :])
    release(root, "production", keys["alice"].parent / "release.key")
    assert run_as(root, None, None, "noop", "development").run.principal == os_user()
    with pytest.raises(NotPermitted, match="declares no \\[access\\]") as caught:
        run_as(root, keys, "bob", "noop", "production")
    assert "allowed_signers" in (caught.value.hint or "")


def test_request_flags_need_access(tmp_path: Path) -> None:
    """--break-glass without an [access] section is a usage error, not a silent bypass."""
    root = make_app(tmp_path / "plain", '[environments.dev]\n[tasks.noop]\nargv = ["true"]\n')
    with pytest.raises(UsageError, match=r"\[access\]"):
        run_as(root, None, None, "noop", "dev", break_glass=True, reason="x")


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ('[access]\napproval_ttl = "soon"\n', "approval_ttl"),
        ('[access]\nsigners = "../elsewhere"\n', "inside the app"),
        ('[access]\nbreak_glass = { command = "notify me" }\n', "argv"),
        ('[access]\nwho = "everyone"\n', "unknown key"),
        ("[tasks.noop.approvals]\nquorum = 0\n", "quorum"),
        ('[tasks.noop.approvals]\nquorum = 1\nenvironments = ["prod"]\n', "unknown environment"),
    ],
)
def test_access_mistakes_fail_at_load(tmp_path: Path, snippet: str, message: str) -> None:
    """A malformed access setting fails when the manifest loads, naming the file."""
    manifest = '[environments.dev]\n[tasks.noop]\nargv = ["true"]\n' + snippet
    root = make_app(tmp_path / "bad", manifest)
    with pytest.raises(ManifestError, match=message) as caught:
        open_app(root)
    assert "oneoff.toml" in str(caught.value)
