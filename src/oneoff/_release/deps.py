"""Dependency snapshot of a Python interpreter: implementation, version, installed distributions.

Each distribution is recorded by PEP 503-normalized name, version, a SHA-256 of its
``RECORD`` file (which itself lists a hash of every installed file, so a reinstall from a
different wheel shows even at the same version) and whether it is an editable install
(PEP 660 ``direct_url.json``). A distribution without ``RECORD`` is recorded with
``record_sha256 = None``.

Files at the top of a site directory (``site-packages``) that no distribution's RECORD
lists and that Python would load (a ``.pth``, which runs at interpreter start-up, a
``sitecustomize.py``, any module, extension or package directory) are recorded too, by
name and SHA-256 (``unrecorded``): one planted after the release shows as drift, while an
environment that legitimately has some (``virtualenv``'s ``_virtualenv.pth``) still
verifies. Files added or changed *inside* an installed package are not noticed.

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

__all__ = [
    "PATH_VARS",
    "SITE_PATHS",
    "DepsSnapshot",
    "Distribution",
    "diff_deps",
    "normalize_name",
    "probe_env",
    "shaped_by_operator",
    "snapshot_deps",
]

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
        "unrecorded": unrecorded(paths),
    }


def unrecorded(paths):
    # Names at the top of a site directory that no distribution's RECORD lists and that
    # Python would load: a .pth runs at start-up, a module or package shadows others.
    import hashlib, os, site, sys
    from importlib import metadata

    # Every directory a site.py could treat as a site dir: extra ones only cost a listing.
    sites = list(site.getsitepackages([sys.prefix, sys.base_prefix]))
    exe_dir = os.path.dirname(os.path.abspath(sys.executable))
    sites += site.getsitepackages([os.path.dirname(exe_dir)])
    sites.append(site.getusersitepackages())
    wanted = set(os.path.realpath(p) for p in sites)
    loadable = (".py", ".pyc", ".pyo", ".pyw", ".pyd", ".so", ".pth")
    found = {}
    for entry in paths:
        real = os.path.realpath(entry or ".")
        if real not in wanted or not os.path.isdir(real):
            continue
        wanted.discard(real)
        recorded = set()
        for dist in metadata.distributions(path=[entry]):
            for file in dist.files or ():
                top = str(file).replace("\\", "/").split("/")[0]
                recorded.add(top)
        for name in sorted(os.listdir(real)):
            if name in recorded or name == "__pycache__":
                continue
            if name.endswith((".dist-info", ".egg-info")):
                continue
            full = os.path.join(real, name)
            if os.path.isdir(full):
                if name.isidentifier():
                    found[name] = "directory"
            elif name.endswith(loadable):
                try:
                    with open(full, "rb") as f:
                        found[name] = hashlib.sha256(f.read()).hexdigest()
                except OSError:
                    found[name] = "unreadable"
    return found
"""
# Another interpreter runs with -S: its .pth files are data to the probe, never code
# (a planted one must not run inside the check that is meant to refuse it). Its sys.path
# is rebuilt as site.main() would, minus the "import" lines of .pth files.
SITE_PATHS: Final = r"""
def site_paths():
    import os, site, sys
    paths = list(sys.path[1:])
    prefixes, user = [sys.prefix], site.check_enableusersite()
    # A virtualenv, found as site.venv() finds it (which would also run .pth files).
    exe_dir = os.path.dirname(os.path.abspath(sys.executable))
    for cfg_path in (os.path.join(exe_dir, "pyvenv.cfg"),
                     os.path.join(os.path.dirname(exe_dir), "pyvenv.cfg")):
        try:
            with open(cfg_path, encoding="utf-8") as f:
                cfg = [ln.partition("=") for ln in f.read().splitlines()]
        except (OSError, UnicodeDecodeError):
            continue
        prefixes, user = [os.path.dirname(exe_dir)], False
        for key, _, value in cfg:
            if key.strip().lower() == "include-system-site-packages":
                if value.strip().lower() == "true":
                    prefixes.append(sys.prefix)
        break
    dirs = [site.getusersitepackages()] if user else []
    for sitedir in dirs + list(site.getsitepackages(prefixes)):
        if not os.path.isdir(sitedir) or sitedir in paths:
            continue
        paths.append(sitedir)
        for name in sorted(os.listdir(sitedir)):
            if not name.endswith(".pth") or name.startswith("."):
                continue
            try:
                with open(os.path.join(sitedir, name), encoding="utf-8") as f:
                    lines = f.read().splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            for line in lines:
                if not line.strip() or line.startswith(("#", "import ", "import\t")):
                    continue
                extra = os.path.abspath(os.path.join(sitedir, line.rstrip()))
                if extra not in paths and os.path.exists(extra):
                    paths.append(extra)
    return paths
"""
_CHILD_MAIN: Final = SITE_PATHS + "\nimport json\nprint(json.dumps(probe(site_paths())))\n"


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
    unrecorded: Mapping[str, str] = MappingProxyType({})

    @classmethod
    def build(
        cls,
        implementation: str,
        python_version: str,
        distributions: Mapping[str, Distribution],
        unrecorded: Mapping[str, str] | None = None,
    ) -> DepsSnapshot:
        """A snapshot with its digest computed."""
        frozen = MappingProxyType(dict(sorted(distributions.items())))
        strays = MappingProxyType(dict(sorted((unrecorded or {}).items())))
        body = _body(implementation, python_version, frozen, strays)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        digest = hashlib.sha256(_DIGEST_PREFIX + canonical.encode("ascii")).hexdigest()
        return cls(implementation, python_version, frozen, digest, strays)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        body = _body(self.implementation, self.python_version, self.distributions, self.unrecorded)
        return {"format": FORMAT, "digest": self.digest, **body}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DepsSnapshot:
        """Parse ``to_dict()`` output strictly; raises ``ReleaseError`` on anything off."""
        keys = {"format", "digest", "implementation", "python_version", "distributions"}
        if isinstance(data, Mapping) and "unrecorded" in data:
            keys.add("unrecorded")
        if not isinstance(data, Mapping) or set(data) != keys:
            raise ReleaseError(f"deps snapshot: expected an object with keys {sorted(keys)}")
        if data["format"] != FORMAT:
            raise ReleaseError(f"deps snapshot: unsupported format {data['format']!r}")
        snap = _parse(data, normalized=True)
        if snap.digest != data["digest"]:
            raise ReleaseError("deps snapshot: digest does not match its contents")
        return snap


def _body(
    implementation: str,
    python_version: str,
    dists: Mapping[str, Distribution],
    unrecorded: Mapping[str, str],
) -> dict[str, Any]:
    # Only present when there is something: snapshots from before it keep their digest.
    extra = {"unrecorded": dict(unrecorded)} if unrecorded else {}
    return {
        **extra,
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
    return DepsSnapshot.build(impl, version, dists, _parse_unrecorded(data.get("unrecorded", {})))


def _parse_unrecorded(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ReleaseError("deps snapshot: unrecorded must be an object")
    out: dict[str, str] = {}
    for name, digest in raw.items():
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise ReleaseError(f"deps snapshot: bad unrecorded file name {name!r}")
        if not isinstance(digest, str) or not (
            digest in ("directory", "unreadable") or _HEX64.fullmatch(digest)
        ):
            raise ReleaseError(f"deps snapshot: bad digest for unrecorded file {name!r}")
        out[name] = digest
    return out


def _probe_here() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    # Our own constant source, shared with the subprocess path so both agree exactly.
    exec(compile(_PROBE, "<oneoff deps probe>", "exec"), namespace)  # noqa: S102
    paths = sys.path if sys.flags.safe_path else sys.path[1:]
    result: dict[str, Any] = namespace["probe"](paths)
    return result


def _probe_other(python: str) -> dict[str, Any]:
    argv = [python, "-S", "-c", _PROBE + _CHILD_MAIN]
    try:
        proc = subprocess.run(
            argv, capture_output=True, env=probe_env(), timeout=_PROBE_TIMEOUT, check=False
        )
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


# What shapes an interpreter's sys.path from its environment. A task never gets these from
# the operator (oneoff._environ.materialize), and its HOME is the OS user's.
PATH_VARS: Final = (
    "PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE", "PYTHONSAFEPATH", "PYTHONUSERBASE",
    "PYTHONPLATLIBDIR",
)  # fmt: skip


def probe_env() -> dict[str, str]:
    """The environment the deps probe runs in: what a task's interpreter starts with, as far
    as its ``sys.path`` goes (so the operator's ``PYTHONPATH`` cannot hide a changed
    dependency from the check, nor add one the task will never see)."""
    import pwd

    return {"HOME": pwd.getpwuid(os.getuid()).pw_dir, "PATH": "/usr/local/bin:/usr/bin:/bin"}


def shaped_by_operator() -> bool:
    """Whether this process's own ``sys.path`` differs from a task's by what the operator's
    environment set; the in-process probe then does not describe the task."""
    if any(var in os.environ for var in PATH_VARS):
        return True
    return os.environ.get("HOME") != probe_env()["HOME"]


def snapshot_deps(python: str | None = None) -> DepsSnapshot:
    """Snapshot the current interpreter (``None``) or the one at path/command ``python``,
    with ``sys.path`` as a task started by oneoff gets it."""
    if (python is None or python == sys.executable) and not shaped_by_operator():
        data = _probe_here()
    else:
        data = _probe_other(os.fspath(python or sys.executable))
    if set(data) != {"implementation", "python_version", "distributions", "unrecorded"}:
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
    for name in sorted(old.unrecorded.keys() | new.unrecorded.keys()):
        was, now = old.unrecorded.get(name), new.unrecorded.get(name)
        if was != now:
            how = "added" if was is None else "removed" if now is None else "modified"
            yield f"{name} in site-packages, of no distribution ({how})"
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
