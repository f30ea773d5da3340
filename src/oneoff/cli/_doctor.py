"""`oneoff doctor`: what this machine lets oneoff guarantee and run (see oneoff._doctor)."""

from __future__ import annotations

import argparse

from oneoff.cli._common import emit_json

__all__ = ["cmd_doctor"]


def cmd_doctor(args: argparse.Namespace) -> int:
    from oneoff._doctor import app_checks, checks

    found = checks()
    # Inside an app: also whether each of its environments' executors runs here (exit 1
    # when one cannot, so a CI job or a deploy script can check before running tasks).
    needed = app_checks(_needed_by_app(args), found)
    found += needed
    status = 0 if all(c.ok for c in needed) else 1
    if args.json:
        emit_json([
            {"name": c.name, "ok": c.ok, "value": c.value, "detail": c.detail} for c in found
        ])  # fmt: skip
        return status
    width = max(len(c.name) for c in found)
    for check in found:
        mark = "ok  " if check.ok else "weak"
        print(f"{mark} {check.name:<{width}}  {check.value}: {check.detail}")
    return status


def _needed_by_app(args: argparse.Namespace) -> dict[str, str]:
    """The executor each environment of the app here names (none outside an app)."""
    from pathlib import Path

    from oneoff._manifest import find_app_root, load_project
    from oneoff.errors import UsageError

    try:
        root = args.app if args.app is not None else find_app_root(Path("."))
    except UsageError:
        return {}  # not inside an app: the machine's report alone
    project = load_project(root)  # a broken manifest is reported, never skipped
    return {
        # A container environment needs its engine: doctor's entry is "container (podman)".
        name: f"container ({env.executor.engine})" if env.executor.kind == "container"
        else env.executor.kind
        for name, env in project.environments.items()
    }  # fmt: skip
