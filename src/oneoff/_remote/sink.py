"""The runner's line to the server while a granted run lives: output, heartbeats, outcome.

``RemoteSink`` is the store ``oneoff._output.OutputRecorder`` writes to: each stored row
(already redacted on this machine, numbered 1, 2, ...) is queued in memory, and one
thread sends the queue in order and heartbeats the lease. A call that fails because the
server or its database is away (exit-7 errors: unreachable, 503) is retried with backoff,
the queue kept; nothing is dropped, and the server skips what it already has, so a retry
after a lost answer never duplicates. Memory stays bounded by the recorder's output cap.

The lease: the runner must renew it every ``heartbeat`` seconds. When the server says it
was lost (its locks reaped, maybe granted to another run: 409), or no heartbeat got
through for a whole lease, the runner stops its task (SIGTERM, SIGKILL after the task's
grace) as a local lease does (``oneoff._locks``): two runs never work on one resource.
"""

from __future__ import annotations

import base64
import signal
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from oneoff.errors import LockBusy, OneoffError, StoreError

__all__ = ["RETRY_FOR", "RemoteSink", "retrying", "stop_task"]

RETRY_FOR = 600.0  # seconds the outcome is retried before the runner gives up (exit 7)
_BATCH = 600 * 1024  # raw bytes per output call (base64 keeps it under the 1 MiB body cap)
_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0)

Call = Callable[[str, dict[str, Any]], dict[str, Any]]


def retrying(call: Call, path: str, body: dict[str, Any], *, within: float = RETRY_FOR) -> Any:
    """``call`` until it answers; a StoreError (the server or its store away) is retried
    for ``within`` seconds, any other error is final."""
    deadline = time.monotonic() + within
    attempt = 0
    while True:
        try:
            return call(path, body)
        except StoreError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(_BACKOFF[min(attempt, len(_BACKOFF) - 1)])
        attempt += 1


class RemoteSink:
    """Queue of output rows + heartbeat thread for one run (see the module docstring)."""

    def __init__(
        self,
        call: Call,
        run_id: str,
        *,
        heartbeat: float,
        lease: float,
        grace: float,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.call, self.run_id = call, run_id
        self.heartbeat, self.lease, self.grace = heartbeat, lease, grace
        self.on_lost = on_lost
        self.lost = False
        self.sent = 0  # rows the server acknowledged
        self.queued = 0
        self._queue: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._error: OneoffError | None = None
        self._thread = threading.Thread(target=self._loop, name="oneoff-remote", daemon=True)
        self._thread.start()

    # The OutputStore side: called by OutputRecorder from the runner's thread.
    def add_output_chunks(self, run_id: str, chunks: Sequence[tuple[int, int, int, bytes]]) -> None:
        with self._cond:
            for seq, stream, _size, data in chunks:
                raw = zlib.decompress(data)
                self._queue.append(
                    {"seq": seq, "stream": stream, "data": base64.b64encode(raw).decode("ascii")}
                )
                self.queued = seq
            self._cond.notify()

    def _loop(self) -> None:
        path = f"/v1/runs/{self.run_id}"
        last_beat = last_ok = time.monotonic()
        attempt = 0
        while True:
            with self._cond:
                if not self._queue and not self._closing:
                    wait = max(0.0, last_beat + self.heartbeat - time.monotonic())
                    self._cond.wait(wait)
                batch: list[dict[str, Any]] = []
                size = 0
                for chunk in self._queue:
                    if batch and size + len(chunk["data"]) * 3 // 4 > _BATCH:
                        break
                    batch.append(chunk)
                    size += len(chunk["data"]) * 3 // 4
                if not batch and self._closing:
                    return
            try:
                if batch:
                    answer = self.call(path + "/output", {"chunks": batch})
                    self._acknowledge(int(answer.get("next", 1)) - 1)
                if time.monotonic() - last_beat >= self.heartbeat:
                    self.call(path + "/heartbeat", {})
                    last_beat = time.monotonic()
                last_ok, attempt = time.monotonic(), 0
            except StoreError:
                # Away: keep the queue, try again; only a whole lease without an answer
                # means the locks may be someone else's now.
                if time.monotonic() - last_ok >= self.lease and not self.lost:
                    self._lose(f"no answer from the server for {self.lease:g}s")
                time.sleep(_BACKOFF[min(attempt, len(_BACKOFF) - 1)])
                attempt += 1
            except OneoffError as exc:
                if isinstance(exc, LockBusy):  # the server says the lease is gone
                    self._lose(exc.message)
                if batch and not self.lost:
                    self._error = exc  # refused for good: the finish reports it
                with self._cond:
                    self._queue.clear()
                if self.lost:
                    return

    def _acknowledge(self, through: int) -> None:
        with self._cond:
            self.sent = max(self.sent, through)
            self._queue = [c for c in self._queue if c["seq"] > self.sent]

    def _lose(self, why: str) -> None:
        self.lost = True
        if self.on_lost is not None:
            self.on_lost(why)

    def close(self, within: float = RETRY_FOR) -> None:
        """Send what is queued (retrying), then stop heartbeating."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(within)
        if self._thread.is_alive():
            raise StoreError(
                f"run {self.run_id}: the server took no output for {within:g}s; "
                f"{self.queued - self.sent} chunk(s) are not recorded"
            )
        if self._error is not None:
            raise self._error


def stop_task(run_id: str, grace: float) -> None:
    """Stop the run's task now: SIGTERM, then SIGKILL after ``grace`` seconds."""
    from oneoff._locks import _signal_run

    stopped = _signal_run(run_id, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and stopped:
        time.sleep(0.1)
        stopped = [p for p in stopped if _alive(p)]
    _signal_run(run_id, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False
