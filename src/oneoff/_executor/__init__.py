"""Where a one-off process runs: one module per executor behind ``interface.Executor``.

Backends are imported on first use, so the CLI pays only for the one an environment names
(the Kubernetes client, an optional extra, is never imported for the others).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oneoff._executor.interface import Executor
    from oneoff._executor.spec import ExecutorSpec

__all__ = ["executor_for"]


def executor_for(spec: ExecutorSpec, *, requester: str = "") -> Executor:
    """The executor an environment declares; ``requester`` is who the run is for."""
    if spec.kind == "sandbox":
        from oneoff._executor.sandbox import SandboxExecutor

        return SandboxExecutor()
    if spec.kind == "container":
        from oneoff._executor.container import ContainerExecutor

        return ContainerExecutor()
    if spec.kind == "kubernetes":
        from oneoff._executor.kubernetes import KubernetesExecutor

        return KubernetesExecutor(requester=requester)
    from oneoff._executor.local import LocalExecutor

    return LocalExecutor()
