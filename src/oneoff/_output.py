"""A run's output: redacted as it streams, shown to the operator, stored compressed and capped.

Stored format: ``output_chunks`` rows ``(run_id, seq, stream, size, data)``, ``data`` being
the zlib-compressed redacted bytes of one stream (1 stdout, 2 stderr), in arrival order. The
run's ``output_digest`` is SHA-256 over, for each row, ``stream (1 byte) || size (8 bytes,
big-endian) || bytes``, so a replay can check the stored output against the digest that the
run's ``run.finished`` audit event carries. Past the cap (``[audit] output_cap``, default
16 MiB of redacted bytes) output is still redacted and shown, not stored, and the run is
marked ``output_truncated``.

Latency: a redactor holds back the last bytes of what it was fed, in case they begin a secret.
After a read that did not fill the read buffer (the task has paused, or writes little at a
time) the recorder asks it to ``release`` all of that but a suffix that could really begin a
secret form, so a prompt or a progress line shows at once; with ``quiet_release`` (interactive
tasks) even that suffix is shown after so long without output, if it is at most
``oneoff._redact.QUIET_SHOW`` bytes (and it is still matched against what follows). Rows are
compressed at zlib level 1: about three times faster than the default level for some 15% more
bytes stored, as the first 16 MiB of a flood would otherwise cost more CPU than redacting it.

Durability: what was shown is committed to the store within 0.75 s plus one commit (see
``_FLUSH_SECONDS``), whether more output comes or not; a runner killed with SIGKILL loses
at most that much of what the operator saw (and the few bytes a redactor held back).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, Protocol

from oneoff._record import dataclass
from oneoff.errors import ManifestError, StoreError

if TYPE_CHECKING:
    from oneoff._plan import Plan
    from oneoff._redact import Redactor
    from oneoff._store.interface import Store

__all__ = [
    "DEFAULT_CAP",
    "ChunkSink",
    "OutputRecorder",
    "OutputSummary",
    "build_redactors",
    "replay",
]

DEFAULT_CAP = 16 * 1024 * 1024
_SEGMENT = 256 * 1024  # rows of at most this many raw bytes
_BATCH = 16 * _SEGMENT  # a flood is committed (fsync) once per 4 MiB, or once a second
# At most one commit this often for a trickle of output (a flood commits per _BATCH): output
# after a quiet spell is committed at once, the rest at the next of oneoff._proc's ticks
# (every TICK_SECONDS, 0.25 s) once this much time has passed since the last commit. So
# what the terminal showed is in the store within 0.75 s plus one commit, even if the task
# then goes quiet or the runner is SIGKILLed.
_FLUSH_SECONDS = 0.5
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_FULL_READ = 64 * 1024  # oneoff._proc's read size: a full read means more output is waiting
_ZLIB_LEVEL = 1


@dataclass(frozen=True)
class OutputSummary:
    bytes: int  # redacted bytes shown (stored or not)
    stored: int  # redacted bytes stored
    digest: str  # sha256:<hex> of the stored framing
    truncated: bool


def output_cap(settings: Mapping[str, Any]) -> int:
    """``[audit] output_cap``: bytes, or a string like ``"16MiB"``; 0 stores nothing."""
    value = settings.get("output_cap", DEFAULT_CAP)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d{1,15})\s*(B|KiB|MiB|GiB)?\s*", value)
        value = int(match[1]) * _UNITS[match[2] or "B"] if match else -1
    if type(value) is not int or value < 0:
        raise ManifestError(f"[audit] output_cap must be a size like 16777216 or '16MiB': {value}")
    return value


def build_redactors(plan: Plan) -> dict[int, Redactor]:
    """One redactor per stream over every secret of the run; SecretError before anything runs."""
    from oneoff._redact import Redactor

    secrets = {**plan.env.secret_values(), **plan.secret_param_values()}
    stdout = Redactor(secrets)
    return {1: stdout, 2: stdout.fresh()}  # one automaton built, not two


class ChunkSink(Protocol):
    """Where a recorder's rows go: the store, or the runner's line to the team server."""

    def add_output_chunks(
        self, run_id: str, chunks: Sequence[tuple[int, int, int, bytes]]
    ) -> None: ...


class OutputRecorder:
    """The ``on_output`` sink of a run: redact, show, store. Memory stays bounded."""

    def __init__(
        self,
        store: ChunkSink,  # the app's store, or the team server (oneoff._remote.sink)
        run_id: str,
        redactors: Mapping[int, Redactor],
        sinks: Mapping[int, IO[bytes]],
        *,
        cap: int = DEFAULT_CAP,
        quiet_release: float | None = None,
    ) -> None:
        self.store, self.run_id, self.cap = store, run_id, cap
        self.redactors, self.sinks = redactors, dict(sinks)
        self.shown = self.stored = 0
        self.truncated = False
        self._pending: list[tuple[int, bytearray]] = []
        self._pending_bytes = 0
        self._seq = 0
        self._digest = hashlib.sha256()
        self._last_write = 0.0  # monotonic time of the last commit of output
        self._lock = threading.Lock()
        self._fed = False
        self._stop = threading.Event()
        self._releaser: threading.Thread | None = None
        if quiet_release is not None:
            self._releaser = threading.Thread(
                target=self._release_when_quiet, args=(quiet_release,), daemon=True
            )
            self._releaser.start()

    def __call__(self, fd: int, chunk: bytes) -> None:
        stream = 1 if fd == 1 else 2
        redactor = self.redactors[stream]
        with self._lock:
            self._fed = True
            self._emit(stream, redactor.feed_view(chunk))
            if len(chunk) < _FULL_READ or self._releaser is not None:
                # The pipe was drained: the task may wait now. Show all that cannot begin a
                # secret rather than keep it back until more output comes.
                self._emit(stream, redactor.release())

    def tick(self) -> None:
        """Store what was shown long enough ago (oneoff._proc calls this while the task
        runs, output or not; from the runner's thread, which owns the store)."""
        with self._lock:
            if self._pending and time.monotonic() - self._last_write >= _FLUSH_SECONDS:
                self._write_pending()

    def _release_when_quiet(self, quiet: float) -> None:
        # Each feed already released what cannot begin a secret; what is still held looks
        # like the start of one (a prompt ending in "sk_" when a secret begins so). It must
        # not wait for output that only comes after the operator answers: after ``quiet``
        # seconds without output, a held suffix of at most QUIET_SHOW bytes is shown (see
        # Redactor.release_quiet). A secret split by a pause shows at most that many of its
        # first bytes; a longer held suffix waits for more output or the end of the run.
        while not self._stop.wait(quiet):
            with self._lock:
                if self._fed:
                    self._fed = False
                    continue
                for stream in (1, 2):
                    if self.redactors[stream].held_back:
                        released = self.redactors[stream].release_quiet()
                        self._emit(stream, released, store_now=False)

    def close(self) -> OutputSummary:
        """End of the run: release what the redactors held back and store the rest."""
        self._stop.set()
        if self._releaser is not None:
            self._releaser.join()
        for stream in (1, 2):
            self._emit(stream, self.redactors[stream].flush())
        self._write_pending()
        return OutputSummary(
            self.shown, self.stored, "sha256:" + self._digest.hexdigest(), self.truncated
        )

    def _emit(self, stream: int, data: bytes | memoryview, *, store_now: bool = True) -> None:
        if not data:
            return
        self.shown += len(data)
        sink = self.sinks.get(stream)
        if sink is not None:
            try:
                sink.write(data)
                sink.flush()
            except (OSError, ValueError):
                # The operator's terminal went away (closed pipe): keep recording the run.
                del self.sinks[stream]
        room = self.cap - self.stored
        if room < len(data):
            self.truncated = True
            data = data[: max(room, 0)]
        if data:
            if self._pending and self._pending[-1][0] == stream:
                self._pending[-1][1].extend(data)
            else:
                self._pending.append((stream, bytearray(data)))
            self.stored += len(data)
            self._pending_bytes += len(data)
        due = self._pending_bytes >= _BATCH or (
            self._pending and time.monotonic() - self._last_write >= _FLUSH_SECONDS
        )
        if store_now and due:
            self._write_pending()  # only ever from the runner's thread: it owns the store

    def _write_pending(self) -> None:
        self._last_write = time.monotonic()
        if not self._pending:
            return
        rows: list[tuple[int, int, int, bytes]] = []
        for stream, buf in self._pending:
            for start in range(0, len(buf), _SEGMENT):
                piece = bytes(buf[start : start + _SEGMENT])
                self._seq += 1
                self._digest.update(_frame(stream, piece))
                rows.append((self._seq, stream, len(piece), zlib.compress(piece, _ZLIB_LEVEL)))
        self._pending, self._pending_bytes = [], 0
        self.store.add_output_chunks(self.run_id, rows)


def _frame(stream: int, data: bytes) -> bytes:
    return bytes([stream]) + len(data).to_bytes(8, "big") + data


def replay(store: Store, run_id: str) -> Iterator[tuple[int, bytes]]:
    """The stored ``(stream, bytes)`` pieces of a run, in order; StoreError if one is damaged."""
    expected = 1
    for seq, stream, size, data in store.output_chunks(run_id):
        if seq != expected or stream not in (1, 2):
            raise StoreError(f"run {run_id}: output chunk {expected} is missing or damaged")
        try:
            # Never inflate more than the row says: a forged row cannot exhaust memory.
            inflater = zlib.decompressobj()
            piece = inflater.decompress(data, size + 1)
        except (zlib.error, TypeError):
            raise StoreError(f"run {run_id}: output chunk {seq} is corrupt") from None
        if len(piece) != size:
            raise StoreError(f"run {run_id}: output chunk {seq} has the wrong size")
        expected += 1
        yield stream, piece


def stored_digest(store: Store, run_id: str) -> str:
    """Recompute the digest of a run's stored output (compare with the run's record)."""
    return pieces_digest(replay(store, run_id))


def pieces_digest(pieces: Iterable[tuple[int, bytes]]) -> str:
    """The output digest of ``(stream, bytes)`` pieces (a client checks a server's with it)."""
    digest = hashlib.sha256()
    for stream, piece in pieces:
        digest.update(_frame(stream, piece))
    return "sha256:" + digest.hexdigest()
