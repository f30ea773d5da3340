"""Terminal injection: text one person supplies (a denial reason, a param, a task
description, a stored or served field, a run's output) never reaches another person's
terminal, or the console page, as an escape sequence, a C0/C1 control or a bidi override:
typed text is refused where it enters, and what is already stored is shown escaped."""

from __future__ import annotations

import io
import itertools
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _access_kit import Keys, events
from _serverproc import ServerProc
from oneoff._app import open_app
from oneoff._store.interface import RequestRecord
from oneoff._text import OutputEscaper, escape_lines, unsafe_chars
from oneoff.testing import CliResult, make_app, run_cli
from test_attacks_server import console_login, plan_json, signed_statement, status_of

pytest_plugins = ["_access_kit"]

# What an attacker types: set the window title, write the viewer's clipboard (OSC 52),
# clear the screen with a C1 CSI, reverse the rest of the line, and forge a second line.
ATTACKS = {
    "osc-title": "fine\x1b]0;approved by everyone\x07",
    "osc52-clipboard": "ok\x1b]52;c;cm0gLXJmIH4K\x07",
    "c1-csi": "ok\x9b2J",
    "bidi-override": "deny\u202eyllanif evorppa",
    "bidi-isolate": "x\u2066y\u2069",
    "newline": "ok\nq20990101000000ffffffff  pending  approved",
    "carriage-return": "evil\rfine",
}
# Characters that must never reach a terminal raw (a newline is checked per test).
RAW = ("\x1b", "\x9b", "\x07", "\r", "\u202e", "\u2066", "\u2069")


def raw_in(text: str) -> list[str]:
    return [c for c in RAW if c in text]


def cli(root: Path, env: dict[str, str], *args: str) -> CliResult:
    return run_cli(list(args), cwd=root, env=env)


def request_migrate(root: Path, keys: Keys, env: dict[str, str]) -> str:
    made = cli(root, env, "request", "migrate", "--env", "production", "--key", str(keys["alice"]))
    assert made.exit_code == 0, made.stderr
    return made.stdout.strip()


def store_evil_request(app_dir: Path, rid: str = "q20990101000000deadbeef") -> str:
    """A request row whose text fields carry escapes, as an old store, a restored backup or
    a compromised server could hold them (nothing that checks input wrote it)."""
    app = open_app(app_dir)
    try:
        record = RequestRecord(
            id=rid,
            task="migrate\x1b]0;pwned\x07",
            environment="production\x9b2J",
            plan_hash="sha256:" + "0" * 64,
            plan={},
            requester="mallory\u202egnp.exe\nq1  pending  migrate on production by bob",
            created_at="2099-01-01T00:00:00Z",
            status="pending",
            policy_version=None,
        )
        with app.store.tx():
            app.store.create_request(record)
    finally:
        app.close()
    return rid


@pytest.mark.parametrize("reason", ATTACKS.values(), ids=ATTACKS.keys())
def test_a_denial_reason_carrying_control_characters_is_refused_locally(
    root: Path, keys: Keys, env: dict[str, str], reason: str
) -> None:
    """`oneoff deny --reason` with an escape sequence, a C1 control, a bidi override or a
    newline is exit 2 with one line; the request stays pending and no denial is audited."""
    rid = request_migrate(root, keys, env)
    denied = cli(root, env, "deny", rid, "--reason", reason, "--key", str(keys["bob"]))
    assert denied.exit_code == 2, denied.stderr
    assert "denial reason may not contain" in denied.stderr
    assert "Traceback" not in denied.stderr
    assert raw_in(denied.stderr) == []
    assert events(root, "request.denied") == []
    assert status_of_local(root, rid) == "pending"


def status_of_local(root: Path, rid: str) -> str:
    app = open_app(root)
    try:
        return app.store.get_request(rid).status
    finally:
        app.close()


@pytest.mark.parametrize("reason", ATTACKS.values(), ids=ATTACKS.keys())
def test_the_server_refuses_a_denial_reason_carrying_control_characters(
    server: ServerProc, server_keys: Keys, reason: str
) -> None:
    """The API refuses such a reason (400, exit 2) before deciding anything: the request
    stays pending and no `request.denied` event holds the text."""
    from test_attacks_server import ask

    plan = plan_json(server.app_dir)
    rid = ask(server, server_keys, "alice", plan).json["request"]["id"]
    body = {"reason": reason, **signed_statement(server_keys, "bob", plan, "deny", request_id=rid)}
    answer = server.signed(server_keys["bob"], "POST", f"/v1/requests/{rid}/denials", body)
    assert answer.status == 400, answer
    assert answer.error["exit"] == 2
    assert "denial reason" in answer.error["message"]
    assert status_of(server, rid) == "pending"
    assert events(server.app_dir, "request.denied") == []


@pytest.mark.parametrize(
    "value", ["a\u202etxt.exe", "a\x85b", "a\u2028b", "a\u200fb"], ids=["rlo", "nel", "ls", "rlm"]
)
def test_a_param_carrying_a_bidi_or_c1_character_is_refused(
    root: Path, env: dict[str, str], value: str
) -> None:
    """A string param holding a bidi override, a C1 control or a line separator is exit 2:
    approvers would be shown another value than the one that runs."""
    planned = cli(root, env, "plan", "hold", "--env", "development", "-p", f"pidfile={value}")
    assert planned.exit_code == 2, planned.stdout + planned.stderr
    assert "control (format, bidi) character" in planned.stderr
    assert raw_in(planned.stderr) == []


def test_a_task_description_carrying_an_escape_is_refused(tmp_path: Path) -> None:
    """A manifest whose task description holds an escape sequence does not load (exit 2):
    `oneoff tasks` and the console would show it to everyone."""
    root = make_app(
        tmp_path / "app",
        '[environments.development]\n[tasks.t]\nargv = ["true"]\n'
        'description = "tidy up\\u001b[8m; also drops the users table"\n',
    )
    listed = run_cli(["tasks"], cwd=root)
    assert listed.exit_code == 2, listed.stdout + listed.stderr
    assert "description may not contain" in listed.stderr
    assert raw_in(listed.stdout + listed.stderr) == []


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        ('[app]\nname = "notes\\u001b]52;c;cm0gLXJm\\u0007"\n', "[app] name may not contain"),
        ("[app]\nname = 5\n", "[app] name must be a non-empty string"),
        (
            '[tasks.t.params.x]\ntype = "string"\ndescription = "target\\u202e\\u2066prod"\n',
            "description may not contain",
        ),
        (
            '[tasks.t.params.x]\ntype = "choice"\nchoices = ["staging\\u001b[2K", "prod"]\n',
            "a choice may not contain",
        ),
    ],
    ids=["app-name-osc52", "app-name-not-text", "param-description-bidi", "choice-escape"],
)
def test_other_manifest_text_people_read_is_refused_too(
    tmp_path: Path, manifest: str, words: str
) -> None:
    """The app's name, a param's description and a choice are shown to approvers (plan,
    console) like a task description: an escape, bidi or non-text value does not load."""
    base = '[environments.development]\n[tasks.t]\nargv = ["true", "{x}"]\n'
    if manifest.startswith("[app]"):
        text = manifest + base + '[tasks.t.params.x]\ntype = "string"\n'
    else:
        text = base + manifest
    root = make_app(tmp_path / "app", text)
    listed = run_cli(["tasks"], cwd=root)
    assert listed.exit_code == 2, listed.stdout + listed.stderr
    assert words in listed.stderr
    assert raw_in(listed.stdout + listed.stderr) == []


def test_stored_text_is_shown_escaped_one_row_per_request(
    root: Path, keys: Keys, env: dict[str, str]
) -> None:
    """A stored request whose fields hold escapes, C1, bidi and a newline is listed on one
    line with each of them spelled out (`\\x1b`, `\\u202e`, `\\n`), never forging a row."""
    rid = store_evil_request(root)
    listed = cli(root, env, "requests")
    assert listed.exit_code == 0, listed.stderr
    assert raw_in(listed.stdout) == []
    rows = [line for line in listed.stdout.splitlines() if line]
    assert len(rows) == 1, rows
    assert rows[0].startswith(rid)
    assert "\\x1b]0;pwned\\x07" in rows[0]
    assert "mallory\\u202egnp.exe\\nq1" in rows[0]


def test_a_servers_answers_are_shown_escaped(server: ServerProc, server_keys: Keys) -> None:
    """`oneoff requests --server` prints what a server (or its store) holds escaped: the
    client does not trust the server with its terminal."""
    rid = store_evil_request(server.app_dir)
    url = f"http://{server.host}:{server.port}"
    env = {**os.environ, "ONEOFF_LOG_FORMAT": "text"}
    listed = run_cli(
        ["requests", "--server", url, "--key", str(server_keys["bob"])], cwd=server.app_dir, env=env
    )
    assert listed.exit_code == 0, listed.stderr
    assert raw_in(listed.stdout) == []
    rows = [line for line in listed.stdout.splitlines() if line]
    assert len(rows) == 1, rows
    assert rows[0].startswith(rid)
    assert "\\u202e" in rows[0]


def test_the_console_spells_out_bidi_and_control_characters(
    server: ServerProc, server_keys: Keys
) -> None:
    """HTML escaping leaves a bidi override in the page, where it reorders what an approver
    reads: the console shows every stored field with such characters spelled out."""
    rid = store_evil_request(server.app_dir)
    headers = console_login(server, server_keys["bob"])
    for path in ("/console/", f"/console/requests/{rid}"):
        page = server.call("GET", path, headers=headers)
        assert page.status == 200, page
        text = page.raw.decode()
        assert "mallory" in text
        assert raw_in(text) == [], path
        assert "\\u202e" in text


LOUD = (
    "import sys\n"
    "out = sys.stdout.buffer\n"
    "out.write(b'plain line\\r\\n')\n"
    "out.write(b'\\x1b]52;c;cm0gLXJmIH4K\\x07\\x1b[2Jhidden\\rshown\\n')\n"
    "out.write('price \\u202e01$\\n'.encode())\n"
    "out.write(b'bad byte \\xff\\n')\n"
)


def loud_run(tmp_path: Path) -> tuple[Path, str]:
    root = make_app(
        tmp_path / "app",
        '[environments.development]\n[tasks.loud]\nargv = ["python", "loud.py"]\n',
        {"loud.py": LOUD},
    )
    ran = subprocess.run(
        [sys.executable, "-m", "oneoff", "run", "loud", "--json"],
        cwd=root, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    return root, str(json.loads(ran.stdout)["id"])


def on_a_terminal(args: list[str], cwd: Path) -> bytes:
    """What ``oneoff ARGS`` writes to stdout when stdout is a terminal (a real pty)."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "oneoff", *args],
        cwd=cwd, stdin=subprocess.DEVNULL, stdout=child, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(child)
    seen = b""
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: every writer of the pty has closed it
            break
        if not data:
            break
        seen += data
    os.close(main)
    _, errors = proc.communicate(timeout=120)
    assert proc.returncode == 0, errors
    return seen


def test_logs_on_a_terminal_spell_out_a_runs_escape_sequences(tmp_path: Path) -> None:
    """`oneoff logs` replaying a run (perhaps someone else's) on a terminal shows its escape
    sequences, lone CRs, bidi overrides and stray bytes spelled out; line ends stay."""
    root, run_id = loud_run(tmp_path)
    shown = on_a_terminal(["logs", run_id], root)
    assert b"\x1b" not in shown
    assert "\u202e".encode() not in shown
    assert b"\\x1b]52;c;cm0gLXJmIH4K\\x07" in shown
    assert b"hidden\\rshown" in shown
    assert b"price \\u202e01$" in shown
    assert b"bad byte \\xff" in shown
    # The pty itself turns "\n" into "\r\n": the stored CRLF arrives as CR CR LF.
    assert b"plain line\r\r\n" in shown


def test_logs_into_a_pipe_or_with_raw_are_the_stored_bytes(tmp_path: Path) -> None:
    """Into a pipe the stored bytes come out exactly (what the digest covers); `--raw`
    writes them as they are to a terminal too, for a run the viewer trusts."""
    root, run_id = loud_run(tmp_path)
    piped = subprocess.run(
        [sys.executable, "-m", "oneoff", "logs", run_id, "--stream", "stdout"],
        cwd=root, capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert b"\x1b]52;c;cm0gLXJmIH4K\x07\x1b[2Jhidden\rshown\n" in piped.stdout
    assert b"bad byte \xff\n" in piped.stdout
    raw = on_a_terminal(["logs", run_id, "--raw"], root)
    assert b"\x1b]52;c;cm0gLXJmIH4K\x07" in raw


def test_the_clis_own_text_streams_are_escaped() -> None:
    """Whatever a command prints as text passes the last line of defence: a control or
    bidi character becomes \\uXXXX; newlines and tabs stay."""
    from oneoff.cli._streams import escaping_streams

    saved = sys.stdout
    sys.stdout = io.StringIO()
    try:
        with escaping_streams():
            print("a\x1b[2J\tb\u202ec")
        written = sys.stdout.getvalue()
    finally:
        sys.stdout = saved
    assert written == "a\\u001b[2J\tb\\u202ec\n"


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_escaped_output_is_safe_and_independent_of_chunking(data: bytes, cuts: list[int]) -> None:
    """However a run's output is cut into chunks, the escaper shows the same text, and that
    text holds no control, format or bidi character but newlines, tabs and CRLF."""
    whole = OutputEscaper().feed(data, final=True)
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    escaper = OutputEscaper()
    pieces = [escaper.feed(data[a:b]) for a, b in itertools.pairwise(points)]
    assert b"".join(pieces) + escaper.feed(b"", final=True) == whole
    text = whole.decode("utf-8")
    assert set(unsafe_chars(text.replace("\r\n", "\n"))) <= {"\n", "\t"}


@given(st.text(max_size=200))
def test_escape_lines_leaves_only_line_breaks_and_tabs(text: str) -> None:
    """escape_lines keeps every safe character and spells out the rest."""
    shown = escape_lines(text)
    assert set(unsafe_chars(shown.replace("\r\n", "\n"))) <= {"\n", "\t"}
    if not unsafe_chars(text):
        assert shown == text
