"""Several server worker processes on one port and one store: whatever one worker accepted
(a nonce, a grant, an approval, an audit event) binds the others, and the parent that
supervises them stops them all, fail closed.

To send a call to one chosen worker the others are stopped (SIGSTOP) meanwhile: a stopped
process accepts no connection, so the kernel hands it to the one left running."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _grant_kit import ask_grant, plan_for, runner_call, runner_checkout, start
from _serverproc import Response, ServerProc, signed_headers
from oneoff._identity import NAMESPACE_APPROVE, Signer, approval_statement, iso, utc_now
from oneoff._store.interface import RequestRecord
from test_server_races import ask

KEYS = dict[str, Path]
Factory = Callable[..., ServerProc]


def workers_of(server: ServerProc) -> list[int]:
    """The worker processes (children) of a server's supervising process."""
    assert server.proc is not None
    pid = server.proc.pid
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return sorted(int(p) for p in text.split())


@contextlib.contextmanager
def only(server: ServerProc, worker: int) -> Iterator[None]:
    """Every call made inside goes to ``worker``: the other workers are stopped meanwhile."""
    others = [pid for pid in workers_of(server) if pid != worker]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except FileNotFoundError:
        return True


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two(request: pytest.FixtureRequest, server_app: Path, server_factory: Factory) -> ServerProc:
    """A server with two workers, on SQLite or on the throw-away PostgreSQL."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return server_factory(server_app, url, workers=2)


def test_every_worker_listens_before_ready_and_sigterm_stops_them_all(two: ServerProc) -> None:
    """The ready file appears once both workers serve; SIGTERM to the parent stops both
    gracefully and it exits 0."""
    pids = workers_of(two)
    assert len(pids) == 2
    for pid in pids:
        with only(two, pid):
            assert two.call("GET", "/v1/health").status == 200
    assert two.stop() == 0
    assert all(gone(pid) for pid in pids)


def test_a_call_accepted_by_one_worker_is_a_replay_for_another(
    two: ServerProc, server_keys: KEYS
) -> None:
    """A signed call answered by worker 1 and sent again to worker 2 is refused there as a
    replay (409): the nonce is in the shared store, not in a worker's memory."""
    first, second = workers_of(two)
    body = b"{}"
    headers = signed_headers(server_keys["bob"], "POST", "/v1/session", body, two.server_id)
    with only(two, first):
        assert two.call("POST", "/v1/session", body=body, headers=headers).status == 200
    with only(two, second):
        again = two.call("POST", "/v1/session", body=body, headers=headers)
    assert again.status == 409, again
    assert "replayed" in again.error["message"]


@pytest.mark.postgres
def test_a_grant_started_through_one_worker_is_refused_by_another(
    server_app: Path, server_factory: Factory, server_keys: KEYS, tmp_path: Path, pg_url: str
) -> None:
    """A run grant redeemed through worker 1 is a replay when presented to worker 2; output
    chunks sent to either worker continue one sequence (no worker trusts a stale count)."""
    server = server_factory(server_app, pg_url, workers=2)
    runner = runner_checkout(server_app, tmp_path / "runner")
    first, second = workers_of(server)
    answer = ask_grant(server, server_keys["alice"], plan_for(runner, "noop", "development"))
    assert answer.status == 200, answer
    with only(server, first):
        assert start(server, answer).status == 200
    with only(server, second):
        again = start(server, answer)
    assert again.status == 409, again
    assert "already used" in again.error["message"]
    run_id, token = answer.json["grant"]["run"], answer.json["run_token"]

    def send(seq: int) -> Response:
        chunk = {"seq": seq, "stream": 1, "data": base64.b64encode(b"%d\n" % seq).decode()}
        return runner_call(server, run_id, "output", {"run_token": token, "chunks": [chunk]})

    for seq, worker in enumerate((first, second, first, second), start=1):
        with only(server, worker):
            sent = send(seq)
        assert sent.status == 200, sent
        assert sent.json["next"] == seq + 1
    stored = server.read(server_keys["alice"], f"/v1/runs/{run_id}/output").json["chunks"]
    assert [base64.b64decode(c["data"]) for c in stored] == [b"1\n", b"2\n", b"3\n", b"4\n"]


@pytest.mark.postgres
@pytest.mark.slow
def test_approvals_through_both_workers_at_once_keep_the_audit_log_verifying(
    server_app: Path, server_factory: Factory, server_keys: KEYS, pg_url: str
) -> None:
    """Approvals sent at once over many connections to two workers (each process's audit
    batches racing for the chain's head) all land, and `oneoff audit verify` passes."""
    server = server_factory(server_app, pg_url, workers=2)
    requests = [RequestRecord(**ask(server, server_keys, server_app)) for _ in range(8)]
    calls = []
    for request in requests:
        for who in ("bob", "carol", "erin"):
            version, when = request.policy_version or "", iso(utc_now())
            data = approval_statement(request, version, when)
            signature = Signer(server_keys[who], agent=False).sign(data, NAMESPACE_APPROVE)
            path = f"/v1/requests/{request.id}/approvals"
            body = json.dumps(
                {"time": when, "policy_version": version, "signature": signature.decode()}
            ).encode()
            calls.append((path, body, signed_headers(server_keys[who], "POST", path, body,
                                                     server.server_id)))  # fmt: skip
    statuses: list[int] = []
    lock, go = threading.Lock(), threading.Barrier(8)

    def fire(share: list[tuple[str, bytes, dict[str, str]]]) -> None:
        go.wait()
        for path, body, headers in share:
            status = server.call("POST", path, body=body, headers=headers).status
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=fire, args=(calls[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert statuses == [201] * len(calls)
    assert server.stop() == 0
    verify = subprocess.run(
        [sys.executable, "-m", "oneoff", "audit", "verify", "--app", str(server_app)],
        env={**os.environ, "ONEOFF_STORE_URL": pg_url}, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr + verify.stdout


def test_a_killed_worker_stops_the_whole_server(two: ServerProc) -> None:
    """SIGKILL of one worker: the parent says so, stops the other worker and exits 1; the
    port is closed, not left half-served."""
    victim, other = workers_of(two)
    os.kill(victim, signal.SIGKILL)
    assert two.proc is not None
    assert two.proc.wait(timeout=120) == 1
    assert gone(other)
    assert f"(pid {victim}) was killed by SIGKILL" in two.output()
    with pytest.raises(ConnectionRefusedError):
        two.call("GET", "/v1/health")


def test_workers_must_be_a_positive_count(server_app: Path) -> None:
    """``--workers 0`` is a usage error (exit 2), before anything is served."""
    done = subprocess.run(
        [sys.executable, "-m", "oneoff", "server", "--app", str(server_app), "--workers", "0",
         "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--workers must be between 1 and 64, not 0" in done.stderr


def _sessions_at_once(server: ServerProc, key: Path, count: int) -> list[int]:
    statuses: list[int] = []
    start_all, lock = threading.Barrier(count), threading.Lock()

    def send() -> None:
        body = b"{}"
        headers = signed_headers(key, "POST", "/v1/session", body, server.server_id)
        start_all.wait()
        status = server.call("POST", "/v1/session", body=body, headers=headers).status
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=send) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return statuses


@pytest.mark.postgres
@pytest.mark.slow
def test_threads_that_idled_out_give_their_store_connections_back(
    server_app: Path, server_factory: Factory, server_keys: KEYS, pg_url: str
) -> None:
    """Busy spells with quiet spells between (the thread pool ends idle threads and starts
    new ones) never exhaust the store's connection pool (10): every call still works."""
    server = server_factory(server_app, pg_url)
    for _spell in range(3):
        assert _sessions_at_once(server, server_keys["bob"], 10) == [200] * 10
        # No condition to wait for: the pool retires a thread that idled this long at the
        # next call (anyio's WorkerThread.MAX_IDLE_TIME), and starts new ones for a burst.
        time.sleep(11)
    assert _sessions_at_once(server, server_keys["bob"], 10) == [200] * 10


def test_workers_stop_when_their_parent_is_killed(two: ServerProc) -> None:
    """SIGKILL of the supervising parent (nothing can catch it) still ends every worker:
    they get SIGTERM from the kernel (PR_SET_PDEATHSIG) and stop; none serves orphaned."""
    from _grant_kit import wait_for

    pids = workers_of(two)
    assert two.proc is not None
    two.proc.kill()
    two.proc.wait(timeout=60)
    wait_for(lambda: all(gone(pid) for pid in pids), "every worker to stop")
    with pytest.raises(ConnectionRefusedError):
        two.call("GET", "/v1/health")
