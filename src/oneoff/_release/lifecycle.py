"""Creating, promoting and rolling back releases; each step is one transaction and one audit event.

Promotion re-creates the release for the target environment: config is per environment
(factor III), so a staging release cannot vouch for production's config. ``promote R
--env E`` therefore checks R (signature, no tampering), checks that this machine's code
and dependencies are still R's, and records a new release in E with R's code and
dependency snapshots, E's config snapshot, ``promoted_from = R`` and the next version of
E, signed by a key E trusts. The build is the same; the release is E's own.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from oneoff._canonical import canonical_json
from oneoff._environ import materialize
from oneoff._record import dataclass
from oneoff._release.check import (
    check_signature,
    from_record,
    load_release,
    local_code,
    local_config,
    local_deps,
    manifest_digest,
    now,
    own_venv,
)
from oneoff._release.configdigest import ConfigSnapshot, diff_config
from oneoff._release.deps import DepsSnapshot, diff_deps
from oneoff._release.document import (
    Release,
    build_document,
    code_entries,
    content_id,
    sign_release,
)
from oneoff._release.floor import check_floor, next_floor
from oneoff._release.links import describe_links, escaping_links_of
from oneoff._release.settings import env_settings, load_signing_key
from oneoff._release.tree import TreeSnapshot, describe, diff
from oneoff._store.interface import ReleaseRecord
from oneoff.errors import DriftError, ReleaseError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from oneoff._app import App
    from oneoff._identity import Signer
    from oneoff._manifest import Environment

__all__ = ["ReleaseDiff", "create_release", "diff_releases", "promote_release", "rollback"]


def _git_commit(root: Path) -> str | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"],
            capture_output=True, env=env, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.decode("ascii", "replace").strip()
    return commit if done.returncode == 0 and commit else None


def _record(
    app: App,
    environment: Environment,
    *,
    code: TreeSnapshot,
    deps: DepsSnapshot,
    config: ConfigSnapshot,
    key_file: str | None,
    environ: Mapping[str, str] | None,
    promoted_from: Release | None = None,
    min_version: int | None = None,
    actor: str,
) -> Release:
    name = environment.name
    operation = "create" if promoted_from is None else "promote"
    try:
        signing = _signing_key(app, environment, key_file, environ)
    except ReleaseError as exc:
        refuse_release(app, exc, actor=actor, environment=name, operation=operation)
    principal = actor
    store = app.store
    with store.tx():
        version = store.next_release_version(name)
        floor = next_floor(app, environment, version, min_version)
        document = build_document(
            app=app.project.name,
            environment=name,
            version=version,
            code=code,
            deps=deps,
            config=config,
            manifest=manifest_digest(app.project),
            git_commit=_git_commit(app.root) if code.source == "git" else None,
            created_by=principal,
            created_at=now(),
            promoted_from=None if promoted_from is None else promoted_from.id,
            min_version=floor,
        )
        try:
            raw = canonical_json(document)
        except ValueError as exc:  # e.g. a variable name that is not valid Unicode
            raise ReleaseError(f"cannot record the release: {exc}") from None
        rid = content_id(raw)
        signature = None if signing is None else sign_release(rid, signing[0])
        record = ReleaseRecord(
            id=rid,
            environment=name,
            version=version,
            document=raw.decode("utf-8"),
            signature=signature,
            key_id=None if signing is None else signing[1],
            created_at=document["created_at"],
            created_by=principal,
            code_entries=code_entries(code),
        )
        store.add_release(record)
        store.set_current_release(name, rid, updated_at=document["created_at"])
    release = from_record(app, record)
    kind = "release.created" if promoted_from is None else "release.promoted"
    app.audit.append(
        kind,
        actor=principal,
        environment=name,
        release_id=rid,
        payload={
            "version": version,
            "key_id": release.key_id,
            "code": code.digest,
            "deps": deps.digest,
            "config": config.digest,
            "git_commit": document["git_commit"],
            "promoted_from": document["promoted_from"],
            "min_version": floor,
        },
    )
    return release


def _signing_key(
    app: App, environment: Environment, key_file: str | None, environ: Mapping[str, str] | None
) -> tuple[Ed25519PrivateKey, str] | None:
    """The release key to sign with, or None; ReleaseError if the environment would refuse
    what it signs (no key where one is required, or a key it does not trust)."""
    settings = env_settings(app.project, environment)
    signing = load_signing_key(app.project, key_file, environ)
    name = environment.name
    if signing is None and settings.require_signed:
        raise ReleaseError(
            f"environment {name!r} requires a signed release: pass --key FILE "
            "or set ONEOFF_RELEASE_KEY_FILE",
            hint="create a key pair with `oneoff keys generate --out DIR`",
        )
    if signing is not None:
        _key, kid = signing
        from oneoff._audit.checkpoint import key_id

        if not any(key_id(t.load()) == kid for t in settings.trusted_keys):
            raise ReleaseError(
                f"signing key {kid} is not trusted by {name!r}; its releases would be refused",
                hint="add its public key to [release] trusted_keys in oneoff.toml",
            )
    return signing


def refuse_release(
    app: App, error: ReleaseError, *, actor: str, environment: str, operation: str,
    release_id: str | None = None,
) -> NoReturn:  # fmt: skip
    """Record a refused release operation in the audit log, then raise it."""
    app.audit.append(
        "release.refused",
        actor=actor,
        environment=environment,
        release_id=release_id,
        payload={"operation": operation, "reason": error.message},
    )
    raise error


def authorize_release(
    app: App, environment: Environment, signer: Signer | None, subject: dict[str, object]
) -> str:
    """Who creates, promotes or rolls back a release here, if policy lets them.

    The person signs a statement over ``subject`` (what they do) and Cedar decides
    ``release``; refusals are audited. Without ``[access]`` the release key is the only
    authority, and a rollback (which signs nothing) is refused in a protected environment.
    """
    from oneoff._auth.grant import authorize_on_app

    return authorize_on_app(
        app, "release", environment, signer, subject,
        rollback="rollback" in subject,
    ).name  # fmt: skip


def create_release(
    app: App, env_name: str | None, *, key_file: str | None = None,
    environ: Mapping[str, str] | None = None, signer: Signer | None = None,
    min_version: int | None = None,
) -> Release:  # fmt: skip
    """Snapshot this machine's code, dependencies and config as the next release of an env.

    ``signer`` is the person acting (the ``release`` decision, in an app with
    ``[access]``); ``min_version`` revokes this environment's releases below it.
    """
    environment = app.project.environment(env_name)
    actor = authorize_release(app, environment, signer, {"create": environment.name})
    materialized = materialize(app.project, environment, run_vars={}, operator_env=environ)
    code = local_code(app)
    links = escaping_links_of(app.root, code.entries, own_venv(app))
    if links:
        refused = ReleaseError(
            describe_links(links),
            hint="a release holds a link, not what it leads to: commit the file itself, link "
            "only to files the release contains, or leave the link out ([release] ignore)",
        )
        refuse_release(app, refused, actor=actor, environment=environment.name,
                       operation="create")  # fmt: skip
    return _record(
        app,
        environment,
        code=code,
        deps=local_deps(app),
        config=local_config(app, materialized),
        key_file=key_file,
        environ=environ,
        min_version=min_version,
        actor=actor,
    )


def promote_release(
    app: App, ref: str, env_name: str, *, key_file: str | None = None,
    environ: Mapping[str, str] | None = None, signer: Signer | None = None,
    min_version: int | None = None,
) -> Release:  # fmt: skip
    """Re-create release ``ref`` (same build) for ``env_name`` with that environment's config."""
    source = load_release(app, ref)
    project = app.project
    environment = project.environment(env_name)
    actor = authorize_release(app, environment, signer, {"promote": source.id})
    source_env = project.environment(source.environment)
    try:  # an unsigned, untrusted or revoked source is refused, and audited
        check_signature(app, source, source_env)
        check_floor(app, source, source_env)
    except ReleaseError as exc:
        refuse_release(app, exc, actor=actor, environment=environment.name,
                       operation="promote", release_id=source.id)  # fmt: skip
    if environment.name == source.environment:
        raise UsageError(f"release {source.label} is already a release of {env_name!r}")
    code_changes = diff(source.code, local_code(app))
    deps_changes = diff_deps(source.deps, local_deps(app))
    if code_changes or deps_changes or manifest_digest(project) != source.manifest:
        parts = ([describe(code_changes)] if code_changes else []) + deps_changes
        raise DriftError(
            f"this machine no longer has the build of {source.label}: "
            + ("; ".join(parts) or "oneoff.toml differs"),
            hint="promote from a machine with that release's code and dependencies",
        )
    materialized = materialize(project, environment, run_vars={}, operator_env=environ)
    return _record(
        app,
        environment,
        code=source.code,
        deps=source.deps,
        config=local_config(app, materialized),
        key_file=key_file,
        environ=environ,
        promoted_from=source,
        min_version=min_version,
        actor=actor,
    )


def rollback(
    app: App, env_name: str | None, *, signer: Signer | None = None
) -> tuple[Release, Release]:
    """Make the release before the current one current again; returns (from, to).

    Moving an environment back is a release decision like any other: in an app with
    ``[access]`` the person signs and Cedar decides ``release``; a protected environment
    of an app without ``[access]`` cannot be rolled back (nobody can be verified).
    """
    environment = app.project.environment(env_name)
    name = environment.name
    store = app.store
    current_id = store.current_release_id(name)
    actor = authorize_release(app, environment, signer, {"rollback": name, "from": current_id})
    with store.tx():
        current_id = store.current_release_id(name)
        if current_id is None:
            raise ReleaseError(f"environment {name!r} has no current release to roll back")
        current = from_record(app, store.get_release(current_id))
        older = [r for r in store.list_releases(name) if r.version < current.version]
        if not older:
            raise ReleaseError(
                f"{current.label} is the first release of {name!r}; nothing before it"
            )
        target = from_record(app, older[0])
        if current.id != current_id:
            raise ReleaseError(f"{name!r} changed release meanwhile; roll back again")
        # The release rolled back to must still be acceptable here (keys may have changed,
        # a newer release may have revoked it).
        refused: ReleaseError | None = None
        try:
            check_signature(app, target, environment)
            check_floor(app, target, environment)
        except ReleaseError as exc:
            refused = exc
        else:
            store.set_current_release(name, target.id, updated_at=now())
    if refused is not None:  # audited outside the transaction
        refuse_release(app, refused, actor=actor, environment=name, operation="rollback",
                       release_id=target.id)  # fmt: skip
    app.audit.append(
        "release.rolled_back",
        actor=actor,
        environment=name,
        release_id=target.id,
        payload={"from": current.id, "from_version": current.version, "to_version": target.version},
    )
    return current, target


@dataclass(frozen=True)
class ReleaseDiff:
    files: list[str]
    deps: list[str]
    config: list[str]
    manifest_changed: bool


def diff_releases(old: Release, new: Release) -> ReleaseDiff:
    """Files, dependencies and config keys that differ from ``old`` to ``new``."""
    return ReleaseDiff(
        files=[str(c) for c in diff(old.code, new.code)],
        deps=diff_deps(old.deps, new.deps),
        config=diff_config(old.config, new.config),
        manifest_changed=old.manifest != new.manifest,
    )
