"""An environment's executor, as declared in oneoff.toml: parsed, validated, hashed, shown.

``executor = { kind = "local" | "sandbox" | "container" | "kubernetes", ... }`` in an
environment's table. The spec is part of the plan document (so an approval covers where a
task runs, its image digest and its limits) and of the manifest digest a release records
(so ``release verify`` refuses a changed image digest).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from oneoff._record import dataclass, field
from oneoff.errors import ManifestError

__all__ = ["KINDS", "ExecutorSpec", "Mount", "parse_executor"]

KINDS = ("local", "sandbox", "container", "kubernetes")
DIGEST_RE = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
_MEMORY_RE = re.compile(r"^[1-9][0-9]*[kmg]?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")
_NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_KEYS: dict[str, set[str]] = {
    "local": {"kind"},
    "sandbox": {"kind", "writable"},
    "container": {"kind", "image", "engine", "runtime", "workdir", "user", "memory", "cpus",
                  "read_only", "network", "mounts"},
    "kubernetes": {"kind", "image", "namespace", "deployment", "container", "ttl", "context"},
}  # fmt: skip


@dataclass(frozen=True)
class Mount:
    """A host path declared for a container: nothing of the host is visible otherwise."""

    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class ExecutorSpec:
    """Where an environment's one-off processes run, with every knob that changes it."""

    kind: str = "local"
    image: str | None = None
    engine: str = "podman"
    runtime: str | None = None
    workdir: str = "/app"
    user: str | None = None
    memory: str | None = None
    cpus: float | None = None
    read_only: bool = True
    network: str = "bridge"
    mounts: tuple[Mount, ...] = ()
    writable: tuple[str, ...] = ()
    namespace: str | None = None
    deployment: str | None = None
    container: str | None = None
    ttl: int = 3600
    context: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def pinned(self) -> bool:
        return self.image is not None and bool(DIGEST_RE.match(self.image))

    def document(self) -> dict[str, Any]:
        """The canonical form hashed into the plan: every declared knob, defaults included."""
        doc: dict[str, Any] = {"kind": self.kind}
        if self.kind == "sandbox":
            doc["writable"] = list(self.writable)
        elif self.kind == "container":
            doc.update(
                image=self.image, engine=self.engine, runtime=self.runtime,
                workdir=self.workdir, user=self.user, memory=self.memory,
                # Canonical JSON has no floats: the CPU count is hashed as its text.
                cpus=None if self.cpus is None else f"{self.cpus:g}",
                read_only=self.read_only, network=self.network,
                mounts=[[m.source, m.target, m.read_only] for m in self.mounts],
            )  # fmt: skip
        elif self.kind == "kubernetes":
            doc.update(
                image=self.image, namespace=self.namespace, deployment=self.deployment,
                container=self.container, ttl=self.ttl, context=self.context,
            )  # fmt: skip
        return doc

    def describe(self, *, network: bool) -> str:
        """One line for ``oneoff plan``: the kind and its full spec."""
        net = "network" if network else "no network"
        if self.kind == "local":
            return "local (a child process of oneoff)"
        if self.kind == "sandbox":
            writable = ", ".join(self.writable) or "none"
            return (
                f"sandbox (bubblewrap; code read-only, private /tmp, {net}; writable: {writable})"
            )
        if self.kind == "container":
            parts = [
                f"container ({self.engine}"
                + (f", runtime {self.runtime})" if self.runtime else ")"),
                f"image {self.image}",
                f"network {self.network if network else 'none'}",
                f"workdir {self.workdir}",
                "read-only root" if self.read_only else "writable root",
                f"user {self.user or 'image default'}",
                f"memory {self.memory or 'unlimited'}",
                f"cpus {self.cpus if self.cpus is not None else 'unlimited'}",
            ]
            parts += [
                f"mount {m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in self.mounts
            ]
            return "; ".join(parts)
        return "; ".join(
            [
                f"kubernetes Job (from deployment {self.namespace}/{self.deployment}"
                + (f", container {self.container})" if self.container else ")"),
                f"image {self.image}",
                f"ttl {self.ttl}s after finishing",
                f"context {self.context or 'current'}",
            ]
        )


LOCAL = ExecutorSpec()


def parse_executor(raw: Any, where: str, *, protected: bool) -> ExecutorSpec:
    """Validate an environment's ``executor`` table; every error names the place."""
    if raw is None:
        return LOCAL
    ctx = f"{where}: executor"
    if not isinstance(raw, dict):
        raise ManifestError(f'{ctx}: must be a table like {{ kind = "sandbox" }}')
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ManifestError(f"{ctx}: unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    unknown = set(raw) - _KEYS[kind]
    if unknown:
        raise ManifestError(
            f"{ctx}: unknown key(s) for kind {kind!r}: {', '.join(sorted(unknown))}"
        )
    if kind == "local":
        return LOCAL
    if kind == "sandbox":
        writable = _paths(raw.get("writable", []), f"{ctx}: writable")
        return ExecutorSpec(kind=kind, writable=writable, raw=raw)
    image = _image(raw.get("image"), ctx, protected=protected)
    if kind == "container":
        return _container(raw, ctx, image)
    return _kubernetes(raw, ctx, image)


def _image(value: Any, ctx: str, *, protected: bool) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ManifestError(f"{ctx}: image must name an image, like name@sha256:<64 hex>")
    if protected and not DIGEST_RE.match(value):
        raise ManifestError(
            f"{ctx}: image {value!r} has no digest; a protected environment pins its image "
            "as name@sha256:<64 hex> (a tag can be moved to other code)"
        )
    return value


def _container(raw: Mapping[str, Any], ctx: str, image: str) -> ExecutorSpec:
    engine = raw.get("engine", "podman")
    if engine not in ("podman", "docker"):
        raise ManifestError(f"{ctx}: engine must be podman or docker")
    runtime = _opt_str(raw.get("runtime"), f"{ctx}: runtime", _NETWORK_RE)
    workdir = raw.get("workdir", "/app")
    if not isinstance(workdir, str) or not workdir.startswith("/"):
        raise ManifestError(f"{ctx}: workdir must be an absolute path in the image")
    user = _opt_str(raw.get("user"), f"{ctx}: user", _USER_RE)
    memory = raw.get("memory")
    if memory is not None and (not isinstance(memory, str) or not _MEMORY_RE.match(memory)):
        raise ManifestError(f'{ctx}: memory must look like "256m" or "2g"')
    cpus = raw.get("cpus")
    if cpus is not None and (
        isinstance(cpus, bool) or not isinstance(cpus, int | float) or not 0 < cpus <= 1024
    ):
        raise ManifestError(f"{ctx}: cpus must be a number of CPUs above 0, at most 1024")
    read_only = raw.get("read_only", True)
    if not isinstance(read_only, bool):
        raise ManifestError(f"{ctx}: read_only must be true or false")
    network = _opt_str(raw.get("network", "bridge"), f"{ctx}: network", _NETWORK_RE)
    if network in (None, "none"):
        raise ManifestError(f"{ctx}: network names the network for tasks with network = true")
    return ExecutorSpec(
        kind="container", image=image, engine=engine, runtime=runtime, workdir=workdir,
        user=user, memory=memory, cpus=float(cpus) if cpus is not None else None,
        read_only=read_only, network=network or "bridge",
        mounts=_mounts(raw.get("mounts", []), f"{ctx}: mounts"), raw=raw,
    )  # fmt: skip


def _kubernetes(raw: Mapping[str, Any], ctx: str, image: str) -> ExecutorSpec:
    names = {}
    for key in ("namespace", "deployment"):
        value = raw.get(key)
        if not isinstance(value, str) or not _DNS_LABEL.match(value):
            raise ManifestError(f"{ctx}: {key} must be a Kubernetes name (lowercase, digits, -)")
        names[key] = value
    container = raw.get("container")
    if container is not None and (
        not isinstance(container, str) or not _DNS_LABEL.match(container)
    ):
        raise ManifestError(f"{ctx}: container must name a container of the pod template")
    ttl = raw.get("ttl", 3600)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
        raise ManifestError(f"{ctx}: ttl must be a number of seconds")
    context = raw.get("context")
    if context is not None and not isinstance(context, str):
        raise ManifestError(f"{ctx}: context must be a kubeconfig context name")
    return ExecutorSpec(
        kind="kubernetes", image=image, namespace=names["namespace"],
        deployment=names["deployment"], container=container, ttl=ttl, context=context, raw=raw,
    )  # fmt: skip


def _opt_str(value: Any, ctx: str, pattern: re.Pattern[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise ManifestError(f"{ctx}: invalid value {value!r}")
    return value


def _paths(value: Any, ctx: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ManifestError(f"{ctx}: must be a list of paths relative to the app")
    for path in value:
        if path.startswith("/") or ".." in path.split("/"):
            raise ManifestError(f"{ctx}: {path!r} must be a relative path inside the app")
    return tuple(value)


def _bad_mount_path(path: str) -> bool:
    return "," in path or ":" in path or "=" in path


def _mounts(value: Any, ctx: str) -> tuple[Mount, ...]:
    if not isinstance(value, list):
        raise ManifestError(f"{ctx}: must be a list of {{ source, target, read_only }} tables")
    mounts = []
    for index, item in enumerate(value):
        where = f"{ctx}[{index}]"
        if not isinstance(item, dict) or set(item) - {"source", "target", "read_only"}:
            raise ManifestError(f"{where}: must be a table with source, target, read_only")
        source, target = item.get("source"), item.get("target")
        if not isinstance(target, str) or not target.startswith("/") or _bad_mount_path(target):
            raise ManifestError(f"{where}: target must be an absolute path without , or :")
        # A relative source is inside the app (e.g. "var" for a SQLite database).
        if (
            not isinstance(source, str)
            or not source
            or _bad_mount_path(source)
            or (not source.startswith("/") and ".." in source.split("/"))
        ):
            raise ManifestError(
                f"{where}: source must be an absolute path, or one inside the app, without , or :"
            )
        read_only = item.get("read_only", True)
        if not isinstance(read_only, bool):
            raise ManifestError(f"{where}: read_only must be true or false")
        mounts.append(Mount(source=source, target=target, read_only=read_only))
    return tuple(mounts)
