"""The sandbox executor, for real under bubblewrap: read-only code, no network, no homes."""

from __future__ import annotations

import json
import os
import pwd
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneoff.testing import make_app, run_cli

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/bin/bwrap"), reason="bubblewrap is not installed (.ci/run installs it)"
)

TASKS = """
[environments.local]
[environments.boxed]
executor = { kind = "sandbox", writable = ["var"] }

[tasks.write-code]
argv = ["python", "-c", "open('code.py', 'a').write('# changed')"]

[tasks.write-var]
argv = ["python", "-c", "open('var/out.txt', 'w').write('ok'); print(open('var/out.txt').read())"]

[tasks.connect]
argv = ["python", "probe.py", "connect", "{port}"]
params.port = { type = "int", min = 1, max = 65535 }

[tasks.connect-net]
argv = ["python", "probe.py", "connect", "{port}"]
params.port = { type = "int", min = 1, max = 65535 }
network = true

[tasks.look]
argv = ["python", "probe.py", "look", "{marker}", "{home}"]
params.marker = { type = "string" }
params.home = { type = "string" }

[tasks.detach]
argv = ["python", "probe.py", "detach", "{seconds}"]
params.seconds = { type = "string" }

[tasks.cache]
argv = ["python", "probe.py", "cache", "{planted}"]
params.planted = { type = "string" }

[tasks.tmp]
argv = ["python", "probe.py", "tmp", "{probe}", "{scratch}"]
params.probe = { type = "string" }
params.scratch = { type = "string" }
"""

PROBE = """
import json, os, socket, subprocess, sys

what, *args = sys.argv[1:]
if what == "connect":
    socket.create_connection(("127.0.0.1", int(args[0])), timeout=5)
    print("connected")
elif what == "look":
    marker, home = args
    print(json.dumps({
        "marker": os.path.exists(marker),
        "ssh": os.path.exists(os.path.join(home, ".ssh")),
        "home": os.listdir(home),
        "pid": os.getpid(),
        "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    }))
elif what == "detach":
    child = subprocess.Popen(["sleep", args[0]], start_new_session=True)
    print("spawned", child.pid)
elif what == "cache":
    import importlib.util
    pyc = importlib.util.cache_from_source(os.path.abspath("helper.py"))
    cached = os.path.exists(pyc)  # before this process compiles it
    import helper
    try:
        open(os.path.join(os.path.dirname(pyc), "planted.pyc"), "wb").close()
        write = "written"
    except OSError as exc:
        write = exc.strerror
    print(json.dumps({"pyc": cached, "write": write,
                      "planted": os.path.exists(args[0])}))
elif what == "tmp":
    probe, scratch = args
    with open(scratch, "w") as fh:
        fh.write("x")
    print(os.path.exists(probe), os.path.exists(scratch))
"""


@pytest.fixture
def boxed_app(tmp_path: Path) -> Path:
    files = {"code.py": "print('code')\n", "var/.keep": "", "probe.py": PROBE, "helper.py": ""}
    return make_app(tmp_path / "app", TASKS, files)


def _run(app: Path, env: dict[str, str], task: str, where: str, *params: str) -> tuple[int, str]:
    args = ["run", task, "--env", where, "-q"]
    for param in params:
        args += ["-p", param]
    result = run_cli(args, cwd=app, env=env)
    return result.exit_code, result.stdout + result.stderr


def test_writes_to_the_code_are_refused(boxed_app: Path, cli_env: dict[str, str]) -> None:
    """A sandboxed task cannot change the app's code; the same task outside the sandbox can."""
    code, out = _run(boxed_app, cli_env, "write-code", "boxed")
    assert code == 1, out
    assert "Read-only file system" in out
    assert (boxed_app / "code.py").read_text() == "print('code')\n"
    code, out = _run(boxed_app, cli_env, "write-code", "local")
    assert code == 0, out
    assert (boxed_app / "code.py").read_text().endswith("# changed")


def test_declared_writable_directory_is_writable(boxed_app: Path, cli_env: dict[str, str]) -> None:
    """A directory the environment declares writable keeps what the task writes there."""
    code, out = _run(boxed_app, cli_env, "write-var", "boxed")
    assert code == 0, out
    assert (boxed_app / "var" / "out.txt").read_text() == "ok"


def test_tmp_is_private(boxed_app: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    """/tmp inside the sandbox is a fresh tmpfs: the host's files are not there, and what
    the task writes there is gone when it ends."""
    probe = tmp_path / "host-file"
    probe.write_text("the operator's")
    scratch = Path("/tmp") / f"oneoff-scratch-{uuid.uuid4().hex}"
    code, out = _run(boxed_app, cli_env, "tmp", "boxed", f"probe={probe}", f"scratch={scratch}")
    assert code == 0, out
    assert out.split() == ["False", "True"]
    assert not scratch.exists()


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's loopback that accepts connections until the test ends."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_network_is_refused_unless_declared(
    boxed_app: Path, cli_env: dict[str, str], listener: int
) -> None:
    """Without network = true the task cannot reach even the host's loopback; with it, it can."""
    port = f"port={listener}"
    code, out = _run(boxed_app, cli_env, "connect", "boxed", port)
    assert code == 1, out
    assert "connected" not in out
    code, out = _run(boxed_app, cli_env, "connect", "local", port)
    assert code == 0, out
    code, out = _run(boxed_app, cli_env, "connect-net", "boxed", port)
    assert code == 0, out
    assert "connected" in out


def test_operator_home_and_ssh_are_invisible(boxed_app: Path, cli_env: dict[str, str]) -> None:
    """The operator's home (and its ~/.ssh) is an empty directory to a sandboxed task."""
    home = pwd.getpwuid(os.getuid()).pw_dir
    marker = Path(home) / f".oneoff-sandbox-test-{uuid.uuid4().hex}"
    marker.write_text("operator's file")
    try:
        params = (f"marker={marker}", f"home={home}")
        code, out = _run(boxed_app, cli_env, "look", "boxed", *params)
        assert code == 0, out
        boxed = json.loads(out.splitlines()[0])
        code, out = _run(boxed_app, cli_env, "look", "local", *params)
        assert code == 0, out
        local = json.loads(out.splitlines()[0])
    finally:
        marker.unlink()
    assert local["marker"] is True
    assert boxed["marker"] is False
    assert boxed["ssh"] is False
    # Only the interpreter the app runs with and the app's bytecode cache come back,
    # read-only, when they live there.
    base = os.path.realpath(sys.base_prefix)
    cache = os.path.realpath(_cache_prefix(boxed_app))
    tops = (os.path.relpath(p, home).split(os.sep)[0] for p in (base, cache) if p.startswith(home))
    allowed = set(tops)
    assert set(boxed["home"]) <= allowed
    # A new pid namespace: the task sees only itself and the sandbox's own init.
    assert boxed["pid"] < 10
    assert len(boxed["procs"]) <= 3


def _cache_prefix(app: Path) -> str:
    from oneoff._bytecode import bytecode_env

    return bytecode_env(app)["PYTHONPYCACHEPREFIX"]


def test_bytecode_cache_is_read_only_and_hides_home_sources(
    boxed_app: Path, cli_env: dict[str, str]
) -> None:
    """A sandboxed task reads the app's bytecode cache (no recompiling on every run) but
    cannot plant bytecode in it, and sees no cached bytecode of sources in hidden homes."""
    home = os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir)
    prefix = os.path.realpath(_cache_prefix(boxed_app))
    planted = Path(prefix + home) / f"oneoff-test-{uuid.uuid4().hex}" / "secret.cpython-311.pyc"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"bytecode of a module in the operator's home")
    try:
        for _ in range(2):  # the first run compiles helper.py, the second finds it cached
            code, out = _run(boxed_app, cli_env, "cache", "local", f"planted={planted}")
            assert code == 0, out
        assert json.loads(out.splitlines()[0]) == {"pyc": True, "write": "written", "planted": True}
        code, out = _run(boxed_app, cli_env, "cache", "boxed", f"planted={planted}")
        assert code == 0, out
        boxed = json.loads(out.splitlines()[0])
    finally:
        planted.unlink()
        planted.parent.rmdir()
    assert boxed == {"pyc": True, "write": "Read-only file system", "planted": False}


def _sleepers(tag: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if tag.encode() in cmdline:
                found.append(int(entry))
    return found


def test_nothing_outlives_the_run(boxed_app: Path, cli_env: dict[str, str]) -> None:
    """A process the task detaches into its own session dies with the sandbox."""
    tag = f"3{uuid.uuid4().int % 10**6}.5"
    code, out = _run(boxed_app, cli_env, "detach", "boxed", f"seconds={tag}")
    assert code == 0, out
    assert "spawned" in out
    assert _sleepers(tag) == []


def test_plan_shows_and_hashes_the_sandbox(boxed_app: Path, cli_env: dict[str, str]) -> None:
    """`oneoff plan` names the sandbox, and the plan hash differs from the local one."""
    boxed = run_cli(["plan", "write-code", "--env", "boxed", "--json"], cwd=boxed_app, env=cli_env)
    local = run_cli(["plan", "write-code", "--env", "local", "--json"], cwd=boxed_app, env=cli_env)
    assert boxed.exit_code == 0, boxed.stderr
    doc = json.loads(boxed.stdout)["document"]
    assert doc["executor"] == {"kind": "sandbox", "writable": ["var"], "network": False}
    assert "executor" not in json.loads(local.stdout)["document"]
    text = run_cli(["plan", "connect-net", "--env", "boxed", "-p", "port=1"], cwd=boxed_app)
    assert "executor   sandbox (bubblewrap; code read-only, private /tmp, network;" in text.stdout


def test_secrets_never_reach_the_bwrap_command_line(
    boxed_app: Path, cli_env: dict[str, str]
) -> None:
    """The environment reaches the task by inheritance, never as bubblewrap arguments."""
    from oneoff._app import open_app
    from oneoff._executor.sandbox import bwrap_argv
    from oneoff._plan import build_plan

    (boxed_app / ".env").write_text("API_TOKEN=very-secret-token-value\n")
    text = (boxed_app / "oneoff.toml").read_text()
    (boxed_app / "oneoff.toml").write_text(
        text.replace(
            'executor = { kind = "sandbox", writable = ["var"] }',
            'executor = { kind = "sandbox", writable = ["var"] }\nconfig = [{ dotenv = ".env" }]',
        )
    )
    app = open_app(boxed_app)
    try:
        plan = build_plan(app.project, "write-code", "boxed", {}, fingerprint_key=b"k" * 32)
        argv = bwrap_argv(plan, plan.env.values, "/usr/bin/bwrap", ["/root"])
    finally:
        app.close()
    assert plan.env.values["API_TOKEN"] == "very-secret-token-value"
    assert not any("very-secret" in a for a in argv)
    assert "--unshare-net" in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
