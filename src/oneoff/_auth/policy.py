"""Cedar policies deciding who may do what: load ``policies/*.cedar``, decide, explain, test.

Entity model (every policy is validated against it when loaded, so a typo such as
``context.enviroment`` fails at load time instead of silently disabling a ``forbid``)::

    Oneoff::Person::"alice"  in  Oneoff::Group::"dba"
    Oneoff::Action::"plan" | "run" | "approve" | "console" | "release" | "audit-export"
    Oneoff::Task::"migrate"  { risk: String, locks: Set<String>,
                               environments: Set<String>, interactive: Bool }
    context { environment: String, protected: Bool, break_glass: Bool,
              hour: Long (0-23, UTC), weekday: Long (1 = Monday .. 7 = Sunday, UTC) }

A policy's id is its ``@id("...")`` annotation, else ``<file>:<index>`` with the index
counting the file's policies from 0 (``deploy.cedar:0``). Ids must be unique across files.
Nothing is allowed unless some policy permits it, and any matching ``forbid`` wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneoff._record import dataclass, field
from oneoff.errors import ManifestError, NotPermitted, UsageError

if TYPE_CHECKING:
    from oneoff._auth.signers import Signers
    from oneoff._manifest import Project

__all__ = [
    "ACTIONS",
    "Decision",
    "Policy",
    "PolicySet",
    "TaskInfo",
    "TestResult",
    "format_test_results",
    "run_policy_tests",
]

ACTIONS = ("plan", "run", "approve", "console", "release", "audit-export")
_NS = "Oneoff"

SCHEMA = f"""
namespace {_NS} {{
  entity Group;
  entity Person in [Group];
  entity Task {{
    risk: String,
    locks: Set<String>,
    environments: Set<String>,
    interactive: Bool,
  }};
  type Context = {{
    environment: String,
    protected: Bool,
    break_glass: Bool,
    hour: Long,
    weekday: Long,
  }};
  action {", ".join(f'"{a}"' for a in ACTIONS)}
    appliesTo {{ principal: [Person], resource: [Task], context: Context }};
}}
"""

# Tests without an explicit ``at`` must not depend on the wall clock: Monday noon UTC.
DEFAULT_TEST_TIME = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class TaskInfo:
    """What a policy may know about a task (the Cedar resource)."""

    name: str
    risk: str
    locks: Sequence[str] = ()
    environments: Sequence[str] = ()
    interactive: bool = False


@dataclass(frozen=True)
class Policy:
    """One loaded policy: its id, effect and where it came from."""

    id: str
    effect: str
    file: str
    index: int


@dataclass(frozen=True)
class Decision:
    """The outcome: ``reasons`` are the ids of the policies that determined it.

    When allowed, ``reasons`` are the permitting policies; when denied, the forbidding
    ones (empty when nothing permitted). ``errors`` are policies that failed to evaluate
    and were therefore skipped.
    """

    allowed: bool
    reasons: list[str]
    errors: list[str]
    message: str = ""

    def require(self) -> None:
        """Raise NotPermitted with the decision's message unless allowed."""
        if not self.allowed:
            raise NotPermitted(self.message)


class PolicySet:
    """A parsed, validated set of Cedar policies; immutable and reusable across decisions."""

    def __init__(self, handle: Any, policies: Mapping[str, Policy], source: str) -> None:
        self._handle = handle
        self.policies: dict[str, Policy] = dict(policies)
        self.source = source

    @classmethod
    def load(cls, directory: Path) -> PolicySet:
        """Read ``directory/*.cedar`` in sorted order; ManifestError names the faulty file.

        A missing directory is an empty set, which denies everything.
        """
        files = sorted(directory.glob("*.cedar")) if directory.is_dir() else []
        sources: dict[str, str] = {}
        for path in files:
            try:
                sources[path.name] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ManifestError(f"{path}: cannot read policy file: {exc}") from None
        return cls.from_sources(sources, source=str(directory))

    @classmethod
    def from_sources(cls, sources: Mapping[str, str], *, source: str = "policies") -> PolicySet:
        """Build from ``{file name: Cedar text}``; file names prefix error messages and ids."""
        import json

        import cedarpy

        static: dict[str, Any] = {}
        policies: dict[str, Policy] = {}
        for name in sorted(sources):
            where = f"{source}/{name}" if source else name
            for policy, est in _parse_file(name, sources[name], where):
                if policy.id in policies:
                    other = policies[policy.id]
                    raise ManifestError(
                        f"{where}: policy id {policy.id!r} is also used in "
                        f"{other.file} (policy {other.index})"
                    )
                policies[policy.id] = policy
                static[policy.id] = est
        document = {"staticPolicies": static, "templates": {}, "templateLinks": []}
        handle = cedarpy.PolicySet.from_json_str(json.dumps(document))
        return cls(handle, policies, source)

    def __len__(self) -> int:
        return len(self.policies)

    def decide(
        self,
        principal: str,
        groups: Sequence[str],
        action: str,
        task: TaskInfo,
        environment: str,
        *,
        protected: bool,
        break_glass: bool,
        now: datetime,
    ) -> Decision:
        """Whether ``principal`` (in ``groups``) may ``action`` ``task`` in ``environment``."""
        import cedarpy

        request, entities = _request(
            principal, groups, action, task, environment, protected, break_glass, now
        )
        result = cedarpy.is_authorized(request, self._handle, entities)
        allowed = bool(result.allowed)
        reasons = sorted(result.diagnostics.reasons)
        errors = list(result.diagnostics.errors)
        what = f"{principal} to {action} {task.name} in {environment}"
        if allowed:
            message = f"allowed {what}: permitted by {', '.join(reasons)}"
        elif reasons:
            message = f"denied {what}: forbidden by {', '.join(reasons)}"
        elif self.policies:
            message = f"denied {what}: no policy permits it"
        else:
            message = f"denied {what}: no policy permits it (no policies in {self.source})"
        if errors:
            message += f" ({len(errors)} policy error(s) ignored: {'; '.join(errors)})"
        return Decision(allowed, reasons, errors, message)

    def explain(
        self,
        principal: str,
        groups: Sequence[str],
        action: str,
        task: TaskInfo,
        environment: str,
        *,
        protected: bool,
        break_glass: bool,
        now: datetime,
    ) -> str:
        """A multi-line, human explanation of :meth:`decide`'s answer."""
        decision = self.decide(
            principal,
            groups,
            action,
            task,
            environment,
            protected=protected,
            break_glass=break_glass,
            now=now,
        )
        when = now.astimezone(UTC)
        lines = [
            f"{'ALLOW' if decision.allowed else 'DENY'}: {principal} "
            f"(groups: {', '.join(sorted(groups)) or 'none'}) {action} {task.name}",
            f"  task: risk={task.risk} locks={sorted(task.locks)} "
            f"interactive={str(task.interactive).lower()}",
            f"  context: environment={environment} protected={str(protected).lower()} "
            f"break_glass={str(break_glass).lower()} at {when:%Y-%m-%d %H:%M} UTC "
            f"(hour={when.hour}, weekday={when.isoweekday()})",
        ]
        if decision.allowed:
            lines.append("  permitted by:")
        elif decision.reasons:
            lines.append("  forbidden by:")
        else:
            lines.append(
                f"  no policy permits this; nothing is allowed by default "
                f"({len(self.policies)} policies loaded from {self.source})"
            )
        for policy_id in decision.reasons:
            policy = self.policies.get(policy_id)
            origin = f"{policy.effect} in {policy.file}" if policy else "unknown policy"
            lines.append(f"    - {policy_id} ({origin})")
        if decision.errors:
            lines.append("  policies skipped because they failed to evaluate:")
            lines.extend(f"    - {error}" for error in decision.errors)
        return "\n".join(lines)


def _parse_file(name: str, text: str, where: str) -> list[tuple[Policy, dict[str, Any]]]:
    import json

    import cedarpy

    try:
        parsed = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise ManifestError(f"{where}:{_locate_parse_error(text)}: {exc}") from None
    if parsed.get("templates"):
        raise ManifestError(f"{where}: templates (?principal/?resource slots) are not supported")
    # The schema goes in as text (not a Schema handle) to keep working on cedarpy 4.8.5.
    validation = cedarpy.validate_policies(text, SCHEMA)
    if not validation.validation_passed:
        problems = "; ".join(
            f"policy {_index(e.policy_id)}: {e.error}" if e.policy_id else e.error
            for e in validation.errors
        )
        raise ManifestError(f"{where}: does not fit the oneoff entity model: {problems}")
    result = []
    for cedar_id, est in sorted(parsed["staticPolicies"].items(), key=lambda kv: _index(kv[0])):
        index = _index(cedar_id)
        annotated = est.get("annotations", {}).get("id")
        policy_id = annotated if annotated else f"{name}:{index}"
        result.append((Policy(policy_id, est["effect"], name, index), est))
    return result


def _index(cedar_id: str) -> int:
    import re

    match = re.fullmatch(r"policy(\d+)", cedar_id)
    return int(match.group(1)) if match else -1


def _locate_parse_error(text: str) -> str:
    """``lines A-B`` around a parse error, found by parsing growing prefixes.

    cedarpy's parse errors carry no position, so the first prefix ending at a ``;`` line
    that fails to parse brackets the faulty policy. Only runs when parsing already failed.
    """
    import cedarpy

    lines = text.splitlines()
    good = 0
    for number, line in enumerate(lines, start=1):
        if not line.rstrip().endswith(";"):
            continue
        try:
            cedarpy.policies_to_json_str("\n".join(lines[:number]))
        except ValueError:
            return f"lines {good + 1}-{number}"
        good = number
    return f"lines {good + 1}-{max(len(lines), good + 1)}"


def _entity(kind: str, name: str) -> dict[str, str]:
    return {"type": f"{_NS}::{kind}", "id": name}


def _request(
    principal: str,
    groups: Sequence[str],
    action: str,
    task: TaskInfo,
    environment: str,
    protected: bool,
    break_glass: bool,
    now: datetime,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if action not in ACTIONS:
        raise UsageError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    if now.tzinfo is None:
        raise UsageError("decide() needs a timezone-aware time")
    when = now.astimezone(UTC)
    group_uids = [_entity("Group", group) for group in sorted(set(groups))]
    task_uid = _entity("Task", task.name)
    # Only this request's entities: the person, their groups and the task. Passing every
    # person in the file would cost parse time on each call and change no decision.
    entities: list[dict[str, Any]] = [
        {"uid": _entity("Person", principal), "attrs": {}, "parents": group_uids},
        *({"uid": uid, "attrs": {}, "parents": []} for uid in group_uids),
        {
            "uid": task_uid,
            "attrs": {
                "risk": task.risk,
                "locks": sorted(task.locks),
                "environments": sorted(task.environments),
                "interactive": task.interactive,
            },
            "parents": [],
        },
    ]
    request = {
        "principal": _entity("Person", principal),
        "action": _entity("Action", action),
        "resource": task_uid,
        "context": {
            "environment": environment,
            "protected": protected,
            "break_glass": break_glass,
            "hour": when.hour,
            "weekday": when.isoweekday(),
        },
    }
    return request, entities


# --- policy test tables -----------------------------------------------------------------

_CASE_KEYS: dict[str, type] = {
    "name": str,
    "principal": str,
    "groups": list,
    "action": str,
    "task": str,
    "risk": str,
    "locks": list,
    "environments": list,
    "interactive": bool,
    "environment": str,
    "protected": bool,
    "break_glass": bool,
    "at": datetime,
    "expect": str,
    "reasons": list,
}
_REQUIRED = ("principal", "action", "task", "environment", "expect")


@dataclass(frozen=True)
class TestResult:
    """One row of a policy test table: what was expected and what Cedar decided."""

    __test__ = False  # not a pytest class, despite the name

    number: int
    name: str
    passed: bool
    expected: str
    decision: Decision | None
    problem: str = ""
    expected_reasons: list[str] | None = field(default=None)

    def __str__(self) -> str:
        status = "ok  " if self.passed else "FAIL"
        text = f"{status} case {self.number}: {self.name}"
        if not self.passed:
            text += f"\n      {self.problem}"
        return text


def format_test_results(results: Sequence[TestResult]) -> str:
    """A report of every row and a summary line."""
    failed = sum(not r.passed for r in results)
    lines = [str(r) for r in results]
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


def run_policy_tests(
    file: Path,
    policies: PolicySet,
    signers: Signers | None = None,
    project: Project | None = None,
) -> list[TestResult]:
    """Run a TOML table of ``[[case]]`` rows against ``policies``.

    Each case: ``principal``, ``action``, ``task``, ``environment``, ``expect`` ("allow"
    or "deny") are required. Optional: ``name``, ``groups`` (default: the principal's
    groups in ``signers``), ``risk`` (default "low"), ``locks``, ``environments``,
    ``interactive``, ``protected``, ``break_glass`` (default false), ``at`` (a TOML
    datetime; default Monday 2024-01-01 12:00 UTC so results never depend on the clock),
    ``reasons`` (the exact policy ids expected to determine the decision).
    A malformed file raises ManifestError; a row that does not match fails with the
    actual decision and its reasons.

    Each row is decided as the commands decide (``oneoff._auth.operations``): a ``run``
    row on an interactive task asks ``run`` and ``console``, a ``console`` row on a task
    that is not interactive fails (no command ever asks it). With ``project`` (the CLI
    always passes the app's), tasks and environments are the app's own: a row about an
    undeclared task or environment fails, and so does a row whose ``risk``, ``locks``,
    ``environments``, ``interactive`` or ``protected`` contradicts oneoff.toml, so a
    table cannot pass about a task the app does not have.
    """
    import tomllib

    try:
        document = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{file}: cannot read policy tests: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{file}: {exc}") from None
    unknown_tables = set(document) - {"case"}
    if unknown_tables:
        raise ManifestError(f"{file}: unknown top-level key(s) {sorted(unknown_tables)}")
    cases = document.get("case", [])
    if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
        raise ManifestError(f"{file}: write each test as a [[case]] table")
    return [
        _run_case(file, number, case, policies, signers, project)
        for number, case in enumerate(cases, start=1)
    ]


def _run_case(
    file: Path,
    number: int,
    case: dict[str, Any],
    policies: PolicySet,
    signers: Signers | None,
    project: Project | None = None,
) -> TestResult:
    from oneoff._auth.operations import decide_operation, operation_for_action

    where = f"{file}: case {number}"
    for key, value in case.items():
        expected_type = _CASE_KEYS.get(key)
        if expected_type is None:
            raise ManifestError(f"{where}: unknown key {key!r}")
        if not isinstance(value, expected_type):
            raise ManifestError(f"{where}: {key} must be a {expected_type.__name__}")
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise ManifestError(f"{where}: {key} must be a list of strings")
    missing = [key for key in _REQUIRED if key not in case]
    if missing:
        raise ManifestError(f"{where}: missing {', '.join(missing)}")
    expect = case["expect"]
    if expect not in ("allow", "deny"):
        raise ManifestError(f'{where}: expect must be "allow" or "deny", not {expect!r}')
    if case["action"] not in ACTIONS:
        raise ManifestError(f"{where}: unknown action {case['action']!r}")
    at = case.get("at", DEFAULT_TEST_TIME)
    if at.tzinfo is None:
        raise ManifestError(f"{where}: at must carry a time zone (e.g. 2024-01-01T12:00:00Z)")
    principal = case["principal"]
    name = case.get("name") or (
        f"{principal} {case['action']} {case['task']} in {case['environment']} -> {expect}"
    )
    expected_reasons = sorted(case["reasons"]) if "reasons" in case else None

    if "groups" in case:
        groups: Sequence[str] = case["groups"]
    elif signers is not None and principal in signers:
        groups = sorted(signers.person(principal).groups)
    else:
        problem = f"{principal!r} is unknown: not in the allowed signers and no groups= given"
        return TestResult(number, name, False, expect, None, problem, expected_reasons)

    try:
        task, protected = _case_subject(case, project)
        operation = operation_for_action(case["action"], task)
    except UsageError as exc:
        return TestResult(number, name, False, expect, None, exc.message, expected_reasons)
    decision = decide_operation(
        lambda action: policies.decide(
            principal, groups, action, task, case["environment"],
            protected=protected, break_glass=case.get("break_glass", False), now=at,
        ),
        operation,
        task,
    )  # fmt: skip
    actual = "allow" if decision.allowed else "deny"
    problems = []
    if actual != expect:
        problems.append(f"expected {expect}, got {actual}")
    if expected_reasons is not None and decision.reasons != expected_reasons:
        problems.append(f"expected reasons {expected_reasons}, got {decision.reasons}")
    if decision.errors:
        problems.append(f"policy errors: {'; '.join(decision.errors)}")
    problem = ""
    if problems:
        problem = f"{', '.join(problems)} -- {decision.message}"
    return TestResult(number, name, not problems, expect, decision, problem, expected_reasons)


def _case_subject(case: dict[str, Any], project: Project | None) -> tuple[TaskInfo, bool]:
    """The row's task and ``protected``: the app's own when a project is given."""
    from oneoff._auth.operations import ALL_ENVIRONMENTS, APP_RESOURCE, app_resource, whole_app

    given = TaskInfo(
        name=case["task"],
        risk=case.get("risk", "low"),
        locks=case.get("locks", []),
        environments=case.get("environments", []),
        interactive=case.get("interactive", False),
    )
    protected = bool(case.get("protected", False))
    if project is None:
        return given, protected
    environment = (
        whole_app(project)
        if case["environment"] == ALL_ENVIRONMENTS
        else project.environments.get(case["environment"])
    )
    if environment is None:
        raise UsageError(f"oneoff.toml declares no environment {case['environment']!r}")
    if "protected" in case and protected != environment.protected:
        raise UsageError(
            f"the row says protected={str(protected).lower()}, oneoff.toml says "
            f"{str(environment.protected).lower()} for {environment.name}"
        )
    protected = environment.protected
    if case["action"] in ("release", "audit-export") or case["task"] == APP_RESOURCE:
        if case["task"] != APP_RESOURCE:
            raise UsageError(f"{case['action']} acts on the app: write task = {APP_RESOURCE!r}")
        return app_resource(), protected
    declared = project.tasks.get(case["task"])
    if declared is None:
        raise UsageError(f"oneoff.toml declares no task {case['task']!r}: no command decides it")
    task = TaskInfo(
        declared.name, declared.risk, tuple(declared.locks),
        tuple(declared.environments or ()), declared.interactive,
    )  # fmt: skip
    for key in ("risk", "locks", "environments", "interactive"):
        mine, theirs = getattr(given, key), getattr(task, key)
        if isinstance(mine, list | tuple):
            mine, theirs = sorted(mine), sorted(theirs)
        if key in case and mine != theirs:
            raise UsageError(f"the row says {key}={mine!r}, oneoff.toml says {theirs!r}")
    return task, protected
