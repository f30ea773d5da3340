"""The executor contract: run a resolved plan with a complete environment, stream its output."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from oneoff._contain import RunTree
    from oneoff._plan import Plan
    from oneoff._proc import ProcessResult

__all__ = ["Executor", "OutputSink"]

OutputSink = Callable[[int, bytes], None]


class Executor(Protocol):
    name: str

    def execute(
        self,
        plan: Plan,
        env: Mapping[str, str],
        on_output: OutputSink,
        *,
        stdin_data: bytes | None,
        tree: RunTree | None = None,
    ) -> ProcessResult:
        """Run ``plan.argv`` with exactly ``env``; every output byte goes to ``on_output``.

        ``tree`` is the run's process tree (oneoff._contain): start the task in it and
        kill it with the task; the pipeline confirms it empty before releasing locks.
        """
        ...
