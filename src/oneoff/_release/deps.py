"""Dependency snapshot of a Python interpreter: implementation, version, installed distributions.

Each distribution is recorded by PEP 503-normalized name, version, a SHA-256 of its
``RECORD`` file (which itself lists a hash of every installed file, so a reinstall from a
different wheel shows even at the same version) and whether it is an editable install
(PEP 660 ``direct_url.json``). A distribution without ``RECORD`` is recorded with
``record_sha256 = None``.

Scope: the distributions visible on the interpreter's ``sys.path`` without its first entry
(the script directory or the current directory, which would make the result depend on
where oneoff is started). When a name appears twice, the first on the path wins, as at
import time. oneoff's own distribution is included on purpose: a different oneoff is a
different runtime.

The current interpreter is read in-process via ``importlib.metadata``; another one is run
as ``<python> -c <probe>`` (argv, no shell) and answers in JSON. Both use the same probe
code, so they agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final

from oneoff._record import dataclass
from oneoff.errors import ReleaseError

__all__ = ["DepsSnapshot", "Distribution", "diff_deps", "normalize_name", "snapshot_deps"]

FORMAT: Final = "oneoff-deps-v1"
_DIGEST_PREFIX: Final = b"oneoff-deps-v1\x00"
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_PROBE_TIMEOUT: Final = 120.0

# Runs in the target interpreter too, which may be older than ours: keep it plain 3.8 code.
_PROBE: Final = r"""
def probe(paths):
    import hashlib, json, platform, sys
    from importlib import metadata

    def record_bytes(dist):
        base = getattr(dist, "_path", None)
        if base is not None:
            try:
                with open(str(base) + "/RECORD", "rb") as f:
                    return f.read()
            except OSError:
                return None
        text = dist.read_text("RECORD")
        return None if text is None else text.encode("utf-8", "surrogateescape")

    dists = []
    for dist in metadata.distributions(path=list(paths)):
        name = dist.metadata["Name"]
        if not name:
            continue
        record = record_bytes(dist)
        editable = False
        try:
            direct = json.loads(dist.read_text("direct_url.json") or "{}")
            editable = bool(direct.get("dir_info", {}).get("editable", False))
        except (ValueError, AttributeError):
            pass
        dists.append({
            "name": str(name),
            "version": str(dist.version or ""),
            "record_sha256": None if record is None else hashlib.sha256(record).hexdigest(),
            "editable": editable,
        })
    return {
        "implementation": sys.implementation.name,
        "python_version": platform.python_version(),
        "distributions": dists,
    }
"""
_CHILD_MAIN: Final = "\nimport json, sys\nprint(json.dumps(probe(sys.path[1:])))\n"


def normalize_name(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True, slots=True)
class Distribution:
    """One installed distribution."""

    name: str
    version: str
    record_sha256: str | None
    editable: bool


@dataclass(frozen=True, slots=True)
class DepsSnapshot:
    """An interpreter and its distributions (by normalized name), with a canonical digest."""

    implementation: str
    python_version: str
    distributions: Mapping[str, Distribution]
    digest: str

    @classmethod
    def build(
        cls, implementation: str, python_version: str, distributions: Mapping[str, Distribution]
    ) -> DepsSnapshot:
        """A snapshot with its digest computed."""
        frozen = MappingProxyType(dict(sorted(distributions.items())))
        body = _body(implementation, python_version, frozen)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        digest = hashlib.sha256(_DIGEST_PREFIX + canonical.encode("ascii")).hexdigest()
        return cls(implementation, python_version, frozen, digest)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        body = _body(self.implementation, self.python_version, self.distributions)
        return {"format": FORMAT, "digest": self.digest, **body}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DepsSnapshot:
        """Parse ``to_dict()`` output strictly; raises ``ReleaseError`` on anything off."""
        keys = {"format", "digest", "implementation", "python_version", "distributions"}
        if not isinstance(data, Mapping) or set(data) != keys:
            raise ReleaseError(f"deps snapshot: expected an object with keys {sorted(keys)}")
        if data["format"] != FORMAT:
            raise ReleaseError(f"deps snapshot: unsupported format {data['format']!r}")
        snap = _parse(data, normalized=True)
        if snap.digest != data["digest"]:
            raise ReleaseError("deps snapshot: digest does not match its contents")
        return snap


def _body(
    implementation: str, python_version: str, dists: Mapping[str, Distribution]
) -> dict[str, Any]:
    return {
        "implementation": implementation,
        "python_version": python_version,
        "distributions": [
            {
                "name": d.name,
                "version": d.version,
                "record_sha256": d.record_sha256,
                "editable": d.editable,
            }
            for d in dists.values()
        ],
    }


def _parse(data: Mapping[str, Any], *, normalized: bool) -> DepsSnapshot:
    """Strictly validate probe or to_dict output; ``normalized`` forbids unnormalized or
    duplicate names (a stored snapshot) instead of normalizing them (raw probe output)."""
    impl, version, raw = data["implementation"], data["python_version"], data["distributions"]
    if not isinstance(impl, str) or not impl or not isinstance(version, str) or not version:
        raise ReleaseError("deps snapshot: bad interpreter implementation or version")
    if not isinstance(raw, list):
        raise ReleaseError("deps snapshot: distributions must be a list")
    dists: dict[str, Distribution] = {}
    for item in raw:
        if not isinstance(item, Mapping) or set(item) != {
            "name",
            "version",
            "record_sha256",
            "editable",
        }:
            raise ReleaseError("deps snapshot: bad distribution entry")
        name, dversion, record, editable = (
            item["name"],
            item["version"],
            item["record_sha256"],
            item["editable"],
        )
        if not isinstance(name, str) or not name or not isinstance(dversion, str):
            raise ReleaseError(f"deps snapshot: bad distribution name or version {item!r}")
        if record is not None and (not isinstance(record, str) or not _HEX64.fullmatch(record)):
            raise ReleaseError(f"deps snapshot: bad RECORD digest for {name!r}")
        if not isinstance(editable, bool):
            raise ReleaseError(f"deps snapshot: editable flag of {name!r} must be a boolean")
        norm = normalize_name(name)
        if normalized and (norm != name or name in dists):
            raise ReleaseError(f"deps snapshot: unnormalized or duplicate name {name!r}")
        # First on sys.path wins, as it would at import time.
        dists.setdefault(norm, Distribution(norm, dversion, record, editable))
    return DepsSnapshot.build(impl, version, dists)


def _probe_here() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    # Our own constant source, shared with the subprocess path so both agree exactly.
    exec(compile(_PROBE, "<oneoff deps probe>", "exec"), namespace)  # noqa: S102
    paths = sys.path if sys.flags.safe_path else sys.path[1:]
    result: dict[str, Any] = namespace["probe"](paths)
    return result


def _probe_other(python: str) -> dict[str, Any]:
    argv = [python, "-c", _PROBE + _CHILD_MAIN]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=_PROBE_TIMEOUT, check=False)
    except OSError as exc:
        raise ReleaseError(f"cannot run interpreter {python}: {exc.strerror or exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ReleaseError(
            f"interpreter {python} did not answer within {_PROBE_TIMEOUT:g}s"
        ) from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise ReleaseError(
            f"interpreter {python} failed to list its distributions (exit {proc.returncode}): "
            f"{tail[0]}"
        )
    try:
        data = json.loads(proc.stdout)
    except ValueError as exc:
        raise ReleaseError(f"interpreter {python} gave unreadable output") from exc
    if not isinstance(data, dict):
        raise ReleaseError(f"interpreter {python} gave unexpected output")
    return data


def snapshot_deps(python: str | None = None) -> DepsSnapshot:
    """Snapshot the current interpreter (``None``) or the one at path/command ``python``."""
    if python is None or python == sys.executable:
        data = _probe_here()
    else:
        data = _probe_other(os.fspath(python))
    if set(data) != {"implementation", "python_version", "distributions"}:
        raise ReleaseError("deps probe returned unexpected fields")
    return _parse(data, normalized=False)


def diff_deps(old: DepsSnapshot, new: DepsSnapshot) -> list[str]:
    """Human lines such as ``flask 3.1.3 -> 3.1.4`` or ``requests (removed)``; empty if equal."""
    if old.digest == new.digest:
        return []
    return list(_diff_lines(old, new))


def _diff_lines(old: DepsSnapshot, new: DepsSnapshot) -> Iterator[str]:
    if old.implementation != new.implementation:
        yield f"python implementation {old.implementation} -> {new.implementation}"
    if old.python_version != new.python_version:
        yield f"python {old.python_version} -> {new.python_version}"
    for name in sorted(old.distributions.keys() | new.distributions.keys()):
        a, b = old.distributions.get(name), new.distributions.get(name)
        if a == b:
            continue
        if a is None:
            assert b is not None
            yield f"{name} {b.version} (added)"
        elif b is None:
            yield f"{name} (removed)"
        elif a.version != b.version:
            yield f"{name} {a.version} -> {b.version}"
        elif a.editable != b.editable:
            kinds = ("installed", "editable")
            yield f"{name} {a.version} ({kinds[a.editable]} -> {kinds[b.editable]})"
        else:
            yield f"{name} {a.version} (installed files differ)"
