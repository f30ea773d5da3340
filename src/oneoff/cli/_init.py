"""`oneoff init` (scaffold a declaration for an existing app) and `oneoff tasks`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from oneoff._manifest import MANIFEST, load_project
from oneoff.cli._common import app_from, emit_json, terminal_safe
from oneoff.errors import UsageError

__all__ = ["cmd_init", "cmd_tasks", "scaffold"]


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
                        p: {"type": s.type, "required": s.required, "default": s.default}
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


def cmd_init(args: argparse.Namespace) -> int:
    root = (args.app or Path.cwd()).resolve()
    target = root / MANIFEST
    if target.exists() and not args.force:
        raise UsageError(f"{target} exists; pass --force to overwrite it")
    text = scaffold(root)
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


def scaffold(root: Path) -> str:
    """A commented oneoff.toml suited to what the app looks like."""
    django = (root / "manage.py").is_file()
    flask = any(
        (root / name).is_file() and "Flask(" in (root / name).read_text(errors="replace")
        for name in ("app.py", "wsgi.py", "application.py")
    )
    procfile = (root / "Procfile").is_file()
    out = [
        "# oneoff.toml: this app's admin processes (twelve-factor XII).",
        "# Docs: every task is an argv list (never a shell string); params are typed.",
        "",
        "[app]",
        f'name = "{root.name}"',
        "",
    ]
    if procfile:
        out += ["# Process types come from ./Procfile.", ""]
    else:
        out += ["[processes]"]
        if django:
            out += ['web = ["gunicorn", "config.wsgi"]  # adjust the WSGI module']
        elif flask:
            out += ['web = ["flask", "run"]']
        else:
            out += ['# web = ["gunicorn", "myapp.wsgi"]']
        out += [""]
    out += [
        "[environments.development]",
        'config = [{ dotenv = ".env", optional = true }]',
        "",
        "# [environments.production]",
        "# protected = true            # never a default target; critical tasks ask to confirm",
        '# config = [{ inherit = ["DATABASE_URL", "SECRET_KEY"] }]',
        '# secrets = ["SENTRY_DSN"]     # *_PASSWORD, *_TOKEN, *_SECRET, *_KEY are secret anyway',
        "",
    ]
    if django:
        out += [
            "[tasks.migrate]",
            'argv = ["python", "manage.py", "migrate", "--noinput"]',
            'description = "Apply database migrations"',
            'risk = "high"',
            'locks = ["database"]',
            'timeout = "30m"',
            "",
            "[tasks.shell]",
            'argv = ["python", "manage.py", "shell"]',
            "interactive = true",
            'risk = "high"',
            "",
        ]
    elif flask:
        out += [
            "[tasks.migrate]",
            'argv = ["flask", "db", "upgrade"]  # Flask-Migrate; adjust to your tool',
            'risk = "high"',
            'locks = ["database"]',
            "",
            "[tasks.shell]",
            'argv = ["flask", "shell"]',
            "interactive = true",
            "",
        ]
    else:
        out += [
            "# [tasks.migrate]",
            '# argv = ["python", "-m", "myapp.migrate", "--to", "{target}"]',
            '# risk = "high"',
            '# locks = ["database"]',
            '# params.target = { type = "string", pattern = "[0-9]{4}", default = "0001" }',
            "",
        ]
    return "\n".join(out)
