"""A run's output end to end: secrets redacted everywhere, stored capped, replayed by `logs`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from oneoff._redact import forms_of
from oneoff._store.sqlite import SQLiteStore
from oneoff.testing import make_app, run_cli

API_TOKEN = "tok/en+ab?cd&x=1é%"
PARAM_ENV = 'pw "quoted" \\ back/slash+ü'
PARAM_STDIN = "stdin-secret-\u20ac-value+/"

LEAK = r"""
import base64, json, os, sys, time, urllib.parse
secrets = [os.environ["API_TOKEN"], os.environ["ONEOFF_PARAM_PW"], sys.stdin.readline()[:-1]]
streams = [sys.stdout.buffer, sys.stderr.buffer]
for n, s in enumerate(secrets):
    raw = s.encode()
    forms = [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode(),
             raw.hex().upper().encode(), urllib.parse.quote(s, safe="").encode(),
             urllib.parse.quote_plus(s, safe="").encode(), json.dumps(s)[1:-1].encode(),
             json.dumps(s, ensure_ascii=False)[1:-1].encode()]
    forms += [base64.b64encode(pad + raw + b"tail") for pad in (b"", b"x", b"xy")]
    for i, form in enumerate(forms):
        out = streams[(n + i) % 2]
        for cut in range(len(form) + 1):
            out.write(b"<" + form[:cut]); out.flush()
            if cut == len(form) // 2:
                time.sleep(0.02)  # a pause: the halves arrive as separate reads
            out.write(form[cut:] + b">\n"); out.flush()
print("done")
"""

MANIFEST = """
[environments.development]
config = [{ dotenv = ".env" }]
secrets = ["API_TOKEN"]

[tasks.leak]
argv = ["python", "leak.py"]
params.pw = { type = "secret" }
params.pin = { type = "secret", deliver = "stdin" }
"""


@pytest.fixture
def leaky(tmp_path: Path) -> Path:
    root = make_app(
        tmp_path / "app", MANIFEST, {".env": f"API_TOKEN={API_TOKEN}\n", "leak.py": LEAK}
    )
    (tmp_path / "pw").write_text(PARAM_ENV)
    (tmp_path / "pin").write_text(PARAM_STDIN)
    return root


def test_planted_secrets_never_reach_terminal_store_or_audit(
    leaky: Path, cli_env: dict[str, str]
) -> None:
    """Secrets in every encoding, split at every position, are redacted everywhere."""
    pw, pin = leaky.parent / "pw", leaky.parent / "pin"
    result = run_cli(
        ["run", "leak", "-p", f"pw=@{pw}", "-p", f"pin=@{pin}"], cwd=leaky, env=cli_env
    )
    assert result.exit_code == 0, result.stderr
    assert "done" in result.stdout
    assert "[REDACTED:API_TOKEN]" in result.stdout + result.stderr
    assert "[REDACTED:ONEOFF_PARAM_PW]" in result.stdout + result.stderr
    assert "[REDACTED:pin]" in result.stdout + result.stderr
    run_id = json.loads(run_cli(["runs", "--json"], cwd=leaky, env=cli_env).stdout)[0]["id"]
    replayed = run_cli(["logs", run_id], cwd=leaky, env=cli_env)
    assert replayed.exit_code == 0, replayed.stderr
    assert replayed.stdout == result.stdout
    conn = sqlite3.connect(leaky / ".oneoff" / "state.db")
    chunks = [zlib.decompress(d) for (d,) in conn.execute("SELECT data FROM output_chunks")]
    everything = b"".join(
        [result.stdout.encode(), result.stderr.encode(), replayed.output.encode(), *chunks]
        + [repr(row).encode() for row in conn.execute("SELECT * FROM audit_events")]
        + [repr(row).encode() for row in conn.execute("SELECT * FROM runs")]
    )
    assert b"done" in b"".join(chunks)
    for secret in (API_TOKEN, PARAM_ENV, PARAM_STDIN):
        for form in forms_of(secret):
            assert form not in everything, (secret, form)


def test_a_secret_too_short_to_redact_refuses_the_run(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A secret shorter than six characters refuses the run: exit 9, nothing ran or recorded."""
    root = make_app(
        tmp_path / "app",
        """
        [environments.development]
        config = [{ dotenv = ".env" }]
        secrets = ["PIN"]
        [tasks.touch]
        argv = ["python", "-c", "open('ran', 'w')"]
        """,
        {".env": "PIN=1234\n"},
    )
    result = run_cli(["run", "touch"], cwd=root, env=cli_env)
    assert result.exit_code == 9, result.output
    assert "secret PIN is 4 characters long, too short to redact safely" in result.stderr
    assert not (root / "ran").exists()
    assert json.loads(run_cli(["runs", "--json"], cwd=root, env=cli_env).stdout) == []


BINARY = r"""
import sys
data = bytes(range(256)) * 64 + b"\xff\xfe invalid utf-8 \xc3\x28"
sys.stdout.buffer.write(data); sys.stderr.buffer.write(data[::-1])
"""

FLOOD = r"""
import sys
chunk = b"a" * 65536
for _ in range(int(sys.argv[1]) * 16):
    sys.stdout.buffer.write(chunk)
"""


def bounded_app(tmp_path: Path) -> Path:
    return make_app(
        tmp_path / "app",
        """
        [environments.development]
        [audit]
        output_cap = "1MiB"
        [tasks.binary]
        argv = ["python", "binary.py"]
        [tasks.flood]
        argv = ["python", "flood.py", "{mib}"]
        params.mib = { type = "int", min = 1, max = 4096 }
        """,
        {"binary.py": BINARY, "flood.py": FLOOD},
    )


def oneoff(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "oneoff", *args], cwd=cwd, env=env, capture_output=True, check=False
    )


def test_binary_output_is_shown_stored_and_replayed_exactly(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Bytes that are not UTF-8 pass through untouched, and `logs` replays them per stream."""
    root = bounded_app(tmp_path)
    ran = oneoff(["run", "binary", "-q"], root, cli_env)
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(oneoff(["runs", "--json"], root, cli_env).stdout)[0]["id"]
    replayed = oneoff(["logs", run_id], root, cli_env)
    assert replayed.stdout == ran.stdout
    assert replayed.stderr == ran.stderr
    assert ran.stdout.endswith(b"\xc3\x28")
    as_json = oneoff(["logs", run_id, "--json", "--stream", "stderr"], root, cli_env)
    assert {json.loads(line)["stream"] for line in as_json.stdout.splitlines()} == {"stderr"}


MEASURE = """
import resource, subprocess, sys
out = open(sys.argv[1], "wb")
done = subprocess.run([sys.executable, "-m", "oneoff", *sys.argv[2:]], stdout=out)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_a_flood_without_newlines_stays_bounded_and_is_marked_truncated(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """64 MiB without a newline: all shown, 1 MiB stored, truncation marked, memory bounded."""
    root = bounded_app(tmp_path)
    shown = tmp_path / "shown"
    measured = subprocess.run(
        [sys.executable, "-c", MEASURE, str(shown), "run", "flood", "-p", "mib=64", "-q"],
        cwd=root, env=cli_env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    code, max_rss_kib = map(int, measured.stdout.split())
    assert code == 0, measured.stderr
    assert shown.stat().st_size == 64 * 1024 * 1024
    assert max_rss_kib < 100 * 1024  # the runner (or the task) never held the output
    run = json.loads(oneoff(["runs", "--json"], root, cli_env).stdout)[0]
    assert run["output_truncated"] is True
    assert run["output_bytes"] == 64 * 1024 * 1024
    replayed = oneoff(["logs", run["id"]], root, {**cli_env, "ONEOFF_LOG_FORMAT": "json"})
    assert replayed.stdout == b"a" * 1024 * 1024
    warning = json.loads(replayed.stderr.decode().splitlines()[-1])
    assert warning["event"] == "logs.truncated"
    assert warning["output_bytes"] == 64 * 1024 * 1024


def test_logs_refuses_output_that_no_longer_matches_its_digest(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A stored output chunk altered after the run no longer matches the recorded digest."""
    root = bounded_app(tmp_path)
    assert oneoff(["run", "binary", "-q"], root, cli_env).returncode == 0
    run_id = json.loads(oneoff(["runs", "--json"], root, cli_env).stdout)[0]["id"]
    conn = sqlite3.connect(root / ".oneoff" / "state.db", isolation_level=None)
    conn.execute(
        "UPDATE output_chunks SET data = ?, size = 3 WHERE seq = 1", (zlib.compress(b"abc"),)
    )
    result = oneoff(["logs", run_id], root, cli_env)
    assert result.returncode == 7
    assert b"does not match its recorded digest" in result.stderr


def recorder_store(tmp_path: Path) -> SQLiteStore:
    from oneoff._store.interface import RunRecord
    from oneoff._store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "state.db")
    with store.tx():
        store.create_run(
            RunRecord(id="r1", task="t", environment="e", params={}, principal="p",
                      plan_hash="h", status="running", started_at="now", runner_host="h",
                      runner_pid=1, runner_token="x")
        )  # fmt: skip
    return store


def test_an_interactive_prompt_is_shown_while_the_task_waits(tmp_path: Path) -> None:
    """With quiet release on, output held back for redaction shows once the task goes quiet."""
    import io
    import threading

    from oneoff._output import OutputRecorder
    from oneoff._redact import Redactor

    store = recorder_store(tmp_path)
    secrets = {"TOKEN": "hunter2-secret"}
    shown = io.BytesIO()
    written = threading.Event()

    class Sink(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            shown.write(data)
            written.set()
            return len(data)

    recorder = OutputRecorder(
        store, "r1", {1: Redactor(secrets), 2: Redactor(secrets)}, {1: Sink(), 2: Sink()},
        quiet_release=0.01,
    )  # fmt: skip
    recorder(1, b"hunter2-secret Password: hun")  # could be the secret again: held
    assert written.wait(timeout=30)
    while b"Password: hun" not in shown.getvalue():
        written.clear()
        assert written.wait(timeout=30)
    summary = recorder.close()
    assert shown.getvalue() == b"[REDACTED:TOKEN] Password: hun"
    assert summary.stored == len(shown.getvalue())


def test_a_prompt_that_cannot_begin_a_secret_shows_at_once(tmp_path: Path) -> None:
    """An interactive task's last output shows as it is read, without waiting for quiet."""
    import io

    from oneoff._output import OutputRecorder
    from oneoff._redact import Redactor

    shown = {1: io.BytesIO(), 2: io.BytesIO()}
    secret = Redactor({"TOKEN": "hunter2-secret"})
    recorder = OutputRecorder(
        recorder_store(tmp_path), "r1", {1: secret, 2: secret.fresh()}, shown,
        quiet_release=3600.0,  # never, within this test
    )  # fmt: skip
    recorder(1, b"Connecting... done\nPassword: ")
    assert shown[1].getvalue() == b"Connecting... done\nPassword: "  # no wait, no thread
    recorder(2, b"warning: token hunt")
    assert shown[2].getvalue() == b"warning: token "  # "hunt" may begin the secret
    recorder(2, b"er2-secret rejected\n")
    assert shown[2].getvalue() == b"warning: token [REDACTED:TOKEN] rejected\n"
    summary = recorder.close()
    assert summary.bytes == len(shown[1].getvalue()) + len(shown[2].getvalue())


def test_a_secret_split_across_small_writes_is_still_redacted(tmp_path: Path) -> None:
    """Released early or not, a secret written a few bytes at a time never shows."""
    import io

    from oneoff._output import OutputRecorder, replay
    from oneoff._redact import Redactor

    value = "hunter2-secret"
    redactor = Redactor({"TOKEN": value})
    store = recorder_store(tmp_path)
    shown = {1: io.BytesIO(), 2: io.BytesIO()}
    recorder = OutputRecorder(store, "r1", {1: redactor, 2: redactor.fresh()}, shown)
    text = b"".join(b"line " + form + b" end\n" for form in forms_of(value))
    for at in range(0, len(text), 3):
        recorder(1, text[at : at + 3])
    recorder.close()
    out = shown[1].getvalue()
    assert out == redactor.redact(text)
    assert all(form not in out for form in forms_of(value))
    assert b"".join(piece for _, piece in replay(store, "r1")) == out
