"""`oneoff runs|show|logs|locks --server URL`: run history read from the team server.

The server's ``/v1/runs`` endpoints return runs as ``runs --json`` prints them, so both
modes render the same records with the same code (``cli/_runs.py``). ``logs`` replays the
stored, redacted chunks the server returns and checks them against the run's recorded
output digest here, as local mode does against the store.
"""

from __future__ import annotations

import argparse
import base64
from typing import TYPE_CHECKING, Any

from oneoff._store.interface import RunRecord
from oneoff.cli._remote_access import record
from oneoff.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from oneoff._client.remote import Remote

__all__ = ["remote_chunks", "remote_locks", "remote_run", "remote_runs"]


def remote_runs(remote: Remote, args: argparse.Namespace) -> list[RunRecord]:
    query = {"limit": str(args.limit), "task": args.task, "environment": args.env,
             "status": args.status}  # fmt: skip
    data = remote.read("/v1/runs", query)
    items = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise StoreError(f"the server at {remote.url} sent no run list")
    return [record(RunRecord, item, "run") for item in items]


def remote_run(remote: Remote, run_id: str) -> RunRecord:
    from oneoff._client.remote import segment

    return record(RunRecord, remote.read(f"/v1/runs/{segment(run_id)}"), "run")


def remote_chunks(remote: Remote, run: RunRecord) -> Iterator[tuple[int, bytes]]:
    """Every stored chunk of ``run``, in order: ``(stream, bytes)``."""
    from oneoff._client.remote import segment

    after = 0
    while True:
        page = remote.read(f"/v1/runs/{segment(run.id)}/output", {"after": str(after)})
        chunks = page.get("chunks") if isinstance(page, dict) else None
        if not isinstance(chunks, list):
            raise StoreError(f"the server at {remote.url} sent no output for run {run.id}")
        if not chunks:
            return
        for chunk in chunks:
            try:
                seq, stream = int(chunk["seq"]), int(chunk["stream"])
                data = base64.b64decode(chunk["data"], validate=True)
            except (KeyError, TypeError, ValueError):
                raise StoreError("the server sent a malformed output chunk") from None
            if seq <= after:
                raise StoreError("the server sent output chunks out of order")
            after = seq
            yield stream, data


def remote_locks(remote: Remote) -> list[dict[str, Any]]:
    data = remote.read("/v1/locks")
    items = data.get("locks") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise StoreError(f"the server at {remote.url} sent no lock list")
    return [item for item in items if isinstance(item, dict)]
