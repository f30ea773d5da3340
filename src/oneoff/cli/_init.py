"""`oneoff init` (scaffold a declaration for an existing app) and `oneoff tasks`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from oneoff._manifest import MANIFEST, load_project
from oneoff._params import ParamSpec
from oneoff.cli._common import app_from, emit_json, terminal_safe
from oneoff.errors import UsageError

__all__ = ["cmd_init", "cmd_tasks"]


def cmd_tasks(args: argparse.Namespace) -> int:
    project = app_from(args).project
    if args.json:
        emit_json(
            {
                name: {
                    "argv": list(t.argv),
                    "description": t.description,
                    "risk": t.risk,
                    "timeout": t.timeout,
                    "locks": list(t.locks),
                    "environments": list(t.environments or project.environments),
                    "interactive": t.interactive,
                    "params": {
                        p: {"type": s.type, "required": s.required, "default": _typed(s)}
                        for p, s in t.params.items()
                    },
                }
                for name, t in sorted(project.tasks.items())
            }
        )
        return 0
    if not project.tasks:
        print("no tasks declared")
        return 0
    width = max(len(n) for n in project.tasks)
    for name, task in sorted(project.tasks.items()):
        params = " ".join(
            f"{p}=<{s.type}>" if s.required else f"[{p}=<{s.type}>]" for p, s in task.params.items()
        )
        envs = ",".join(task.environments or project.environments)
        print(f"{name.ljust(width)}  {task.risk:<8} {envs:<24} {params}")
        if task.description:
            print(f"{' ' * width}  {terminal_safe(task.description)}")
    return 0


def _typed(spec: ParamSpec) -> str | int | bool | None:
    """A default as JSON of its param's type (an int param's default is a number)."""
    if spec.default is None or spec.type not in ("int", "bool"):
        return spec.default
    return int(spec.default) if spec.type == "int" else spec.default == "true"


def cmd_init(args: argparse.Namespace) -> int:
    root = (args.app or Path.cwd()).resolve()
    target = root / MANIFEST
    if target.exists() and not args.force:
        raise UsageError(f"{target} exists; pass --force to overwrite it")
    from oneoff._scaffold import scaffold

    text = scaffold(root, os.environ)
    tmp = target.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(text)
    try:
        load_project_from_text_check(root, tmp)
    except BaseException:
        tmp.unlink()
        raise
    os.replace(tmp, target)
    _ignore_state(root)
    print(f"wrote {target}", file=sys.stderr)
    return 0


def load_project_from_text_check(root: Path, tmp: Path) -> None:
    """Refuse to write a scaffold that oneoff itself cannot load."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch, MANIFEST).write_text(tmp.read_text())
        load_project(Path(scratch))


def _ignore_state(root: Path) -> None:
    gitignore = root / ".gitignore"
    lines = gitignore.read_text().splitlines() if gitignore.exists() else []
    if ".oneoff/" not in lines and ".oneoff" not in lines:
        with gitignore.open("a") as fh:
            if lines and lines[-1] != "":
                fh.write("\n")
            fh.write("# oneoff's local state (runs, keys); never commit it\n.oneoff/\n")
