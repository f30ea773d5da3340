"""Faults during server-mediated runs, with real processes: the server restarted, its
PostgreSQL stopped and started, the runner SIGKILLed or paused past its lease."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _grant_kit import (
    add_ticker,
    ask_grant,
    pid_alive,
    plan_for,
    restart,
    runner_checkout,
    wait_for,
)
from _serverproc import ServerProc

KEYS = dict[str, Path]


def _runner(root: Path, server: ServerProc, key: Path, *argv: str) -> subprocess.Popen[str]:
    url = f"http://{server.host}:{server.port}"
    return subprocess.Popen(
        [sys.executable, "-m", "oneoff", "run", *argv, "--env", "development", "--key",
         str(key), "--app", str(root), "--server", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, ONEOFF_LOG_FORMAT="text"),
    )  # fmt: skip


def _stored(server: ServerProc, key: Path, run_id: str) -> bytes:
    chunks = server.read(key, f"/v1/runs/{run_id}/output").json["chunks"]
    return b"".join(base64.b64decode(c["data"]) for c in chunks)


def _the_run(server: ServerProc, key: Path, task: str) -> str:
    runs = server.read(key, "/v1/runs", query=f"task={task}").json["runs"]
    return str(runs[0]["id"]) if runs else ""


@pytest.fixture
def ticker_app(server_app: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The served app with the ``ticker`` task, and a runner's checkout of it."""
    add_ticker(server_app)
    return server_app, runner_checkout(server_app, tmp_path / "runner")


def _ticker_run_survives(
    server: ServerProc, runner: Path, key: Path, tmp_path: Path, outage: Callable[[], None]
) -> None:
    """Start the ticker, let ``outage`` take the server's side away and back while the task
    ends, then check the run is recorded whole: status, exit code, every byte of output."""
    proc = _runner(runner, server, key, "ticker", "--param", f"dir={tmp_path}")
    try:
        wait_for(lambda: (tmp_path / "task.pid").exists() or proc.poll() is not None, "the task")
        assert proc.poll() is None, proc.communicate()
        run_id = wait_for(lambda: _the_run(server, key, "ticker"), "the run on the server")
        wait_for(lambda: _stored(server, key, run_id) == b"before\n", "the first output")
        outage()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out == "before\nafter\n"
    shown = server.read(key, f"/v1/runs/{run_id}").json
    assert (shown["status"], shown["exit_code"]) == ("succeeded", 0)
    assert _stored(server, key, run_id) == b"before\nafter\n"


def test_the_runner_finishes_recording_after_a_server_restart(
    ticker_app: tuple[Path, Path],
    server_factory: Callable[..., ServerProc],
    server_keys: KEYS,
    tmp_path: Path,
) -> None:
    """The server stops while a run goes on and the task ends meanwhile: the runner keeps
    the output and the outcome, reconnects once the server is back, and records both."""
    served, runner = ticker_app
    server = server_factory(served)
    task = tmp_path / "task"
    task.mkdir()

    def outage() -> None:
        server.stop()
        (task / "resume").touch()  # the task ends while nobody can record it
        pid = int((task / "task.pid").read_text())
        wait_for(lambda: not pid_alive(pid), "the task to end")
        restart(server)

    _ticker_run_survives(server, runner, server_keys["alice"], task, outage)


@pytest.fixture
def own_pg() -> Iterator[object]:
    """A PostgreSQL server of this test's own: it is stopped and started mid-test."""
    from _pgserver import PgServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    pg = PgServer(bindir)
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.mark.postgres
def test_a_run_is_not_lost_when_the_database_goes_away_mid_run(
    ticker_app: tuple[Path, Path],
    server_factory: Callable[..., ServerProc],
    server_keys: KEYS,
    tmp_path: Path,
    own_pg: object,
) -> None:
    """PostgreSQL stops while a run goes on and the task ends meanwhile: the server answers
    503, the runner buffers and retries, and once the database is back the output and the
    outcome are stored, nothing lost."""
    from _pgserver import PgServer
    from oneoff._store.postgres import migrate

    assert isinstance(own_pg, PgServer)
    url = own_pg.database()
    migrate(url)
    served, runner = ticker_app
    server = server_factory(served, url)
    task = tmp_path / "task"
    task.mkdir()

    def outage() -> None:
        own_pg.halt()
        (task / "resume").touch()
        pid = int((task / "task.pid").read_text())
        wait_for(lambda: not pid_alive(pid), "the task to end")
        own_pg.resume()

    _ticker_run_survives(server, runner, server_keys["alice"], task, outage)


def test_a_killed_runner_loses_its_run_and_its_lock_after_the_lease(
    server_app: Path,
    server_factory: Callable[..., ServerProc],
    server_keys: KEYS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGKILL the runner mid-run: its heartbeats stop, and once its lease is over the
    server marks the run lost and frees its lock for the next run (larger fencing token)."""
    runner = runner_checkout(server_app, tmp_path / "runner")
    monkeypatch.setenv("ONEOFF_SERVER_LEASE", "3")
    server = server_factory(server_app)
    key = server_keys["alice"]
    pidfile = tmp_path / "held.pid"
    proc = _runner(runner, server, key, "hold", "--param", f"pidfile={pidfile}")
    try:
        wait_for(lambda: pidfile.exists() or proc.poll() is not None, "the task to hold the lock")
        assert proc.poll() is None, proc.communicate()
        run_id = _the_run(server, key, "hold")
        held = server.read(key, "/v1/locks").json["locks"]
        assert [lk["run_id"] for lk in held] == [run_id]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    task = int(pidfile.read_text())
    wait_for(lambda: not pid_alive(task), "the watchdog to stop the task")
    status = lambda: server.read(key, f"/v1/runs/{run_id}").json["status"]  # noqa: E731
    wait_for(lambda: status() == "lost", "the run to be marked lost")
    assert server.read(key, "/v1/locks").json["locks"] == []
    again = ask_grant(server, key, plan_for(runner, "hold", "development"))
    assert again.status == 200, again
    assert again.json["grant"]["locks"]["database"] > held[0]["fencing"]


def test_a_runner_paused_past_its_lease_stops_its_task_when_it_wakes(
    server_app: Path,
    server_factory: Callable[..., ServerProc],
    server_keys: KEYS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A runner paused (SIGSTOP) past its lease has been fenced off: the lock went to
    another run; when it wakes, the server refuses its heartbeat, and it stops its task
    rather than let two runs work on one resource, and ends the run as lost."""
    runner = runner_checkout(server_app, tmp_path / "runner")
    monkeypatch.setenv("ONEOFF_SERVER_LEASE", "3")
    server = server_factory(server_app)
    key = server_keys["alice"]
    pidfile = tmp_path / "held.pid"
    proc = _runner(runner, server, key, "hold", "--param", f"pidfile={pidfile}",
                   "--param", "seconds=300")  # fmt: skip
    try:
        wait_for(lambda: pidfile.exists() or proc.poll() is not None, "the task to hold the lock")
        assert proc.poll() is None, proc.communicate()
        run_id = _the_run(server, key, "hold")
        proc.send_signal(signal.SIGSTOP)
        plan = plan_for(runner, "hold", "development", seconds="1")
        wait_for(lambda: ask_grant(server, key, plan).status == 200, "another run to get the lock")
        proc.send_signal(signal.SIGCONT)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    task = int(pidfile.read_text())
    assert not pid_alive(task)
    assert proc.returncode != 0
    assert "lost the lease" in err
    assert f"run {run_id} hold on development: lost" in err
    assert server.read(key, f"/v1/runs/{run_id}").json["status"] == "lost"
