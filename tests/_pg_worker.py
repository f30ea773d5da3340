"""One of several processes racing on one PostgreSQL store (tests/test_store_pg_concurrency.py).

``python _pg_worker.py MODE URL STATE_DIR INDEX``: waits until STATE_DIR/go exists (so all
start together), does MODE, prints its outcome as one line.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.01)


def _stall_before_commit(state: Path) -> None:
    """Make this process's first group-commit batch stop after its INSERT, before COMMIT,
    and say so (STATE/stalled): the test then kills the process mid-batch."""
    from oneoff._store.postgres import PostgresStore

    commit = PostgresStore._commit

    def stalled(self: PostgresStore) -> None:
        if threading.current_thread() is not threading.main_thread():
            (state / "stalled").touch()
            time.sleep(600)
        commit(self)

    PostgresStore._commit = stalled  # type: ignore[method-assign]


def _append_from_threads(store: Any, index: int) -> dict[str, Any]:
    """THREADS threads (each its own connection) append APPENDS events each; the seqs
    each append returned, and how many batches this process's appends went in."""
    from oneoff._audit.log import AuditLog
    from oneoff._store.postgres_group import group_for

    threads, appends = int(os.environ["THREADS"]), int(os.environ["APPENDS"])
    if os.environ.get("STALL"):
        _stall_before_commit(Path(sys.argv[3]))
    seqs: dict[str, int] = {}

    def work(t: int) -> None:
        own = store.connect_again()
        try:
            log = AuditLog(own)
            for i in range(appends):
                actor = f"w{index}t{t}n{i}"
                seqs[actor] = log.append("x", actor=actor, payload={"i": i}).seq
        finally:
            own.close()

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    group = group_for(store.url)
    return {"seqs": seqs, "batches": group.batches, "events": group.events}


def main() -> int:
    mode, url, state, index = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    from oneoff._store.postgres import PostgresStore

    store = PostgresStore(url)  # connected before the start signal: the race is the work
    (state / f"ready-{index}").touch()
    _wait_for(state / "go")
    try:
        if mode == "lock":
            from oneoff._locks import LockRecord

            with store.tx():
                won = not store.lock_holders(["database"])
                if won:
                    store.take_locks(
                        [LockRecord("database", f"run{index}", "me", "h", os.getpid(), "t", "t")]
                    )
            print("won" if won else "busy")
        elif mode == "approval":
            with store.tx():
                spent = store.use_request("q1", f"run{index}", ["bob"])
            print("spent" if spent else "refused")
        elif mode == "audit":
            from oneoff._audit.keys import AuditKey
            from oneoff._audit.log import AuditLog

            log = AuditLog(store, AuditKey(state))
            appends = int(os.environ["APPENDS"])
            for i in range(appends):
                log.append("x", actor=f"worker{index}", payload={"i": i})
                if i % 10 == 9:
                    log.checkpoint()
            print("appended", appends)
        elif mode == "audit-threads":
            print(json.dumps(_append_from_threads(store, index)))
        else:
            raise SystemExit(f"unknown mode {mode}")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
