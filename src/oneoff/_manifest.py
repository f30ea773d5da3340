"""The app's declaration (oneoff.toml or [tool.oneoff]): process types, environments, tasks."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from oneoff._executor.spec import LOCAL, ExecutorSpec, parse_executor
from oneoff._params import NAME_RE, ParamSpec, parse_param_spec
from oneoff._record import dataclass, field
from oneoff.errors import ManifestError, UsageError

__all__ = [
    "ConfigSource",
    "Environment",
    "Project",
    "Task",
    "find_app_root",
    "load_project",
]

MANIFEST = "oneoff.toml"
RISKS = ("low", "high", "critical")
# Matched without regard to case (db_password is as secret as DB_PASSWORD). "*PASSWORD"
# without the underscore: libpq's PGPASSWORD; "*_PWD": MySQL's MYSQL_PWD.
DEFAULT_SECRET_PATTERNS = (
    "*PASSWORD", "*PASSWD", "*_PWD", "*PASSPHRASE", "*_TOKEN", "*_SECRET", "*_KEY", "SECRET_*",
    "*_CREDENTIALS", "*_PRIVATE_KEY", "*_API_KEY",
)  # fmt: skip
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Nothing oneoff reads nests deeper than a handful of levels; a bound keeps every walk
# over the manifest (validation, digests, repr in messages) far from Python's recursion limit.
MAX_DEPTH = 32
# Timers take milliseconds in a C int (~596 h); a week is longer than any admin process
# should hold a lock, and a bound refused at load is better than a crash mid-run.
MAX_TIMEOUT = 7 * 24 * 3600
MAX_SOURCE_TIMEOUT = 3600


@dataclass(frozen=True)
class ConfigSource:
    """Where an environment's variables come from; applied in order, later wins."""

    kind: Literal["dotenv", "inherit", "command"]
    path: str = ""
    optional: bool = False
    names: tuple[str, ...] = ()
    argv: tuple[str, ...] = ()
    timeout: float = 30.0
    pass_env: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "dotenv":
            return f"dotenv {self.path}" + (" (optional)" if self.optional else "")
        if self.kind == "inherit":
            return "inherit " + ", ".join(self.names)
        return "command " + " ".join(self.argv)


@dataclass(frozen=True)
class Environment:
    """A deploy target with its config sources, secrets and protection."""

    name: str
    sources: tuple[ConfigSource, ...]
    secrets: tuple[str, ...] = ()
    secret_patterns: tuple[str, ...] = DEFAULT_SECRET_PATTERNS
    not_secret: tuple[str, ...] = ()  # names exempt from secret_patterns (never from secrets)
    protected: bool = False
    allow_os_user: bool = True
    unsafe_allow_env: tuple[str, ...] = ()
    description: str = ""
    approvals: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    executor: ExecutorSpec = LOCAL


@dataclass(frozen=True)
class Task:
    """An admin process the app declares."""

    name: str
    argv: tuple[str, ...]
    params: Mapping[str, ParamSpec]
    description: str = ""
    timeout: int = 3600
    grace: int = 10
    risk: Literal["low", "high", "critical"] = "low"
    locks: tuple[str, ...] = ()
    environments: tuple[str, ...] | None = None
    interactive: bool = False
    cwd: str = "."
    approvals: Mapping[str, Any] | None = None
    # A Procfile's release: line: its $VARs are filled from the environment's config.
    expand_env: bool = False
    network: bool = False
    """Whether the task needs the network; sandbox and container executors deny it otherwise."""

    def allowed_in(self, environment: str) -> bool:
        return self.environments is None or environment in self.environments


@dataclass(frozen=True)
class Project:
    """A loaded, validated app declaration."""

    root: Path
    manifest_path: Path
    name: str
    processes: Mapping[str, tuple[str, ...]]
    environments: Mapping[str, Environment]
    tasks: Mapping[str, Task]
    python: str | None = None
    path: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # Procfile lines that could not be read (name -> why); the rest of the app still loads.
    broken_processes: Mapping[str, str] = field(default_factory=dict)

    def process(self, name: str) -> tuple[str, ...]:
        """A process type's argv, or a usage error that says why there is none."""
        if name in self.processes:
            return self.processes[name]
        if name in self.broken_processes:
            raise ManifestError(self.broken_processes[name])
        if name in self.tasks and self.tasks[name].expand_env:
            raise UsageError(
                f"{name!r} is the Procfile's release phase, a one-off task here",
                hint=f"run it with `oneoff run {name}`, which records the run",
            )
        known = ", ".join(sorted(self.processes)) or "none declared"
        raise UsageError(f"unknown process type {name!r} (process types: {known})")

    def section(self, name: str) -> Mapping[str, Any]:
        """A raw top-level table ([release], [audit], [access]) for its owning module."""
        value = self.raw.get(name, {})
        if not isinstance(value, dict):
            raise ManifestError(f"{self.manifest_path}: [{name}] must be a table")
        return value

    def task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none declared"
            raise UsageError(f"unknown task {name!r} (tasks: {known})") from None

    def environment(self, name: str | None) -> Environment:
        """The target environment; never guessed when there is a choice or a risk."""
        if name is None:
            if len(self.environments) == 1:
                only = next(iter(self.environments.values()))
                if not only.protected:
                    return only
                raise UsageError(f"environment {only.name!r} is protected: pass --env {only.name}")
            known = ", ".join(sorted(self.environments))
            raise UsageError(f"--env is required (environments: {known})")
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none declared"
            raise UsageError(f"unknown environment {name!r} (environments: {known})") from None


def find_app_root(start: Path) -> Path:
    """The nearest directory at or above ``start`` holding oneoff.toml or [tool.oneoff]."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / MANIFEST).is_file():
            return directory
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file() and b"[tool.oneoff" in pyproject.read_bytes():
            return directory
    raise UsageError(
        f"no {MANIFEST} found in {start} or its parents",
        hint="run `oneoff init` in your app's root, or pass --app DIR",
    )


def load_project(root: Path) -> Project:
    """Read and validate the declaration at ``root``; every error names file and place."""
    root = root.resolve()
    path = root / MANIFEST
    if path.is_file():
        data = _read_toml(path)
    else:
        path = root / "pyproject.toml"
        if not path.is_file():
            raise UsageError(f"no {MANIFEST} in {root}")
        table = _read_toml(path).get("tool", {}).get("oneoff")
        if not isinstance(table, dict):
            raise ManifestError(f"{path}: has no [tool.oneoff] table")
        data = table
    return _build(root, path, data)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already says "(at line N, column M)".
        raise ManifestError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 (byte {exc.start} is not valid)") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ManifestError(f"{path}: nests deeper than {MAX_DEPTH} levels") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror}") from None
    if _depth(data) > MAX_DEPTH:
        raise ManifestError(f"{path}: nests deeper than {MAX_DEPTH} levels")
    return data


def _depth(value: Any) -> int:
    """How deeply tables and arrays nest in ``value`` (up to MAX_DEPTH + 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > MAX_DEPTH:  # refused anyway: stop walking
                break
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, level + 1))
    return deepest


class _Place:
    """``FILE:LINE: what`` for messages, the line looked up only when a message is built.

    Finding a line reads the whole file; doing it eagerly for every task made loading
    quadratic in the number of tasks (10,000 tasks took 18 s).
    """

    __slots__ = ("label", "needle", "path")

    def __init__(self, path: Path, needle: str, label: str) -> None:
        self.path, self.needle, self.label = path, needle, label

    def __str__(self) -> str:
        return _line_of(self.path, self.needle) + self.label

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __add__(self, more: str) -> _Place:
        return _Place(self.path, self.needle, self.label + more)


def _line_of(path: Path, needle: str) -> str:
    try:
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if needle in line:
                return f"{path}:{number}"
    except (OSError, UnicodeDecodeError):
        pass
    return str(path)


def _table(value: Any, where: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: must be a table")
    return value


def _str_list(value: Any, where: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where}: must be a list of strings")
    return tuple(value)


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: object) -> None:
    if not allowed.issuperset(table):  # ``where`` becomes text only for the message
        from oneoff._keys import check_keys

        check_keys(table, allowed, str(where))


def _build(root: Path, path: Path, data: dict[str, Any]) -> Project:
    # [release], [audit] and [access] are parsed and validated by the modules that own them
    # (oneoff._release, oneoff._audit, oneoff._auth); they are kept raw here.
    _check_keys(
        data,
        {"app", "processes", "environments", "tasks", "release", "audit", "access", "store",
         "server"},
        str(path),
    )  # fmt: skip
    if "server" in data:
        from oneoff._client.url import validate_server_table

        validate_server_table(str(path), data["server"])
    if "store" in data:
        from oneoff._store.select import validate_store_table

        validate_store_table(str(path), data["store"])
    _check_keys(_table(data.get("audit"), f"{path}: [audit]"), {"output_cap"}, f"{path}: [audit]")
    from oneoff._release.settings import validate_release_tables

    validate_release_tables(path, data)
    app = _table(data.get("app"), f"{path}: [app]")
    _check_keys(app, {"name", "python", "path"}, f"{path}: [app]")
    name = app.get("name", root.name)
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{path}: [app] name must be a non-empty string")
    _plain(name, "[app] name", f"{path}")
    python = app.get("python")
    if python is not None and not isinstance(python, str):
        raise ManifestError(f"{path}: [app] python must be a string")
    app_path = _str_list(app.get("path", []), f"{path}: [app] path")
    processes, broken = _processes(
        root, path, _table(data.get("processes"), f"{path}: [processes]")
    )
    envs_raw = _table(data.get("environments"), f"{path}: [environments]")
    if not envs_raw:
        raise ManifestError(f"{path}: declares no [environments.<name>]")
    environments = {n: _environment(path, n, e) for n, e in envs_raw.items()}
    tasks_raw = _table(data.get("tasks"), f"{path}: [tasks]")
    tasks = {n: _task(path, n, t, environments) for n, t in tasks_raw.items()}
    if "release" in processes and "release" not in tasks:
        # Heroku's release phase is a one-off process run on each release (usually
        # migrations): a task, so it is planned, authorised and recorded like one.
        tasks["release"] = _release_task(processes.pop("release"))
    from oneoff._access import validate_access  # [access] and approval rules (issue #5)

    validate_access(path, data, environments, tasks)
    return Project(
        root=root,
        manifest_path=path,
        name=str(name),
        processes=processes,
        environments=environments,
        tasks=tasks,
        python=python,
        path=app_path,
        raw=data,
        broken_processes=broken,
    )


def _processes(
    root: Path, path: Path, table: dict[str, Any]
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    processes: dict[str, tuple[str, ...]] = {}
    for pname, argv in table.items():
        where = _Place(path, pname, f": process {pname!r}")
        if isinstance(argv, str):
            raise ManifestError(f"{where}: argv must be a list, not a shell string")
        processes[pname] = _argv(argv, where)
    procfile = root / "Procfile"
    if not processes and procfile.is_file():
        from oneoff._procfile import parse_procfile

        parsed = parse_procfile(procfile)
        return dict(parsed.processes), dict(parsed.problems)
    return processes, {}


def _release_task(argv: tuple[str, ...]) -> Task:
    # Braces are literal in a Procfile; in a task argv they would be placeholders.
    escaped = tuple(a.replace("{", "{{").replace("}", "}}") for a in argv)
    return Task(
        name="release",
        argv=escaped,
        params={},
        description="the Procfile's release phase",
        risk="high",
        expand_env=True,
    )


def _argv(value: Any, where: _Place) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ManifestError(f"{where}: argv must be a list, not a shell string")
    argv = _str_list(value, where + ": argv")
    if not argv or not argv[0]:
        raise ManifestError(f"{where}: argv must not be empty")
    if any("\x00" in a for a in argv):
        raise ManifestError(f"{where}: argv contains a NUL byte")
    return argv


def _environment(path: Path, name: str, raw: Any) -> Environment:
    where = _Place(path, f"[environments.{name}", f": environment {name!r}")
    if not NAME_RE.match(name):
        raise ManifestError(f"{where}: name must match {NAME_RE.pattern}")
    table = _table(raw, where)
    _check_keys(
        table,
        {"config", "secrets", "secret_patterns", "not_secret", "protected", "allow_os_user",
         "unsafe_allow_env", "description", "approvals", "break_glass", "release", "executor"},
        where,
    )  # fmt: skip
    protected = table.get("protected", False)
    if not isinstance(protected, bool):
        raise ManifestError(f"{where}: protected must be true or false")
    config = table.get("config", [])
    if not isinstance(config, list):
        raise ManifestError(f'{where}: config must be a list like [{{ dotenv = ".env" }}]')
    sources = tuple(_source(where, i, s) for i, s in enumerate(config))
    secrets = _str_list(table.get("secrets", []), where + ": secrets")
    extra_patterns = _str_list(table.get("secret_patterns", []), where + ": secret_patterns")
    not_secret = _str_list(table.get("not_secret", []), where + ": not_secret")
    both = sorted(set(secrets) & set(not_secret))
    if both:
        raise ManifestError(f"{where}: {', '.join(both)} listed in both secrets and not_secret")
    bad = [n for n in not_secret if not is_env_name(n)]
    if bad:
        raise ManifestError(f"{where}: not_secret takes variable names, not {bad[0]!r}")
    allow_os_user = table.get("allow_os_user", not protected)
    if not isinstance(allow_os_user, bool):
        raise ManifestError(f"{where}: allow_os_user must be true or false")
    if protected and allow_os_user:
        raise ManifestError(f"{where}: a protected environment cannot accept the bare OS user")
    unsafe = _str_list(table.get("unsafe_allow_env", []), where + ": unsafe_allow_env")
    executor = parse_executor(table.get("executor"), str(where), protected=protected)
    if executor.kind == "kubernetes" and sources:
        raise ManifestError(
            f"{where}: a kubernetes environment takes its config from the app's Deployment "
            "(env, envFrom); it declares no config sources"
        )
    return Environment(
        name=name,
        sources=sources,
        secrets=secrets,
        secret_patterns=DEFAULT_SECRET_PATTERNS + extra_patterns,
        not_secret=not_secret,
        protected=protected,
        allow_os_user=bool(allow_os_user),
        unsafe_allow_env=unsafe,
        description=_description(table, where),
        approvals=_table(table.get("approvals"), where + ": approvals") or None,
        extra={k: table[k] for k in ("break_glass", "release") if k in table},
        executor=executor,
    )


def _source(where: _Place, index: int, raw: Any) -> ConfigSource:
    ctx = where + f": config[{index}]"
    if not isinstance(raw, dict):
        raise ManifestError(f'{ctx}: must be a table like {{ dotenv = ".env" }}')
    kinds = [k for k in ("dotenv", "inherit", "command") if k in raw]
    if len(kinds) != 1:
        raise ManifestError(f"{ctx}: needs exactly one of dotenv, inherit, command")
    kind = kinds[0]
    if kind == "dotenv":
        _check_keys(raw, {"dotenv", "optional"}, ctx)
        file = raw["dotenv"]
        if not isinstance(file, str) or not file or "\x00" in file:
            raise ManifestError(f"{ctx}: dotenv must be a file path")
        optional = raw.get("optional", False)
        if not isinstance(optional, bool):
            raise ManifestError(f"{ctx}: optional must be true or false")
        return ConfigSource("dotenv", path=file, optional=optional)
    if kind == "inherit":
        _check_keys(raw, {"inherit"}, ctx)
        names = _str_list(raw["inherit"], ctx + ": inherit")
        for n in names:
            if n.strip("*") == "":
                raise ManifestError(
                    f'{ctx}: inherit must name variables or prefixes like "APP_*"; '
                    'a bare "*" would let the operator\'s shell leak into the task'
                )
        return ConfigSource("inherit", names=names)
    _check_keys(raw, {"command", "timeout", "pass_env"}, ctx)
    timeout = raw.get("timeout", 30)
    if (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not 0 < timeout <= MAX_SOURCE_TIMEOUT  # also refuses nan
    ):
        raise ManifestError(
            f"{ctx}: timeout must be a number of seconds above 0, at most {MAX_SOURCE_TIMEOUT}"
        )
    return ConfigSource(
        "command",
        argv=_argv(raw["command"], ctx),
        timeout=float(timeout),
        pass_env=_str_list(raw.get("pass_env", []), ctx + ": pass_env"),
    )


_DURATION = re.compile(r"^([0-9]+)(s|m|h)?$")


def _duration(value: Any, where: object) -> int:
    seconds = 0
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match and len(match.group(1)) <= 12:
            seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    if 0 < seconds <= MAX_TIMEOUT:
        return seconds
    raise ManifestError(
        f'{where}: must be a positive duration like 90, "30s", "10m", "2h", '
        f"at most {MAX_TIMEOUT // 3600}h"
    )


def _task(path: Path, name: str, raw: Any, environments: Mapping[str, Environment]) -> Task:
    where = _Place(path, f"[tasks.{name}", f": task {name!r}")
    if not NAME_RE.match(name):
        raise ManifestError(f"{where}: name must match {NAME_RE.pattern}")
    table = _table(raw, where)
    _check_keys(
        table,
        {"argv", "params", "description", "timeout", "grace", "risk", "locks",
         "environments", "interactive", "cwd", "approvals", "network"},
        where,
    )  # fmt: skip
    if "argv" not in table:
        raise ManifestError(f'{where}: needs argv = ["program", "arg", ...]')
    argv = _argv(table["argv"], where)
    params_raw = _table(table.get("params"), where + ": params")
    params = {p: parse_param_spec(name, p, spec, str(path)) for p, spec in params_raw.items()}
    delivered = [s.env_var for s in params.values() if s.secret and s.deliver == "env"]
    if len(set(delivered)) != len(delivered):
        twice = next(v for v in delivered if delivered.count(v) > 1)
        raise ManifestError(f"{where}: two secret params are delivered as {twice}")
    used: set[str] = set()
    for index, arg in enumerate(argv):
        for placeholder in placeholders(arg, where + f": argv[{index}]"):
            if placeholder not in params:
                raise ManifestError(
                    f"{where}: argv uses {{{placeholder}}} but declares no such param"
                )
            if params[placeholder].secret:
                raise ManifestError(
                    f"{where}: secret param {placeholder!r} cannot appear in argv "
                    f"(visible in ps); the task reads it from ${params[placeholder].env_var}"
                )
            if index == 0:
                raise ManifestError(f"{where}: the program (argv[0]) cannot be a param")
            spec = params[placeholder]
            if not spec.required and spec.default is None:
                raise ManifestError(
                    f"{where}: param {placeholder!r} is used in argv, so it needs a default "
                    "or required = true"
                )
            used.add(placeholder)
    unused = [p for p, s in params.items() if p not in used and not s.secret]
    if unused:
        raise ManifestError(f"{where}: param {unused[0]!r} is declared but not used in argv")
    risk = table.get("risk", "low")
    if risk not in RISKS:
        raise ManifestError(f"{where}: risk must be one of {', '.join(RISKS)}")
    envs = table.get("environments")
    allowed = None
    if envs is not None:
        allowed = _str_list(envs, where + ": environments")
        for env in allowed:
            if env not in environments:
                raise ManifestError(f"{where}: environments names unknown environment {env!r}")
    locks = _str_list(table.get("locks", []), where + ": locks")
    for lock in locks:
        if not NAME_RE.match(lock):
            raise ManifestError(f"{where}: lock name {lock!r} must match {NAME_RE.pattern}")
    interactive = table.get("interactive", False)
    if not isinstance(interactive, bool):
        raise ManifestError(f"{where}: interactive must be true or false")
    network = table.get("network", False)
    if not isinstance(network, bool):
        raise ManifestError(f"{where}: network must be true or false")
    cwd = table.get("cwd", ".")
    if not isinstance(cwd, str) or cwd.startswith("/") or ".." in Path(cwd).parts:
        raise ManifestError(f"{where}: cwd must be a relative path inside the app")
    return Task(
        name=name,
        argv=argv,
        params=params,
        description=_description(table, where),
        timeout=_duration(
            table.get("timeout", 14400 if interactive else 3600), where + ": timeout"
        ),
        grace=_duration(table.get("grace", 10), where + ": grace"),
        risk=risk,
        locks=locks,
        environments=allowed,
        interactive=interactive,
        cwd=cwd,
        approvals=_table(table.get("approvals"), where + ": approvals") or None,
        network=network,
    )


def placeholders(arg: str, where: object) -> list[str]:
    """The ``{name}`` placeholders in one argv element (``{{``/``}}`` are literal braces)."""
    found = []
    for match in _PLACEHOLDER.finditer(arg):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None or not NAME_RE.match(match.group(1)):
            raise ManifestError(f"{where}: malformed placeholder {token!r} (use {{{{ for a brace)")
        found.append(match.group(1))
    return found


def render_arg(arg: str, values: Mapping[str, str]) -> str:
    """Substitute placeholders in one argv element; the result stays one element."""

    def _sub(match: re.Match[str]) -> str:
        brace = match.group(0)
        if brace == "{{":
            return "{"
        if brace == "}}":
            return "}"
        return values[match.group(1)]

    return _PLACEHOLDER.sub(_sub, arg)


def is_env_name(name: str) -> bool:
    return bool(_ENV_NAME.match(name))


def _plain(text: str, what: str, where: object) -> None:
    """ManifestError unless ``text`` is one line of plain text (approvers read it)."""
    from oneoff._text import text_problem

    problem = text_problem(text, what, max_length=1000)
    if problem is not None:
        raise ManifestError(f"{where}: {problem}")


def _description(table: dict[str, Any], where: object) -> str:
    """A description people read on terminals and in the console: one line of plain text."""
    from oneoff._text import text_problem

    text = str(table.get("description", ""))
    problem = text_problem(text, "description", max_length=1000)
    if problem is not None:
        raise ManifestError(f"{where}: {problem}")
    return text
