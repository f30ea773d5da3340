"""One of several processes racing on one PostgreSQL store (tests/test_store_pg_concurrency.py).

``python _pg_worker.py MODE URL STATE_DIR INDEX``: waits until STATE_DIR/go exists (so all
start together), does MODE, prints its outcome as one line.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.01)


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
        else:
            raise SystemExit(f"unknown mode {mode}")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
