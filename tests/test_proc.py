"""Tests for oneoff._proc: real child processes, real signals, no mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest

from oneoff._proc import ProcessResult, run_process
from oneoff.errors import CommandNotFound, ExecError

PY = sys.executable
ENV = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C.UTF-8"}

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux semantics")


class Sink:
    """Collects on_output chunks."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, bytes]] = []

    def __call__(self, fd: int, chunk: bytes) -> None:
        self.chunks.append((fd, chunk))

    def data(self, fd: int) -> bytes:
        return b"".join(c for f, c in self.chunks if f == fd)


def run_py(
    code: str, tmp_path: Path, *, timeout: float | None = 30, grace: float = 5.0, **kw: object
) -> tuple[ProcessResult, Sink]:
    sink = Sink()
    result = run_process(
        [PY, "-c", textwrap.dedent(code)],
        env=ENV,
        cwd=tmp_path,
        timeout=timeout,
        grace=grace,
        on_output=sink,
        **kw,  # type: ignore[arg-type]
    )
    return result, sink


def alive(pid: int) -> bool:
    """True if pid is a live process (a zombie is dead for our purposes)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def wait_for(predicate: object, seconds: float = 10.0) -> bool:
    assert callable(predicate)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# A runner process: runs one task through run_process and prints the result as JSON.
RUNNER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from oneoff._proc import run_process
    out = []
    argv = json.loads(sys.argv[1])
    opts = json.loads(sys.argv[2])
    r = run_process(argv, env=dict(os.environ), cwd=Path.cwd(),
                    on_output=lambda fd, c: out.append(c), **opts)
    print(json.dumps({"exit_code": r.exit_code, "status": r.status, "signal": r.signal,
                      "output": b"".join(out).decode(errors="replace")}), flush=True)
    """
)


def start_runner(
    task: str, tmp_path: Path, stdin: int | None = subprocess.DEVNULL, **opts: object
) -> subprocess.Popen[bytes]:
    opts.setdefault("timeout", 60)
    return subprocess.Popen(
        [PY, "-c", RUNNER, json.dumps([PY, "-c", textwrap.dedent(task)]), json.dumps(opts)],
        cwd=tmp_path,
        stdin=stdin,
        stdout=subprocess.PIPE,
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_code_propagates(tmp_path: Path, code: int) -> None:
    """The child's exit code is returned unchanged; only 0 counts as success."""
    result, _ = run_py(f"raise SystemExit({code})", tmp_path)
    assert result.exit_code == code
    assert result.signal is None
    assert result.status == ("succeeded" if code == 0 else "failed")
    assert result.duration >= 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGUSR1])
def test_killed_by_signal_gives_128_plus_n(tmp_path: Path, sig: int) -> None:
    """A child that dies from signal N exits with 128+N and reports N."""
    result, _ = run_py(f"import os; os.kill(os.getpid(), {int(sig)})", tmp_path)
    assert result.exit_code == 128 + sig
    assert result.signal == sig
    assert result.status == "failed"


TREE = """
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A grandchild in our group that ignores SIGTERM too.
    stubborn = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
    # A grandchild that detached into its own session.
    detached = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                                start_new_session=True)
    # A double-forked daemon: detached, and its parent is gone (orphaned).
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        pid = os.fork()
        if pid == 0:
            time.sleep(300)
            os._exit(0)
        os.write(w, str(pid).encode())
        os._exit(0)
    os.close(w)
    daemon = int(os.read(r, 100))
    os.wait()
    with open("pids", "w") as f:
        f.write(f"{stubborn.pid} {detached.pid} {daemon}")
    print("ready", flush=True)
    time.sleep(300)
"""


@pytest.mark.timeout(60)
def test_timeout_kills_the_whole_tree(tmp_path: Path) -> None:
    """On timeout the task and all its descendants die: stubborn, detached and orphaned ones."""
    result, sink = run_py(TREE, tmp_path, timeout=3, grace=0.5)
    assert result.status == "timed_out"
    assert result.signal == signal.SIGKILL
    assert result.exit_code == 128 + signal.SIGKILL
    assert b"ready" in sink.data(1)
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 3
    for pid in pids:
        assert wait_for(lambda pid=pid: not alive(pid), 5), f"pid {pid} survived"


@pytest.mark.timeout(60)
def test_timeout_sigterm_lets_the_task_exit_cleanly(tmp_path: Path) -> None:
    """A task that handles the timeout's SIGTERM ends with its own code and status timed_out."""
    code = """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))
        print("ready", flush=True)
        time.sleep(300)
    """
    result, _ = run_py(code, tmp_path, timeout=1.5, grace=30)
    assert result.status == "timed_out"
    assert result.exit_code == 7
    assert result.signal is None


@pytest.mark.timeout(60)
def test_leftover_grandchild_holding_output_is_killed(tmp_path: Path) -> None:
    """After the task exits, a grandchild keeping stdout open is killed instead of hanging us."""
    code = """
        import subprocess, sys
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        open("pid", "w").write(str(p.pid))
        print("bye", flush=True)
    """
    result, sink = run_py(code, tmp_path)
    assert result.status == "succeeded"
    assert sink.data(1) == b"bye\n"
    pid = int((tmp_path / "pid").read_text())
    assert wait_for(lambda: not alive(pid), 5)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_to_the_runner_are_forwarded(tmp_path: Path, sig: int) -> None:
    """SIGINT/SIGTERM sent to the runner reach the task, and ending it that way is a cancel."""
    task = """
        import signal, sys, time
        def on(signum, frame):
            open("marker", "w").write(str(signum))
            sys.exit(130)
        signal.signal(signal.SIGINT, on)
        signal.signal(signal.SIGTERM, on)
        open("ready", "w").close()
        time.sleep(300)
    """
    runner = start_runner(task, tmp_path)
    assert wait_for((tmp_path / "ready").exists, 20)
    runner.send_signal(sig)
    out, _ = runner.communicate(timeout=30)
    assert runner.returncode == 0
    result = json.loads(out)
    assert (tmp_path / "marker").read_text() == str(int(sig))
    assert result["status"] == "cancelled"
    assert result["exit_code"] == 130


@pytest.mark.timeout(60)
def test_forwarded_sigterm_escalates_to_sigkill_after_grace(tmp_path: Path) -> None:
    """A task ignoring a forwarded SIGTERM is SIGKILLed after the grace period."""
    task = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open("ready", "w").close()
        time.sleep(300)
    """
    runner = start_runner(task, tmp_path, grace=0.5)
    assert wait_for((tmp_path / "ready").exists, 20)
    runner.send_signal(signal.SIGTERM)
    out, _ = runner.communicate(timeout=30)
    result = json.loads(out)
    assert result["status"] == "cancelled"
    assert result["signal"] == signal.SIGKILL


@pytest.mark.timeout(60)
def test_a_second_sigint_escalates_to_sigterm(tmp_path: Path) -> None:
    """A task that shrugs off SIGINT gets SIGTERM at the second Ctrl-C, long before the grace."""
    task = """
        import signal, sys, time
        signal.signal(signal.SIGINT, lambda signum, frame: open("interrupted", "w").close())
        def on_term(signum, frame):
            open("marker", "w").write(str(signum))
            sys.exit(143)
        signal.signal(signal.SIGTERM, on_term)
        open("ready", "w").close()
        time.sleep(300)
    """
    runner = start_runner(task, tmp_path, grace=120)
    assert wait_for((tmp_path / "ready").exists, 20)
    runner.send_signal(signal.SIGINT)
    assert wait_for((tmp_path / "interrupted").exists, 20)  # one at a time: signals merge
    runner.send_signal(signal.SIGINT)
    out, _ = runner.communicate(timeout=30)
    result = json.loads(out)
    assert (tmp_path / "marker").read_text() == str(int(signal.SIGTERM))
    assert result["status"] == "cancelled"
    assert result["exit_code"] == 143


@pytest.mark.timeout(60)
def test_an_ignored_sigint_escalates_after_grace_to_sigterm_then_sigkill(tmp_path: Path) -> None:
    """A task ignoring SIGINT and SIGTERM is SIGTERMed one grace after the SIGINT, then
    SIGKILLed one grace later: a single Ctrl-C still ends it."""
    task = """
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open("ready", "w").close()
        time.sleep(300)
    """
    runner = start_runner(task, tmp_path, grace=0.5)
    assert wait_for((tmp_path / "ready").exists, 20)
    runner.send_signal(signal.SIGINT)
    out, _ = runner.communicate(timeout=30)
    result = json.loads(out)
    assert result["status"] == "cancelled"
    assert result["signal"] == signal.SIGKILL


@pytest.mark.timeout(60)
def test_child_dies_with_the_runner(tmp_path: Path) -> None:
    """When the runner is SIGKILLed, the task it was running is killed too (PDEATHSIG)."""
    task = """
        import os, time
        open("pid.tmp", "w").write(str(os.getpid()))
        os.rename("pid.tmp", "pid")
        time.sleep(300)
    """
    runner = start_runner(task, tmp_path)
    assert wait_for((tmp_path / "pid").exists, 20)
    child = int((tmp_path / "pid").read_text())
    assert alive(child)
    runner.kill()
    runner.wait(timeout=10)
    assert runner.stdout is not None
    runner.stdout.close()
    assert wait_for(lambda: not alive(child), 5)


@pytest.mark.timeout(60)
def test_stdout_and_stderr_are_separate_and_ordered(tmp_path: Path) -> None:
    """Each stream arrives complete and in order on its own fd number."""
    code = """
        import sys
        for i in range(2000):
            sys.stdout.write(f"out {i}\\n"); sys.stdout.flush()
            sys.stderr.write(f"err {i}\\n"); sys.stderr.flush()
    """
    result, sink = run_py(code, tmp_path)
    assert result.status == "succeeded"
    assert sink.data(1) == "".join(f"out {i}\n" for i in range(2000)).encode()
    assert sink.data(2) == "".join(f"err {i}\n" for i in range(2000)).encode()
    assert {fd for fd, _ in sink.chunks} == {1, 2}


@pytest.mark.timeout(120)
def test_large_output_without_newlines_streams_in_bounded_memory(tmp_path: Path) -> None:
    """20 MB without a newline are delivered in chunks of at most 64 KiB, never accumulated."""
    size = 20 * 1024 * 1024
    total = 0
    biggest = 0

    def count(fd: int, chunk: bytes) -> None:
        nonlocal total, biggest
        total += len(chunk)
        biggest = max(biggest, len(chunk))

    code = f"import sys; sys.stdout.buffer.write(b'x' * {size})"
    tracemalloc.start()
    try:
        result = run_process([PY, "-c", code], env=ENV, cwd=tmp_path, timeout=60, on_output=count)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status == "succeeded"
    assert total == size
    assert biggest <= 64 * 1024
    assert peak < 2 * 1024 * 1024


@pytest.mark.timeout(60)
def test_stdin_data_reaches_the_child_then_eof(tmp_path: Path) -> None:
    """stdin_data is the child's whole stdin, even when larger than a pipe buffer."""
    data = b"s3cret\n" * 100_000
    code = "import sys, hashlib; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"
    result, sink = run_py(code, tmp_path, stdin_data=data)
    import hashlib

    assert result.status == "succeeded"
    assert sink.data(1).strip() == hashlib.sha256(data).hexdigest().encode()


@pytest.mark.timeout(60)
def test_without_stdin_data_stdin_is_empty(tmp_path: Path) -> None:
    """A non-interactive task without stdin_data reads EOF at once."""
    result, sink = run_py("import sys; print(repr(sys.stdin.read()))", tmp_path)
    assert result.status == "succeeded"
    assert sink.data(1) == b"''\n"


@pytest.mark.timeout(60)
def test_env_is_exactly_what_was_passed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child sees exactly the given environment, nothing of the runner's."""
    monkeypatch.setenv("ONEOFF_LEAK", "must-not-appear")
    env = {"PATH": ENV["PATH"], "ONEOFF_X": "a b=c", "EMPTY": ""}
    sink = Sink()
    result = run_process(["env", "-0"], env=env, cwd=tmp_path, timeout=30, on_output=sink)
    assert result.status == "succeeded"
    seen = dict(item.split("=", 1) for item in sink.data(1).decode().split("\0") if item)
    assert seen == env


@pytest.mark.timeout(60)
def test_command_is_resolved_on_the_task_path(tmp_path: Path) -> None:
    """argv[0] is looked up on env's PATH, not the runner's, and runs in cwd."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "oneoff-test-tool"
    script.write_text("#!/bin/sh\necho tool in $(pwd)\n")
    script.chmod(0o755)
    sink = Sink()
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    result = run_process(["oneoff-test-tool"], env=env, cwd=tmp_path, timeout=30, on_output=sink)
    assert result.status == "succeeded"
    assert sink.data(1) == f"tool in {tmp_path}\n".encode()
    with pytest.raises(CommandNotFound, match="oneoff-test-tool"):
        run_process(["oneoff-test-tool"], env=ENV, cwd=tmp_path, timeout=30, on_output=sink)


@pytest.mark.timeout(60)
def test_missing_or_unrunnable_commands_raise(tmp_path: Path) -> None:
    """Unknown commands raise CommandNotFound; non-executables and directories raise ExecError."""
    sink = Sink()
    with pytest.raises(CommandNotFound, match="no-such-command-xyz"):
        run_process(["no-such-command-xyz"], env=ENV, cwd=tmp_path, timeout=5, on_output=sink)
    with pytest.raises(CommandNotFound):
        run_process(["./missing"], env=ENV, cwd=tmp_path, timeout=5, on_output=sink)
    (tmp_path / "plain").write_text("data")
    with pytest.raises(ExecError, match="permission denied"):
        run_process(["./plain"], env=ENV, cwd=tmp_path, timeout=5, on_output=sink)
    with pytest.raises(ExecError, match="directory"):
        run_process([str(tmp_path)], env=ENV, cwd=tmp_path, timeout=5, on_output=sink)
    (tmp_path / "badexe").write_text("#!/nonexistent/interpreter\n")
    (tmp_path / "badexe").chmod(0o755)
    with pytest.raises(ExecError, match="badexe"):
        run_process(["./badexe"], env=ENV, cwd=tmp_path, timeout=5, on_output=sink)
    assert sink.chunks == []


@pytest.mark.timeout(60)
def test_no_fd_leak_and_handlers_restored(tmp_path: Path) -> None:
    """Runs of every kind leave no fd open, no zombie behind, and the signal handlers as found."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    before = open_fds()
    run_py("print('x')", tmp_path)
    run_py("import time; time.sleep(30)", tmp_path, timeout=0.5, grace=0.2)
    run_py(TREE, tmp_path, timeout=2, grace=0.2)
    run_py("import sys; print(sys.stdin.read())", tmp_path, stdin_data=b"abc")
    with pytest.raises(CommandNotFound):
        run_process(["no-such-command-xyz"], env=ENV, cwd=tmp_path, timeout=5, on_output=Sink())
    assert open_fds() == before
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


@pytest.mark.timeout(60)
def test_sink_error_propagates_and_kills_the_task(tmp_path: Path) -> None:
    """If on_output raises, the error propagates and the task is killed and reaped."""

    def broken(fd: int, chunk: bytes) -> None:
        raise RuntimeError("sink failed")

    code = (
        "import os, time; open('pid', 'w').write(str(os.getpid()));"
        " print('x', flush=True); time.sleep(300)"
    )
    before = open_fds()
    with pytest.raises(RuntimeError, match="sink failed"):
        run_process([PY, "-c", code], env=ENV, cwd=tmp_path, timeout=60, on_output=broken)
    assert not alive(int((tmp_path / "pid").read_text()))
    assert open_fds() == before


@pytest.mark.timeout(60)
def test_interactive_runs_on_a_pty_and_relays_stdin(tmp_path: Path) -> None:
    """An interactive task sees a terminal, gets the operator's input and its output arrives."""
    task = """
        import os, sys
        print("tty", os.isatty(0), os.isatty(1), os.getsid(0) == os.getpid(), flush=True)
        print("got", sys.stdin.readline().strip(), flush=True)
    """
    runner = start_runner(task, tmp_path, stdin=subprocess.PIPE, interactive=True)
    out, _ = runner.communicate(b"hello\n", timeout=30)
    result = json.loads(out)
    assert result["status"] == "succeeded"
    assert "tty True True True" in result["output"]
    assert "got hello" in result["output"]


@pytest.mark.timeout(60)
def test_interactive_rejects_stdin_data(tmp_path: Path) -> None:
    """stdin_data is refused in interactive mode, where the pty would echo it."""
    with pytest.raises(ValueError, match="interactive"):
        run_py("pass", tmp_path, stdin_data=b"x", interactive=True)


@pytest.mark.timeout(60)
def test_interactive_with_a_terminal_relays_size_and_restores_it(tmp_path: Path) -> None:
    """With a tty stdin, the pty gets its size and keystrokes, and the tty mode is restored."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
        original = termios.tcgetattr(slave)
        task = """
            import os, sys
            print("size", os.get_terminal_size(0), flush=True)
            print("got", sys.stdin.readline().strip(), flush=True)
        """
        runner = start_runner(task, tmp_path, stdin=slave, interactive=True)
        assert wait_for(lambda: termios.tcgetattr(slave) != original, 20)  # raw mode is on
        os.write(master, b"hello\r")
        out, _ = runner.communicate(timeout=30)
        result = json.loads(out)
        assert result["status"] == "succeeded"
        assert "columns=111, lines=33" in result["output"]
        assert "got hello" in result["output"]
        assert termios.tcgetattr(slave) == original
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.timeout(60)
def test_interactive_propagates_window_size_changes(tmp_path: Path) -> None:
    """A SIGWINCH to the runner copies the operator terminal's new size to the task's pty."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        original = termios.tcgetattr(slave)
        task = """
            import os, time
            until = time.monotonic() + 20
            while os.get_terminal_size(0).columns != 99 and time.monotonic() < until:
                time.sleep(0.01)
            print("size", os.get_terminal_size(0), flush=True)
        """
        runner = start_runner(task, tmp_path, stdin=slave, interactive=True)
        assert wait_for(lambda: termios.tcgetattr(slave) != original, 20)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 44, 99, 0, 0))
        runner.send_signal(signal.SIGWINCH)
        out, _ = runner.communicate(timeout=30)
        result = json.loads(out)
        assert result["status"] == "succeeded"
        assert "columns=99, lines=44" in result["output"]
    finally:
        os.close(master)
        os.close(slave)
