"""What every store backend provides; SQLite today, PostgreSQL next, one contract test suite."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["RUN_STATUSES", "RunRecord", "RunStatus", "RunStore", "Store"]

RunStatus = Literal["running", "succeeded", "failed", "timed_out", "cancelled", "lost"]
RUN_STATUSES: tuple[str, ...] = (
    "running", "succeeded", "failed", "timed_out", "cancelled", "lost",
)  # fmt: skip


@dataclass
class RunRecord:
    """One execution of a task, as stored. Secret params are never in ``params``."""

    id: str
    task: str
    environment: str
    params: dict[str, str]
    principal: str
    plan_hash: str
    status: RunStatus
    started_at: str
    runner_host: str
    runner_pid: int
    runner_token: str
    release_id: str | None = None
    exit_code: int | None = None
    ended_at: str | None = None
    allow_drift: bool = False
    request_id: str | None = None
    break_glass: bool = False
    reason: str | None = None
    output_bytes: int | None = None
    output_digest: str | None = None
    output_truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class RunStore(Protocol):
    def create_run(self, run: RunRecord) -> None: ...

    def finish_run(
        self,
        run_id: str,
        *,
        status: RunStatus,
        exit_code: int | None,
        ended_at: str,
        output_bytes: int | None = None,
        output_digest: str | None = None,
        output_truncated: bool = False,
    ) -> None: ...

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id or unique id prefix; StoreError/UsageError otherwise."""
        ...

    def list_runs(
        self,
        *,
        limit: int = 20,
        task: str | None = None,
        environment: str | None = None,
        status: str | None = None,
    ) -> Sequence[RunRecord]: ...

    def running_runs(self) -> Sequence[RunRecord]: ...

    def mark_lost(self, run_id: str, *, ended_at: str) -> bool:
        """Mark a still-running run as lost; False if it had already ended."""
        ...


class Store(RunStore, Protocol):
    """The whole store; grows by one protocol per area (audit, releases, approvals, locks)."""

    def close(self) -> None: ...
