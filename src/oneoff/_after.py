"""Book-keeping that may wait until the caller has its answer.

After a run is durably recorded, signing the audit checkpoint and closing the store do not
change what the caller is told. In-process they happen at once, as they always did. A
daemon runner holds them (``hold``), sends the exit code, then does them (``run_held``):
the command returns a few milliseconds sooner, and a checkpoint lands moments after the
run's own events, which ``oneoff audit verify`` accepts (events after the newest
checkpoint are chained, just not signed yet).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

__all__ = ["after_reply", "hold", "run_held"]

_held: list[Callable[[], object]] | None = None


def after_reply(work: Callable[[], object]) -> None:
    """Do ``work`` now, or after the reply when a daemon runner holds it."""
    if _held is None:
        work()
    else:
        _held.append(work)


def hold() -> None:
    global _held
    _held = []


def run_held() -> None:
    """Do the held work in order; a failure is reported and does not stop the rest."""
    global _held
    work, _held = _held or [], None
    for item in work:
        try:
            item()
        except Exception as exc:  # the answer is out: report, never hide, carry on
            from oneoff._log import log

            with contextlib.suppress(Exception):  # the caller may have closed stderr
                log(
                    "after_reply.failed",
                    f"book-keeping after the run failed: {exc}",
                    level="warning",
                )
