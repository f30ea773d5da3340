"""A client's plan document, checked against the server's own (pinned) manifest.

A request or a grant carries a plan document made and hashed on a client: a laptop or a
deploy host whose checkout the server does not control. Its hash only says the document
was not changed since; it says nothing about whether the document is what the server's
manifest declares. So every field the manifest decides is compared with the manifest's
value: protection, locks, risk, timeout and grace, interactivity, the executor, the
working directory (which decides what code ``python -m ...`` finds), the params (declared
names only, each value valid for its type: no path outside the app, no control or bidi
character) and argv as the manifest renders it from those params (a Procfile line's
``$VAR``s against the document's fingerprints of their values:
``oneoff._server.expanded_argv``). A mismatch is refused (400, exit 2) before anything is
stored or granted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from oneoff.errors import OneoffError, UsageError

if TYPE_CHECKING:
    from oneoff._manifest import Environment, Task

__all__ = ["check_plan_document"]

_HINT = "plan from a checkout of the release the server serves"


def check_plan_document(
    task: Task, env: Environment, doc: Mapping[str, Any], fingerprint_key: bytes
) -> None:
    """UsageError unless ``doc`` is a plan of ``task`` in ``env`` as the manifest declares;
    ``fingerprint_key`` (the server's) checks a Procfile line's ``$VAR`` expansions."""
    if doc.get("cwd") != task.cwd:
        raise UsageError(
            f"the plan's working directory {_shown(doc.get('cwd'))} is not task "
            f"{task.name!r}'s ({task.cwd!r}) in the server's manifest",
            hint=_HINT,
        )
    executor = env.executor
    expected_executor = (
        None if executor.kind == "local" else {**executor.document(), "network": task.network}
    )
    mismatch = [
        name
        for name, ours in (
            ("protected", env.protected),
            ("locks", sorted(task.locks)),
            ("risk", task.risk),
            ("timeout", task.timeout),
            ("grace", task.grace),
            ("interactive", task.interactive),
            ("executor", expected_executor),
        )
        if doc.get(name) != ours
    ]
    params = _checked_params(task, doc.get("params"))
    if _argv_mismatch(task, doc.get("argv"), params, doc.get("env"), fingerprint_key):
        mismatch.append("argv")
    if mismatch:
        raise UsageError(
            f"the plan's {', '.join(mismatch)} differ from the server's manifest", hint=_HINT
        )


def _checked_params(task: Task, given: object) -> dict[str, str]:
    """The document's non-secret param values, each valid for its declared type."""
    from oneoff._params import validate_param

    if not isinstance(given, dict):
        raise UsageError("the plan's params must be an object")
    unknown = sorted(set(given) - set(task.params))
    if unknown:
        raise UsageError(f"the plan names param {_shown(unknown[0])}, which task "
                         f"{task.name!r} does not declare in the server's manifest")  # fmt: skip
    values: dict[str, str] = {}
    for name, spec in task.params.items():
        if name not in given:
            if spec.required or spec.default is not None:
                raise UsageError(f"the plan leaves out param {name!r}", hint=_HINT)
            continue
        value = given[name]
        if spec.secret:
            # A keyed fingerprint stands for the value, which never leaves the runner.
            if not (isinstance(value, dict) and isinstance(value.get("secret"), str)):
                raise UsageError(f"the plan's secret param {name!r} is not a fingerprint")
            continue
        if not isinstance(value, str):
            raise UsageError(f"the plan's param {name!r} is not a string")
        try:
            # No app root: the server checks the value's form (relative, no '..'), not
            # its own checkout's files, which the runner's release may not match.
            normal = validate_param(spec, value, app_root=None)
        except OneoffError as exc:
            raise UsageError(f"the plan's {exc.message}") from None
        if normal != value:
            raise UsageError(f"the plan's param {name!r} is not in its normal form ({normal!r})")
        values[name] = value
    return values


def _argv_mismatch(
    task: Task, argv: object, params: dict[str, str], env: object, key: bytes
) -> bool:
    from oneoff._manifest import render_arg
    from oneoff._server.expanded_argv import expansion_matches

    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        return True
    if argv[:1] != [task.argv[0]] or len(argv) != len(task.argv):
        return True
    try:
        expected = [render_arg(t, params) for t in task.argv[1:]]
    except KeyError:
        # The manifest lets only declared, non-secret params with a value into argv: a
        # document without one is not a plan of this task.
        return True
    if not task.expand_env:
        return argv[1:] != expected
    # A Procfile line: its $VARs were filled from config values the server does not
    # hold; the document's fingerprints of them decide (oneoff._server.expanded_argv).
    if not isinstance(env, dict):
        return True
    return not all(
        expansion_matches(template, got, env, key)
        for template, got in zip(expected, argv[1:], strict=True)
    )


def _shown(value: object) -> str:
    from oneoff._log import escape

    return escape(repr(value))[:200]
