"""A process's environment comes from its config sources and nothing else."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from oneoff._environ import PROCESS_DEFAULTS, mask_url, materialize, url_password
from oneoff._manifest import load_project
from oneoff.errors import ConfigError
from oneoff.testing import make_app

SHELL = {
    "PATH": "/evil/bin:/usr/bin",
    "HOME": "/home/someone-else",
    "AWS_SECRET_ACCESS_KEY": "operator-secret",
    "LD_PRELOAD": "/tmp/evil.so",
    "PYTHONPATH": "/tmp/evil",
    "TERM": "xterm-256color",
    "LC_ALL": "C.UTF-8",
    "APP_MODE": "shell",
    "APP_COLOR": "blue",
}


def project(tmp_path: Path, env_toml: str, files: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return load_project(make_app(tmp_path, "[environments.e]\n" + env_toml, files))


def build(p, **kw):  # type: ignore[no-untyped-def]
    return materialize(p, p.environments["e"], run_vars={}, operator_env=SHELL, **kw)


def test_operator_shell_does_not_leak(tmp_path: Path) -> None:
    """Nothing of the operator's shell reaches the process except the terminal allow-list."""
    p = project(tmp_path, 'config = [{ dotenv = ".env" }]\n', {".env": "A=1\n"})
    env = build(p)
    assert set(env.values) == {"PATH", "HOME", "TERM", "LC_ALL", "A", *dict(PROCESS_DEFAULTS)}
    assert "/evil/bin" not in env.values["PATH"]
    assert env.values["HOME"] != "/home/someone-else"


def test_sources_apply_in_order(tmp_path: Path) -> None:
    """Later sources override earlier ones; inherit picks only the named variables."""
    p = project(
        tmp_path,
        'config = [{ dotenv = ".env" }, { inherit = ["APP_*"] }, '
        f'{{ command = ["{sys.executable}", "-c", "print(\'B=from-command\')"] }}]\n',
        {".env": "APP_MODE=dotenv\nB=dotenv\nC=3\n"},
    )
    env = build(p)
    assert env.values["APP_MODE"] == "shell"
    assert env.values["APP_COLOR"] == "blue"
    assert env.values["B"] == "from-command"
    assert env.values["C"] == "3"
    assert env.origin["B"].startswith("command")


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD", "PYTHONPATH", "BASH_ENV", "ENV", "PYTHONSTARTUP", "LD_AUDIT",
        # Each names a file or command that some program loads or runs:
        "OPENSSL_CONF", "OPENSSL_MODULES", "GIT_CONFIG_COUNT", "GIT_CONFIG_PARAMETERS",
        "GIT_PROXY_COMMAND", "SSH_ASKPASS", "ZDOTDIR", "LESSOPEN", "LUA_INIT", "GLIBC_TUNABLES",
    ],
)  # fmt: skip
def test_dangerous_variables_refused_from_dotenv(tmp_path: Path, name: str) -> None:
    """A config source may not set variables that load code from elsewhere."""
    p = project(tmp_path, 'config = [{ dotenv = ".env" }]\n', {".env": f"{name}=/tmp/x\n"})
    with pytest.raises(ConfigError, match=name):
        build(p)


def test_dangerous_variable_from_inherit_refused_even_if_allowed(tmp_path: Path) -> None:
    """The operator's shell can never supply LD_PRELOAD, even when the app allows it from files."""
    p = project(
        tmp_path, 'config = [{ inherit = ["LD_PRELOAD"] }]\nunsafe_allow_env = ["LD_PRELOAD"]\n'
    )
    with pytest.raises(ConfigError, match="LD_PRELOAD"):
        build(p)


def test_unsafe_allow_env_for_app_config(tmp_path: Path) -> None:
    """An app may set PYTHONPATH in its own dotenv when it says so explicitly."""
    p = project(
        tmp_path,
        'config = [{ dotenv = ".env" }]\nunsafe_allow_env = ["PYTHONPATH"]\n',
        {".env": "PYTHONPATH=src\n"},
    )
    assert build(p).values["PYTHONPATH"] == "src"


def test_reserved_oneoff_variables(tmp_path: Path) -> None:
    """Config cannot set ONEOFF_* (run id, secret params)."""
    p = project(tmp_path, 'config = [{ dotenv = ".env" }]\n', {".env": "ONEOFF_PARAM_PASSWORD=x\n"})
    with pytest.raises(ConfigError, match="reserved"):
        build(p)


def test_command_source_failures(tmp_path: Path) -> None:
    """A failing, missing or slow secrets command is a config error, not an empty config."""
    for cmd, message in [
        (f'["{sys.executable}", "-c", "raise SystemExit(3)"]', "exited with 3"),
        ('["no-such-secrets-cli"]', "not found"),
        (f'["{sys.executable}", "-c", "import time; time.sleep(5)"], timeout = 0.5', "timed out"),
    ]:
        p = project(tmp_path / str(abs(hash(cmd))), f"config = [{{ command = {cmd} }}]\n")
        with pytest.raises(ConfigError, match=message):
            build(p)


def test_secret_keys_and_url_passwords(tmp_path: Path) -> None:
    """Pattern and explicit secret keys are masked; a URL's password is masked and collected."""
    p = project(
        tmp_path,
        'config = [{ dotenv = ".env" }]\nsecrets = ["SENTRY_DSN"]\n',
        {
            ".env": "DB_PASSWORD=pw-123456\nSENTRY_DSN=https://k@s/1\nDATABASE_URL=postgres://u:p%40ss-w0rd@h/db\nMODE=x\n"
        },
    )
    env = build(p)
    assert {"DB_PASSWORD", "SENTRY_DSN"} <= env.secret_keys
    masked = env.masked()
    assert masked["DB_PASSWORD"] == "********"
    assert masked["DATABASE_URL"] == "postgres://u:****@h/db"
    assert masked["MODE"] == "x"
    assert env.secret_values()["DATABASE_URL:password"] == "p@ss-w0rd"


def test_url_helpers() -> None:
    """URLs without a password are left alone."""
    assert url_password("https://example.com/x") is None
    assert url_password("not a url") is None
    assert mask_url("redis://:tok@h:6379/0") == "redis://:****@h:6379/0"


@pytest.mark.parametrize(
    ("value", "passwords"),
    [
        ("postgres://u:p%2Dw-0rd@h/db", ["p-w-0rd", "p%2Dw-0rd"]),
        ("redis://:first-1@a,redis://:second-2@b", ["first-1", "second-2"]),
        ("redis://:pa#ss?wo/rd@cache:6379/0", ["pa#ss?wo/rd"]),
        ("https://u:p@ss-word@host/x", ["p@ss-word", "p"]),
        ("host=db user=app password=libpq-pw dbname=x", ["libpq-pw"]),
        ("host=db password='a b\\'c' dbname=x", ["a b\\'c", "a b'c"]),
        ("jdbc:postgresql://db/app?user=a&password=jd%23bc&ssl=1", ["jd#bc", "jd%23bc"]),
        ("Server=db;Uid=a;Pwd=odbc-pw;", ["odbc-pw"]),
        ("DRIVER={ODBC};UID=u;PWD={br@ced;pw-66};", ["br@ced;pw-66"]),
        ("Server=db;Pwd={a}}b;c};Uid=x", ["a}}b;c", "a}b;c"]),
        ("host=db sslpassword=ssl-key-pw user=x", ["ssl-key-pw"]),
        ("https://example.com/a@b", []),
        ("set the password later", []),
    ],
)
def test_embedded_passwords_are_found_however_they_are_written(
    value: str, passwords: list[str]
) -> None:
    """URL userinfo (several, unencoded #?/), libpq (sslpassword too), JDBC and ODBC
    passwords (a braced ODBC value whole, ; included) are all found."""
    from oneoff._embedded import embedded_passwords

    assert embedded_passwords(value) == passwords


def test_not_secret_exempts_a_pattern_match_and_its_value(tmp_path: Path) -> None:
    """A not_secret name is neither a secret nor searched for embedded passwords."""
    p = project(
        tmp_path,
        'config = [{ dotenv = ".env" }]\nnot_secret = ["SORT_KEY", "HELP_KEY"]\n',
        {".env": "SORT_KEY=id\nCACHE_KEY=users\nHELP_KEY=password=x\n"},
    )
    env = build(p)
    assert "SORT_KEY" not in env.secret_keys
    assert "CACHE_KEY" in env.secret_keys  # not exempt: still a secret by its name
    assert set(env.secret_values()) == {"CACHE_KEY"}


def test_a_name_both_secret_and_not_secret_is_refused(tmp_path: Path) -> None:
    """Listing a name in both secrets and not_secret is a manifest error, not a silent choice."""
    from oneoff.errors import ManifestError

    with pytest.raises(ManifestError, match="both secrets and not_secret"):
        project(tmp_path, 'secrets = ["A_KEY"]\nnot_secret = ["A_KEY"]\n')


def test_git_config_from_config_cannot_make_git_run_a_command(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """GIT_CONFIG_COUNT/KEY/VALUE in a dotenv would set core.fsmonitor, a command every
    `git status` runs: refused (exit 2) before the task starts."""
    import subprocess

    from oneoff.testing import run_cli

    root = make_app(
        tmp_path / "app",
        '[environments.e]\nconfig = [{ dotenv = ".env" }]\n'
        '[tasks.status]\nargv = ["git", "status", "--short"]\n',
        {
            ".env": "GIT_CONFIG_COUNT=1\nGIT_CONFIG_KEY_0=core.fsmonitor\n"
            "GIT_CONFIG_VALUE_0=echo PLANTED >&2; false\n"
        },
    )
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    done = run_cli(["run", "status"], cwd=root, env=cli_env)
    assert done.exit_code == 2, done.output
    assert "sets GIT_CONFIG_COUNT" in done.stderr
    assert "PLANTED" not in done.output
