"""Containment faults with real runners, real grandchildren and real SIGKILL: nothing of a
run outlives its runner past the next oneoff command, and its lock waits for its tree."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneoff._contain import RunTree, capability
from oneoff.testing import make_app

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux semantics")

ONEOFF = str(Path(sys.executable).parent / "oneoff")

# `tree` starts a grandchild in its own process group and one in a session of its own
# (double fork + setsid: re-parented away from the task at once), then waits.
TREE = """
import json, os, subprocess, time
group = subprocess.Popen(["sleep", "300"])
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode()); os.close(w)
        time.sleep(300)
    os._exit(0)
os.close(w)
session = int(os.read(r, 32))
pids = [os.getpid(), group.pid, session]
open("tree.tmp", "w").write(json.dumps({"run": os.environ["ONEOFF_RUN_ID"], "pids": pids}))
os.rename("tree.tmp", "tree.json")
print("ready", flush=True)
time.sleep(300)
"""

CHECK = """
import json
pids = json.load(open("tree.json"))["pids"]
def alive(p):
    try:
        return open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False
print("alive", [p for p in pids if alive(p)])
"""

# `tree` starts a grandchild in its process group and one in a session of its own (double
# fork + setsid: re-parented away from the task at once), then waits.
MANIFEST = """
[environments.development]
config = [{ dotenv = ".env" }]

[tasks.tree]
locks = ["database"]
argv = ["python", "tree.py"]

[tasks.check]
locks = ["database"]
argv = ["python", "check.py"]

[tasks.leaders]
argv = ["python", "leaders.py"]

[tasks.quiet]
argv = ["python", "-c", "import time; print('one line, then quiet', flush=True); time.sleep(300)"]
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return make_app(
        tmp_path / "app",
        MANIFEST,
        {".env": "DATABASE_URL=sqlite:///x.db\n", "tree.py": TREE, "check.py": CHECK},
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ONEOFF_")}
    return {**clean, "ONEOFF_DAEMON_DIR": str(directory), "ONEOFF_DAEMON": "off"}


def oneoff(args: list[str], app: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ONEOFF, *args], cwd=app, env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def start(task: str, app: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`oneoff run TASK`, once the task said it is ready."""
    proc = subprocess.Popen(
        [ONEOFF, "run", task, "--env", "development"], cwd=app, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() in ("ready", "one line, then quiet"), proc.communicate()
    return proc


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def gone(pids: list[int], within: float = 30.0) -> bool:
    until = time.monotonic() + within
    while any(alive(p) for p in pids) and time.monotonic() < until:
        time.sleep(0.05)
    return not any(alive(p) for p in pids)


def tree_of(app: Path) -> tuple[str, list[int]]:
    data = json.loads((app / "tree.json").read_text())
    return data["run"], data["pids"]


@pytest.fixture(autouse=True)
def no_survivors(app: Path) -> Iterator[None]:
    """Whatever a test leaves (it should leave nothing) is killed, never left running."""
    yield
    if (app / "tree.json").exists():
        for pid in tree_of(app)[1]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def kill_runner(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate(timeout=30)


@pytest.mark.timeout(180)
def test_sigkilled_runner_tree_dies_before_its_lock_goes(app: Path, env: dict[str, str]) -> None:
    """The grandchild and the own-session grandchild of a SIGKILLed runner are dead by the time
    another run takes the lock: the lock is not released while any process of the run lives."""
    runner = start("tree", app, env)
    run_id, pids = tree_of(app)
    assert all(alive(p) for p in pids)
    kill_runner(runner)
    checked = oneoff(["run", "check", "--env", "development", "--wait", "60"], app, env)
    assert checked.returncode == 0, checked.stderr
    assert "alive []" in checked.stdout, checked.stdout
    assert gone(pids, within=0)
    runs = json.loads(oneoff(["runs", "--json"], app, env).stdout)
    assert {r["id"]: r["status"] for r in runs}[run_id] == "lost"
    base = capability().base
    if base is not None:  # its cgroup went with it
        assert not os.path.exists(os.path.join(base, run_id))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("command", [["logs", "RUN"], ["audit", "verify"], ["locks"]])
def test_any_command_kills_a_dead_runners_tree(
    app: Path, env: dict[str, str], command: list[str]
) -> None:
    """Any oneoff command, `logs` and `audit verify` included, kills what a SIGKILLed runner
    left running and marks its run lost."""
    runner = start("tree", app, env)
    run_id, pids = tree_of(app)
    kill_runner(runner)
    done = oneoff([run_id if a == "RUN" else a for a in command], app, env)
    assert done.returncode == 0, done.stderr
    assert gone(pids, within=5)
    assert json.loads(oneoff(["show", run_id, "--json"], app, env).stdout)["status"] == "lost"


@pytest.mark.timeout(180)
def test_sigkilled_daemon_and_runner_leave_no_tree(app: Path, env: dict[str, str]) -> None:
    """Killing the daemon and its runner together (SIGKILL) leaves nothing of the task tree
    running once another command looks: the daemon could not guard it, the cgroup does."""
    served = {k: v for k, v in env.items() if k != "ONEOFF_DAEMON"}
    started = oneoff(["daemon", "start", "--idle", "120"], app, served)
    assert started.returncode == 0, started.stderr
    status = oneoff(["daemon", "status"], app, served).stdout
    daemon = int(status.split("pid ")[1].split()[0].rstrip(",)"))
    try:
        caller = start("tree", app, served)
        _run_id, pids = tree_of(app)
        with open(f"/proc/{pids[0]}/stat") as fh:
            runner = int(fh.read().rsplit(")", 1)[1].split()[1])
        assert runner not in (caller.pid, daemon)  # a fork of the daemon runs it
        os.kill(daemon, signal.SIGSTOP)  # together: the daemon never sees its runner die
        os.kill(runner, signal.SIGKILL)
        os.kill(daemon, signal.SIGKILL)
        caller.communicate(timeout=30)
        checked = oneoff(["run", "check", "--env", "development", "--wait", "60"], app, env)
        assert "alive []" in checked.stdout, (checked.stdout, checked.stderr)
        assert gone(pids, within=0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon, signal.SIGKILL)


@pytest.mark.timeout(180)
def test_output_shown_then_quiet_is_stored_before_a_sigkill(app: Path, env: dict[str, str]) -> None:
    """A task that prints one line and goes quiet: the line is stored without more output
    arriving (on a timer), so a SIGKILLed runner's run still has it."""
    runner = start("quiet", app, env)
    db = app / ".oneoff" / "state.db"
    until = time.monotonic() + 60
    stored = False
    while time.monotonic() < until and not stored:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            stored = conn.execute("SELECT coalesce(sum(size), 0) FROM output_chunks")
            stored = stored.fetchone()[0] >= len("one line, then quiet\n")
        time.sleep(0.05)
    kill_runner(runner)
    assert stored, "the line was shown but never stored"
    run_id = json.loads(oneoff(["runs", "--json"], app, env).stdout)[0]["id"]
    logs = oneoff(["logs", run_id], app, env)
    assert logs.stdout == "one line, then quiet\n", logs.stderr


def test_a_runs_tree_is_found_and_stopped_by_its_id_alone(tmp_path: Path) -> None:
    """A process marked with a run's id (and the session it leads) is found and killed from
    the id alone, as a later command does for a dead runner; then the tree is empty."""
    run_id = f"rtest{os.getpid()}{time.monotonic_ns()}"
    child = subprocess.Popen(
        [sys.executable, "-c", "import os, subprocess, time; "
         "subprocess.Popen(['sleep', '300'], env={}); time.sleep(300)"],
        env={**os.environ, "ONEOFF_RUN_ID": run_id}, start_new_session=True,
    )  # fmt: skip
    try:
        tree = RunTree.find(run_id)
        until = time.monotonic() + 30
        while len(tree.members()) < 2 and time.monotonic() < until:
            time.sleep(0.02)
        members = tree.members()
        assert child.pid in members
        assert len(members) == 2  # the unmarked one by the session it is in
        assert tree.stop()
        child.wait(timeout=10)
        assert not any(alive(p) for p in members)
    finally:
        child.kill()
        child.wait()


def test_a_session_stays_the_runs_after_its_marked_leader_died(tmp_path: Path) -> None:
    """An unmarked process left in a session that a marked process led is still the run's
    once that leader is dead: stop() kills it and returns only when it is gone (it used to
    report an empty tree while the orphan lived on)."""
    run_id = f"rtest{os.getpid()}{time.monotonic_ns()}"
    pid_file = tmp_path / "orphan"
    leader = subprocess.Popen(
        [sys.executable, "-c", "import os, subprocess, sys, time; "
         "p = subprocess.Popen(['sleep', '300'], env={}); "
         "open(sys.argv[1] + '.new', 'w').write(str(p.pid)); "
         "os.rename(sys.argv[1] + '.new', sys.argv[1]); time.sleep(300)", str(pid_file)],
        env={**os.environ, "ONEOFF_RUN_ID": run_id}, start_new_session=True,
    )  # fmt: skip
    orphan = None
    try:
        until = time.monotonic() + 30
        while not pid_file.exists():
            assert time.monotonic() < until, "the leader never started its child"
            time.sleep(0.02)
        orphan = int(pid_file.read_text())
        tree = RunTree.find(run_id)
        assert {leader.pid, orphan} <= tree.members()
        leader.kill()  # the leader dies first, as a runner's task may
        leader.wait(timeout=10)
        assert alive(orphan)
        assert tree.stop()
        assert not alive(orphan)
    finally:
        leader.kill()
        leader.wait()
        if orphan is not None and alive(orphan):
            os.kill(orphan, signal.SIGKILL)


RACING = """
import os, signal, sys
from pathlib import Path
from oneoff import open_app
from oneoff._executor.local import LocalExecutor
from oneoff._pipeline import RunRequest, run_task

class Racing(LocalExecutor):
    def execute(self, *args, **kwargs):
        # The run's row is committed; the runner's handlers are not in place yet.
        os.kill(os.getpid(), signal.SIGTERM)
        return super().execute(*args, **kwargs)

app = open_app(Path(sys.argv[1]))
outcome = run_task(app, RunRequest("quiet", "development"), stdout=sys.stdout.buffer,
                   stderr=sys.stderr.buffer, executor=Racing())
print("status", outcome.run.status, flush=True)
"""


@pytest.mark.timeout(120)
def test_sigterm_between_the_run_row_and_the_handlers_cancels_the_run(
    app: Path, env: dict[str, str]
) -> None:
    """A SIGTERM arriving after the run is recorded but before the runner's handlers are in
    place does not kill oneoff: it reaches the task, and the run is recorded cancelled."""
    done = subprocess.run(
        [sys.executable, "-c", RACING, str(app)], env=env, capture_output=True, text=True,
        timeout=100, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "status cancelled"
    runs = json.loads(oneoff(["runs", "--json"], app, env).stdout)
    assert [r["status"] for r in runs] == ["cancelled"]


def test_left_over_run_cgroups_are_swept_when_a_run_starts() -> None:
    """An empty run cgroup left by a runner that died unreaped is removed when the next run's
    cgroup is made; a fresh one (not yet holding its task) is kept."""
    base = capability().base
    if base is None:
        pytest.skip("no writable cgroup v2 here")
    stale = os.path.join(base, f"rstale{os.getpid()}")
    fresh = os.path.join(base, f"rfresh{os.getpid()}")
    for path in (stale, fresh):
        os.mkdir(path)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    tree = RunTree.new(f"rnew{os.getpid()}")
    try:
        assert not os.path.exists(stale)
        assert os.path.isdir(fresh)
    finally:
        for path in (stale, fresh):
            with contextlib.suppress(OSError):
                os.rmdir(path)
        tree.remove()


def test_doctor_reports_this_machines_containment() -> None:
    """`oneoff doctor` says which containment runs get here, the same the runner uses."""
    done = subprocess.run([ONEOFF, "doctor", "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert checks["containment"]["ok"] is (capability().method == "cgroup2")
    text = subprocess.run([ONEOFF, "doctor"], capture_output=True, text=True, timeout=60).stdout
    assert "containment" in text
    assert ("cgroup v2" in text) is (capability().method == "cgroup2")


def watchdogs_of(runner: int, tree: list[int]) -> list[int]:
    """The runner's children not of the task's tree (adopted orphans are): its watchdog
    (oneoff._watchdog), the one expected."""
    with open(f"/proc/{runner}/task/{runner}/children") as fh:
        return [int(p) for p in fh.read().split() if int(p) not in tree]


def holds(pid: int) -> list[str]:
    return sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(180)
def test_sigkilled_runner_tree_dies_at_once_without_another_command(
    app: Path, env: dict[str, str]
) -> None:
    """The grandchild and the own-session grandchild of a SIGKILLed runner die within
    seconds with no other oneoff command run: its watchdog, in a session of its own,
    outside the run's cgroup and holding nothing but its pipe, kills them and exits."""
    runner = start("tree", app, env)
    run_id, pids = tree_of(app)
    watchdogs = watchdogs_of(runner.pid, pids)
    for watchdog in watchdogs:
        assert os.getsid(watchdog) == watchdog  # a Ctrl-C or killpg of the runner misses it
        fds = holds(watchdog)
        assert fds[:3] == ["/dev/null"] * 3, fds
        assert len(fds) == 4, fds
        assert fds[3].startswith("pipe:"), fds
        with open(f"/proc/{watchdog}/cgroup") as fh:
            assert run_id not in fh.read()
        os.kill(watchdog, signal.SIGINT)  # ignored, as are SIGTERM and SIGHUP
        os.kill(watchdog, signal.SIGTERM)
        os.kill(watchdog, signal.SIGHUP)
        assert alive(watchdog)
        assert all(alive(p) for p in pids)
    kill_runner(runner)
    assert gone(pids, within=10)
    assert len(watchdogs) == 1
    assert gone(watchdogs, within=10)
    # The store is the next command's business, as before: the run is lost, its lock free.
    checked = oneoff(["run", "check", "--env", "development", "--wait", "60"], app, env)
    assert "alive []" in checked.stdout, (checked.stdout, checked.stderr)
    runs = json.loads(oneoff(["runs", "--json"], app, env).stdout)
    assert {r["id"]: r["status"] for r in runs}[run_id] == "lost"


@pytest.mark.timeout(180)
def test_sigkilled_daemon_and_runner_tree_dies_without_another_command(
    app: Path, env: dict[str, str]
) -> None:
    """Killing the daemon and its runner together (SIGKILL): the grandchild and the
    own-session grandchild die within seconds, no other oneoff command run."""
    served = {k: v for k, v in env.items() if k != "ONEOFF_DAEMON"}
    started = oneoff(["daemon", "start", "--idle", "120"], app, served)
    assert started.returncode == 0, started.stderr
    status = oneoff(["daemon", "status"], app, served).stdout
    daemon = int(status.split("pid ")[1].split()[0].rstrip(",)"))
    try:
        caller = start("tree", app, served)
        _run_id, pids = tree_of(app)
        with open(f"/proc/{pids[0]}/stat") as fh:
            runner = int(fh.read().rsplit(")", 1)[1].split()[1])
        assert runner not in (caller.pid, daemon)  # a fork of the daemon runs it
        watchdogs = watchdogs_of(runner, pids)
        os.kill(daemon, signal.SIGSTOP)  # together: the daemon never sees its runner die
        os.kill(runner, signal.SIGKILL)
        os.kill(daemon, signal.SIGKILL)
        caller.communicate(timeout=30)
        assert gone(pids, within=10)
        assert len(watchdogs) == 1
        assert gone(watchdogs, within=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon, signal.SIGKILL)


SESSION_LEADERS = """
import os
runner = os.getppid()
kids = open(f"/proc/{runner}/task/{runner}/children").read().split()
print(sum(os.getsid(int(p)) == int(p) for p in kids if int(p) != os.getpid()))
"""


def test_a_normal_run_leaves_no_watchdog(
    app: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a task runs its runner has a watchdog child; once the run is recorded it has
    exited and been reaped: nothing is left, not even a zombie."""
    from oneoff._proctree import children
    from oneoff.testing import invoke

    (app / "leaders.py").write_text(SESSION_LEADERS)
    monkeypatch.chdir(app)
    for key in ("ONEOFF_DAEMON", "ONEOFF_DAEMON_DIR"):
        monkeypatch.setenv(key, env[key])
    before = children(os.getpid())
    done = invoke(["run", "leaders", "--env", "development"])
    assert done.exit_code == 0, done.stderr
    assert done.stdout == "1\n"  # the watchdog, in a session of its own
    assert children(os.getpid()) == before
