"""Which release a run uses, whether its signature holds, and whether this machine matches it.

``verify_for_run`` is the pipeline's "verify release" stage, run before every ``run``,
``plan`` and ``exec``; ``oneoff release verify`` calls the same code. Signature and
tamper failures always refuse; drift (code, dependencies or config differing from the
release) refuses too, unless an unprotected environment passed ``allow_drift``.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import TYPE_CHECKING, Any

from oneoff._canonical import canonical_hash
from oneoff._clock import utc_iso
from oneoff._identity import os_user
from oneoff._release.configdigest import ConfigSnapshot, config_digest, diff_config
from oneoff._release.deps import DepsSnapshot, diff_deps
from oneoff._release.document import Release, release_from_record, verify_signature
from oneoff._release.settings import env_settings, release_ignore
from oneoff._release.stage import Checked
from oneoff._release.tree import StatCache, TreeSnapshot, describe, snapshot, unchanged, verify
from oneoff._release.warm import SignatureCache, cached_deps
from oneoff.errors import DriftError, ReleaseError, UsageError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._environ import Materialized
    from oneoff._manifest import Environment, Project
    from oneoff._store.interface import ReleaseRecord

__all__ = [
    "Checked",
    "check_signature",
    "drift",
    "from_record",
    "load_release",
    "local_code",
    "local_config",
    "local_deps",
    "manifest_digest",
    "now",
    "resolve",
    "verify_for_run",
]

# Values oneoff derives on this machine (PATH from [app], HOME of the OS user), the
# operator's terminal settings and per-run values are not the environment's config.
_NOT_CONFIG = frozenset({"terminal", "oneoff default", "OS user", "oneoff run", "secret param"})
_VERSION = re.compile(r"v([1-9][0-9]{0,8})")


now = utc_iso


def _jsonable(value: Any) -> Any:
    # TOML has floats and dates; canonical JSON has neither, so tag them as strings.
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return {"toml-float": repr(value)}
    if isinstance(value, _dt.date | _dt.time):
        return {"toml-datetime": value.isoformat()}
    return value


def manifest_digest(project: Project) -> str:
    """Canonical digest of the whole declaration plus the resolved process types (Procfile)."""
    body = {"manifest": _jsonable(project.raw), "processes": _jsonable(dict(project.processes))}
    return canonical_hash(body)


def local_code(app: App) -> TreeSnapshot:
    return snapshot(app.root, ignore=release_ignore(app.project), cache=_stat_cache(app))


def _stat_cache(app: App) -> StatCache:
    return StatCache(app.state_dir / "statcache", key=app.secret_file("statcache.key"))


def local_deps(app: App) -> DepsSnapshot:
    from oneoff._environ import app_python

    return cached_deps(app_python(app.project), app.state_dir, app.secret_file("cache.key"))


def local_config(app: App, env: Materialized) -> ConfigSnapshot:
    values = {
        k: v for k, v in env.values.items()
        if env.origin.get(k) not in _NOT_CONFIG and not k.startswith("ONEOFF_")
    }  # fmt: skip
    key = app.secret_file("config-hmac.key")
    return config_digest(values, env.secret_keys & values.keys(), key)


def load_release(app: App, ref: str) -> Release:
    """A stored release by id, unique id prefix; checked against tampering, not signature."""
    return from_record(app, app.store.get_release(ref))


def from_record(app: App, record: ReleaseRecord) -> Release:
    """Parse a stored row (tamper checks included); its code entries load on first use."""
    store = app.store
    release = release_from_record(record, lambda: store.release_code_entries(record.id))
    if release.app != app.project.name:
        raise ReleaseError(f"release {release.short} belongs to app {release.app!r}")
    return release


def resolve(app: App, environment: Environment, ref: str | None) -> Release | None:
    """``ref`` (id, prefix or ``vN``) or the environment's current release; None if none."""
    store = app.store
    name = environment.name
    if ref is None:
        current = store.current_release_id(name)
        if current is None:
            if env_settings(app.project, environment).require_signed:
                raise ReleaseError(
                    f"environment {name!r} has no current release and requires a signed one",
                    hint=f"oneoff release create --env {name} --key FILE",
                )
            return None
        return from_record(app, store.get_release(current))
    match = _VERSION.fullmatch(ref)
    if match:
        record = store.release_by_version(name, int(match.group(1)))
        if record is None:
            raise UsageError(f"environment {name!r} has no release {ref}")
        return from_record(app, record)
    release = from_record(app, store.get_release(ref))
    if release.environment != name:
        raise ReleaseError(
            f"release {release.label} was made for {release.environment!r}, not {name!r}",
            hint=f"oneoff release promote {release.short} --env {name}",
        )
    return release


def check_signature(app: App, release: Release, environment: Environment) -> str:
    """Verify the signature for ``environment``; returns the key id ("" when unsigned)."""
    settings = env_settings(app.project, environment)
    if release.signature is None:
        return verify_signature(release, settings, environment.name)
    cache = SignatureCache(app.state_dir, app.secret_file("cache.key"))
    tag = cache.tag(
        [release.id, release.signature, str(release.key_id), environment.name,
         *sorted(k.fingerprint for k in settings.trusted_keys)]
    )  # fmt: skip
    if tag in cache:
        return str(release.key_id)
    key_id = verify_signature(release, settings, environment.name)
    cache.add(tag)
    return key_id


def drift(app: App, release: Release, env: Materialized) -> list[str]:
    """What on this machine differs from ``release``: one line per area, empty if none."""
    lines: list[str] = []
    ignore, cache = release_ignore(app.project), _stat_cache(app)
    # The warm path: stat calls only, and the release's file list is never even parsed.
    if not unchanged(app.root, release.code_digest, ignore=ignore, cache=cache):
        changes = verify(app.root, release.code, ignore=ignore, cache=cache)
        if changes:
            lines.append(describe(changes))
    if manifest_digest(app.project) != release.manifest:
        lines.append("task catalogue or process types differ (oneoff.toml)")
    deps = diff_deps(release.deps, local_deps(app))
    if deps:
        lines.append(f"dependencies: {', '.join(deps)}")
    config = diff_config(release.config, local_config(app, env))
    if config:
        lines.append(f"config: {', '.join(config)}")
    return lines


def verify_for_run(
    app: App, environment: Environment, ref: str | None, env: Materialized, allow_drift: bool
) -> Checked:
    """Resolve and verify the release a run/plan/exec uses, or refuse (audited)."""
    if allow_drift and environment.protected:
        raise UsageError(
            f"--allow-drift is not allowed on protected environment {environment.name!r}"
        )
    release: Release | None = None
    try:
        release = resolve(app, environment, ref)
        if release is None:
            return Checked(None, (), allow_drift)
        check_signature(app, release, environment)
        lines = drift(app, release, env)
        if lines and not allow_drift:
            raise DriftError(
                f"release {release.label} does not match this machine: {'; '.join(lines)}",
                hint="deploy the release unchanged, or cut a new one with `oneoff release create`",
            )
    except ReleaseError as exc:
        app.audit.append(
            "release.verify_failed",
            actor=os_user(),
            environment=environment.name,
            release_id=None if release is None else release.id,
            payload={"error": exc.message, "drift": isinstance(exc, DriftError)},
        )
        raise
    if lines:
        app.audit.append(
            "release.drift_allowed",
            actor=os_user(),
            environment=environment.name,
            release_id=release.id,
            payload={"drift": lines},
        )
    return Checked(release, tuple(lines), allow_drift)
