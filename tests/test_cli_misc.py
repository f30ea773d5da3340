"""The other issue-2 commands: init, tasks, plan --json, env, exec, runs, show, help."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from oneoff._version import __version__
from oneoff.testing import invoke, make_app, run_cli

README = Path(__file__).resolve().parent.parent / "README.md"


def test_version() -> None:
    """--version prints the package version."""
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"oneoff {__version__}"


def test_every_command_has_help() -> None:
    """Each command answers --help with a usage line and exit 0."""
    top = invoke(["--help"])
    assert top.exit_code == 0
    commands = re.findall(r"^    (\w[\w-]*)\s", top.stdout, re.MULTILINE)
    assert {"run", "plan", "exec", "env", "runs", "show", "tasks", "init"} <= set(commands)
    for command in commands:
        result = invoke([command, "--help"])
        assert result.exit_code == 0, command
        assert result.stdout.startswith(f"usage: oneoff {command}")


def test_readme_shows_current_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """The `oneoff --help` block in the README matches the real output."""
    monkeypatch.setenv("COLUMNS", "100")
    actual = invoke(["--help"]).stdout.strip()
    text = README.read_text()
    match = re.search(
        r"<!-- help:start -->\n```text\n(.*?)\n```\n<!-- help:end -->", text, re.DOTALL
    )
    assert match, "README.md lacks the <!-- help:start --> block"
    assert match.group(1).strip() == actual, (
        "README help is stale: paste `COLUMNS=100 oneoff --help`"
    )


def test_unknown_option_is_a_usage_error(app: Path) -> None:
    """argparse mistakes exit 2 like every other bad input."""
    assert invoke(["run", "hello", "--bogus"]).exit_code == 2


def test_tasks_lists_declared_tasks(app: Path) -> None:
    """`oneoff tasks` lists tasks, and --json gives their declarations."""
    text = invoke(["tasks"])
    assert text.exit_code == 0
    assert "hello" in text.stdout
    assert "wipe" in text.stdout
    data = json.loads(invoke(["tasks", "--json"]).stdout)
    assert data["fail"]["params"]["code"]["type"] == "int"
    assert data["wipe"]["risk"] == "critical"


def test_plan_json_masks_secrets(app: Path) -> None:
    """`oneoff plan --json` shows the plan with secret values masked and a stable hash."""
    first = invoke(["plan", "hello", "--env", "development", "--json", "-p", "name=bob"])
    assert first.exit_code == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["document"]["argv"][-1] == "bob"
    assert data["env"]["SECRET_KEY"]["value"] == "********"
    assert data["env"]["DATABASE_URL"]["value"] == "postgres://app:****@db/app"
    assert "s3cr3t-pass" not in first.stdout
    assert "dev-secret-value-123" not in first.stdout
    second = json.loads(
        invoke(["plan", "hello", "--env", "development", "--json", "-p", "name=bob"]).stdout
    )
    assert second["hash"] == data["hash"]
    from oneoff._app import open_app

    opened = open_app(app)
    planned = [e for e in opened.audit.events() if e.kind == "run.planned"]
    opened.close()
    assert [e.plan_hash for e in planned] == [data["hash"], data["hash"]]
    human = invoke(["plan", "hello", "--env", "development"])
    assert "plan hash  sha256:" in human.stdout
    assert "dev-secret-value-123" not in human.stdout


def test_env_masks_and_names_sources(app: Path) -> None:
    """`oneoff env` prints variables with their source, secrets masked."""
    result = invoke(["env", "--env", "development"])
    assert result.exit_code == 0
    assert "SECRET_KEY=********  # dotenv .env" in result.stdout
    assert "dev-secret-value-123" not in result.stdout


def test_exec_and_run_share_one_environment(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """`oneoff exec web` and `oneoff run` see the same variables, but for ONEOFF_* run ids."""
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    root = make_app(
        tmp_path,
        f"""
        [processes]
        web = ["python", "-c", {json.dumps(dump)}]

        [environments.development]
        config = [{{ dotenv = ".env" }}]

        [tasks.dump]
        argv = ["python", "-c", {json.dumps(dump)}]
        """,
        {".env": "DATABASE_URL=sqlite:///x.db\nPORT=8000\n"},
    )
    web = run_cli(["exec", "web", "--env", "development"], cwd=root, env=cli_env)
    task = run_cli(["run", "dump", "--env", "development", "-q"], cwd=root, env=cli_env)
    assert web.exit_code == 0, web.stderr
    assert task.exit_code == 0, task.stderr
    web_env, task_env = json.loads(web.stdout), json.loads(task.stdout)
    only_task = set(task_env) - set(web_env)
    assert only_task == {"ONEOFF_RUN_ID", "ONEOFF_TASK", "ONEOFF_ENVIRONMENT"}
    assert {k: v for k, v in task_env.items() if k not in only_task} == web_env
    exported = run_cli(["audit", "export", "--format", "jsonl"], cwd=root, env=cli_env)
    kinds = [json.loads(line)["kind"] for line in exported.stdout.splitlines()]
    assert "process.exec" in kinds
    diff = run_cli(["env", "--env", "development", "--diff", "web"], cwd=root, env=cli_env)
    assert sorted(line.split()[-1] for line in diff.stdout.splitlines()) == sorted(only_task)


def test_exec_expands_variables_without_a_shell(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """Procfile-style $PORT is filled from config; an unset variable is an error."""
    root = make_app(
        tmp_path,
        '[environments.development]\nconfig = [{ dotenv = ".env" }]\n',
        {
            ".env": "PORT=8123\n",
            "Procfile": "web: python -c 'import sys; print(sys.argv[1])' $PORT\n"
            "bad: python -c pass $NOPE\n",
        },
    )
    ok = run_cli(["exec", "web"], cwd=root, env=cli_env)
    assert ok.stdout.strip() == "8123"
    bad = run_cli(["exec", "bad"], cwd=root, env=cli_env)
    assert bad.exit_code == 2
    assert "$NOPE is not set" in bad.stderr
    unknown = run_cli(["exec", "worker"], cwd=root, env=cli_env)
    assert unknown.exit_code == 2
    assert "unknown process type" in unknown.stderr


def test_init_scaffolds_a_loadable_manifest(tmp_path: Path) -> None:
    """`oneoff init` detects Django and writes a manifest oneoff can load; it never overwrites."""
    (tmp_path / "manage.py").write_text("import django\n")
    assert invoke(["init", "--app", str(tmp_path)]).exit_code == 0
    text = (tmp_path / "oneoff.toml").read_text()
    assert '"manage.py", "migrate"' in text
    assert ".oneoff/" in (tmp_path / ".gitignore").read_text()
    assert invoke(["tasks", "--app", str(tmp_path)]).exit_code == 0
    again = invoke(["init", "--app", str(tmp_path)])
    assert again.exit_code == 2
    assert "--force" in again.stderr


@pytest.mark.parametrize(
    ("files", "expect"),
    [
        ({"app.py": "from flask import Flask\napp = Flask(__name__)\n"}, "flask"),
        ({"Procfile": "web: gunicorn x\n"}, "Procfile"),
    ],
)
def test_init_detects_flask_and_procfile(
    tmp_path: Path, files: dict[str, str], expect: str
) -> None:
    """Flask apps and Procfiles get suggestions of their own."""
    make_app(tmp_path, "", files)
    (tmp_path / "oneoff.toml").unlink()
    assert invoke(["init", "--app", str(tmp_path)]).exit_code == 0
    assert expect in (tmp_path / "oneoff.toml").read_text()


def test_runs_filters_and_show_prefix(app: Path, cli_env: dict[str, str]) -> None:
    """`oneoff runs` filters by task and status; `show` accepts a unique prefix."""
    run_cli(["run", "hello", "--env", "development"], cwd=app, env=cli_env)
    run_cli(["run", "fail", "--env", "development", "-p", "code=4"], cwd=app, env=cli_env)
    failed = json.loads(
        run_cli(["runs", "--status", "failed", "--json"], cwd=app, env=cli_env).stdout
    )
    assert [r["task"] for r in failed] == ["fail"]
    hello = json.loads(run_cli(["runs", "--task", "hello", "--json"], cwd=app, env=cli_env).stdout)
    assert len(hello) == 1
    shown = run_cli(["show", hello[0]["id"], "--json"], cwd=app, env=cli_env)
    assert json.loads(shown.stdout)["params"] == {"name": "world"}
    assert run_cli(["show", "rnope"], cwd=app, env=cli_env).exit_code == 2
    assert run_cli(["runs", "--status", "weird"], cwd=app, env=cli_env).exit_code == 2


def test_secret_param_via_stdin_never_in_argv_or_store(
    example_app: Path, cli_env: dict[str, str]
) -> None:
    """A secret param is read from stdin, given to the task in a variable, and stored masked."""
    run_cli(["run", "migrate", "--env", "development"], cwd=example_app, env=cli_env)
    password = "correct-horse-battery"
    result = run_cli(
        [
            "run",
            "create-user",
            "--env",
            "development",
            "-p",
            "email=ada@example.com",
            "-p",
            "password=@-",
        ],
        cwd=example_app,
        env=cli_env,
        stdin=password + "\n",
    )
    assert result.exit_code == 0, result.stderr
    assert "created user ada@example.com" in result.stdout
    state = (example_app / ".oneoff" / "state.db").read_bytes()
    assert password.encode() not in state
    runs = json.loads(run_cli(["runs", "--json"], cwd=example_app, env=cli_env).stdout)
    assert runs[0]["params"]["password"] == "[secret]"
    on_cmdline = run_cli(
        [
            "run",
            "create-user",
            "--env",
            "development",
            "-p",
            "email=b@example.com",
            "-p",
            f"password={password}",
        ],
        cwd=example_app,
        env=cli_env,
    )
    assert on_cmdline.exit_code == 2
    assert "cannot be given on the command line" in on_cmdline.stderr


def test_example_backfill_and_console(example_app: Path, cli_env: dict[str, str]) -> None:
    """The example's other tasks run: backfill with typed params, console fed from stdin."""
    assert (
        run_cli(["run", "migrate", "--env", "development"], cwd=example_app, env=cli_env).exit_code
        == 0
    )
    backfill = run_cli(
        ["run", "backfill", "--env", "development", "-p", "dry_run=false", "-p", "batch=10"],
        cwd=example_app,
        env=cli_env,
    )
    assert backfill.exit_code == 0, backfill.stderr
    assert "backfilled 0 notes" in backfill.stdout
    console = run_cli(
        ["run", "console", "--env", "development"],
        cwd=example_app,
        env=cli_env,
        stdin="print(db.execute('select count(*) from notes').fetchone())\n",
    )
    assert console.exit_code == 0, console.output
    assert "(0,)" in console.stdout


def test_protected_environment_is_never_a_default(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """With only a protected environment, --env must still be given."""
    root = make_app(
        tmp_path, '[environments.production]\nprotected = true\n[tasks.t]\nargv = ["true"]\n'
    )
    result = run_cli(["run", "t"], cwd=root, env=cli_env)
    assert result.exit_code == 2
    assert "protected" in result.stderr


def test_app_flag_and_missing_manifest(tmp_path: Path, app: Path, cli_env: dict[str, str]) -> None:
    """--app points at an app elsewhere; without one oneoff says how to start."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli(["tasks"], cwd=elsewhere, env=cli_env)
    assert result.exit_code == 2
    assert "oneoff init" in result.stderr
    remote = run_cli(["tasks", "--app", str(app)], cwd=elsewhere, env=cli_env)
    assert remote.exit_code == 0
    assert "hello" in remote.stdout
    # Before the command word too, as `oneoff --help` shows it (a command's own default
    # used to overwrite it).
    first = run_cli(["--app", str(app), "tasks"], cwd=elsewhere, env=cli_env)
    assert first.exit_code == 0, first.stderr
    assert "hello" in first.stdout
