"""The oneoff.toml `oneoff init` writes: what a Django, Flask or Procfile app really has."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from oneoff._discover import DjangoApp, FlaskApp, find_django, find_flask, find_python, task_name

__all__ = ["scaffold"]

# Django's own commands worth declaring; the app's own ones are found on disk.
_DJANGO_BUILTIN = ("migrate", "createsuperuser", "shell", "dbshell")


def _q(value: str) -> str:
    """A TOML basic string (JSON's escaping is a subset of TOML's)."""
    return json.dumps(value)


def _argv(*args: str) -> str:
    return "[" + ", ".join(_q(a) for a in args) + "]"


def scaffold(root: Path, environ: Mapping[str, str]) -> str:
    """A commented oneoff.toml suited to what the app at ``root`` looks like."""
    django = find_django(root)
    flask = None if django else find_flask(root)
    procfile = root / "Procfile"
    python = find_python(root, environ)
    out = [
        "# oneoff.toml: this app's admin processes (twelve-factor XII).",
        "# Docs: every task is an argv list (never a shell string); params are typed.",
        "# Reference of every table and key: docs/reference.md in oneoff's repository.",
        "",
        "[app]",
        f"name = {_q(root.name)}",
    ]
    if python:
        out += [f"python = {_q(python)}  # the app's interpreter: tasks' `python` and bin/"]
    else:
        out += [
            "# The app's interpreter (its virtualenv); without it tasks use oneoff's own:",
            '# python = ".venv/bin/python"',
        ]
    out += [""]
    if procfile.is_file():
        out += ["# Process types come from ./Procfile."]
        if _has_release_line(procfile):
            out += ["# Its release: line is the task `release`: `oneoff run release`."]
        out += [""]
    else:
        out += ["[processes]"]
        if django and django.wsgi:
            out += [f"web = {_argv('gunicorn', django.wsgi)}"]
        elif flask:
            target = flask.app + ("()" if flask.factory else "")
            out += [f"web = {_argv('gunicorn', target)}"]
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
        '# secrets = ["SENTRY_DSN"]     # *PASSWORD, *_TOKEN, *_SECRET, *_KEY are secret anyway',
        "",
    ]
    if django:
        out += _django_tasks(django)
    elif flask:
        out += _flask_tasks(flask)
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


def _has_release_line(procfile: Path) -> bool:
    try:
        return any(
            line.strip().startswith("release:") for line in procfile.read_text().splitlines()
        )
    except (OSError, UnicodeDecodeError):
        return False


def _django_tasks(django: DjangoApp) -> list[str]:
    manage = ("python", "manage.py")
    if django.settings:
        out = [f"# Django settings: {django.settings} (DJANGO_SETTINGS_MODULE in manage.py)", ""]
    else:
        out = []
    out += [
        "[tasks.migrate]",
        f"argv = {_argv(*manage, 'migrate', '--noinput')}",
        'description = "Apply database migrations"',
        'risk = "high"',
        'locks = ["database"]',
        'timeout = "30m"',
        "",
        "[tasks.createsuperuser]",
        f"argv = {_argv(*manage, 'createsuperuser', '--noinput', '--username', '{username}', '--email', '{email}')}",  # noqa: E501
        'description = "Create an admin account"',
        'risk = "high"',
        'params.username = { type = "string", pattern = "[A-Za-z0-9_@.+-]{1,150}" }',
        'params.email = { type = "string", pattern = "[^@\\\\s]+@[^@\\\\s]+" }',
        "# Django reads the password from this variable with --noinput; never in argv.",
        'params.password = { type = "secret", env = "DJANGO_SUPERUSER_PASSWORD" }',
        "",
        "[tasks.shell]",
        f"argv = {_argv(*manage, 'shell')}",
        "interactive = true",
        'risk = "high"',
        "",
        "[tasks.dbshell]",
        f"argv = {_argv(*manage, 'dbshell')}",
        "interactive = true",
        'risk = "critical"',
        "",
    ]
    for command in django.commands:
        name = task_name(command)
        if name is None or command in _DJANGO_BUILTIN:
            continue
        out += [
            f"[tasks.{name}]",
            f"argv = {_argv(*manage, command)}",
            f"description = {_q(f'the project command {command} (review risk and params)')}",
            'risk = "high"',
            "",
        ]
    return out


def _flask_tasks(flask: FlaskApp) -> list[str]:
    base = ("flask", "--app", flask.app)
    out: list[str] = []
    if flask.migrate:
        out += [
            "[tasks.migrate]",
            f"argv = {_argv(*base, 'db', 'upgrade')}",
            'description = "Apply database migrations (Flask-Migrate)"',
            'risk = "high"',
            'locks = ["database"]',
            "",
        ]
    out += [
        "[tasks.shell]",
        f"argv = {_argv(*base, 'shell')}",
        "interactive = true",
        'risk = "high"',
        "",
    ]
    for name, path in sorted(flask.commands.items()):
        task = task_name(name)
        if task is None or task in ("shell", "migrate", "run", "routes"):
            continue
        out += [
            f"[tasks.{task}]",
            f"argv = {_argv(*base, *path)}",
            f"description = {_q('the app command ' + ' '.join(path) + ' (review risk, params)')}",
            'risk = "high"',
            "",
        ]
    return out
