"""`oneoff release create|list|show|diff|verify|promote|rollback` and `oneoff keys generate`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from oneoff._app import App
from oneoff._environ import materialize
from oneoff._identity import os_user, signer_from
from oneoff._release.check import from_record, load_release, resolve, verify_for_run
from oneoff._release.document import Release
from oneoff._release.lifecycle import create_release, diff_releases, promote_release, rollback
from oneoff.cli._common import app_from, emit_json, terminal_safe
from oneoff.errors import ConfigError, ReleaseError, UsageError

__all__ = [
    "cmd_create",
    "cmd_diff",
    "cmd_keys_generate",
    "cmd_list",
    "cmd_promote",
    "cmd_rollback",
    "cmd_show",
    "cmd_verify",
]


def _signed(release: Release) -> str:
    return f"signed by key {release.key_id}" if release.key_id else "unsigned"


def _summary(release: Release) -> dict[str, Any]:
    return {
        "id": release.id,
        "environment": release.environment,
        "version": release.version,
        "created_at": release.created_at,
        "created_by": release.created_by,
        "key_id": release.key_id,
        "git_commit": release.git_commit,
        "promoted_from": release.promoted_from,
        "code": release.code_digest,
        "deps": release.deps.digest,
        "config": release.config.digest,
    }


def _lookup(app: App, ref: str, env_name: str | None) -> Release:
    if ref.startswith("v") and ref[1:].isdigit():
        found = resolve(app, app.project.environment(env_name), ref)
        assert found is not None  # an explicit ref never resolves to "no release"
        return found
    return load_release(app, ref)


def cmd_create(args: argparse.Namespace) -> int:
    app = app_from(args)
    release = create_release(
        app, args.env, key_file=args.key, signer=signer_from(args.person_key),
        min_version=args.min_version,
    )  # fmt: skip
    if args.json:
        emit_json(_summary(release))
    else:
        print(f"created release {release.label}, {_signed(release)}; it is now current")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    app = app_from(args)
    env_name = None if args.env is None else app.project.environment(args.env).name
    store = app.store
    rows: list[dict[str, Any]] = []
    for record in store.list_releases(env_name):
        current = store.current_release_id(record.environment) == record.id
        row: dict[str, Any] = {"current": current, "environment": record.environment,
                               "version": record.version, "id": record.id}  # fmt: skip
        try:
            release = from_record(app, record)
            row.update(_summary(release), status="ok")
        except ReleaseError as exc:
            # Listing must not hide a bad row, nor crash on one: show it as invalid.
            row.update(status="INVALID", error=exc.message)
        rows.append(row)
    if args.json:
        emit_json(rows)
        return 0
    if not rows:
        print("no releases yet; create one with `oneoff release create --env ENV`")
    for row in rows:
        mark = "*" if row["current"] else " "
        signed = f"key {row['key_id']}" if row.get("key_id") else "unsigned"
        detail = (
            f"{row['created_at']}  {terminal_safe(row['created_by'])}  {signed}"
            if row["status"] == "ok"
            else f"INVALID: {terminal_safe(row['error'])}"
        )
        ident = terminal_safe(str(row["id"])[:12])
        print(f"{mark} {row['environment']:<12} v{row['version']:<4} {ident}  {detail}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    app = app_from(args)
    release = _lookup(app, args.release, args.env)
    if args.json:
        emit_json({**_summary(release), "document": release.document})
        return 0
    info = _summary(release)
    for key in ("id", "environment", "version", "created_at", "created_by", "git_commit",
                "promoted_from", "code", "deps", "config"):  # fmt: skip
        print(f"{key:<14}{terminal_safe(str(info[key] if info[key] is not None else '-'))}")
    print(f"{'signature':<14}{_signed(release)}")
    print(f"{'python':<14}{release.deps.implementation} {release.deps.python_version}, "
          f"{len(release.deps.distributions)} distributions")  # fmt: skip
    print(f"{'files':<14}{len(release.code.entries)} ({release.code.source})")
    keys = [f"{k} (secret)" if v.secret else k for k, v in release.config.values.items()]
    print(f"{'config keys':<14}{terminal_safe(', '.join(keys)) or '-'}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    app = app_from(args)
    old, new = _lookup(app, args.old, args.env), _lookup(app, args.new, args.env)
    result = diff_releases(old, new)
    if args.json:
        emit_json(
            {"old": old.id, "new": new.id, "files": result.files, "deps": result.deps,
             "config": result.config, "manifest_changed": result.manifest_changed}
        )  # fmt: skip
        return 0
    print(f"{old.label} -> {new.label}")
    for title, lines in (("files", result.files), ("dependencies", result.deps),
                         ("config", result.config)):  # fmt: skip
        print(f"{title} ({len(lines)}):" if lines else f"{title}: no change")
        for line in lines:
            print(f"  {terminal_safe(line)}")
    if result.manifest_changed:
        print("task catalogue or process types changed (oneoff.toml)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    app = app_from(args)
    environment = app.project.environment(args.env)
    env = materialize(app.project, environment, run_vars={})
    checked = verify_for_run(
        app, environment, args.release, env, allow_drift=False, use_cache=not args.no_cache
    )
    release = checked.release
    if args.json:
        emit_json(
            None if release is None else {
                "id": release.id, "label": release.label, "environment": environment.name,
                "verified": True, "key_id": release.key_id, "code_digest": release.code_digest,
                "distributions": len(release.deps.distributions),
                "config_keys": len(release.config.values),
            }
        )  # fmt: skip
        return 0
    if release is None:
        print(f"{environment.name}: no release (unprotected: runs use the working tree)")
        return 0
    print(f"release     {release.label}")
    print("document    matches its id")
    print(f"signature   {'ok, key ' + release.key_id if release.key_id else 'unsigned (allowed)'}")
    print(f"code        tree {release.code_digest[:16]} matches")
    print(f"deps        {len(release.deps.distributions)} distributions match")
    print(f"config      {len(release.config.values)} keys match")
    print("verified")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    app = app_from(args)
    release = promote_release(
        app, args.release, args.env, key_file=args.key, signer=signer_from(args.person_key),
        min_version=args.min_version,
    )  # fmt: skip
    if args.json:
        emit_json(_summary(release))
    else:
        print(
            f"promoted {str(release.promoted_from)[:12]} to {release.label}, {_signed(release)}; "
            "it is now current"
        )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    app = app_from(args)
    old, new = rollback(app, args.env, signer=signer_from(args.person_key))
    print(f"{new.environment}: rolled back from v{old.version} ({old.short}) to {new.label}")
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from oneoff._audit.checkpoint import generate_keypair
    from oneoff._release.settings import public_key_line

    out = Path(args.out).absolute()
    app: App | None
    try:
        app = app_from(args)
    except UsageError:
        app = None  # generating a key outside any app is fine
    if app is not None and (out == app.root or app.root in out.resolve().parents):
        raise ConfigError(
            f"{out} is inside the app {app.root}, where the private key would be committed",
            hint="use a directory outside the repository, e.g. ~/.config/oneoff",
        )
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    priv, pub = out / f"{args.name}.key", out / f"{args.name}.pub"
    kid = generate_keypair(priv, pub)
    line = public_key_line(pub)
    if app is not None:
        app.audit.append("keys.generated", actor=os_user(), payload={"key_id": kid})
    print(f"key {kid}: private key {priv} (0600), public key {pub}")
    print("trust it: add to oneoff.toml")
    print(f'  [release]\n  trusted_keys = ["{line}"]')
    sys.stdout.flush()
    return 0
