"""Which executors this machine can run, and why not: probed for real, for `oneoff doctor`."""

from __future__ import annotations

from collections.abc import Callable

from oneoff._record import dataclass

__all__ = ["Capability", "executors"]


@dataclass(frozen=True)
class Capability:
    """One thing oneoff may rely on here: whether it works, and what was found (or not)."""

    name: str
    ok: bool
    detail: str


def _local() -> tuple[bool, str]:
    return True, "a child process of oneoff, in its own process group"


def _sandbox() -> tuple[bool, str]:
    import sys

    if not sys.platform.startswith("linux"):
        return False, "bubblewrap needs Linux"
    from oneoff._executor.sandbox import available

    return available()


def _podman() -> tuple[bool, str]:
    from oneoff._executor.container import available

    return available("podman")


def _docker() -> tuple[bool, str]:
    from oneoff._executor.container import available

    return available("docker")


def _kubernetes() -> tuple[bool, str]:
    import importlib.util

    if importlib.util.find_spec("kubernetes") is None:
        return False, "needs the Kubernetes client: pip install 'oneoff[kubernetes]'"
    from oneoff._executor.kubernetes import load_client
    from oneoff.errors import ExecError

    try:
        api = load_client(None)
    except ExecError as exc:
        return False, exc.message
    # The configuration is checked, the cluster is not contacted (doctor stays offline).
    return True, f"kubeconfig points at {api.configuration.host} (not contacted)"


PROBES: dict[str, Callable[[], tuple[bool, str]]] = {
    "local": _local,
    "sandbox": _sandbox,
    "container (podman)": _podman,
    "container (docker)": _docker,
    "kubernetes": _kubernetes,
}


def executors() -> list[Capability]:
    """Every executor kind with the outcome of actually trying it."""
    found = []
    for name, probe in PROBES.items():
        ok, detail = probe()
        found.append(Capability(name=name, ok=ok, detail=detail))
    return found
