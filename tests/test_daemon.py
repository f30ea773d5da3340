"""The preloaded runner (`oneoff daemon`): same results as in-process, or refusal and fallback.

Every test drives the installed console script against a real daemon in a private
directory, as a script would. ``served()`` (the daemon's own count) tells which way a
command went.
"""

from __future__ import annotations

import json
import os
import pty
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneoff.testing import make_app

ONEOFF = str(Path(sys.executable).parent / "oneoff")

MANIFEST = """
[environments.development]
config = [{ dotenv = ".env" }, { inherit = ["APP_*"] }]

[tasks.hello]
argv = ["python", "-c", "import os, sys; print('hello', sys.argv[1], os.getcwd())", "{name}"]
params.name = { type = "string", default = "world" }

[tasks.printenv]
argv = ["python", "-c", "import json, os; print(json.dumps(dict(os.environ)))"]

[tasks.fail]
argv = ["python", "-c", "import sys; sys.exit(int(sys.argv[1]))", "{code}"]
params.code = { type = "int", min = 0, max = 255 }

[tasks.login]
argv = ["python", "-c", "import os; print('token length', len(os.environ['ONEOFF_PARAM_TOKEN']))"]
params.token = { type = "secret" }

[tasks.wait]
argv = ["python", "-c", '''
import signal, sys, time, pathlib
def bye(signum, frame):
    print("task got", signum, flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, bye)
pathlib.Path("task.pid").write_text(str(__import__("os").getpid()))
print("waiting", flush=True)
time.sleep(60)
''']
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return make_app(tmp_path / "app", MANIFEST, {".env": "DATABASE_URL=sqlite:///x.db\n"})


@pytest.fixture
def daemon_env(tmp_path: Path) -> dict[str, str]:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "ONEOFF_"))}
    env["ONEOFF_DAEMON_DIR"] = str(directory)
    return env


@pytest.fixture
def daemon(app: Path, daemon_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A running daemon (started with a variable of its own); yields the client's env."""
    started = subprocess.run(
        [ONEOFF, "daemon", "start", "--idle", "120"], cwd=app, capture_output=True, text=True,
        env={**daemon_env, "APP_FROM_DAEMON": "daemon-side"},
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout
    yield daemon_env
    subprocess.run([ONEOFF, "daemon", "stop"], env=daemon_env, capture_output=True)


def oneoff(
    args: list[str], cwd: Path, env: dict[str, str], **kwargs: object
) -> subprocess.CompletedProcess[str]:
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [ONEOFF, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, **kwargs
    )


def served(env: dict[str, str]) -> int:
    status = subprocess.run(
        [ONEOFF, "daemon", "status"], env=env, capture_output=True, text=True, check=True
    )
    return int(status.stdout.split(" runs served")[0].rsplit(" ", 1)[1])


def runs(app: Path) -> list[dict[str, object]]:
    listed = subprocess.run(
        [ONEOFF, "runs", "--json"], cwd=app, capture_output=True, text=True, check=True,
        env={**os.environ, "ONEOFF_DAEMON": "off"},
    )  # fmt: skip
    return list(json.loads(listed.stdout))


def test_a_run_goes_through_the_daemon_and_is_recorded(app: Path, daemon: dict[str, str]) -> None:
    before = served(daemon)
    done = oneoff(["run", "hello", "--env", "development", "--param", "name=daemon"], app, daemon)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"hello daemon {app}"
    assert served(daemon) == before + 1
    assert runs(app)[0]["status"] == "succeeded"


def test_exit_codes_and_errors_come_back_unchanged(app: Path, daemon: dict[str, str]) -> None:
    assert (
        oneoff(["run", "fail", "--env", "development", "-p", "code=7"], app, daemon).returncode == 7
    )
    bad = oneoff(["run", "fail", "--env", "development", "-p", "code=$(id)"], app, daemon)
    assert bad.returncode == 2
    assert "code" in bad.stderr
    missing = oneoff(["run", "nope", "--env", "development"], app, daemon)
    assert missing.returncode == 2
    assert "nope" in missing.stderr


def test_the_task_sees_the_callers_environment_not_the_daemons(
    app: Path, daemon: dict[str, str]
) -> None:
    client = {**daemon, "APP_COLOR": "client-side", "LEAKY_SECRET": "from-the-shell"}
    before = served(daemon)
    done = oneoff(["run", "printenv", "--env", "development"], app, client)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[0])
    assert seen["APP_COLOR"] == "client-side"  # inherited from the caller, as in-process
    assert "APP_FROM_DAEMON" not in seen  # the daemon's own environment never leaks
    assert "LEAKY_SECRET" not in seen
    assert served(daemon) == before + 1
    in_process = oneoff(["run", "printenv", "--env", "development"], app,
                        {**client, "ONEOFF_DAEMON": "off"})  # fmt: skip
    theirs = json.loads(in_process.stdout.splitlines()[0])
    assert set(seen) == set(theirs)
    assert {k: v for k, v in seen.items() if not k.startswith("ONEOFF_RUN")} == {
        k: v for k, v in theirs.items() if not k.startswith("ONEOFF_RUN")
    }


def test_working_directory_and_stdin_are_the_callers(app: Path, daemon: dict[str, str]) -> None:
    sub = app / "deep" / "er"
    sub.mkdir(parents=True)
    before = served(daemon)
    done = oneoff(["run", "hello", "--env", "development"], sub, daemon)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"hello world {app}"  # found the app upward
    secret = oneoff(
        ["run", "login", "--env", "development", "--param", "token=@-"], app, daemon,
        input="a-token-of-some-length\n",
    )  # fmt: skip
    assert secret.returncode == 0, secret.stderr
    assert "token length 22" in secret.stdout
    assert served(daemon) == before + 2


def test_a_terminal_on_stdin_keeps_the_command_in_process(
    app: Path, daemon: dict[str, str]
) -> None:
    before = served(daemon)
    primary, secondary = pty.openpty()
    try:
        done = oneoff(["run", "hello", "--env", "development"], app, daemon, stdin=secondary)
    finally:
        os.close(primary)
        os.close(secondary)
    assert done.returncode == 0, done.stderr
    assert served(daemon) == before


@pytest.mark.parametrize("value", ["off", "0", "no"])
def test_oneoff_daemon_off_keeps_it_in_process(
    app: Path, daemon: dict[str, str], value: str
) -> None:
    before = served(daemon)
    assert oneoff(["tasks"], app, {**daemon, "ONEOFF_DAEMON": value}).returncode == 0
    assert served(daemon) == before


def test_a_caller_with_other_limits_is_refused_and_runs_in_process(
    app: Path, daemon: dict[str, str]
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512) - 1, hard))

    before = served(daemon)
    done = oneoff(
        ["run", "hello", "--env", "development"], app, {**daemon, "ONEOFF_DAEMON": "debug"},
        preexec_fn=lower,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "resource limits" in done.stderr
    assert served(daemon) == before


def start_waiting_task(app: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`oneoff run wait` through the daemon, once the task is up and waiting."""
    proc = subprocess.Popen(
        [ONEOFF, "run", "wait", "--env", "development"], cwd=app, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "waiting"
    return proc


def test_sigterm_to_the_caller_reaches_the_task(app: Path, daemon: dict[str, str]) -> None:
    proc = start_waiting_task(app, daemon)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert "task got 15" in out
    assert proc.returncode == 3  # the task's own exit code, as in-process
    assert runs(app)[0]["status"] in ("failed", "cancelled")


def test_a_killed_caller_stops_the_task_and_ends_the_run(app: Path, daemon: dict[str, str]) -> None:
    proc = start_waiting_task(app, daemon)
    task_pid = int((app / "task.pid").read_text())
    proc.kill()
    proc.communicate()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and runs(app)[0]["status"] == "running":
        time.sleep(0.1)
    assert runs(app)[0]["status"] != "running"
    with pytest.raises(ProcessLookupError):
        os.kill(task_pid, 0)


def test_changed_code_retires_the_daemon(app: Path, daemon: dict[str, str]) -> None:
    import oneoff._daemon.peer as module

    path = Path(module.__file__)
    st = path.stat()
    before = served(daemon)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        done = oneoff(["tasks"], app, {**daemon, "ONEOFF_DAEMON": "debug"})
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert done.returncode == 0
    assert "code changed" in done.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = subprocess.run([ONEOFF, "daemon", "status"], env=daemon, capture_output=True)
        if status.returncode == 1:
            break
        time.sleep(0.1)
    assert status.returncode == 1, "a daemon with stale code must exit"
    assert before >= 0


def test_garbage_on_the_socket_does_not_hurt_the_daemon(app: Path, daemon: dict[str, str]) -> None:
    from oneoff._daemon.wire import encode, recv_frame

    path = next(Path(daemon["ONEOFF_DAEMON_DIR"]).glob("daemon-*.sock"))
    for payload in (b"\xff\xff\xff\xff", b"\x00\x00\x00\x05abc", b"", b"\x00\x00\x00\x02\x00\x00"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(10)
            assert sock.recv(100) == b""  # dropped, nothing forked
    # A well-formed run request without descriptors is refused, not half-served.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(encode([b"run"] + [b"x"] * 20))
        sock.settimeout(10)
        assert recv_frame(sock) == [b"refused", b"malformed request"]
    assert oneoff(["tasks"], app, daemon).returncode == 0


def test_start_is_idempotent_and_stop_stops(app: Path, daemon: dict[str, str]) -> None:
    again = oneoff(["daemon", "start"], app, daemon)
    assert again.returncode == 0
    assert "already running" in again.stdout
    assert oneoff(["daemon", "stop"], app, daemon).stdout.strip() == "oneoff daemon stopped"
    status = oneoff(["daemon", "status"], app, daemon)
    assert status.returncode == 1
    assert "not running" in status.stdout
    assert not list(Path(daemon["ONEOFF_DAEMON_DIR"]).glob("daemon-*.sock"))
    assert oneoff(["tasks"], app, daemon).returncode == 0  # no daemon: in-process


def test_an_idle_daemon_exits_by_itself(app: Path, daemon_env: dict[str, str]) -> None:
    assert oneoff(["daemon", "start", "--idle", "1"], app, daemon_env).returncode == 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if oneoff(["daemon", "status"], app, daemon_env).returncode == 1:
            break
        time.sleep(0.2)
    assert oneoff(["daemon", "status"], app, daemon_env).returncode == 1
    assert not list(Path(daemon_env["ONEOFF_DAEMON_DIR"]).glob("daemon-*.sock"))


@pytest.mark.parametrize("mode", [0o755, 0o770, 0o701])
def test_a_directory_open_to_others_is_refused(
    app: Path, daemon_env: dict[str, str], mode: int
) -> None:
    directory = Path(daemon_env["ONEOFF_DAEMON_DIR"])
    directory.chmod(mode)
    done = oneoff(["daemon", "start"], app, daemon_env)
    assert done.returncode != 0
    assert "open to other users" in done.stderr
    assert not list(directory.glob("daemon-*.sock"))


def test_a_symlinked_directory_is_refused(
    app: Path, daemon_env: dict[str, str], tmp_path: Path
) -> None:
    link = tmp_path / "link"
    link.symlink_to(daemon_env["ONEOFF_DAEMON_DIR"])
    done = oneoff(["daemon", "start"], app, {**daemon_env, "ONEOFF_DAEMON_DIR": str(link)})
    assert done.returncode != 0
    assert "symlink" in done.stderr


def test_a_socket_in_a_directory_opened_later_is_ignored(app: Path, daemon: dict[str, str]) -> None:
    before = served(daemon)
    directory = Path(daemon["ONEOFF_DAEMON_DIR"])
    directory.chmod(0o777)
    try:
        done = oneoff(["tasks"], app, daemon)
    finally:
        directory.chmod(0o700)
    assert done.returncode == 0
    assert "ignoring the daemon socket" in done.stderr
    assert served(daemon) == before


# --- the message format and the process comparison, in-process -------------------------


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_wire_round_trips(fields: list[bytes]) -> None:
    from oneoff._daemon.wire import decode, encode

    frame = encode(fields)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert decode(frame[4:]) == fields


@given(st.binary(max_size=200))
def test_wire_rejects_garbage_with_its_own_error_only(body: bytes) -> None:
    from oneoff._daemon.wire import WireError, decode, encode

    try:
        fields = decode(body)
    except WireError:
        return
    assert encode(fields)[4:] == body  # whatever decodes, re-encodes to the same bytes


def test_wire_refuses_oversized_frames() -> None:
    from oneoff._daemon.wire import MAX_FRAME, WireError, encode, frame_size

    with pytest.raises(WireError, match="limit"):
        frame_size((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(WireError, match="limit"):
        encode([b"x" * MAX_FRAME])


def test_a_process_matches_itself_and_not_a_differently_limited_child() -> None:
    from oneoff._daemon.peer import differences, process_traits, umask_of

    own = process_traits()
    assert differences(own, os.getpid()) == []
    old = os.umask(0o027)
    try:
        assert umask_of(os.getpid()) == 0o027
    finally:
        os.umask(old)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    child = subprocess.Popen(
        ["sleep", "5"],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512) - 1, hard)),
    )
    try:
        time.sleep(0.2)
        assert differences(own, child.pid) == ["resource limits"]
    finally:
        child.kill()
        child.wait()
    assert differences(own, 2**22 + 12345) == [
        "the caller's /proc entry (the caller is gone or hidden)"
    ]


def test_a_caller_with_another_import_path_runs_in_process(
    app: Path, daemon: dict[str, str], tmp_path: Path
) -> None:
    before = served(daemon)
    env = {**daemon, "ONEOFF_DAEMON": "debug", "PYTHONPATH": str(tmp_path)}
    done = oneoff(["tasks"], app, env)
    assert done.returncode == 0, done.stderr
    assert "import path" in done.stderr
    assert served(daemon) == before
