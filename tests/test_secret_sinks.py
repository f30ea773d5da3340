"""Secrets as real encoders print them stay out of every sink: terminal, stored output, logs,
audit export, show, env, plan --json and argv; and ordinary config is not refused or mangled."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from oneoff.testing import make_app, run_cli

TOKEN = "tk_9f2/Kq+7x!Z'(a)*Lm3&<v>Wd\u00e4"
SIGNING = "".join(chr(0x30 + (i * 7919) % 75) for i in range(120)).replace("\\", "x")
PEM = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n"
    "-----END PRIVATE KEY-----"
)
STRIPE = "sk_live_51HxYzAbCdEfGh"
PASSWORDS = {
    "written": "s3cret%2Dvalue%2D66",  # DATABASE_URL's password as the config writes it
    "second": "second-pass-22",
    "unencoded": "pa#ss?wo/rd-77",
    "libpq": "libpq-pass-33",
    "jdbc": "jdbc-pass-44",
}

MANIFEST = """
[environments.development]
config = [{ dotenv = ".env" }]
not_secret = ["SORT_KEY"]

[environments.strict]
config = [{ dotenv = ".env" }]

[processes]
web = ["python", "-c", "import sys; print(sys.argv)", "${SIGNING_KEY}"]
worker = ["python", "-c", "import sys; print(sys.argv)", "${REPLICA_URLS}"]

[tasks.leak]
argv = ["python", "leak.py"]

[tasks.pause]
argv = ["python", "pause.py"]
interactive = true

[tasks.echo]
argv = ["python", "-c", "print('noted')", "{note}"]
params.note = { type = "string", max_length = 200 }
"""

LEAK = """
import base64, json, os, sys
from urllib.parse import quote, urlsplit

env = os.environ
tok, signing = env["API_TOKEN"], env["SIGNING_KEY"]
lines = [
    quote(tok),  # urllib's default safe="/"
    quote(tok, safe="!'()*~"),  # what JavaScript's encodeURIComponent leaves alone
    json.dumps(tok).replace("/", "\\\\/"),  # PHP's json_encode
    json.dumps(tok, ensure_ascii=False).replace("&", "\\\\u0026").replace("<", "\\\\u003c")
    .replace(">", "\\\\u003e"),  # Go's encoding/json
    json.dumps(tok).replace("\\\\u00e4", "\\\\u00E4"),  # upper-case escapes
    base64.encodebytes(signing.encode()).decode(),  # wrapped at 76 columns
    urlsplit(env["DATABASE_URL"]).password,  # as written: percent-encoded
    urlsplit(env["REPLICA_URLS"].split(",")[1]).password,  # the second URL's
    env["CACHE_URL"][len("redis://:") : env["CACHE_URL"].rindex("@")],  # '#', '?', '/'
    env["PG_DSN"].split("password=")[1].split()[0],  # libpq key=value
    env["JDBC_URL"].split("password=")[1].split("&")[0],  # JDBC query parameter
    "sort by " + env["SORT_KEY"],
]
print("\\n".join(lines), flush=True)
"""

PAUSE = """
import os, sys, time
pem, tok = os.environ["PEM_PRIVATE_KEY"], os.environ["API_TOKEN"].encode()
print(pem, flush=True)
sys.stdout.buffer.write(b"token: " + tok[:12]); sys.stdout.flush()
time.sleep(1.0)  # ten times the quiet-release delay
sys.stdout.buffer.write(tok[12:] + b"\\n"); sys.stdout.flush()
"""

DOTENV = f"""
API_TOKEN="{TOKEN}"
SIGNING_KEY="{SIGNING}"
PEM_PRIVATE_KEY="{PEM.replace(chr(10), chr(92) + "n")}"
STRIPE_KEY={STRIPE}
SETTINGS='{{"billing": {{"key": "{STRIPE}"}}, "mode": "live"}}'
DATABASE_URL=postgres://app:{PASSWORDS["written"]}@db/app
REPLICA_URLS=postgres://ro:first-pass-11@r1/app,postgres://ro:{PASSWORDS["second"]}@r2/app
CACHE_URL=redis://:{PASSWORDS["unencoded"]}@cache:6379/0
PG_DSN=host=db user=app password={PASSWORDS["libpq"]} dbname=app
JDBC_URL=jdbc:postgresql://db/app?user=app&password={PASSWORDS["jdbc"]}&ssl=true
SORT_KEY=id
"""


@pytest.fixture
def secret_app(tmp_path: Path) -> Path:
    return make_app(
        tmp_path / "app", MANIFEST, {".env": DOTENV, "leak.py": LEAK, "pause.py": PAUSE}
    )


def clear_forms() -> dict[str, str]:
    """Each leak the issue lists, as the task prints it (the thing that must never show)."""
    php = json.dumps(TOKEN).replace("/", "\\/")
    go = json.dumps(TOKEN, ensure_ascii=False)
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        go = go.replace(char, escape)
    wrapped = base64.encodebytes(SIGNING.encode()).decode()
    assert "\n" in wrapped.strip()  # really wrapped
    return {
        "3: quote default": quote(TOKEN),
        "3: encodeURIComponent": quote(TOKEN, safe="!'()*~"),
        "4: PHP json": php[1:-1],
        "4: Go json": go[1:-1],
        "4: upper-case escapes": json.dumps(TOKEN).replace("\\u00e4", "\\u00E4")[1:-1],
        **{f"5: base64 line {i}": line for i, line in enumerate(wrapped.split())},
        **{f"3: password {k}": v for k, v in PASSWORDS.items()},
    }


def run_id(app: Path, env: dict[str, str]) -> str:
    result = run_cli(["runs", "--json", "--limit", "1"], cwd=app, env=env)
    runs = json.loads(result.stdout)
    return str(runs[0]["id"])


def sinks(app: Path, env: dict[str, str], rid: str) -> dict[str, str]:
    """Everything oneoff shows or keeps about a run, besides its terminal output."""
    out = {}
    for name, args in (
        ("logs", ["logs", rid]),
        ("show", ["show", rid]),
        ("show --json", ["show", rid, "--json"]),
        ("audit export", ["audit", "export"]),
    ):
        result = run_cli(args, cwd=app, env=env)
        assert result.exit_code == 0, result.stderr
        out[name] = result.stdout
    out["audit export"] = json.dumps([json.loads(x) for x in out["audit export"].splitlines()])
    return out


def assert_hidden(where: str, text: str, needles: dict[str, str]) -> None:
    shown = [label for label, needle in needles.items() if needle in text]
    assert not shown, f"{where} shows {shown}"


def test_every_printed_form_is_redacted_in_every_sink(
    secret_app: Path, cli_env: dict[str, str]
) -> None:
    """URL, JSON and wrapped-base64 forms as real encoders print them never reach a sink."""
    result = run_cli(["run", "leak", "--env", "development", "-q"], cwd=secret_app, env=cli_env)
    assert result.exit_code == 0, result.stderr
    needles = clear_forms()
    assert_hidden("the terminal", result.stdout, needles)
    assert "[REDACTED:API_TOKEN]" in result.stdout
    assert "[REDACTED:REPLICA_URLS:password" in result.stdout
    assert "[REDACTED:SIGNING_KEY]" in result.stdout
    assert "sort by id" in result.stdout  # exempt by not_secret: shown, not refused
    for where, text in sinks(secret_app, cli_env, run_id(secret_app, cli_env)).items():
        assert_hidden(where, text, needles)


def read_pty(fd: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    return seen


def test_on_a_pty_multiline_and_paused_secrets_stay_hidden(
    secret_app: Path, cli_env: dict[str, str]
) -> None:
    """A PEM key (\\r\\n on a pty) and a token split by a pause never show, in any sink."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "oneoff", "run", "pause", "--env", "development", "-q"],
        cwd=secret_app,
        env={**cli_env, "TERM": "dumb"},
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    try:
        shown = read_pty(primary, proc)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)
    assert proc.returncode == 0, shown
    assert b"[REDACTED:PEM_PRIVATE_KEY]" in shown
    assert b"token: " in shown
    pem_lines = [line for line in PEM.splitlines() if "-----" not in line]
    # At most QUIET_SHOW bytes of the token's start may show; nothing past them.
    pieces = {f"token[{i}:{i + 6}]": TOKEN[i : i + 6] for i in range(3, len(TOKEN) - 6)}
    needles = {**pieces, **{f"PEM line {i}": line for i, line in enumerate(pem_lines)}}
    assert_hidden("the pty", shown.decode("utf-8", "replace"), needles)
    for where, text in sinks(secret_app, cli_env, run_id(secret_app, cli_env)).items():
        assert_hidden(where, text, needles)


def test_env_and_plan_redact_a_secret_inside_a_plain_value(
    secret_app: Path, cli_env: dict[str, str]
) -> None:
    """A secret's value inside a JSON settings blob is redacted by env and plan [--json]."""
    for args in (
        ["env", "--env", "development"],
        ["env", "--env", "development", "--json"],
        ["plan", "leak", "--env", "development"],
        ["plan", "leak", "--env", "development", "--json"],
    ):
        result = run_cli(args, cwd=secret_app, env=cli_env)
        assert result.exit_code == 0, result.stderr
        assert STRIPE not in result.stdout, args
        assert "[REDACTED:STRIPE_KEY]" in result.stdout, args
        assert '"mode": "live"' in result.stdout or '\\"mode\\": \\"live\\"' in result.stdout
        for password in PASSWORDS.values():
            assert password not in result.stdout, (args, password)


@pytest.mark.parametrize(("process", "named"), [("web", "SIGNING_KEY"), ("worker", "password")])
def test_exec_refuses_a_secret_in_argv(
    secret_app: Path, cli_env: dict[str, str], process: str, named: str
) -> None:
    """`oneoff exec` never puts a secret in a process's argv (/proc/PID/cmdline): it refuses."""
    result = run_cli(["exec", process, "--env", "development"], cwd=secret_app, env=cli_env)
    assert result.exit_code == 9, result.output
    assert "secrets never go in argv" in result.stderr
    assert named in result.stderr
    assert SIGNING not in result.output
    assert PASSWORDS["second"] not in result.output


def test_a_secret_in_a_plain_param_is_refused_and_never_recorded(
    secret_app: Path, cli_env: dict[str, str]
) -> None:
    """A secret passed through a plain param never reaches argv, the plan's record or the log."""
    note = f"note=key {STRIPE} rotated"
    args = ["echo", "--env", "development", "-p", note]
    plan = run_cli(["plan", *args], cwd=secret_app, env=cli_env)
    assert plan.exit_code == 0, plan.stderr
    assert STRIPE not in plan.stdout
    assert "note=key [REDACTED:STRIPE_KEY] rotated" in plan.stdout
    run = run_cli(["run", *args], cwd=secret_app, env=cli_env)
    assert run.exit_code == 9
    assert "param 'note' holds a secret's value" in run.stderr
    assert STRIPE not in run.output
    runs = run_cli(["runs", "--json"], cwd=secret_app, env=cli_env)
    assert json.loads(runs.stdout) == []  # refused before anything ran or was recorded
    audit = run_cli(["audit", "export"], cwd=secret_app, env=cli_env)
    assert audit.exit_code == 0, audit.stderr
    events = [json.loads(line) for line in audit.stdout.splitlines()]
    planned = [e for e in events if e["kind"] == "run.planned"]
    assert planned
    assert STRIPE not in audit.stdout


def test_a_short_value_matching_a_secret_pattern_says_how_to_exempt_it(
    secret_app: Path, cli_env: dict[str, str]
) -> None:
    """SORT_KEY=id is refused where it is not exempt, and the error names not_secret."""
    result = run_cli(
        ["run", "echo", "--env", "strict", "-p", "note=x"], cwd=secret_app, env=cli_env
    )
    assert result.exit_code == 9
    assert "SORT_KEY" in result.stderr
    assert 'not_secret = ["SORT_KEY"]' in result.stderr


def test_a_secret_param_too_short_to_redact_is_refused_at_load(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A secret param whose min_length the redactor would refuse at run time is a manifest error."""
    app = make_app(
        tmp_path / "app",
        """
        [environments.development]
        [tasks.login]
        argv = ["true"]
        params.pin = { type = "secret", min_length = 3 }
        """,
    )
    result = run_cli(["plan", "login", "--env", "development"], cwd=app, env=cli_env)
    assert result.exit_code != 0
    assert "min_length must be at least 6" in result.stderr


def test_a_dictionary_word_secret_is_redacted_only_as_a_whole_word(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A password like 'postgres' does not turn 'postgresql' into '[REDACTED]ql'."""
    app = make_app(
        tmp_path / "app",
        """
        [environments.development]
        config = [{ dotenv = ".env" }]
        secrets = ["DB_P"]
        [tasks.show]
        argv = ["python", "-c", "import os; print('postgresql up; pw=' + os.environ['DB_P'])"]
        """,
        {".env": "DB_P=postgres\n"},
    )
    result = run_cli(["run", "show", "--env", "development", "-q"], cwd=app, env=cli_env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "postgresql up; pw=[REDACTED:DB_P]\n"
