"""Resource locks with real runner processes: one holder at a time, SIGKILL loses the lease,
and a runner that loses its lease stops its task."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from _access_kit import events, run_as
from oneoff._app import open_app
from oneoff._locks import acquire
from oneoff._pipeline import RunOutcome
from oneoff._store.interface import LockRecord
from oneoff.errors import LockBusy
from oneoff.testing import run_cli

pytest_plugins = ["_access_kit"]


def start_hold(
    root: Path, env: dict[str, str], pidfile: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """A real `oneoff run hold` runner; its stderr goes to PIDFILE.err."""
    args = ["run", "hold", "--env", "development", "-p", f"pidfile={pidfile}", *extra]
    with open(f"{pidfile}.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "oneoff", *args], cwd=root, env=env,
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen[bytes] | None = None) -> None:
    for _ in range(600):
        if path.exists() or (proc is not None and proc.poll() is not None):
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_two_processes_racing_admit_exactly_one(
    root: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Two real runners start together: one holds the lock, the other fails naming the holder."""
    a, b = tmp_path / "a.pid", tmp_path / "b.pid"
    procs = [start_hold(root, cli_env, a), start_hold(root, cli_env, b)]
    for _ in range(600):  # the loser fails fast; then let the winner finish
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    for pidfile in (a, b):
        Path(f"{pidfile}.stop").write_text("")
    results = [
        (p.wait(timeout=60), Path(f"{f}.err").read_text())
        for p, f in zip(procs, (a, b), strict=True)
    ]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 5], results
    loser = next(err for code, err in results if code == 5)
    assert "lock 'database' is held by run r" in loser
    assert "--wait" in loser
    assert a.exists() != b.exists()


def test_wait_takes_the_lock_once_it_is_free(
    root: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """With --wait, a second runner waits for the holder to finish, then runs."""
    first, second = tmp_path / "first.pid", tmp_path / "second.pid"
    holder = start_hold(root, cli_env, first)
    wait_for(first, holder)
    waiter = start_hold(root, cli_env, second, "--wait", "60")
    Path(f"{first}.stop").write_text("")
    Path(f"{second}.stop").write_text("")
    assert holder.wait(timeout=60) == 0
    assert waiter.wait(timeout=60) == 0, Path(f"{second}.err").read_text()
    assert second.exists()


def test_sigkilled_holder_loses_its_lease(
    root: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A runner killed with SIGKILL: the next command marks its run lost and frees the lock."""
    pidfile = tmp_path / "held.pid"
    holder = start_hold(root, cli_env, pidfile)
    wait_for(pidfile, holder)
    listed = run_cli(["locks"], cwd=root, env=cli_env)
    assert "database" in listed.stdout
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)  # the orphaned task, not the test's target
    listed = run_cli(["locks"], cwd=root, env=cli_env)
    assert listed.exit_code == 0, listed.stderr
    assert "no locks held" in listed.stdout
    runs = json.loads(run_cli(["runs", "--json"], cwd=root, env=cli_env).stdout)
    assert runs[0]["status"] == "lost"
    assert events(root, "lock.reaped")
    again = run_cli(["run", "hold", "--env", "development", "-p", f"pidfile={tmp_path}/x.pid",
                     "-p", "seconds=0"], cwd=root, env=cli_env)  # fmt: skip
    assert again.exit_code == 0, again.stderr


def plant_lock(root: Path, host: str, expires: str) -> None:
    app = open_app(root)
    try:
        with app.store.tx():
            app.store.take_locks([LockRecord("database", "r-elsewhere", "bob", host, 4242,
                                             "2024-01-01T00:00:00.000Z", expires)])  # fmt: skip
    finally:
        app.close()


def test_lock_held_on_another_host_is_busy_until_its_lease_expires(root: Path) -> None:
    """A live lease from another machine blocks; an expired one is reaped and audited."""
    plant_lock(root, "otherhost/boot", "2999-01-01T00:00:00.000Z")
    app = open_app(root)
    try:
        with pytest.raises(LockBusy, match="held by run r-elsewhere \\(bob, pid 4242\\)"):
            acquire(app, ["database"], run_id="r-mine", holder="alice")
        with app.store.tx():
            app.store.drop_locks("r-elsewhere")
    finally:
        app.close()
    plant_lock(root, "otherhost/boot", "2000-01-01T00:00:00.000Z")
    app = open_app(root)
    try:
        lease = acquire(app, ["database"], run_id="r-mine", holder="alice")
        assert lease is not None
        assert [x.run_id for x in app.store.lock_holders()] == ["r-mine"]
        lease.release()
        assert app.store.lock_holders() == []
    finally:
        app.close()
    assert events(root, "lock.reaped")[-1].payload["expired"] is True


def steal(root: Path, run_id: str) -> None:
    """Another machine reaps ``run_id``'s lease as expired and takes the lock itself."""
    app = open_app(root)
    try:
        with app.store.tx():
            app.store.drop_locks(run_id)
            app.store.take_locks([LockRecord("database", "r-thief", "bob", "otherhost/boot",
                                             4242, "2024-01-01T00:00:00.000Z",
                                             "2999-01-01T00:00:00.000Z")])  # fmt: skip
    finally:
        app.close()


def test_a_run_whose_lease_is_taken_away_is_stopped(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Losing the lease mid-run stops the task, audits lock.lease_lost, frees nothing of theirs."""
    monkeypatch.setattr("oneoff._locks.LEASE", 0.6)  # renewed every 0.2s
    pidfile = tmp_path / "held.pid"
    outcomes: list[RunOutcome] = []
    runner = threading.Thread(
        target=lambda: outcomes.append(
            run_as(root, None, None, "hold", "development",
                   params={"pidfile": str(pidfile), "seconds": "120"})
        )
    )  # fmt: skip
    runner.start()
    wait_for(pidfile)
    run_id = next(e.run_id for e in events(root, "run.started"))
    steal(root, run_id)
    runner.join(timeout=60)
    assert outcomes, "the task was not stopped"
    assert outcomes[0].run.status == "lost"
    assert outcomes[0].run.exit_code == 128 + signal.SIGTERM
    finished = events(root, "run.finished")
    assert finished[-1].payload["lease_lost"] is True
    lost = events(root, "lock.lease_lost")
    assert [(e.run_id, e.task, e.environment) for e in lost] == [(run_id, "hold", "development")]
    assert lost[0].payload["locks"] == ["database"]
    assert lost[0].payload["stopped_pids"] == [int(pidfile.read_text())]
    assert "taken away" in lost[0].payload["reason"]
    app = open_app(root)
    try:
        assert [x.run_id for x in app.store.lock_holders()] == ["r-thief"]
    finally:
        app.close()


def sleeper(run_id: str) -> subprocess.Popen[bytes]:
    code = "import time; time.sleep(120)"
    env = {**os.environ, "ONEOFF_RUN_ID": run_id}
    return subprocess.Popen([sys.executable, "-c", code], env=env, process_group=0)


def lose_lease(root: Path, task: subprocess.Popen[bytes]) -> None:
    """Take a 0.6 s lease (renewed every 0.2 s) on "database" for run r-mine while a real
    failure inside SQLite aborts every renewal (an UPDATE of locks), as the renewer's own
    connection meets it; return once ``task`` got SIGTERM and the lease is released."""
    app = open_app(root)
    db = sqlite3.connect(app.state_dir / "state.db")
    try:
        db.execute("CREATE TRIGGER broken BEFORE UPDATE ON locks "
                   "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")  # fmt: skip
        db.commit()
        lease = acquire(app, ["database"], run_id="r-mine", holder="alice", lease=0.6,
                        task="hold", environment="development", grace=30)  # fmt: skip
        assert lease is not None
        assert task.wait(timeout=60) == -signal.SIGTERM
        assert lease.lost
        lease.release()
        assert app.store.lock_holders() == []
    finally:
        db.execute("DROP TRIGGER IF EXISTS broken")
        db.commit()
        db.close()
        app.close()


def test_a_lease_that_cannot_be_renewed_is_lost_after_one_lease(root: Path) -> None:
    """A store that keeps failing loses the lease once it may have expired; only this run's
    processes are stopped."""
    ours, theirs = sleeper("r-mine"), sleeper("r-other")
    try:
        lose_lease(root, ours)
        assert theirs.poll() is None
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()
    lost = events(root, "lock.lease_lost")[-1]
    assert lost.payload["reason"].startswith("cannot renew for 0.6s: ")
    assert "disk I/O error" in lost.payload["reason"]
    assert lost.payload["stopped_pids"] == [ours.pid]


def test_a_lost_lease_stops_the_task_before_reopening_the_store(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease is mostly lost because the store is unreachable, when reopening it can take
    the whole busy timeout: the task is told to stop first, the audit event comes after."""
    import oneoff._locks as locks
    from oneoff._store.sqlite import SQLiteStore

    order: list[str] = []
    real_connect, real_signal = SQLiteStore.connect_again, locks._signal_run

    def connect(self: SQLiteStore) -> SQLiteStore:
        order.append("connect")
        return real_connect(self)

    def signal_run(run_id: str, signum: int, **kw: object) -> list[int]:
        order.append("signal")
        return real_signal(run_id, signum, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(SQLiteStore, "connect_again", connect)
    monkeypatch.setattr(locks, "_signal_run", signal_run)
    ours = sleeper("r-mine")
    try:
        lose_lease(root, ours)
    finally:
        ours.kill()
        ours.wait()
    first_signal = order.index("signal")
    assert order[first_signal - 1] == "connect"  # the renewal attempt that failed
    assert order[first_signal + 1] == "connect"  # the audit event's, only after the signal


def test_a_task_that_ignores_sigterm_is_killed_after_its_grace(root: Path) -> None:
    """After the grace period, what is left of the run gets SIGKILL."""
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    stubborn = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "ONEOFF_RUN_ID": "r-mine"},
        process_group=0,
    )  # fmt: skip
    try:
        app = open_app(root)
        try:
            lease = acquire(app, ["database"], run_id="r-mine", holder="alice", lease=0.6,
                            grace=0.5)  # fmt: skip
            assert lease is not None
            steal(root, "r-mine")
            assert stubborn.wait(timeout=60) == -signal.SIGKILL
            lease.release()
        finally:
            app.close()
    finally:
        stubborn.kill()
        stubborn.wait()


def test_a_renewed_lease_is_not_lost(root: Path) -> None:
    """Renewals that succeed keep the lease (a lock named twice is held once)."""
    app = open_app(root)
    try:
        lease = acquire(app, ["database", "database"], run_id="r-mine", holder="alice", lease=0.3)
        assert lease is not None
        seen = {app.store.lock_holders()[0].expires_at}
        while len(seen) < 4:  # three renewals, however long the machine takes
            seen.add(app.store.lock_holders()[0].expires_at)
            time.sleep(0.02)
        assert not lease.lost
        lease.release()
    finally:
        app.close()
    assert events(root, "lock.lease_lost") == []
