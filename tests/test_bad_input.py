"""Bad input found by fuzzing (issue #11): each case exits 2 (7 for a damaged store) with
one line on stderr, never a traceback and never a hang."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from oneoff.testing import CliResult, invoke, make_app

MANIFEST = """
[environments.development]
config = [{ dotenv = ".env" }]

[tasks.hello]
argv = ["python", "-c", "print('hi')", "{name}"]
params.name = { type = "string", default = "world" }

[tasks.migrate]
argv = ["python", "-c", "print('migrated')"]
locks = ["database"]
"""

# What Python makes of the bytes b"\xff\xfe" in argv: lone surrogates.
NOT_UTF8 = b"\xff\xfe".decode("utf-8", "surrogateescape")


@pytest.fixture
def bad_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_app(tmp_path / "app", MANIFEST, {".env": "GREETING=hi\n"})
    monkeypatch.chdir(root)
    monkeypatch.setenv("ONEOFF_LOG_FORMAT", "text")
    return root


def refused(result: CliResult, code: int, words: str) -> None:
    """``result`` exited ``code`` with one error line on stderr that says ``words`` (and at
    most the hint line that may follow an error)."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  hint: ")), lines
    assert lines[0].startswith("oneoff: error: ")
    assert words in lines[0], lines[0]


def write_manifest(root: Path, extra: str) -> None:
    (root / "oneoff.toml").write_text(MANIFEST + extra)


@pytest.mark.parametrize(
    "args",
    [
        ["run", "hello", "-p", f"name={NOT_UTF8}"],
        ["plan", "hello", "-p", f"{NOT_UTF8}=x"],
        ["show", f"r2026{NOT_UTF8}"],
        ["logs", f"r2026{NOT_UTF8}"],
        ["runs", "--task", NOT_UTF8],
        ["runs", "--env", NOT_UTF8],
        ["audit", "export", "--run", NOT_UTF8],
    ],
    ids=["param-value", "param-name", "show-id", "logs-id", "runs-task", "runs-env", "export"],
)
def test_arguments_that_are_not_utf8_are_refused(bad_app: Path, args: list[str]) -> None:
    """An argument holding bytes that are not UTF-8 (a param, a run id, a filter) is bad input."""
    refused(invoke(args), 2, "is not valid UTF-8")


def test_a_manifest_that_is_not_utf8_is_refused(bad_app: Path) -> None:
    """An oneoff.toml holding bytes that are not UTF-8 is a manifest error, not a crash."""
    (bad_app / "oneoff.toml").write_bytes(MANIFEST.encode() + b"\n# caf\xe9\n")
    refused(invoke(["tasks"]), 2, "not UTF-8")


def test_a_dotenv_file_that_is_not_utf8_is_refused(bad_app: Path) -> None:
    """A dotenv file holding bytes that are not UTF-8 is a config error naming the file."""
    (bad_app / ".env").write_bytes(b"GREETING=caf\xe9\n")
    refused(invoke(["env"]), 2, "dotenv .env: not UTF-8")


@pytest.mark.parametrize("option", ["--limit", "--since", "--lines", "EVENT", "OLD"])
def test_huge_numbers_are_refused(bad_app: Path, option: str) -> None:
    """A count or position larger than SQLite's integers is bad input, not an OverflowError."""
    huge = str(10**30)
    args = {
        "--limit": ["runs", "--limit", huge],
        "--since": ["audit", "export", "--since", huge],
        "--lines": ["audit", "tail", "--lines", huge],
        "EVENT": ["audit", "prove", huge],
        "OLD": ["audit", "consistency", huge],
    }[option]
    refused(invoke(args), 2, f"{option} must be between")


@pytest.mark.parametrize("timeout", ['"597h"', '"700h"', "99999999999999999999", '"169h"'])
def test_a_timeout_beyond_a_week_is_refused_at_load(bad_app: Path, timeout: str) -> None:
    """Timeouts past the timer's range (~596 h) crashed after the child started; any timeout
    over a week is refused when the manifest loads, before anything runs."""
    manifest = MANIFEST.replace("locks = [", f"timeout = {timeout}\nlocks = [")
    (bad_app / "oneoff.toml").write_text(manifest)
    result = invoke(["run", "migrate"])
    refused(result, 2, "at most 168h")
    assert "migrated" not in result.stdout


@pytest.mark.parametrize("timeout", ["nan", "inf", "1e300", "-1"])
def test_a_config_command_timeout_must_be_finite(bad_app: Path, timeout: str) -> None:
    """A config command's timeout that is not a number of seconds up to an hour is refused."""
    write_manifest(
        bad_app,
        f'[environments.staging]\nconfig = [{{ command = ["true"], timeout = {timeout} }}]\n',
    )
    refused(invoke(["tasks"]), 2, "timeout must be a number of seconds")


def test_config_that_is_not_a_list_is_refused(bad_app: Path) -> None:
    """`config = 5` is a manifest error, not a TypeError."""
    write_manifest(bad_app, "[environments.staging]\nconfig = 5\n")
    refused(invoke(["tasks"]), 2, "config must be a list")


def test_allow_os_user_must_be_a_boolean(bad_app: Path) -> None:
    """`allow_os_user = "str"` was accepted as true; it is refused."""
    write_manifest(bad_app, '[environments.staging]\nallow_os_user = "str"\n')
    refused(invoke(["tasks"]), 2, "allow_os_user must be true or false")


def test_deeply_nested_arrays_are_refused(bad_app: Path) -> None:
    """Arrays nested 5,000 deep (RecursionError in the TOML parser) are a manifest error."""
    (bad_app / "oneoff.toml").write_text(MANIFEST + "x = " + "[" * 5000 + "]" * 5000 + "\n")
    refused(invoke(["tasks"]), 2, "nests deeper than 32 levels")


def test_moderately_nested_arrays_are_refused_too(bad_app: Path) -> None:
    """Nesting the parser survives but no oneoff setting needs is refused the same way."""
    (bad_app / "oneoff.toml").write_text(MANIFEST + "x = " + "[" * 200 + "]" * 200 + "\n")
    refused(invoke(["tasks"]), 2, "nests deeper than 32 levels")


def test_a_nul_in_a_dotenv_path_is_refused(bad_app: Path) -> None:
    """A dotenv path holding a NUL (ValueError in open) is a manifest error."""
    write_manifest(bad_app, '[environments.staging]\nconfig = [{ dotenv = ".e\\u0000nv" }]\n')
    refused(invoke(["tasks"]), 2, "dotenv must be a file path")


def test_a_dotenv_symlink_loop_is_refused(bad_app: Path) -> None:
    """A dotenv path that is a symlink loop (RuntimeError in resolve) is a config error."""
    (bad_app / ".env").unlink()
    os.symlink(".env", bad_app / ".env")
    refused(invoke(["env"]), 2, "dotenv .env: cannot resolve the path")


def test_a_fifo_as_dotenv_file_is_refused_without_blocking(bad_app: Path) -> None:
    """A FIFO as dotenv file hung forever waiting for a writer; it is refused by file type."""
    (bad_app / ".env").unlink()
    os.mkfifo(bad_app / ".env")
    refused(invoke(["env"]), 2, "dotenv .env: not a regular file")


def test_a_directory_as_dotenv_file_is_refused(bad_app: Path) -> None:
    """A directory where the dotenv file should be is refused by file type too."""
    (bad_app / ".env").unlink()
    (bad_app / ".env").mkdir()
    refused(invoke(["env"]), 2, "dotenv .env: not a regular file")


@pytest.mark.parametrize("wait", ["nan", "-5", "inf", "604801"])
def test_a_lock_wait_must_be_a_sane_number_of_seconds(bad_app: Path, wait: str) -> None:
    """`--wait nan` never gave up and `--wait -5` was accepted; both are refused before the
    task runs."""
    result = invoke(["run", "migrate", "--wait", wait])
    refused(result, 2, "--wait must be between 0 and 604800 seconds")
    assert "migrated" not in result.stdout


def _corrupt_lock(root: Path, expires_at: object) -> None:
    """A lease row on another machine whose end time is garbage."""
    with sqlite3.connect(root / ".oneoff" / "state.db") as db:
        db.execute(
            "INSERT INTO locks (name, run_id, holder, runner_host, runner_pid, acquired_at, "
            "expires_at) VALUES ('database', 'r1', 'os:someone', 'elsewhere/boot', 1, "
            "'2026-01-01T00:00:00Z', ?)",
            (expires_at,),
        )
    db.close()


@pytest.mark.parametrize("expires_at", ["garbage", "2026-01-01T00:00:00", b"\xff"])
def test_a_corrupt_lease_end_blocks_only_runs_needing_that_lock(
    bad_app: Path, expires_at: object
) -> None:
    """A lock row with an unreadable `expires_at` made every command crash; now other
    commands work, and a run needing that lock refuses with exit 7 (damaged store)."""
    assert invoke(["run", "hello"]).exit_code == 0  # creates the store
    _corrupt_lock(bad_app, expires_at)
    assert invoke(["runs"]).exit_code == 0
    assert invoke(["run", "hello"]).exit_code == 0
    result = invoke(["run", "migrate", "--wait", "5"])
    refused(result, 7, "lock 'database': its lease end")
    assert "migrated" not in result.stdout


@pytest.mark.parametrize(
    "pattern",
    ["a{99999999999}", "(" * 1000 + "a" + ")" * 1000, "(?:" * 5000 + "a" + ")" * 5000],
    ids=["repeat-overflow", "nested-groups", "nested-non-capturing"],
)
def test_a_param_pattern_too_large_or_deep_is_refused_at_load(bad_app: Path, pattern: str) -> None:
    """A pattern too large or deep to compile (a count past any integer, or a thousand
    nested groups: past the 1,000-character bound) is a manifest error, not a traceback."""
    (bad_app / "oneoff.toml").write_text(
        MANIFEST.replace(
            '{ type = "string", default = "world" }',
            f'{{ type = "string", pattern = "{pattern}", default = "a" }}',
        )
    )
    refused(invoke(["tasks"]), 2, "pattern does not compile")


SECRET_TASK = """
[tasks.login]
argv = ["python", "-c", "import os; print(len(os.environ['ONEOFF_PARAM_PW']))"]
params.pw = { type = "secret", min_length = 10 }
"""


def test_an_endless_secret_file_is_refused_without_reading_it_all(bad_app: Path) -> None:
    """``-p pw=@/dev/zero`` stops reading past the longest allowed value and exits 2,
    instead of filling memory until the OOM killer ends oneoff."""
    write_manifest(bad_app, SECRET_TASK)
    result = invoke(["run", "login", "-p", "pw=@/dev/zero"])
    refused(result, 2, "param 'pw' is longer than 4096 characters")


def test_an_endless_secret_on_stdin_is_refused(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """``yes | oneoff run ... -p pw=@-`` is refused once past the bound (the pipe never ends)."""
    root = make_app(tmp_path / "app", MANIFEST + SECRET_TASK, {".env": "GREETING=hi\n"})
    yes = subprocess.Popen(["yes"], stdout=subprocess.PIPE)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "oneoff", "run", "login", "-p", "pw=@-"],
            cwd=root, env=cli_env, stdin=yes.stdout, capture_output=True, timeout=120,
        )  # fmt: skip
    finally:
        yes.kill()
        yes.wait()
        assert yes.stdout is not None
        yes.stdout.close()
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr
    assert b"param 'pw' is longer than 4096 characters" in done.stderr


def test_a_secret_that_is_not_utf8_is_refused(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A secret file or stdin that is not UTF-8 is exit 2 with one line, not a traceback."""
    root = make_app(tmp_path / "app", MANIFEST + SECRET_TASK, {".env": "GREETING=hi\n"})
    (root / "pw.bin").write_bytes(b"\xff\xfeabcdefghijk")
    for param, stdin in (("pw=@pw.bin", b""), ("pw=@-", b"\xff\xfeabcdefghijk")):
        done = subprocess.run(
            [sys.executable, "-m", "oneoff", "run", "login", "-p", param],
            cwd=root, env=cli_env, input=stdin, capture_output=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.decode().splitlines() == [
            "oneoff: error: secret param 'pw' is not valid UTF-8"
        ]
