"""Tasks get exactly their planned environment, also where frameworks reach for .env themselves."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oneoff._manifest import load_project
from oneoff._procfile import expand_vars, parse_procfile
from oneoff.errors import ManifestError
from oneoff.testing import make_app, run_cli

STAGING = '[environments.staging]\nconfig = [{ dotenv = ".env.staging" }]\n'


def test_flask_does_not_load_the_development_dotenv(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A `flask` task in another environment does not see the development .env that Flask
    (with python-dotenv installed) would load by itself; the plan shows why."""
    root = make_app(
        tmp_path / "app",
        STAGING
        + """
        [tasks.greeting]
        argv = ["flask", "--app", "hello", "greeting"]
        """,
        {
            ".env": "GREETING=from-development-dotenv\n",
            ".flaskenv": "GREETING=from-flaskenv\n",
            ".env.staging": "DATABASE_URL=sqlite:///staging.db\n",
            "hello.py": """
                import os
                from flask import Flask

                app = Flask(__name__)

                @app.cli.command("greeting")
                def greeting():
                    print("GREETING=" + os.environ.get("GREETING", "<unset>"))
                """,
        },
    )
    ran = run_cli(["run", "greeting", "--env", "staging"], cwd=root, env=cli_env)
    assert ran.exit_code == 0, ran.stderr
    assert "GREETING=<unset>" in ran.stdout
    plan = json.loads(run_cli(["plan", "greeting", "--json"], cwd=root, env=cli_env).stdout)
    assert plan["env"]["FLASK_SKIP_DOTENV"] == {
        "value": "1",
        "source": "oneoff default",
        "secret": False,
    }


def test_config_overrides_the_process_defaults(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """PYTHONUNBUFFERED and FLASK_SKIP_DOTENV are defaults: the environment's config wins."""
    root = make_app(
        tmp_path / "app",
        STAGING,
        {".env.staging": "PYTHONUNBUFFERED=0\n"},
    )
    shown = json.loads(run_cli(["env", "--json"], cwd=root, env=cli_env).stdout)
    assert shown["PYTHONUNBUFFERED"]["value"] == "0"
    assert shown["PYTHONUNBUFFERED"]["source"] == "dotenv .env.staging"
    assert shown["FLASK_SKIP_DOTENV"]["source"] == "oneoff default"


def test_timed_out_python_task_keeps_its_output(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A Python task's print() reaches the terminal and the record although stdout is a pipe
    and the task is killed at its timeout (Python would otherwise buffer and lose it)."""
    root = make_app(
        tmp_path / "app",
        STAGING
        + """
        [tasks.slow]
        argv = ["python", "-c", "import time; print('step one done'); time.sleep(120)"]
        timeout = 2
        grace = 1
        """,
        {".env.staging": ""},
    )
    ran = run_cli(["run", "slow"], cwd=root, env=cli_env)
    assert ran.exit_code == 124, ran.stderr
    assert "step one done" in ran.stdout
    run_id = json.loads(run_cli(["runs", "--json"], cwd=root, env=cli_env).stdout)[0]["id"]
    assert "step one done" in run_cli(["logs", run_id], cwd=root, env=cli_env).stdout


DJANGO_SETTINGS = """
    import environ

    env = environ.Env()
    environ.Env.read_env(BASE_DIR / ".env")
    SECRET_KEY = env("SECRET_KEY")
    """


@pytest.mark.parametrize(
    ("settings_text", "loader"),
    [
        (DJANGO_SETTINGS, "django-environ read_env()"),
        ("from decouple import config\nSECRET_KEY = config('SECRET_KEY')\n", "python-decouple"),
        ("from dotenv import load_dotenv\nload_dotenv()\n", "python-dotenv load_dotenv()"),
    ],
)
def test_plan_warns_when_settings_load_dotenv_themselves(
    tmp_path: Path, cli_env: dict[str, str], settings_text: str, loader: str
) -> None:
    """`oneoff plan` warns (text and --json) when the app's settings load a .env that the
    planned environment does not declare; not when the environment declares that .env."""
    root = make_app(
        tmp_path / "mysite",
        STAGING
        + '[environments.development]\nconfig = [{ dotenv = ".env" }]\n'
        + '[tasks.check]\nargv = ["python", "manage.py", "check"]\n',
        {
            ".env": "SECRET_KEY=development-only\n",
            ".env.staging": "SECRET_KEY=staging-secret-value\n",
            "manage.py": "",
            "mysite/settings.py": settings_text,
        },
    )
    plan = run_cli(["plan", "check", "--env", "staging"], cwd=root, env=cli_env)
    assert plan.exit_code == 0, plan.stderr
    assert "warning: mysite/settings.py:" in plan.stderr
    assert loader in plan.stderr
    as_json = run_cli(["plan", "check", "--env", "staging", "--json"], cwd=root, env=cli_env)
    assert len(json.loads(as_json.stdout)["warnings"]) == 1
    quiet = run_cli(["plan", "check", "--env", "development"], cwd=root, env=cli_env)
    assert quiet.exit_code == 0
    assert "warning" not in quiet.stderr


SECRET_TASK = """
[tasks.superuser]
argv = ["python", "show_password.py"]
params.password = { type = "secret", env = "DJANGO_SUPERUSER_PASSWORD" }
"""
SHOW_PASSWORD = """
import os
password = os.environ["DJANGO_SUPERUSER_PASSWORD"]
print(len(password), sorted(k for k in os.environ if k.startswith("ONEOFF_PARAM")))
"""


def test_secret_param_is_delivered_as_the_named_variable(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A secret param with env = "DJANGO_SUPERUSER_PASSWORD" reaches the task as exactly
    that variable, masked in the plan, and redacted from output."""
    root = make_app(
        tmp_path / "app",
        STAGING + SECRET_TASK,
        {".env.staging": "", "show_password.py": SHOW_PASSWORD},
    )
    ran = run_cli(
        ["run", "superuser", "-p", "password=@-"],
        cwd=root,
        env=cli_env,
        stdin="correct-horse-battery\n",
    )
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout.strip() == "21 []"
    plan = run_cli(
        ["plan", "superuser", "-p", "password=@-", "--json"],
        cwd=root,
        env=cli_env,
        stdin="correct-horse-battery\n",
    )
    shown = json.loads(plan.stdout)["env"]["DJANGO_SUPERUSER_PASSWORD"]
    assert shown == {"value": "********", "source": "secret param", "secret": True}
    assert "correct-horse-battery" not in plan.stdout


def test_secret_param_env_colliding_with_config_is_refused(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A secret param delivered as a variable the environment's config also sets is refused
    (exit 2) instead of one silently replacing the other."""
    root = make_app(
        tmp_path / "app",
        STAGING + SECRET_TASK,
        {".env.staging": "DJANGO_SUPERUSER_PASSWORD=from-config-file\n"},
    )
    ran = run_cli(
        ["run", "superuser", "-p", "password=@-"], cwd=root, env=cli_env, stdin="long-enough-pw\n"
    )
    assert ran.exit_code == 2
    assert "also sets (dotenv .env.staging)" in ran.stderr
    assert "long-enough-pw" not in ran.output


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('{ type = "string", env = "X" }', "only a secret param"),
        ('{ type = "secret", deliver = "stdin", env = "X" }', "only a secret param"),
        ('{ type = "secret", env = "1BAD" }', "variable name"),
        ('{ type = "secret", env = "ONEOFF_RUN_ID" }', "set by oneoff"),
        ('{ type = "secret", env = "PATH" }', "set by oneoff"),
        ('{ type = "secret", env = "LD_PRELOAD" }', "load code"),
    ],
)
def test_secret_param_env_names_are_validated(tmp_path: Path, spec: str, message: str) -> None:
    """A param's env must be a plain variable name oneoff does not own or fear."""
    text = STAGING + f'[tasks.t]\nargv = ["true"]\nparams.p = {spec}\n'
    with pytest.raises(ManifestError, match=message):
        load_project(make_app(tmp_path, text))


def test_two_secret_params_cannot_share_a_variable(tmp_path: Path) -> None:
    """Two secret params of one task delivered as the same variable are refused."""
    text = STAGING + (
        '[tasks.t]\nargv = ["true"]\nparams.a = { type = "secret", env = "PW" }\n'
        'params.b = { type = "secret", env = "PW" }\n'
    )
    with pytest.raises(ManifestError, match="two secret params are delivered as PW"):
        load_project(make_app(tmp_path, text))


def test_procfile_default_expansion(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """`${PORT:-8000}` in a Procfile is the POSIX default form: 8000 when PORT is unset,
    PORT's value when config sets it; never passed on literally."""
    procfile = "web: python -c 'import sys; print(sys.argv[1])' ${PORT:-8000}\n"
    unset = make_app(tmp_path / "a", STAGING, {".env.staging": "", "Procfile": procfile})
    assert run_cli(["exec", "web"], cwd=unset, env=cli_env).stdout.strip() == "8000"
    given_port = make_app(
        tmp_path / "b", STAGING, {".env.staging": "PORT=5000\n", "Procfile": procfile}
    )
    assert run_cli(["exec", "web"], cwd=given_port, env=cli_env).stdout.strip() == "5000"


def test_procfile_unsupported_expansion_is_refused(tmp_path: Path) -> None:
    """Other ${...} forms (assign, trim, length) are refused with the forms that work."""
    (tmp_path / "Procfile").write_text("web: gunicorn -b :${PORT:=8000} app\nworker: rq\n")
    parsed = parse_procfile(tmp_path / "Procfile")
    assert parsed.processes == {"worker": ("rq",)}
    assert "only a shell understands" in parsed.problems["web"]
    assert "${VAR:-default}" in parsed.problems["web"]


_NAMES = st.sampled_from(["A", "PORT", "B_2"])
_TEXT = st.text(alphabet="abc:-_ 8/.", max_size=6)


@settings(max_examples=60, deadline=None)
@given(
    name=_NAMES,
    value=st.none() | _TEXT,
    operator=st.sampled_from(["", ":-", "-"]),
    default=_TEXT,
    prefix=_TEXT,
)
def test_expansion_matches_posix_sh(
    name: str, value: str | None, operator: str, default: str, prefix: str
) -> None:
    """expand_vars gives what POSIX sh gives for $VAR, ${VAR}, ${VAR:-d} and ${VAR-d}."""
    sh = shutil.which("sh")
    assert sh is not None
    word = f"{prefix}${{{name}{operator}{default if operator else ''}}}"
    env = {} if value is None else {name: value}
    try:
        ours: str | None = expand_vars(word, env, "test")
    except ManifestError:
        ours = None  # unset without a default: an error here, "" in sh
    script = f'printf %s "{word}"'
    theirs = subprocess.run(
        [sh, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    if ours is None:
        assert value is None
        assert not operator
    else:
        assert ours == theirs
