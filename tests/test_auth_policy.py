"""Cedar policy decisions, explanations, load errors and policy test tables."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from oneoff._auth import (
    Decision,
    PolicySet,
    Signers,
    TaskInfo,
    format_test_results,
    run_policy_tests,
)
from oneoff._auth.sshsig import public_key_blob
from oneoff.errors import ManifestError, NotPermitted, UsageError

MONDAY_NOON = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
SATURDAY_NIGHT = datetime(2024, 1, 6, 23, 30, tzinfo=UTC)
MIGRATE = TaskInfo("migrate", "high", locks=("db",), environments=("production", "staging"))
REPORT = TaskInfo("report", "low")

BASE = """
@id("dba-run")
permit (principal in Oneoff::Group::"dba", action == Oneoff::Action::"run", resource);

@id("anyone-plans")
permit (principal, action == Oneoff::Action::"plan", resource);

// no @id: named after file and position
permit (principal in Oneoff::Group::"ops", action == Oneoff::Action::"run", resource)
when { resource.risk == "low" };
"""

GUARDS = """
@id("protected-needs-break-glass-at-weekend")
forbid (principal, action == Oneoff::Action::"run", resource)
when { context.protected && context.weekday >= 6 && !context.break_glass };

@id("no-console-in-production")
forbid (principal, action == Oneoff::Action::"console", resource)
when { context.environment == "production" };

@id("db-lock-night")
forbid (principal, action, resource)
when { resource.locks.contains("db") && context.hour >= 23 };
"""


def decide(
    policies: PolicySet,
    principal: str,
    groups: list[str],
    action: str,
    *,
    task: TaskInfo = MIGRATE,
    environment: str = "production",
    protected: bool = False,
    break_glass: bool = False,
    now: datetime = MONDAY_NOON,
) -> Decision:
    return policies.decide(
        principal,
        groups,
        action,
        task,
        environment,
        protected=protected,
        break_glass=break_glass,
        now=now,
    )


@pytest.fixture
def policies() -> PolicySet:
    return PolicySet.from_sources({"base.cedar": BASE, "guards.cedar": GUARDS})


def test_no_policies_deny_everything_and_say_so() -> None:
    """An empty policy set denies, with a message that no policy permits the request."""
    empty = PolicySet.from_sources({})
    decision = decide(empty, "alice", ["dba"], "run")
    assert not decision.allowed
    assert decision.reasons == []
    assert "no policy permits it" in decision.message
    with pytest.raises(NotPermitted, match="no policy permits it"):
        decision.require()


def test_group_membership_permits_and_names_the_policy(policies: PolicySet) -> None:
    """A dba may run migrate; the reason is the permitting policy's @id."""
    decision = decide(policies, "alice", ["dba"], "run")
    assert decision.allowed
    assert decision.reasons == ["dba-run"]
    assert decision.errors == []
    decision.require()
    assert "permitted by dba-run" in decision.message


def test_policy_without_id_is_named_by_file_and_index(policies: PolicySet) -> None:
    """An un-annotated policy is reported as <file>:<index>, counting from 0."""
    decision = decide(policies, "bob", ["ops"], "run", task=REPORT)
    assert decision.allowed
    assert decision.reasons == ["base.cedar:2"]
    assert policies.policies["base.cedar:2"].effect == "permit"


def test_not_in_group_is_denied(policies: PolicySet) -> None:
    """Someone outside every permitting group is denied with no reasons."""
    decision = decide(policies, "bob", ["ops"], "run")
    assert not decision.allowed
    assert decision.reasons == []


def test_forbid_overrides_permit_and_is_the_reason(policies: PolicySet) -> None:
    """A matching forbid wins over a permit and is reported as the reason."""
    decision = decide(policies, "alice", ["dba"], "run", protected=True, now=SATURDAY_NIGHT)
    assert not decision.allowed
    assert decision.reasons == ["db-lock-night", "protected-needs-break-glass-at-weekend"]
    assert "forbidden by" in decision.message


def test_context_break_glass_hour_and_weekday_reach_the_policies(policies: PolicySet) -> None:
    """break_glass, hour and weekday (UTC, ISO numbering) are what the policies see."""
    saturday_noon = datetime(2024, 1, 6, 12, 0, tzinfo=UTC)
    assert not decide(policies, "alice", ["dba"], "run", protected=True, now=saturday_noon).allowed
    assert decide(
        policies, "alice", ["dba"], "run", protected=True, break_glass=True, now=saturday_noon
    ).allowed
    friday_in_utc = datetime(2024, 1, 6, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    assert decide(policies, "alice", ["dba"], "run", protected=True, now=friday_in_utc).allowed


def test_resource_attributes_reach_the_policies(policies: PolicySet) -> None:
    """locks and environment are visible: no console in production, db lock at night."""
    late = MONDAY_NOON.replace(hour=23)
    assert not decide(policies, "alice", ["dba"], "run", now=late).allowed
    assert decide(policies, "alice", ["dba"], "run", task=REPORT, now=late).allowed
    console = decide(policies, "alice", ["dba"], "console")
    assert not console.allowed
    assert console.reasons == ["no-console-in-production"]


def test_principal_name_cannot_smuggle_in_a_group(policies: PolicySet) -> None:
    """A name with quotes and Cedar syntax is just an id; it gains no group."""
    decision = decide(policies, 'mallory" in Oneoff::Group::"dba', [], "run")
    assert not decision.allowed


def test_unknown_action_and_naive_time_are_usage_errors(policies: PolicySet) -> None:
    """Only the six actions exist, and times must carry a time zone."""
    with pytest.raises(UsageError, match="unknown action 'deploy'"):
        decide(policies, "alice", ["dba"], "deploy")
    with pytest.raises(UsageError, match="timezone"):
        decide(policies, "alice", ["dba"], "run", now=datetime(2024, 1, 1, 12))


def test_explain_shows_decision_context_and_policies(policies: PolicySet) -> None:
    """explain() states the decision, the inputs and each determining policy with its file."""
    text = policies.explain(
        "alice",
        ["dba"],
        "run",
        MIGRATE,
        "production",
        protected=True,
        break_glass=False,
        now=SATURDAY_NIGHT,
    )
    assert text.startswith("DENY: alice (groups: dba) run migrate")
    assert "weekday=6" in text
    assert "forbidden by:" in text
    assert "- db-lock-night (forbid in guards.cedar)" in text
    allowed = policies.explain(
        "alice",
        ["dba"],
        "run",
        MIGRATE,
        "staging",
        protected=False,
        break_glass=False,
        now=MONDAY_NOON,
    )
    assert allowed.startswith("ALLOW")
    assert "- dba-run (permit in base.cedar)" in allowed
    nothing = PolicySet.from_sources({}).explain(
        "alice", [], "run", MIGRATE, "staging", protected=False, break_glass=False, now=MONDAY_NOON
    )
    assert "no policy permits this" in nothing


def test_load_reads_cedar_files_in_sorted_order(tmp_path: Path) -> None:
    """load() reads every *.cedar file; other files and a missing directory are ignored."""
    (tmp_path / "b.cedar").write_text(
        'permit (principal, action == Oneoff::Action::"plan", resource);'
    )
    (tmp_path / "a.cedar").write_text(
        'permit (principal, action == Oneoff::Action::"run", resource);'
    )
    (tmp_path / "notes.txt").write_text("not a policy")
    loaded = PolicySet.load(tmp_path)
    assert list(loaded.policies) == ["a.cedar:0", "b.cedar:0"]
    assert decide(loaded, "x", [], "plan").reasons == ["b.cedar:0"]
    assert len(PolicySet.load(tmp_path / "missing")) == 0


def test_parse_error_names_file_and_lines(tmp_path: Path) -> None:
    """A syntax error is a ManifestError naming the file and the lines of the bad policy."""
    (tmp_path / "ok.cedar").write_text("permit (principal, action, resource);\n")
    (tmp_path / "bad.cedar").write_text(
        "permit (principal, action, resource);\n"
        "\n"
        "permit (principal, action, resource)\n"
        "when { context.hour == };\n"
        "permit (principal, action, resource);\n"
    )
    with pytest.raises(ManifestError, match=r"bad\.cedar:lines 2-4: unexpected token"):
        PolicySet.load(tmp_path)


def test_policy_not_fitting_the_entity_model_is_rejected(tmp_path: Path) -> None:
    """A typo in an attribute name fails at load instead of silently disabling a forbid."""
    (tmp_path / "guard.cedar").write_text(
        'forbid (principal, action, resource) when { context.enviroment == "production" };\n'
    )
    with pytest.raises(ManifestError, match=r"guard\.cedar: .*policy 0: .*enviroment"):
        PolicySet.load(tmp_path)


def test_duplicate_ids_and_templates_are_rejected() -> None:
    """@id values must be unique across files; templates with slots are refused."""
    policy = '@id("same") permit (principal, action, resource);'
    with pytest.raises(ManifestError, match=r"b\.cedar: policy id 'same' is also used in a\.cedar"):
        PolicySet.from_sources({"a.cedar": policy, "b.cedar": policy})
    with pytest.raises(ManifestError, match="templates"):
        PolicySet.from_sources({"t.cedar": "permit (principal == ?principal, action, resource);"})


# --- policy test tables --------------------------------------------------------------------


def _key() -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ssh-ed25519 " + base64.b64encode(public_key_blob(raw)).decode()


@pytest.fixture
def signers() -> Signers:
    return Signers.parse(f"alice {_key()} groups=dba\nbob {_key()} groups=ops\n")


def test_policy_table_rows_pass_and_fail_with_the_actual_decision(
    tmp_path: Path, policies: PolicySet, signers: Signers
) -> None:
    """Passing rows pass; a failing row reports the actual decision and its reasons."""
    table = tmp_path / "policy_tests.toml"
    table.write_text(
        """
[[case]]
name = "dba runs migrate"
principal = "alice"
action = "run"
task = "migrate"
risk = "high"
locks = ["db"]
environment = "production"
protected = true
expect = "allow"
reasons = ["dba-run"]

[[case]]
principal = "bob"
action = "run"
task = "migrate"
risk = "high"
environment = "production"
expect = "deny"

[[case]]
name = "wrong on purpose"
principal = "alice"
action = "run"
task = "migrate"
locks = ["db"]
environment = "production"
protected = true
at = 2024-01-06T23:30:00Z
expect = "allow"

[[case]]
name = "explicit groups need no signer"
principal = "ci-bot"
groups = ["ops"]
action = "run"
task = "report"
environment = "staging"
expect = "allow"
reasons = ["base.cedar:2"]
"""
    )
    results = run_policy_tests(table, policies, signers)
    assert [r.passed for r in results] == [True, True, False, True]
    failed = results[2]
    assert failed.name == "wrong on purpose"
    assert "expected allow, got deny" in failed.problem
    assert "db-lock-night" in failed.problem
    assert failed.decision is not None
    assert not failed.decision.allowed
    assert results[1].name == "bob run migrate in production -> deny"
    report = format_test_results(results)
    assert "FAIL case 3: wrong on purpose" in report
    assert report.endswith("3 passed, 1 failed")


def test_policy_table_checks_expected_reasons_and_unknown_people(
    tmp_path: Path, policies: PolicySet, signers: Signers
) -> None:
    """A row fails when the determining policies differ, or the principal is unknown."""
    table = tmp_path / "t.toml"
    table.write_text(
        '[[case]]\nprincipal = "alice"\naction = "plan"\ntask = "x"\n'
        'environment = "dev"\nexpect = "allow"\nreasons = ["dba-run"]\n'
        '[[case]]\nprincipal = "zed"\naction = "plan"\ntask = "x"\n'
        'environment = "dev"\nexpect = "allow"\n'
    )
    wrong_reason, unknown = run_policy_tests(table, policies, signers)
    assert not wrong_reason.passed
    assert "expected reasons ['dba-run'], got ['anyone-plans']" in wrong_reason.problem
    assert not unknown.passed
    assert "'zed' is unknown" in unknown.problem


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[case]\n", "policy_tests.toml"),
        ('[[case]]\nprincipal = "a"\n', "case 1: missing action, task, environment, expect"),
        (
            '[[case]]\nprincipal="a"\naction="run"\ntask="t"\nenvironment="e"\nexpected="allow"\n',
            "case 1: unknown key 'expected'",
        ),
        (
            '[[case]]\nprincipal="a"\naction="run"\ntask="t"\nenvironment="e"\nexpect="yes"\n',
            'expect must be "allow" or "deny"',
        ),
        (
            '[[case]]\nprincipal="a"\naction="nuke"\ntask="t"\nenvironment="e"\nexpect="deny"\n',
            "unknown action 'nuke'",
        ),
        (
            '[[case]]\nprincipal="a"\naction="run"\ntask="t"\nenvironment="e"\nexpect="deny"\n'
            "protected = 1\n",
            "protected must be a bool",
        ),
        (
            '[[case]]\nprincipal="a"\naction="run"\ntask="t"\nenvironment="e"\nexpect="deny"\n'
            "at = 2024-01-01T10:00:00\n",
            "time zone",
        ),
        ("[cases]\nx = 1\n", "unknown top-level key"),
    ],
)
def test_malformed_policy_tables_are_manifest_errors(
    tmp_path: Path, policies: PolicySet, text: str, message: str
) -> None:
    """A malformed table is a ManifestError naming the file and the case."""
    table = tmp_path / "policy_tests.toml"
    table.write_text(text)
    with pytest.raises(ManifestError, match=message):
        run_policy_tests(table, policies)
