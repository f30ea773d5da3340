"""The app's ``[access]`` section and approval rules: parsed and validated at manifest load.

Kept apart from ``oneoff._auth`` on purpose: every command loads the manifest, so this
module must import nothing heavier than the standard library (no cryptography, no Cedar).

    [access]
    signers = "people/allowed_signers"   # who is who: SSH keys, names, groups
    policies = "policies"                # *.cedar, default deny
    approval_ttl = "1h"                  # how long an approval stays usable
    break_glass = { command = ["notify-oncall"] }   # or { webhook = "https://..." }

    [tasks.migrate]
    approvals = { quorum = 2, group = "dba" }        # in protected environments
    [environments.production]
    approvals = { quorum = 1, risks = ["high", "critical"], ttl = "15m" }  # ttl: this env's
    break_glass = false                              # no break-glass here at all
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneoff._record import dataclass
from oneoff.errors import ManifestError

if TYPE_CHECKING:
    from oneoff._manifest import Environment, Project, Task

__all__ = [
    "AccessConfig",
    "ApprovalRule",
    "Notifier",
    "access_config",
    "approval_rule",
    "approval_ttl",
    "break_glass_allowed",
    "validate_access",
]

DEFAULT_TTL = 3600
_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_GROUP = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
_RISKS = ("low", "high", "critical")


@dataclass(frozen=True)
class Notifier:
    """Where a break-glass run is announced: a command (argv) or a webhook URL."""

    command: tuple[str, ...] = ()
    webhook: str = ""


@dataclass(frozen=True)
class AccessConfig:
    """The validated ``[access]`` section; ``root`` resolves its relative paths."""

    root: Path
    signers: Path
    policies: Path
    approval_ttl: int = DEFAULT_TTL
    notifier: Notifier | None = None

    def version(self) -> str:
        """A digest of everything that decides access: policy files and the signers file.

        Approvals bind it, so editing a policy or the people file voids them.
        """
        import hashlib

        digest = hashlib.sha256()
        files = sorted(self.policies.glob("*.cedar")) if self.policies.is_dir() else []
        for path in [self.signers, *files]:
            try:
                data = path.read_bytes()
            except OSError:
                data = b"<missing>"
            name = str(path.relative_to(self.root)) if path.is_relative_to(self.root) else path
            digest.update(f"{name}\x00{len(data)}\x00".encode())
            digest.update(data)
        return "pv:" + digest.hexdigest()[:32]


@dataclass(frozen=True)
class ApprovalRule:
    """How many distinct approvals (from whom) a plan needs before it may run."""

    quorum: int
    group: str | None
    source: str

    def describe(self) -> str:
        who = f"from group {self.group!r}" if self.group else "from other people"
        return f"{self.quorum} approval(s) {who} ({self.source})"


# An approval outliving a year is no approval of *this* change; past date arithmetic's
# range (9999999999999h) it was an OverflowError when the approval was signed.
MAX_TTL = 366 * 86400


def _duration(value: Any, where: str) -> int:
    seconds = 0
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match:
            seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if 0 < seconds <= MAX_TTL:
        return seconds
    raise ManifestError(
        f'{where}: must be a positive duration like 900, "15m", "1h", at most 366 days'
    )


def _notifier(value: Any, where: str) -> Notifier:
    if not isinstance(value, dict) or len(value) != 1:
        raise ManifestError(
            f'{where}: must be {{ command = [...] }} or {{ webhook = "https://..." }}'
        )
    if "command" in value:
        argv = value["command"]
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) and a and "\x00" not in a for a in argv)
        ):
            raise ManifestError(f"{where}: command must be a non-empty list of strings (argv)")
        return Notifier(command=tuple(argv))
    url = value.get("webhook")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise ManifestError(f"{where}: webhook must be an http(s) URL")
    return Notifier(webhook=url)


def _parse(root: Path, where: str, table: Mapping[str, Any]) -> AccessConfig:
    from oneoff._keys import check_keys

    check_keys(table, {"signers", "policies", "approval_ttl", "break_glass"}, where)
    paths = {}
    for key, default in (("signers", "people/allowed_signers"), ("policies", "policies")):
        value = table.get(key, default)
        if not isinstance(value, str) or not value or value.startswith("/"):
            raise ManifestError(f"{where}: {key} must be a path relative to the app")
        # The people and policy files are part of the app; never read them from elsewhere.
        if ".." in Path(value).parts:
            raise ManifestError(f"{where}: {key} must stay inside the app")
        paths[key] = root / value
    ttl = _duration(table.get("approval_ttl", DEFAULT_TTL), f"{where}: approval_ttl")
    bg = table.get("break_glass")
    notifier = None if bg is None else _notifier(bg, f"{where}: break_glass")
    return AccessConfig(root, paths["signers"], paths["policies"], ttl, notifier)


def _rule(raw: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    from oneoff._keys import check_keys

    check_keys(raw, allowed, where)
    quorum = raw.get("quorum")
    if not isinstance(quorum, int) or isinstance(quorum, bool) or not 1 <= quorum <= 20:
        raise ManifestError(f"{where}: quorum must be a whole number from 1 to 20")
    group = raw.get("group")
    if group is not None and (not isinstance(group, str) or not _GROUP.match(group)):
        raise ManifestError(f"{where}: group must be a group name from the signers file")
    if "ttl" in raw:
        _duration(raw["ttl"], f"{where}: ttl")
    for key, choices in (("risks", _RISKS), ("environments", None)):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ManifestError(f"{where}: {key} must be a list of strings")
        if choices is not None and not set(value) <= set(choices):
            raise ManifestError(f"{where}: {key} must be among {', '.join(choices)}")


def validate_access(
    path: Path,
    data: Mapping[str, Any],
    environments: Mapping[str, Environment],
    tasks: Mapping[str, Task],
) -> None:
    """Fail at load time, naming the file, on any malformed access setting."""
    raw = data.get("access")
    if raw is not None:
        if not isinstance(raw, dict):
            raise ManifestError(f"{path}: [access] must be a table")
        _parse(path.parent, f"{path}: [access]", raw)
    for env in environments.values():
        where = f"{path}: environment {env.name!r}"
        if env.approvals is not None:
            _rule(env.approvals, f"{where}: approvals", {"quorum", "group", "risks", "ttl"})
        bg = env.extra.get("break_glass")
        if bg is not None and not isinstance(bg, bool):
            _notifier(bg, f"{where}: break_glass")
    for task in tasks.values():
        if task.approvals is not None:
            where = f"{path}: task {task.name!r}: approvals"
            _rule(task.approvals, where, {"quorum", "group", "environments"})
            for env_name in task.approvals.get("environments", []):
                if env_name not in environments:
                    raise ManifestError(f"{where}: unknown environment {env_name!r}")


def access_config(project: Project) -> AccessConfig | None:
    """The app's access setup, or None when it declares no ``[access]`` (zero setup)."""
    if "access" not in project.raw:
        return None
    return _parse(project.root, f"{project.manifest_path}: [access]", project.section("access"))


def approval_rule(task: Task, environment: Environment) -> ApprovalRule | None:
    """The quorum this task needs here: the task's own rule wins over the environment's."""
    rule = task.approvals
    if rule is not None:
        applies = rule.get("environments")
        if (applies is None and environment.protected) or (applies and environment.name in applies):
            return ApprovalRule(rule["quorum"], rule.get("group"), f"task {task.name!r}")
    rule = environment.approvals
    if rule is not None and task.risk in rule.get("risks", _RISKS):
        return ApprovalRule(rule["quorum"], rule.get("group"), f"environment {environment.name!r}")
    return None


def approval_ttl(config: AccessConfig, environment: Environment) -> int:
    """Seconds an approval stays usable here: the environment's ``approvals.ttl``, else
    ``[access] approval_ttl``. Both live in oneoff.toml (code), never in the store."""
    rule = environment.approvals
    if rule is not None and "ttl" in rule:
        return _duration(rule["ttl"], f"environment {environment.name!r}: approvals: ttl")
    return config.approval_ttl


def break_glass_allowed(environment: Environment, config: AccessConfig) -> Notifier | None:
    """The notifier for break-glass here; ManifestError-free None means no notification."""
    value = environment.extra.get("break_glass")
    if isinstance(value, dict):
        return _notifier(value, f"environment {environment.name!r}: break_glass")
    return config.notifier
