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
import signal, subprocess, sys, time, pathlib
def bye(signum, frame):
    print("task got", signum, flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, bye)
# A grandchild in a session of its own: no process group or terminal signal reaches it.
helper = subprocess.Popen(["sleep", "60"], start_new_session=True)
pathlib.Path("helper.pid").write_text(str(helper.pid))
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
    before = served(daemon)
    assert (
        oneoff(["run", "fail", "--env", "development", "-p", "code=7"], app, daemon).returncode == 7
    )
    bad = oneoff(["run", "fail", "--env", "development", "-p", "code=$(id)"], app, daemon)
    assert bad.returncode == 2
    assert "code" in bad.stderr
    missing = oneoff(["run", "nope", "--env", "development"], app, daemon)
    assert missing.returncode == 2
    assert "nope" in missing.stderr
    assert served(daemon) == before + 3
    in_process = oneoff(
        ["run", "nope", "--env", "development"], app, {**daemon, "ONEOFF_DAEMON": "off"}
    )

    def without_time(stderr: str) -> dict[str, object]:
        record = dict(json.loads(stderr))
        del record["ts"]
        return record

    assert in_process.returncode == missing.returncode
    assert without_time(in_process.stderr) == without_time(missing.stderr)


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
    outcomes = []
    for env in ({**daemon, "ONEOFF_DAEMON": "off"}, daemon):
        before = served(daemon)
        proc = start_waiting_task(app, env)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert "task got 15" in out
        outcomes.append((proc.returncode, runs(app)[0]["status"], served(daemon) - before))
    assert outcomes == [(3, "cancelled", 0), (3, "cancelled", 1)]  # same as in-process


def test_stopping_the_daemon_lets_runs_in_progress_finish(
    app: Path, daemon: dict[str, str]
) -> None:
    pid = _daemon_pid(daemon)
    proc = start_waiting_task(app, daemon)
    assert oneoff(["daemon", "stop"], app, daemon).returncode == 0
    assert oneoff(["daemon", "status"], app, daemon).returncode == 1  # the socket is gone
    assert not gone(pid, within=0.5)  # but it still guards the run in progress
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert "task got 15" in out
    assert proc.returncode == 3
    assert gone(pid)  # its last run over, the daemon exits


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
    assert "hello" in done.stdout  # refused before anything ran there, so it ran in-process


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


# --- the task's process state: the same through the daemon as in-process ----------------

PROBE = """
import json, os
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
print(json.dumps({
    "fds": sorted(os.listdir("/proc/self/fd")),
    "ignored": status["SigIgn"].strip(),
    "blocked": status["SigBlk"].strip(),
    "umask": status["Umask"].strip(),
    "own_group": os.getpgid(0) == os.getpid(),
}))
"""


def test_the_task_gets_the_same_process_state_as_in_process(
    app: Path, daemon: dict[str, str]
) -> None:
    (app / "probe.py").write_text(PROBE)
    with (app / "oneoff.toml").open("a") as fh:
        fh.write('\n[tasks.probe]\nargv = ["python", "probe.py"]\n')

    def caller() -> None:  # like `nohup`, with a umask of its own
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        os.umask(0o027)

    seen = []
    for env in ({**daemon, "ONEOFF_DAEMON": "off"}, daemon):
        before = served(daemon)
        done = oneoff(["run", "probe", "--env", "development"], app, env, preexec_fn=caller)
        assert done.returncode == 0, done.stderr
        seen.append((json.loads(done.stdout.splitlines()[0]), served(daemon) - before))
    (in_process, none), (through_daemon, one) = seen
    assert (none, one) == (0, 1)
    assert through_daemon == in_process
    assert int(in_process["ignored"], 16) & (1 << (signal.SIGHUP - 1))  # nohup held


def test_stdin_bytes_arrive_unchanged(app: Path, daemon: dict[str, str]) -> None:
    lengths = []
    for env in ({**daemon, "ONEOFF_DAEMON": "off"}, daemon):
        done = oneoff(
            ["run", "login", "--env", "development", "--param", "token=@-"], app, env,
            input="abcdefgh\rXYZ\r\nmore\r\n",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        lengths.append(done.stdout.splitlines()[0])
    assert lengths[0] == lengths[1] == "token length 18"


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _daemon_pid(env: dict[str, str]) -> int:
    status = subprocess.run([ONEOFF, "daemon", "status"], env=env, capture_output=True, text=True)
    return int(status.stdout.split("(pid ")[1].split(",")[0])


def test_descriptors_beyond_the_limit_are_dropped_and_closed(
    app: Path, daemon: dict[str, str]
) -> None:
    from oneoff._daemon.wire import encode

    pid = _daemon_pid(daemon)  # a round trip: the loop runs and its spare exists
    before = _fd_count(pid)
    path = next(Path(daemon["ONEOFF_DAEMON_DIR"]).glob("daemon-*.sock"))
    extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(6)]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            socket.send_fds(sock, [encode([b"run"])], extra)
            sock.settimeout(10)
            assert sock.recv(100) == b""  # dropped without an answer
    finally:
        for fd in extra:
            os.close(fd)
    served(daemon)  # another round trip: the drop is complete
    assert _fd_count(pid) == before
    assert oneoff(["tasks"], app, daemon).returncode == 0


def test_a_stalled_client_does_not_hold_up_others(app: Path, daemon: dict[str, str]) -> None:
    from oneoff._daemon.server import REQUEST_SECONDS

    path = next(Path(daemon["ONEOFF_DAEMON_DIR"]).glob("daemon-*.sock"))
    before = served(daemon)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled:
        stalled.connect(str(path))
        stalled.sendall(b"\x00\x00\x01")  # part of a length, then nothing
        done = oneoff(["run", "hello", "--env", "development"], app, daemon)
        assert done.returncode == 0, done.stderr
        assert served(daemon) == before + 1  # served while the other one stalls
        stalled.settimeout(REQUEST_SECONDS + 10)
        assert stalled.recv(100) == b""  # and the staller is cut off after its deadline


def test_the_daemon_keeps_no_descriptor_its_starter_had(
    app: Path, daemon_env: dict[str, str]
) -> None:
    read_end, write_end = os.pipe()
    try:
        started = subprocess.run(
            [ONEOFF, "daemon", "start"], cwd=app, env=daemon_env, pass_fds=[write_end],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        os.close(write_end)
        write_end = -1
        os.set_blocking(read_end, False)
        assert os.read(read_end, 1) == b""  # EOF: nobody holds the write end any more
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
        subprocess.run([ONEOFF, "daemon", "stop"], env=daemon_env, capture_output=True)


def test_concurrent_starts_leave_one_daemon(app: Path, daemon_env: dict[str, str]) -> None:
    starts = [
        subprocess.Popen(
            [ONEOFF, "daemon", "start"],
            cwd=app,
            env=daemon_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        outputs = [proc.communicate(timeout=60)[0] for proc in starts]
        assert [p.returncode for p in starts] == [0, 0, 0]
        assert sum("started" in out for out in outputs) == 1, outputs
        assert sum("already running" in out for out in outputs) == 2, outputs
    finally:
        subprocess.run([ONEOFF, "daemon", "stop"], env=daemon_env, capture_output=True)
    assert subprocess.run([ONEOFF, "daemon", "status"], env=daemon_env).returncode == 1


def test_a_socket_served_by_another_uid_is_ignored(
    app: Path,
    daemon: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from oneoff._daemon import client

    path = str(next(Path(daemon["ONEOFF_DAEMON_DIR"]).glob("daemon-*.sock")))
    real = os.getuid()
    monkeypatch.setattr(client.os, "getuid", lambda: real + 4242)
    monkeypatch.setenv("ONEOFF_LOG_FORMAT", "text")
    assert client._connect(path) is None
    assert f"served by uid {real}" in capsys.readouterr().err


def gone(pid: int, within: float = 10.0) -> bool:
    """True once ``pid`` no longer exists or is a zombie (dead, awaiting its parent)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rpartition(")")[2].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_runner_that_dies_is_reported_never_retried(app: Path, daemon: dict[str, str]) -> None:
    proc = start_waiting_task(app, daemon)
    task_pid = int((app / "task.pid").read_text())
    helper_pid = int((app / "helper.pid").read_text())
    with open(f"/proc/{task_pid}/stat") as fh:
        runner_pid = int(fh.read().rpartition(")")[2].split()[1])
    os.kill(runner_pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "ended without an exit code" in err
    # The daemon (a subreaper) inherits what the dead runner left and kills all of it,
    # the grandchild in its own session too.
    assert gone(task_pid)
    assert gone(helper_pid)
    waits = [r for r in runs(app) if r["task"] == "wait"]
    assert len(waits) == 1  # the run it started, and no second one in-process
    assert waits[0]["status"] == "lost"  # found by the next command (`runs`)


def test_without_a_spare_the_daemon_forks_on_demand(app: Path, daemon: dict[str, str]) -> None:
    pid = _daemon_pid(daemon)
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        spares = [int(p) for p in fh.read().split()]
    assert len(spares) == 1  # idle: just the spare
    os.kill(spares[0], signal.SIGKILL)
    assert gone(spares[0])
    before = served(daemon)
    done = oneoff(["run", "hello", "--env", "development"], app, daemon)
    assert done.returncode == 0, done.stderr
    assert served(daemon) == before + 1
    assert oneoff(["run", "hello", "--env", "development"], app, daemon).returncode == 0
    assert served(daemon) == before + 2


# --- the daemon as guard and book-keeper ---------------------------------------------------


def audit_counts(app: Path) -> tuple[int, int]:
    done = oneoff(["audit", "verify", "--json"], app, {**os.environ, "ONEOFF_DAEMON": "off"})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    return int(report["events"]), int(report["checkpointed"])


def test_runs_through_the_daemon_get_their_checkpoint(app: Path, daemon: dict[str, str]) -> None:
    before = served(daemon)
    for _ in range(3):
        assert oneoff(["run", "hello", "--env", "development"], app, daemon).returncode == 0
    assert served(daemon) == before + 3
    deadline = time.monotonic() + 10
    events, checkpointed = audit_counts(app)
    while checkpointed != events and time.monotonic() < deadline:
        time.sleep(0.1)  # signed right after the reply, by the runner
        events, checkpointed = audit_counts(app)
    assert checkpointed == events >= 6


def test_one_runner_dying_leaves_other_runs_alone(app: Path, daemon: dict[str, str]) -> None:
    first = start_waiting_task(app, daemon)
    first_task = int((app / "task.pid").read_text())
    second = start_waiting_task(app, daemon)
    second_task = int((app / "task.pid").read_text())
    with open(f"/proc/{first_task}/stat") as fh:
        first_runner = int(fh.read().rpartition(")")[2].split()[1])
    os.kill(first_runner, signal.SIGKILL)
    first.communicate(timeout=30)
    assert gone(first_task)
    assert not gone(second_task, within=1.0)  # the other run goes on
    second.send_signal(signal.SIGTERM)
    out, _ = second.communicate(timeout=30)
    assert "task got 15" in out
    assert second.returncode == 3


def test_sigterm_to_the_daemon_lets_runs_in_progress_finish(
    app: Path, daemon: dict[str, str]
) -> None:
    pid = _daemon_pid(daemon)
    proc = start_waiting_task(app, daemon)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while oneoff(["daemon", "status"], app, daemon).returncode == 0:
        assert time.monotonic() < deadline, "SIGTERM must close the socket"
        time.sleep(0.1)
    assert not gone(pid, within=0.5)  # still guarding
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, "task got 15" in out) == (3, True)
    assert gone(pid)


def test_a_run_longer_than_the_idle_time_keeps_its_daemon(
    app: Path, daemon_env: dict[str, str]
) -> None:
    assert oneoff(["daemon", "start", "--idle", "1"], app, daemon_env).returncode == 0
    try:
        pid = _daemon_pid(daemon_env)
        proc = start_waiting_task(app, daemon_env)
        time.sleep(2.5)  # well past --idle
        assert not gone(pid, within=0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert (proc.returncode, "task got 15" in out) == (3, True)
        assert gone(pid)  # idle again after the run: it exits by itself
    finally:
        subprocess.run([ONEOFF, "daemon", "stop"], env=daemon_env, capture_output=True)


NO_PIDFD_DAEMON = """
import os, sys
sys.path[0] = os.path.dirname(sys.argv[1])  # as the console script's own path
del os.pidfd_open  # as on Linux < 5.3, or under a seccomp profile that refuses it
from oneoff._daemon.server import serve
serve(None, 60.0, foreground=True)
"""


def test_without_pidfds_runners_are_still_guarded_not_killed(
    app: Path, daemon_env: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "daemon.py"
    script.write_text(NO_PIDFD_DAEMON)
    # Another name of the same interpreter than the console script's shebang uses (python
    # or python3): both must reach the same daemon.
    shebang = Path(Path(ONEOFF).read_text().splitlines()[0].removeprefix("#!"))
    other = shebang.with_name("python3" if shebang.name == "python" else "python")
    server = subprocess.Popen(
        [str(other if other.exists() else shebang), str(script), ONEOFF], env=daemon_env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        status = [ONEOFF, "daemon", "status"]
        while subprocess.run(status, env=daemon_env, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline
            assert server.poll() is None
            time.sleep(0.1)
        before = served(daemon_env)
        proc = start_waiting_task(app, daemon_env)
        task_pid = int((app / "task.pid").read_text())
        time.sleep(1.5)  # a sweep or two: the runner must not be taken for an orphan
        assert not gone(task_pid, within=0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert (proc.returncode, "task got 15" in out) == (3, True)
        assert served(daemon_env) == before + 1
    finally:
        subprocess.run([ONEOFF, "daemon", "stop"], env=daemon_env, capture_output=True)
        server.terminate()  # should it not have heard the stop
        server.communicate(timeout=30)
