"""`oneoff init` on a real Django project and a real Flask app, then their tasks through oneoff."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from oneoff._discover import find_flask, find_python
from oneoff.testing import run_cli

SEED_GROUPS = """
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the editors group"

    def handle(self, *args, **options):
        Group.objects.get_or_create(name="editors")
        self.stdout.write("seeded editors")
"""


def _python(args: list[str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout


@pytest.fixture
def django_project(tmp_path: Path) -> Path:
    """A fresh `django-admin startproject mysite` with an app `polls` holding a command."""
    root = tmp_path / "mysite"
    root.mkdir()
    # From inside root: Django refuses a project name importable from the cwd.
    _python(["-m", "django", "startproject", "mysite", str(root)], root)
    _python(["-m", "django", "startapp", "polls"], root)
    settings = root / "mysite" / "settings.py"
    settings.write_text(
        settings.read_text().replace("INSTALLED_APPS = [", 'INSTALLED_APPS = [\n    "polls",')
    )
    commands = root / "polls" / "management" / "commands"
    commands.mkdir(parents=True)
    (root / "polls" / "management" / "__init__.py").write_text("")
    (commands / "__init__.py").write_text("")
    (commands / "seed_groups.py").write_text(SEED_GROUPS)
    return root


@pytest.mark.slow
def test_django_project_adopts_on_the_first_try(
    django_project: Path, cli_env: dict[str, str]
) -> None:
    """init finds mysite's real settings and WSGI modules, Django's useful commands and the
    project's own; migrate, createsuperuser (its password delivered as
    DJANGO_SUPERUSER_PASSWORD) and the custom command then work through oneoff."""
    root = django_project
    assert run_cli(["init"], cwd=root, env=cli_env).exit_code == 0
    manifest = tomllib.loads((root / "oneoff.toml").read_text())
    assert manifest["processes"]["web"] == ["gunicorn", "mysite.wsgi"]
    assert {"migrate", "createsuperuser", "shell", "dbshell", "seed_groups"} <= set(
        manifest["tasks"]
    )
    assert "mysite.settings" in (root / "oneoff.toml").read_text()
    migrate = run_cli(["run", "migrate"], cwd=root, env=cli_env, timeout=300)
    assert migrate.exit_code == 0, migrate.output
    password = "correct-horse-battery-staple"
    superuser = run_cli(
        [
            "run",
            "createsuperuser",
            "-p",
            "username=admin",
            "-p",
            "email=admin@example.com",
            "-p",
            "password=@-",
        ],
        cwd=root,
        env=cli_env,
        stdin=password + "\n",
        timeout=300,
    )
    assert superuser.exit_code == 0, superuser.output
    seeded = run_cli(["run", "seed_groups"], cwd=root, env=cli_env, timeout=300)
    assert seeded.exit_code == 0, seeded.output
    assert "seeded editors" in seeded.stdout
    with sqlite3.connect(root / "db.sqlite3") as db:
        assert db.execute("select name from auth_group").fetchall() == [("editors",)]
        (hashed,) = db.execute("select password from auth_user where username='admin'").fetchone()
    assert not hashed.startswith("!")  # "!" is Django's unusable password
    check = _python(
        ["manage.py", "shell", "-c", "from django.contrib.auth import authenticate; "
         f"print(authenticate(username='admin', password='{password}') is not None)"],
        root,
    )  # fmt: skip
    assert check.strip().splitlines()[-1] == "True"
    shown = run_cli(["runs", "--json"], cwd=root, env=cli_env).stdout
    assert password not in shown


FLASK_APP = """
import os
import sqlite3

import click
from flask import Blueprint, Flask

reports = Blueprint("reports", __name__)


@reports.cli.command("count")
def count():
    with sqlite3.connect(os.environ["NOTES_DB"]) as db:
        print("notes:", db.execute("select count(*) from notes").fetchone()[0])


@click.command()
def seed_command():
    with sqlite3.connect(os.environ["NOTES_DB"]) as db:
        db.execute("insert into notes values ('hello')")


def create_app():
    app = Flask(__name__)

    @app.cli.command("init-db")
    def init_db():
        with sqlite3.connect(os.environ["NOTES_DB"]) as db:
            db.execute("create table notes (body text)")

    app.cli.add_command(seed_command)
    app.register_blueprint(reports)
    return app
"""


@pytest.mark.slow
def test_flask_factory_app_adopts_on_the_first_try(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """init finds a create_app factory in a package and its @app.cli.command,
    @click.command and blueprint commands; they run through oneoff against the app's db."""
    root = tmp_path / "notes"
    (root / "myapp").mkdir(parents=True)
    (root / "myapp" / "__init__.py").write_text(FLASK_APP)
    (root / ".env").write_text("NOTES_DB=notes.db\n")
    assert run_cli(["init"], cwd=root, env=cli_env).exit_code == 0
    manifest = tomllib.loads((root / "oneoff.toml").read_text())
    tasks = manifest["tasks"]
    assert tasks["init-db"]["argv"] == ["flask", "--app", "myapp:create_app", "init-db"]
    assert tasks["seed"]["argv"][-1] == "seed"
    assert tasks["reports-count"]["argv"][-2:] == ["reports", "count"]
    assert manifest["processes"]["web"] == ["gunicorn", "myapp:create_app()"]
    for task in ("init-db", "seed", "seed"):
        ran = run_cli(["run", task], cwd=root, env=cli_env)
        assert ran.exit_code == 0, ran.output
    counted = run_cli(["run", "reports-count"], cwd=root, env=cli_env)
    assert counted.stdout.strip() == "notes: 2"
    with sqlite3.connect(root / "notes.db") as db:
        assert db.execute("select body from notes").fetchall() == [("hello",), ("hello",)]


def test_flask_module_app_and_unregistered_click_commands(tmp_path: Path) -> None:
    """A module-level `app = Flask(...)` is found; a @click.command nobody registers is not
    a Flask command."""
    (tmp_path / "app.py").write_text(
        textwrap.dedent("""
            import click
            from flask import Flask
            app = Flask(__name__)

            @app.cli.command()
            def send_digest_command():
                pass

            @click.command()
            def orphan():
                pass
        """)
    )
    found = find_flask(tmp_path)
    assert found is not None
    assert found.app == "app:app"
    assert dict(found.commands) == {"send-digest": ("send-digest",)}


def test_procfile_app_init_declares_its_release(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """init on a Procfile app says release: is the task `release`, which `tasks` lists."""
    root = tmp_path / "app"
    root.mkdir()
    (root / "Procfile").write_text("web: gunicorn app:app\nrelease: python -m app.migrate\n")
    assert run_cli(["init"], cwd=root, env=cli_env).exit_code == 0
    assert "oneoff run release" in (root / "oneoff.toml").read_text()
    tasks = json.loads(run_cli(["tasks", "--json"], cwd=root, env=cli_env).stdout)
    assert tasks["release"]["argv"] == ["python", "-m", "app.migrate"]


def test_app_virtualenv_is_found(tmp_path: Path) -> None:
    """The app's interpreter: its .venv first, then an active VIRTUAL_ENV that is not
    oneoff's own, then Poetry's cache; nothing when there is none."""
    app = tmp_path / "app"
    app.mkdir()
    home = tmp_path / "home"
    assert find_python(app, {"HOME": str(home), "VIRTUAL_ENV": sys.prefix}) is None
    active = tmp_path / "elsewhere"
    (active / "bin").mkdir(parents=True)
    (active / "bin" / "python").write_text("")
    assert find_python(app, {"VIRTUAL_ENV": str(active)}) == str(active / "bin" / "python")
    (app / "poetry.lock").write_text("")
    cached = home / ".cache" / "pypoetry" / "virtualenvs" / "app-Ab12Cd34-py3.11" / "bin"
    cached.mkdir(parents=True)
    (cached / "python").write_text("")
    assert find_python(app, {"HOME": str(home)}) == str(cached / "python")
    (app / ".venv" / "bin").mkdir(parents=True)
    (app / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (app / ".venv" / "bin" / "python").write_text("")
    assert find_python(app, {"VIRTUAL_ENV": str(active)}) == ".venv/bin/python"


@pytest.mark.slow
def test_tasks_run_with_the_apps_own_virtualenv(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """With oneoff installed elsewhere (pipx style), init writes [app] python for the app's
    .venv and tasks' `python` is that interpreter, not oneoff's."""
    root = tmp_path / "app"
    root.mkdir()
    subprocess.run(
        [sys._base_executable, "-m", "venv", "--without-pip", str(root / ".venv")],  # type: ignore[attr-defined]
        check=True,
        timeout=120,
    )
    (root / "Procfile").write_text("release: python -c 'import sys; print(sys.prefix)'\n")
    assert run_cli(["init"], cwd=root, env=cli_env).exit_code == 0
    assert 'python = ".venv/bin/python"' in (root / "oneoff.toml").read_text()
    ran = run_cli(["run", "release"], cwd=root, env=cli_env)
    assert ran.exit_code == 0, ran.output
    assert ran.stdout.strip() == str(root / ".venv")
