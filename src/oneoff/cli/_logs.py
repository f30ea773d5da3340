"""`oneoff logs RUN`: replay a run's stored, redacted output, checked against its digest."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Iterable

from oneoff._log import log
from oneoff._output import replay, stored_digest
from oneoff._text import OutputEscaper
from oneoff.errors import StoreError

__all__ = ["cmd_logs"]

_NAMES = {1: "stdout", 2: "stderr"}


def cmd_logs(args: argparse.Namespace) -> int:
    from oneoff.cli._remote import resolve

    pieces: Iterable[tuple[int, bytes]]
    remote, app = resolve(args, key=args.key)
    if remote is not None:
        from oneoff._output import pieces_digest
        from oneoff.cli._remote import closed
        from oneoff.cli._remote_runs import remote_chunks, remote_run

        with closed(remote):
            run = remote_run(remote, args.run)
            pieces = list(remote_chunks(remote, run))
        digest = pieces_digest(pieces)
    else:
        assert app is not None
        run = app.store.get_run(args.run)
        digest = stored_digest(app.store, run.id)
        pieces = replay(app.store, run.id)  # lazily: output can be large
    if run.output_digest is not None and digest != run.output_digest:
        raise StoreError(
            f"run {run.id}: stored output does not match its recorded digest (altered)",
            hint="compare with the run.finished event: `oneoff audit export --run RUN`",
        )
    wanted = {"all": (1, 2), "stdout": (1,), "stderr": (2,)}[args.stream]
    sinks = {1: sys.stdout.buffer, 2: sys.stderr.buffer}
    escapers = _escapers(args)
    for stream, piece in pieces:
        if stream not in wanted:
            continue
        if stream in escapers:
            piece = escapers[stream].feed(piece)
        if args.json:
            # Output is bytes, not text: base64 keeps binary and invalid UTF-8 exact.
            record = {"stream": _NAMES[stream], "data": base64.b64encode(piece).decode()}
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
        else:
            sinks[stream].write(piece)
            sinks[stream].flush()
    for stream, escaper in escapers.items():
        sinks[stream].write(escaper.feed(b"", final=True))
        sinks[stream].flush()
    if run.status == "running":
        log("logs.running", f"run {run.id} is still running; output so far", run_id=run.id)
    if run.output_truncated:
        log(
            "logs.truncated",
            f"output truncated: run {run.id} wrote {run.output_bytes} bytes, only the first "
            "part was stored ([audit] output_cap)",
            level="warning", run_id=run.id, output_bytes=run.output_bytes,
        )  # fmt: skip
    return 0


def _escapers(args: argparse.Namespace) -> dict[int, OutputEscaper]:
    """An escaper per stream that goes to a terminal (unless ``--raw``).

    A replayed run may be someone else's, or come from a server: its escape sequences would
    act on the viewer's terminal (recolour or erase lines, set the title, write the
    clipboard with OSC 52), and a lone CR or a bidi override can hide or reorder what it
    printed. On a terminal they are shown escaped; into a pipe or a file the bytes stay
    exactly as stored (what the output digest covers), and ``--raw`` asks for them as they
    are on a terminal too. ``--json`` carries the bytes base64-encoded, untouched.
    """
    if args.json or getattr(args, "raw", False):
        return {}
    found = {}
    for stream, sink in ((1, sys.stdout), (2, sys.stderr)):
        try:
            on_terminal = sink.isatty()
        except (AttributeError, ValueError):
            on_terminal = False
        if on_terminal:
            found[stream] = OutputEscaper()
    return found
