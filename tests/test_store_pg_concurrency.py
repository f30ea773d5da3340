"""Several processes on one PostgreSQL database: one lock winner, approvals spent once, and
audit appends that never fork the chain."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oneoff._store.interface import ApprovalRecord, RequestRecord
from oneoff._store.postgres import PostgresStore

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WORKER = Path(__file__).with_name("_pg_worker.py")
PROCESSES = 6


def race(mode: str, url: str, state: Path, env: dict[str, str] | None = None) -> list[str]:
    """Start PROCESSES workers, release them together once all are connected; their outputs."""
    full_env = {**os.environ, **(env or {})}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), mode, url, str(state), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        for i in range(PROCESSES)
    ]
    deadline = time.monotonic() + 120
    while len(list(state.glob("ready-*"))) < PROCESSES:  # every worker connected
        assert time.monotonic() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    (state / "go").touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    return outputs


def test_exactly_one_process_takes_a_free_lock(pg_url: str, tmp_path: Path) -> None:
    """Processes racing for one free lock: exactly one gets it, the others see it held."""
    outcomes = race("lock", pg_url, tmp_path)
    assert sorted(outcomes) == ["busy"] * (PROCESSES - 1) + ["won"]
    store = PostgresStore(pg_url)
    try:
        assert len(store.lock_holders(["database"])) == 1
    finally:
        store.close()


def test_an_approved_request_is_spent_by_one_process_only(pg_url: str, tmp_path: Path) -> None:
    """Processes racing to spend one approved request: one run uses it, every other is refused."""
    store = PostgresStore(pg_url)
    try:
        with store.tx():
            store.create_request(
                RequestRecord("q1", "wipe", "production", "sha256:p", {}, "alice", "t0", "pending")
            )
            store.add_approval(ApprovalRecord("q1", "bob", "sha256:p", "sig", "t0", "t9"))
        outcomes = race("approval", pg_url, tmp_path)
        assert sorted(outcomes) == ["refused"] * (PROCESSES - 1) + ["spent"]
        spent = store.get_request("q1")
        assert spent.status == "used"
        assert spent.used_by_run in {f"run{i}" for i in range(PROCESSES)}
        assert [a.used for a in store.approvals_for("q1")] == [True]
    finally:
        store.close()


def test_concurrent_audit_appends_never_fork_the_chain(pg_url: str, tmp_path: Path) -> None:
    """Processes appending and checkpointing at once leave one chain that fully verifies."""
    from oneoff._audit.keys import AuditKey
    from oneoff._audit.log import AuditLog
    from oneoff._audit.verify import verify_log

    key = AuditKey(tmp_path)
    key.ensure()  # one audit key for all (they share the app's state directory)
    appends = 40
    outcomes = race("audit", pg_url, tmp_path, {"APPENDS": str(appends)})
    assert outcomes == [f"appended {appends}"] * PROCESSES
    store = PostgresStore(pg_url)
    try:
        report = verify_log(store, key.public(), all_signatures=True)
        assert report.events == PROCESSES * appends
        assert report.checkpoints >= 1
        assert report.signatures == report.checkpoints
        actors = [event.actor for event in AuditLog(store).events()]
        assert {a: actors.count(a) for a in set(actors)} == {
            f"worker{i}": appends for i in range(PROCESSES)
        }
    finally:
        store.close()
