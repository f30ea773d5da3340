"""Requests and approvals under attack: each is refused with a clear message and audited."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from _access_kit import Keys, events, make_access_app, release, run_as, signer, signers_text
from oneoff._app import open_app
from oneoff._auth.approvals import approve, create_request
from oneoff._auth.grant import open_gate
from oneoff._pipeline import RunRequest, make_plan
from oneoff.errors import ApprovalError, NotPermitted, ReleaseError

pytest_plugins = ["_access_kit"]


def request(root: Path, keys: Keys, who: str, env: str = "production", **params: str) -> str:
    app = open_app(root)
    try:
        gate = open_gate(app)
        assert gate is not None
        plan = make_plan(app, RunRequest("migrate", env, params=params))
        return create_request(gate, plan, signer(keys, who)).id
    finally:
        app.close()


def approve_as(root: Path, keys: Keys, who: str, request_id: str) -> None:
    app = open_app(root)
    try:
        gate = open_gate(app)
        assert gate is not None
        approve(gate, request_id, signer(keys, who))
    finally:
        app.close()


def refused(root: Path, kind: str) -> list[str]:
    return [str(e.payload.get("reason")) for e in events(root, kind)]


def test_quorum_lets_the_requester_run_once(root: Path, keys: Keys) -> None:
    """Two dba approvals let alice run her request once; the second use is refused."""
    rid = request(root, keys, "alice")
    approve_as(root, keys, "bob", rid)
    approve_as(root, keys, "carol", rid)
    outcome = run_as(root, keys, "alice", "migrate", "production", request_id=rid)
    assert outcome.run.status == "succeeded"
    assert outcome.run.request_id == rid
    with pytest.raises(ApprovalError, match="already used by run"):
        run_as(root, keys, "alice", "migrate", "production", request_id=rid)
    assert any("already used" in r for r in refused(root, "approval.refused"))


def test_without_a_request_the_quorum_is_demanded(root: Path, keys: Keys) -> None:
    """A dba may run migrate in production only with two approvals, never alone."""
    with pytest.raises(ApprovalError, match="needs 2 approval"):
        run_as(root, keys, "bob", "migrate", "production")
    assert refused(root, "approval.refused")


def test_self_approval_is_refused(root: Path, keys: Keys) -> None:
    """A dba who requests cannot approve their own request."""
    rid = request(root, keys, "erin")
    with pytest.raises(ApprovalError, match="self-approval"):
        approve_as(root, keys, "erin", rid)
    assert any("self-approval" in r for r in refused(root, "approval.refused"))


def test_one_person_cannot_approve_twice(root: Path, keys: Keys) -> None:
    """Approving the same request twice counts once and the second is refused."""
    rid = request(root, keys, "alice")
    approve_as(root, keys, "bob", rid)
    with pytest.raises(ApprovalError, match="already approved"):
        approve_as(root, keys, "bob", rid)
    with pytest.raises(ApprovalError, match="1 valid approval"):
        run_as(root, keys, "alice", "migrate", "production", request_id=rid)
    assert len(refused(root, "approval.refused")) == 2


def test_approver_outside_the_group_is_refused(root: Path, keys: Keys) -> None:
    """Only group dba approves migrations; a developer's approval is refused."""
    rid = request(root, keys, "bob")
    with pytest.raises(ApprovalError, match="not in group 'dba'"):
        approve_as(root, keys, "alice", rid)
    assert refused(root, "approval.refused")


def test_approvals_do_not_cover_other_params(root: Path, keys: Keys) -> None:
    """Approvals for target=0001 are void for a run with target=latest."""
    rid = request(root, keys, "alice", target="0001")
    approve_as(root, keys, "bob", rid)
    approve_as(root, keys, "carol", rid)
    with pytest.raises(ApprovalError, match=r"plan changed.*argv, params"):
        run_as(root, keys, "alice", "migrate", "production", request_id=rid,
               params={"target": "latest"})  # fmt: skip
    assert any("plan changed" in r for r in refused(root, "approval.refused"))


def test_approvals_do_not_cover_another_environment(root: Path, keys: Keys) -> None:
    """A request approved for production cannot run in staging."""
    rid = request(root, keys, "alice")
    approve_as(root, keys, "bob", rid)
    approve_as(root, keys, "carol", rid)
    with pytest.raises(ApprovalError, match="is for migrate in production"):
        run_as(root, keys, "alice", "migrate", "staging", request_id=rid)
    assert refused(root, "approval.refused")


def test_approvals_do_not_cover_another_release(root: Path, keys: Keys) -> None:
    """A new production release between approval and run voids the approvals."""
    rid = request(root, keys, "alice")
    approve_as(root, keys, "bob", rid)
    approve_as(root, keys, "carol", rid)
    release(root, "production", keys["alice"].parent / "release.key")
    with pytest.raises(ApprovalError, match=r"plan changed.*release"):
        run_as(root, keys, "alice", "migrate", "production", request_id=rid)
    assert refused(root, "approval.refused")


def test_expired_approvals_do_not_count(tmp_path: Path, keys: Keys) -> None:
    """An approval past its time to live is void (approval_ttl = 1 second here)."""
    root = make_access_app(tmp_path / "app", keys, ttl="1")
    rid = request(root, keys, "alice")
    approve_as(root, keys, "bob", rid)
    approve_as(root, keys, "carol", rid)
    time.sleep(1.2)
    with pytest.raises(ApprovalError, match="expired at"):
        run_as(root, keys, "alice", "migrate", "production", request_id=rid)
    assert any("expired" in r for r in refused(root, "approval.refused"))


def test_policy_change_voids_approvals(root: Path, keys: Keys) -> None:
    """Editing a policy between approval and run voids the approvals."""
    rid = request(root, keys, "alice")
    approve_as(root, keys, "bob", rid)
    approve_as(root, keys, "carol", rid)
    policy = root / "policies" / "base.cedar"
    policy.write_text(policy.read_text() + "\n// tightened later\n")
    with pytest.raises(ApprovalError, match="policies or people changed"):
        run_as(root, keys, "alice", "migrate", "production", request_id=rid)
    assert refused(root, "approval.refused")


def test_removed_person_can_no_longer_approve(root: Path, keys: Keys) -> None:
    """Once carol's key leaves allowed_signers, her past approval is void and a new one refused."""
    people = root / "people" / "allowed_signers"
    rid = request(root, keys, "alice")
    approve_as(root, keys, "bob", rid)
    approve_as(root, keys, "carol", rid)
    people.write_text(signers_text(keys, {"alice": "developers", "bob": "dba", "erin": "dba"}))
    with pytest.raises(ApprovalError, match="policies or people changed"):
        run_as(root, keys, "alice", "migrate", "production", request_id=rid)
    fresh = request(root, keys, "alice")
    with pytest.raises(NotPermitted, match="is not in"):
        approve_as(root, keys, "carol", fresh)
    assert any("is not in" in r for r in refused(root, "approval.refused"))


def test_only_the_requester_runs_the_request(root: Path, keys: Keys) -> None:
    """Approvals were given for alice's request: bob cannot spend them."""
    rid = request(root, keys, "alice")
    approve_as(root, keys, "erin", rid)
    approve_as(root, keys, "carol", rid)
    with pytest.raises(ApprovalError, match="belongs to alice"):
        run_as(root, keys, "bob", "migrate", "production", request_id=rid)


def test_config_change_voids_approvals(root: Path, keys: Keys) -> None:
    """A changed config value is a changed plan: the run is refused before anything runs."""
    rid = request(root, keys, "alice")
    approve_as(root, keys, "bob", rid)
    approve_as(root, keys, "carol", rid)
    (root / ".env.production").write_text("DATABASE_URL=postgres://app:other@db/app\n")
    with pytest.raises((ApprovalError, ReleaseError)):
        run_as(root, keys, "alice", "migrate", "production", request_id=rid)
