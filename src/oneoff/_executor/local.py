"""The local executor: a child process of the runner, in its own process group."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from oneoff._executor.interface import OutputSink
from oneoff.errors import UsageError

if TYPE_CHECKING:
    from oneoff._contain import RunTree
    from oneoff._plan import Plan
    from oneoff._proc import ProcessResult

__all__ = ["LocalExecutor"]

MAX_PIPED_INPUT = 64 * 1024 * 1024


class LocalExecutor:
    name = "local"

    def execute(
        self,
        plan: Plan,
        env: Mapping[str, str],
        on_output: OutputSink,
        *,
        stdin_data: bytes | None,
        tree: RunTree | None = None,
    ) -> ProcessResult:
        from oneoff._proc import run_process

        interactive = plan.task.interactive
        if interactive and not os.isatty(0):
            # No terminal to relay (a script piped into a console): give the task the input
            # as plain stdin, so the end of the input is a real EOF and not a ^D that a
            # REPL may or may not see, depending on when it switches its terminal mode.
            piped = sys.stdin.buffer.read(MAX_PIPED_INPUT + 1)
            if len(piped) > MAX_PIPED_INPUT:
                raise UsageError("more than 64 MiB piped into an interactive task")
            stdin_data = (stdin_data or b"") + piped
            interactive = False
        return run_process(
            plan.argv,
            env=env,
            cwd=plan.cwd,
            timeout=float(plan.task.timeout),
            grace=float(plan.task.grace),
            on_output=on_output,
            stdin_data=stdin_data,
            interactive=interactive,
            tree=tree,
        )
