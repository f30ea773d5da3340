"""oneoff's own error messages never echo a secret: a value refused by a param's type or
pattern, a line of config that is only a value, a secret param failing its pattern."""

from __future__ import annotations

import json
from pathlib import Path

from oneoff.testing import make_app, run_cli

TOKEN = "Zq8xPlm3Rt7vWk2n"
DB_PASSWORD = "Pa55w0rdXYZ9"

MANIFEST = """
[environments.development]
config = [{ dotenv = ".env" }]

[environments.vault]
config = [{ command = ["python", "vault.py"] }]

[tasks.echo]
argv = ["python", "-c", "print('noted')", "{note}"]
params.note = { type = "string", pattern = "[a-z]+" }

[tasks.count]
argv = ["python", "-c", "print('counted')", "{n}"]
params.n = { type = "int", min = 1, max = 9 }

[tasks.flag]
argv = ["python", "-c", "print('flagged')", "{note}"]
params.note = { type = "string", pattern = "-?[A-Za-z0-9]+" }

[tasks.login]
argv = ["python", "-c", "import os; print(len(os.environ['ONEOFF_PARAM_PW']))", "{note}"]
params.pw = { type = "secret", min_length = 10, pattern = "[a-z0-9]+" }
params.note = { type = "string", pattern = "[a-z]+", default = "x" }
"""

DOTENV = f"API_TOKEN={TOKEN}\nDATABASE_URL=postgres://app:{DB_PASSWORD}@db/app\n"
# A secrets CLI asked for one field prints the bare value, not KEY=value.
VAULT = f"print({TOKEN!r})\n"


def _app(tmp_path: Path) -> Path:
    return make_app(tmp_path / "app", MANIFEST, {".env": DOTENV, "vault.py": VAULT})


def _assert_not_shown(result_text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result_text


def test_a_secret_refused_by_a_params_pattern_is_redacted_in_the_error(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A secret pasted into a plain param that fails its pattern is named, not shown."""
    app = _app(tmp_path)
    for command in ("run", "plan"):
        for value in (TOKEN, f"x{DB_PASSWORD}"):
            result = run_cli(
                [command, "echo", "--env", "development", "-p", f"note={value}"],
                cwd=app,
                env=cli_env,
            )
            assert result.exit_code == 2, result.stderr
            assert "does not match pattern" in result.stderr
            assert "[REDACTED:" in result.stderr
            _assert_not_shown(result.output, TOKEN, DB_PASSWORD)


def test_a_secret_refused_by_an_int_param_is_redacted_in_the_json_error(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """The JSON error line a CI log keeps redacts the refused value too."""
    app = _app(tmp_path)
    env = {**cli_env, "ONEOFF_LOG_FORMAT": "json"}
    result = run_cli(["run", "count", "--env", "development", "-p", f"n={TOKEN}"], cwd=app, env=env)
    assert result.exit_code == 2
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert "[REDACTED:API_TOKEN]" in line["msg"]
    _assert_not_shown(result.output, TOKEN)


def test_a_secret_that_would_be_read_as_an_option_is_redacted_in_the_error(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """The 'would be read as an option' refusal quotes the value redacted."""
    app = _app(tmp_path)
    result = run_cli(
        ["run", "flag", "--env", "development", "-p", f"note=-{TOKEN}"], cwd=app, env=cli_env
    )
    assert result.exit_code == 2
    assert "would be read as an option" in result.stderr
    _assert_not_shown(result.output, TOKEN)


def test_a_secret_params_value_is_redacted_from_another_params_error(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """The value of a secret param, typed again into a plain one, is not echoed either."""
    app = _app(tmp_path)
    password = "abcdef12345xyz"  # valid for pw, refused by note's pattern (digits)
    result = run_cli(
        ["run", "login", "--env", "development", "-p", "pw=@-", "-p", f"note={password}"],
        cwd=app,
        env=cli_env,
        stdin=password + "\n",
    )
    assert result.exit_code == 2
    assert "param 'note' does not match pattern" in result.stderr
    assert "[REDACTED:param:pw]" in result.stderr
    _assert_not_shown(result.output, password)


def test_a_secret_params_pattern_is_enforced_without_echoing_the_value(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A declared pattern on a secret param refuses a value outside it, and never quotes it."""
    app = _app(tmp_path)
    refused = run_cli(
        ["run", "login", "--env", "development", "-p", "pw=@-"],
        cwd=app,
        env=cli_env,
        stdin="UPPERCASE-VALUE-99\n",
    )
    assert refused.exit_code == 2
    assert "param 'pw' does not match pattern" in refused.stderr
    _assert_not_shown(refused.output, "UPPERCASE-VALUE-99")
    assert run_cli(["runs", "--json"], cwd=app, env=cli_env).stdout.strip() == "[]"
    allowed = run_cli(
        ["run", "login", "--env", "development", "-p", "pw=@-"],
        cwd=app,
        env=cli_env,
        stdin="lowercase99x\n",
    )
    assert allowed.exit_code == 0, allowed.stderr
    assert "12" in allowed.stdout


def test_a_config_command_printing_a_bare_secret_is_refused_without_showing_it(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A secrets CLI that prints just the value (no KEY=) is a config error naming the
    line, not the value: the value is a secret oneoff cannot yet know to redact."""
    app = _app(tmp_path)
    for command in (["run", "echo", "--env", "vault", "-p", "note=x"], ["env", "--env", "vault"]):
        result = run_cli(command, cwd=app, env=cli_env)
        assert result.exit_code == 2, result.output
        assert "expected KEY=value" in result.stderr
        _assert_not_shown(result.output, TOKEN)


DEBUGGING_VAULT = f"""
import base64, json, os, sys
print("API_TOKEN={TOKEN}")
print("DATABASE_URL=postgres://app:{DB_PASSWORD}@db/app")
body = json.dumps({{"SecretString": "{TOKEN}"}})
print("DEBUG response body: " + body, file=sys.stderr)
print("DEBUG encoded: " + base64.b64encode(b"{TOKEN}").decode(), file=sys.stderr)
print("DEBUG dsn password: {DB_PASSWORD}", file=sys.stderr)
print("DEBUG signing with " + os.environ["VAULT_TOKEN"], file=sys.stderr)
"""


def test_a_config_commands_debug_output_is_shown_redacted(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A secrets CLI that logs its response on stderr (as ``aws --debug`` does) has its
    messages shown, with every value it handed over redacted."""
    app = _app(tmp_path)
    (app / "vault.py").write_text(DEBUGGING_VAULT)
    manifest = app / "oneoff.toml"
    manifest.write_text(
        manifest.read_text().replace(
            '[{ command = ["python", "vault.py"] }]',
            '[{ command = ["python", "vault.py"], pass_env = ["VAULT_TOKEN"] }]',
        )
    )
    vault_token = "hvs.CAESIJlU8Zq8xPlm3Rt7"
    env = {**cli_env, "VAULT_TOKEN": vault_token}
    for command in (["run", "echo", "--env", "vault", "-p", "note=x"], ["env", "--env", "vault"]):
        result = run_cli(command, cwd=app, env=env)
        assert result.exit_code == 0, result.output
        assert "DEBUG response body" in result.stderr
        assert "[REDACTED:API_TOKEN]" in result.stderr
        assert "signing with [REDACTED:pass_env:VAULT_TOKEN]" in result.stderr
        _assert_not_shown(result.output, TOKEN, DB_PASSWORD, vault_token)
