"""Which release a run uses, whether its signature holds, and whether this machine matches it.

``verify_for_run`` is the pipeline's "verify release" stage, run before every ``run``,
``plan`` and ``exec``; ``oneoff release verify`` calls the same code. Signature and
tamper failures always refuse; drift (code, dependencies or config differing from the
release) refuses too, unless an unprotected environment passed ``allow_drift``.
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
from typing import TYPE_CHECKING, Any

from oneoff._canonical import canonical_hash
from oneoff._clock import utc_iso
from oneoff._identity import os_user
from oneoff._release.configdigest import ConfigSnapshot, config_digest, diff_config
from oneoff._release.deps import DepsSnapshot, diff_deps
from oneoff._release.document import Release, release_from_record, verify_signature
from oneoff._release.links import describe_links, escaping_links, escaping_links_of
from oneoff._release.settings import env_settings, release_ignore
from oneoff._release.stage import Checked
from oneoff._release.statcache import _NO_DIGEST
from oneoff._release.strays import cached_strays, describe_strays, entry_dirs, strays
from oneoff._release.tree import StatCache, TreeSnapshot, describe, snapshot, unchanged, verify
from oneoff._release.warm import SignatureCache, cached_deps
from oneoff.errors import DriftError, ReleaseError, UsageError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._auth.files import AccessFiles
    from oneoff._environ import Materialized
    from oneoff._manifest import Environment, Project
    from oneoff._release.listing import _Ignore
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
    "own_venv",
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


def _stat_cache(app: App, use_cache: bool = True) -> StatCache | None:
    # Keyed outside .oneoff/: whoever can write .oneoff/ cannot make it vouch for a file.
    key = app.cache_key("statcache") if use_cache else None
    return None if key is None else StatCache(app.state_dir / "statcache", key=key)


def local_deps(app: App, use_cache: bool = True) -> DepsSnapshot:
    from oneoff._environ import app_python

    key = app.cache_key("deps") if use_cache else None
    if key is None:
        from oneoff._release.deps import snapshot_deps

        python = app_python(app.project)
        return snapshot_deps(None if python == sys.executable else python)
    return cached_deps(app_python(app.project), app.state_dir, key)


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


def check_signature(
    app: App, release: Release, environment: Environment, use_cache: bool = True
) -> str:
    """Verify the signature for ``environment``; returns the key id ("" when unsigned)."""
    settings = env_settings(app.project, environment)
    key = app.cache_key("signatures") if use_cache else None
    if release.signature is None or key is None:
        return verify_signature(release, settings, environment.name)
    cache = SignatureCache(app.state_dir, key)
    tag = cache.tag(
        [release.id, release.signature, str(release.key_id), environment.name,
         *sorted(k.fingerprint for k in settings.trusted_keys)]
    )  # fmt: skip
    if tag in cache:
        return str(release.key_id)
    key_id = verify_signature(release, settings, environment.name)
    cache.add(tag)
    return key_id


def drift(app: App, release: Release, env: Materialized, *, use_cache: bool = True) -> list[str]:
    """What on this machine differs from ``release``: one line per area, empty if none.

    The people and policy files are read once, first, and those bytes are compared with
    the release in full (never vouched for by a stat): the gate later evaluates exactly
    them (``App.access_files``). oneoff.toml is compared in full too: ``manifest_digest``
    covers what was parsed from the one read that loaded the project.
    """
    lines: list[str] = []
    access = _access_files(app)
    ignore, cache = release_ignore(app.project), _stat_cache(app, use_cache)
    # The warm path: stat calls only, and the release's file list is never even parsed.
    warm = cache is not None and unchanged(
        app.root, release.code_digest, ignore=ignore, cache=cache
    )
    if not warm:
        changes = verify(app.root, release.code, ignore=ignore, cache=cache)
        if changes:
            lines.append(describe(changes))
    stray = _strays(app, release, cache if warm else None, use_cache)
    if stray:
        lines.append(describe_strays(stray))
    links = _escaping_links(app, release, cache if warm else None)
    if links:
        lines.append(describe_links(links))
    if access is not None:
        lines += _access_drift(access, release, cache if warm else None, app.project)
    if manifest_digest(app.project) != release.manifest:
        lines.append("task catalogue or process types differ (oneoff.toml)")
    deps = diff_deps(release.deps, local_deps(app, use_cache))
    if deps:
        lines.append(f"dependencies: {', '.join(deps)}")
    config = diff_config(release.config, local_config(app, env))
    if config:
        lines.append(f"config: {', '.join(config)}")
    return lines


def _strays(app: App, release: Release, cache: StatCache | None, use_cache: bool) -> list[str]:
    """Importable files in the app tree that the release does not contain.

    ``cache``, when given, has just proved the tree is the release's (see
    ``_access_drift``), so its paths are the release's and its file list need not be parsed.
    """
    import os

    from oneoff._environ import app_python

    if cache is not None:
        warm = cache

        def released(rel: bytes) -> bool:
            return warm.digest_of(rel) is not None
    else:
        entries = release.code.entries

        def released(rel: bytes) -> bool:
            return rel.decode("utf-8", "surrogateescape") in entries

    # The app's virtualenv belongs to the dependency check: bin/python -> the venv.
    venv = os.path.dirname(os.path.dirname(app_python(app.project)))
    project = app.project
    commands = [(t.cwd, t.argv) for t in project.tasks.values()]
    commands += [(".", argv) for argv in project.processes.values()]
    entering = entry_dirs(app.root, commands)
    key = app.cache_key("strays") if use_cache else None
    if key is None:
        return strays(app.root, released, [venv], entering)
    return cached_strays(
        app.root, released, [venv], state_dir=app.state_dir, key=key, tag=release.code_digest,
        entry_dirs=entering,
    )  # fmt: skip


def _escaping_links(app: App, release: Release, cache: StatCache | None) -> list[str]:
    """The release's symlinks that lead out of what it contains (``oneoff._release.links``).

    ``cache``, when given, has just proved the tree is the release's, so its recorded
    links and paths are the release's.
    """
    skip = own_venv(app)
    if cache is None:
        return escaping_links_of(app.root, release.code.entries, skip)
    warm = cache
    links = [p.decode("utf-8", "surrogateescape") for p in warm.links()]
    if not links:
        return []

    def released_file(rel: str) -> bool:
        digest = warm.digest_of(rel.encode("utf-8", "surrogateescape"))
        return digest is not None and digest != _NO_DIGEST

    def released_dir(rel: str) -> bool:
        return bool(warm.paths_under(rel.encode("utf-8", "surrogateescape") + b"/"))

    return escaping_links(app.root, links, released_file, released_dir, skip)


def own_venv(app: App) -> list[str]:
    """The app's virtualenv relative to its root, if it lives there (else nothing)."""
    import os

    from oneoff._environ import app_python

    venv = os.path.realpath(os.path.dirname(os.path.dirname(app_python(app.project))))
    root = os.path.realpath(app.root)
    return [os.path.relpath(venv, root)] if venv.startswith(root + os.sep) else []


def _self_loaded_dotenv(app: App, environment: Environment, release: Release) -> list[str]:
    """A ``.env`` the app's own code loads (``oneoff._selfload``) that neither the
    environment declares nor the release contains: the run would get config nobody
    released, so a verified run refuses (``oneoff plan`` names the loading line)."""
    from oneoff._selfload import find_self_loading

    found = find_self_loading(app.project, environment)  # nothing to do without a .env
    if not found or ".env" in release.code.entries:
        return []  # (a released .env had its bytes verified with the code)
    where = f"{found[0].path}:{found[0].line}"
    return [f".env is not part of the release, and {where} loads it ({found[0].loader})"]


def _access_files(app: App) -> AccessFiles | None:
    from oneoff._access import access_config

    config = access_config(app.project)
    return None if config is None else app.access_files(config)


def _released(matcher: _Ignore, path: str) -> bool:
    """Whether the release's ignore patterns let ``path`` into a release."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        if matcher.dir("/".join(parts[:i]), parts[i - 1]):
            return False
    return not matcher.file(path, parts[-1])


def _access_drift(
    access: AccessFiles, release: Release, cache: StatCache | None, project: Project
) -> list[str]:
    """How the people and policy bytes this process read differ from the release's.

    ``cache``, when given, has just proved the tree is the release's: it is authenticated
    (its key is outside .oneoff/) and its tree record equals the release digest, so its
    digests are the release's own and the release's file list need not be parsed.
    """
    import hashlib

    from oneoff._release.listing import _Ignore

    matcher = _Ignore(release_ignore(project))
    # An app whose [release] ignore excludes them has chosen not to bind them to releases.
    read = {p: d for p, d in access.by_release_path().items() if _released(matcher, p)}
    prefix = access.policy_prefix()
    recorded: dict[str, str | None] = {}
    if cache is not None:
        for path in read:
            digest = cache.digest_of(path.encode("utf-8", "surrogateescape"))
            recorded[path] = None if digest is None else digest.hex()
        listed = [p.decode("utf-8", "surrogateescape") for p in cache.paths_under(prefix.encode())]
    else:
        entries = release.code.entries
        recorded = {p: e.digest for p, e in entries.items() if p in read and e.kind == "file"}
        listed = [p for p in entries if p.startswith(prefix)]
    for path in listed:
        single = path.endswith(".cedar") and "/" not in path[len(prefix) :]
        if single and _released(matcher, path):
            recorded.setdefault(path, "")  # a released policy this process did not read
    wrong = []
    for path in sorted(set(read) | set(recorded)):
        data, want = read.get(path), recorded.get(path)
        if data is None and want is None:
            continue  # no signers file, and none in the release either
        if data is None or not want or hashlib.sha256(data).hexdigest() != want:
            wrong.append(path)
    if not wrong:
        return []
    return [f"people/policies as read differ from the release: {', '.join(wrong)}"]


def verify_for_run(
    app: App,
    environment: Environment,
    ref: str | None,
    env: Materialized,
    allow_drift: bool,
    *,
    use_cache: bool = True,
) -> Checked:
    """Resolve and verify the release a run/plan/exec uses, or refuse (audited).

    ``use_cache=False`` (``oneoff release verify --no-cache``) trusts no cache at all:
    every file is hashed, the signature checked and the dependencies listed afresh.
    """
    if allow_drift and environment.protected:
        raise UsageError(
            f"--allow-drift is not allowed on protected environment {environment.name!r}"
        )
    release: Release | None = None
    try:
        release = resolve(app, environment, ref)
        if release is None:
            return Checked(None, (), allow_drift)
        check_signature(app, release, environment, use_cache)
        from oneoff._release.floor import check_floor

        check_floor(app, release, environment)  # a newer signed release may revoke it
        lines = drift(app, release, env, use_cache=use_cache)
        lines += _self_loaded_dotenv(app, environment, release)
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
