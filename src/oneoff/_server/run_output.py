"""A granted run's output on the server: chunks as runners send them, as readers get them,
and the secrets the server itself knows to redact them with (see ``oneoff._server.runs``)."""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import TYPE_CHECKING, Any

from oneoff.errors import StoreError, UsageError

if TYPE_CHECKING:
    from oneoff._app import App

__all__ = ["MAX_CHUNK", "output_after", "parse_chunk", "seq_of"]

MAX_CHUNK = 256 * 1024  # oneoff._output's row size: one runner row, one stored row


def seq_of(chunk: object) -> int:
    seq = chunk.get("seq") if isinstance(chunk, dict) else None
    if type(seq) is not int or seq < 1:
        raise UsageError("each chunk needs a seq (1, 2, ...)")
    return seq


def parse_chunk(chunk: object) -> tuple[int, int, bytes]:
    assert isinstance(chunk, dict)
    stream, data = chunk.get("stream"), chunk.get("data")
    if stream not in (1, 2) or not isinstance(data, str):
        raise UsageError("each chunk needs a stream (1 or 2) and base64 data")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError("a chunk's data is not base64") from None
    if len(raw) > MAX_CHUNK:
        raise UsageError(f"a chunk holds at most {MAX_CHUNK} bytes")
    return seq_of(chunk), stream, raw


def output_after(app: App, run_id: str, after: int) -> dict[str, Any]:
    """Chunks after ``after`` (at most ~4 MiB of them), as base64, and the run's status.
    Only those are inflated (a live stream asks often); a damaged one is a StoreError."""
    run = app.store.get_run(run_id)
    chunks, size = [], 0
    for expected, (seq, stream, length, data) in enumerate(app.store.output_chunks(run.id), 1):
        if seq != expected or stream not in (1, 2):
            raise StoreError(f"run {run.id}: output chunk {expected} is missing or damaged")
        if seq <= after:
            continue
        try:
            piece = zlib.decompressobj().decompress(data, length + 1)
        except (zlib.error, TypeError):
            raise StoreError(f"run {run.id}: output chunk {seq} is corrupt") from None
        if len(piece) != length:
            raise StoreError(f"run {run.id}: output chunk {seq} has the wrong size")
        chunks.append({"seq": seq, "stream": stream, "data": base64.b64encode(piece).decode()})
        size += len(piece)
        if size > 4 * 1024 * 1024:
            break
    return {"run": run.id, "status": run.status, "exit_code": run.exit_code, "chunks": chunks}
