"""The local executor: a child process of the runner, in its own process group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from oneoff._executor.interface import OutputSink

if TYPE_CHECKING:
    from oneoff._plan import Plan
    from oneoff._proc import ProcessResult

__all__ = ["LocalExecutor"]


class LocalExecutor:
    name = "local"

    def execute(
        self,
        plan: Plan,
        env: Mapping[str, str],
        on_output: OutputSink,
        *,
        stdin_data: bytes | None,
    ) -> ProcessResult:
        from oneoff._proc import run_process

        return run_process(
            plan.argv,
            env=env,
            cwd=plan.cwd,
            timeout=float(plan.task.timeout),
            grace=float(plan.task.grace),
            on_output=on_output,
            stdin_data=stdin_data,
            interactive=plan.task.interactive,
        )
