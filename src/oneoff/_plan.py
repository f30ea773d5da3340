"""A plan: everything a run would do, fully resolved, and the canonical hash approvals sign."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from oneoff._canonical import canonical_hash
from oneoff._environ import Materialized, materialize
from oneoff._manifest import Environment, Project, Task, render_arg
from oneoff._params import resolve_params
from oneoff._record import dataclass, replace
from oneoff.errors import ConfigError, ParamError, SecretError, UsageError

if TYPE_CHECKING:
    from oneoff._redact import Redactor

__all__ = ["HashedPlan", "Plan", "build_plan"]

PLAN_VERSION = 1


class HashedPlan(Protocol):
    """What deciding on a plan needs: a ``Plan``, or the team server's view of a plan a
    client made (its hashed document checked against its hash; the task and environment
    from the server's own manifest)."""

    @property
    def task(self) -> Task: ...

    @property
    def environment(self) -> Environment: ...

    @property
    def hash(self) -> str: ...

    def document(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Plan:
    """A fully resolved run. Secret values live only in memory, never in ``document()``."""

    project: Project
    task: Task
    environment: Environment
    argv: tuple[str, ...]
    cwd: Path
    params: Mapping[str, str]
    env: Materialized
    release_id: str | None
    fingerprint_key: bytes
    hash: str

    @cached_property
    def redactor(self) -> Redactor:
        """Redacts every secret of the run from what is shown (short ones skipped, not refused:
        a display must not fail; the run itself refuses them)."""
        from oneoff._redact import MIN_SAFE_LENGTH, Redactor

        secrets = {**self.env.secret_values(), **self.secret_param_values()}
        return Redactor(secrets, min_length=MIN_SAFE_LENGTH, skip_short=True)

    @property
    def public_params(self) -> dict[str, str]:
        """Params as they may be stored and shown: secret ones masked, secrets in others
        redacted."""
        return self.shown_params(self.redactor)

    def shown_params(self, redactor: Redactor) -> dict[str, str]:
        """``public_params`` with a given redactor (the run's own, already built)."""
        return {
            name: ("[secret]" if self.task.params[name].secret else redactor.redact_text(value))
            for name, value in sorted(self.params.items())
        }

    def refuse_secrets_in_argv(self, redactor: Redactor) -> None:
        """SecretError if a plain param would put a secret's value in argv.

        Any user of the machine can read a running task's argv (``/proc/PID/cmdline``, ``ps``);
        a secret param reaches the task in its environment (or stdin) instead.
        """
        leaking = sorted(
            name
            for name, value in self.params.items()
            if not self.task.params[name].secret and redactor.redact_text(value) != value
        )
        if leaking:
            raise SecretError(
                f"param {leaking[0]!r} holds a secret's value, and params go in argv, which "
                "every user can read; secrets never go in argv",
                hint=f'declare {leaking[0]!r} as type = "secret" (it then reaches the task in '
                "its environment), or pass a value that is not a secret",
            )

    def secret_param_values(self) -> dict[str, str]:
        return {n: v for n, v in self.params.items() if self.task.params[n].secret}

    def stdin_data(self) -> bytes | None:
        chunks = [
            v for n, v in sorted(self.params.items())
            if self.task.params[n].secret and self.task.params[n].deliver == "stdin"
        ]  # fmt: skip
        return ("\n".join(chunks) + "\n").encode() if chunks else None

    def document(self) -> dict[str, Any]:
        return plan_document(self)

    def to_json(self) -> dict[str, Any]:
        """What `oneoff plan --json` prints: the hashed document plus readable values."""
        # The document as hashed, but a secret that reached argv or a plain param (a misuse
        # the hash still covers) is shown redacted like everywhere else.
        document = self.document()
        redact = self.redactor.redact_text
        document["argv"] = [redact(a) for a in document["argv"]]
        document["params"] = {
            k: redact(v) if isinstance(v, str) else v for k, v in document["params"].items()
        }
        return {
            "hash": self.hash,
            "document": document,
            "cwd": str(self.cwd),
            "env": {
                k: {"value": v, "source": self.env.origin[k], "secret": k in self.env.secret_keys}
                for k, v in sorted(self.env.masked(self.redactor).items())
            },
            "params": self.public_params,
        }


def fingerprint(key: bytes, name: str, value: str) -> str:
    """Keyed fingerprint of a value: equal values compare equal, values cannot be guessed."""
    return hmac.new(key, name.encode() + b"\x00" + value.encode(), hashlib.sha256).hexdigest()


def plan_document(plan: Plan) -> dict[str, Any]:
    task = plan.task
    hashed_env = {
        key: fingerprint(plan.fingerprint_key, key, value)
        for key, value in plan.env.values.items()
        # The operator's terminal settings and per-run ids do not change what runs.
        if plan.env.origin[key] not in ("terminal", "oneoff run")
    }
    params: dict[str, Any] = {}
    for name, value in plan.params.items():
        if task.params[name].secret:
            params[name] = {"secret": fingerprint(plan.fingerprint_key, "param:" + name, value)}
        else:
            params[name] = value
    doc = {
        "oneoff_plan": PLAN_VERSION,
        "app": plan.project.name,
        "task": task.name,
        "environment": plan.environment.name,
        "protected": plan.environment.protected,
        "argv": list(plan.argv),
        "cwd": task.cwd,
        "params": params,
        "env": hashed_env,
        "timeout": task.timeout,
        "grace": task.grace,
        "risk": task.risk,
        "locks": sorted(task.locks),
        "interactive": task.interactive,
        "release": plan.release_id,
    }
    executor = plan.environment.executor
    if executor.kind != "local":
        # Where the task runs (image digest, limits, network) is part of what is approved.
        # Absent means the local executor, so plans made before executors existed keep
        # their hash and their approvals.
        doc["executor"] = {**executor.document(), "network": task.network}
    return doc


def build_plan(
    project: Project,
    task_name: str,
    env_name: str | None,
    given: Mapping[str, str],
    *,
    fingerprint_key: bytes,
    release_id: str | None = None,
    operator_env: Mapping[str, str] | None = None,
) -> Plan:
    """Resolve a task, its environment and its params into a ``Plan``, or refuse."""
    task = project.task(task_name)
    environment = project.environment(env_name)
    if not task.allowed_in(environment.name):
        allowed = ", ".join(task.environments or ())
        raise UsageError(
            f"task {task.name!r} may not run in {environment.name!r} (only: {allowed})"
        )
    try:
        params = resolve_params(task.params, given, task=task.name, app_root=project.root)
    except ParamError as exc:
        # The message quotes the refused value, which may be a secret pasted into the
        # wrong param: redact it like every other text shown (config errors first: a value
        # we cannot check against the secrets is not shown at all).
        env = materialize(project, environment, run_vars={}, operator_env=operator_env)
        raise _redacted(exc, env, task, given) from None
    env = materialize(project, environment, run_vars={}, operator_env=operator_env)
    argv = [task.argv[0]]
    for template in task.argv[1:]:
        value = render_arg(template, params)
        # A whole-argument param that starts with '-' would be read as an option.
        if value.startswith("-") and template.startswith("{") and not template.startswith("{{"):
            name = template[1 : template.index("}")]
            raise _redacted(
                ParamError(
                    f"param {name!r} starts with '-' and would be read as an option (got {value!r})"
                ),
                env,
                task,
                given,
            )
        argv.append(value)
    if task.expand_env:
        argv = _expand_procfile_vars(task.name, argv, env)
    for name, value in params.items():
        spec = task.params[name]
        if spec.secret and spec.deliver == "env":
            if spec.env_var in env.values:
                # The param would silently replace (or be replaced by) config: refuse both.
                raise ConfigError(
                    f"secret param {name!r} is delivered as {spec.env_var}, which "
                    f"environment {environment.name!r} also sets ({env.origin[spec.env_var]})",
                    hint="remove it from the config, or deliver the param as another variable",
                )
            env = _with_secret_param(env, spec.env_var, value)
    cwd = (project.root / task.cwd).resolve()
    partial = Plan(
        project=project,
        task=task,
        environment=environment,
        argv=tuple(argv),
        cwd=cwd,
        params=params,
        env=env,
        release_id=release_id,
        fingerprint_key=fingerprint_key,
        hash="",
    )
    digest = "sha256:" + canonical_hash(plan_document(partial))
    return replace(partial, hash=digest)


def _redacted(
    exc: ParamError, env: Materialized, task: Task, given: Mapping[str, str]
) -> ParamError:
    """``exc`` with every secret of the environment and of the given secret params redacted
    from its message and hint (they go to a terminal, a CI log, a JSON log line)."""
    from oneoff._redact import MIN_SAFE_LENGTH, Redactor

    secrets = env.secret_values()
    for name, value in given.items():
        spec = task.params.get(name)
        if spec is not None and spec.secret and value:
            secrets[f"param:{name}"] = value
    redact = Redactor(secrets, min_length=MIN_SAFE_LENGTH, skip_short=True).redact_text
    hint = None if exc.hint is None else redact(exc.hint)
    return ParamError(redact(exc.message), hint=hint)


def _with_secret_param(env: Materialized, name: str, value: str) -> Materialized:
    values = {**env.values, name: value}
    origin = {**env.origin, name: "secret param"}
    return Materialized(
        values=values,
        origin=origin,
        secret_keys=env.secret_keys | {name},
        plain_keys=env.plain_keys - {name},
    )


def _expand_procfile_vars(task: str, argv: list[str], env: Materialized) -> list[str]:
    """Fill a Procfile line's $VARs from config. The plan (and so the run record and the
    audit log) holds the result, so a secret may not be one of them: refuse rather than
    store it or show it in ps."""
    from oneoff._procfile import _VAR, expand_vars

    secrets = env.secret_values()
    for arg in argv[1:]:
        for match in _VAR.finditer(arg):
            name = match.group(1) or match.group(4)
            if name in env.secret_keys or f"{name}:password" in secrets:
                raise ConfigError(
                    f"task {task!r}: ${name} is a secret and would end up in argv",
                    hint="let the program read it from its environment instead",
                )
    where = f"task {task!r}"
    return [argv[0], *(expand_vars(a, env.values, where) for a in argv[1:])]
