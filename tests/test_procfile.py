"""A Heroku-style Procfile app: release: is a recorded task, one bad line spoils nothing."""

from __future__ import annotations

import json
from pathlib import Path

from oneoff.testing import make_app, run_cli

ENV = '[environments.staging]\nconfig = [{ dotenv = ".env.staging" }]\n'
RELEASE = (
    "release: python -c 'import pathlib, sys; pathlib.Path(\"released\").write_text(sys.argv[1])'"
    " ${RELEASE_NOTE:-no-note}\n"
)


def test_release_line_is_a_recorded_task(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """`oneoff run release` runs the Procfile's release: line as a task, with its ${VAR:-d}
    filled from config, and records the run; `exec release` points to `run`."""
    root = make_app(
        tmp_path / "app",
        ENV,
        {".env.staging": "RELEASE_NOTE=v42\n", "Procfile": "web: gunicorn app:app\n" + RELEASE},
    )
    tasks = json.loads(run_cli(["tasks", "--json"], cwd=root, env=cli_env).stdout)
    assert tasks["release"]["risk"] == "high"
    ran = run_cli(["run", "release"], cwd=root, env=cli_env)
    assert ran.exit_code == 0, ran.stderr
    assert (root / "released").read_text() == "v42"
    runs = json.loads(run_cli(["runs", "--json"], cwd=root, env=cli_env).stdout)
    assert [(r["task"], r["status"]) for r in runs] == [("release", "succeeded")]
    execd = run_cli(["exec", "release"], cwd=root, env=cli_env)
    assert execd.exit_code == 2
    assert "oneoff run release" in execd.stderr


def test_release_line_may_not_put_a_secret_in_argv(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A release: line expanding a secret variable is refused: argv is recorded and shown."""
    root = make_app(
        tmp_path / "app",
        ENV,
        {".env.staging": "API_TOKEN=tok-123456789\n", "Procfile": "release: migrate $API_TOKEN\n"},
    )
    ran = run_cli(["run", "release"], cwd=root, env=cli_env)
    assert ran.exit_code == 2
    assert "$API_TOKEN is a secret" in ran.stderr
    assert "tok-123456789" not in ran.output


def test_one_shell_line_does_not_break_the_others(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A Procfile line with shell redirections is reported (file and line) on every
    command, refused when asked for, and every other line and task keeps working."""
    root = make_app(
        tmp_path / "app",
        ENV + '[tasks.hello]\nargv = ["python", "-c", "print(\'hello\')"]\n',
        {
            ".env.staging": "",
            "Procfile": "web: python -c 'print(\"web up\")'\n"
            "worker: python worker.py >> worker.log 2>&1\n",
        },
    )
    tasks = run_cli(["tasks"], cwd=root, env=cli_env)
    assert tasks.exit_code == 0
    assert "hello" in tasks.stdout
    assert "Procfile:2: '>>' needs a shell" in tasks.stderr
    assert run_cli(["run", "hello"], cwd=root, env=cli_env).stdout.strip() == "hello"
    assert run_cli(["exec", "web"], cwd=root, env=cli_env).stdout.strip() == "web up"
    worker = run_cli(["exec", "worker"], cwd=root, env=cli_env)
    assert worker.exit_code == 2
    assert "Procfile:2: '>>' needs a shell" in worker.stderr
    assert not (root / "worker.log").exists()
