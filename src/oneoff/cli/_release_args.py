"""Arguments of `oneoff release ...`, `oneoff keys ...` and the release options of run/plan/exec."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["add_release_commands", "release_options"]

_Adder = Callable[..., None]
_H = "oneoff.cli._release:"


def release_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--release", metavar="R",
        help="run against this release (id, unique prefix, or vN) instead of the current one",
    )  # fmt: skip
    parser.add_argument(
        "--allow-drift", action="store_true",
        help="run even if code, dependencies or config differ from the release "
        "(unprotected environments only; recorded)",
    )  # fmt: skip


def _key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key", metavar="FILE",
        help="Ed25519 private key to sign with (default: $ONEOFF_RELEASE_KEY_FILE); "
        "must live outside the app, mode 0600",
    )  # fmt: skip


def _person(parser: argparse.ArgumentParser, floor: bool = True) -> None:
    parser.add_argument(
        "--person-key", metavar="FILE",
        help="your SSH key, who you are (default: $ONEOFF_SIGNING_KEY): in an app with "
        "[access], policy decides 'release'",
    )  # fmt: skip
    if floor:
        parser.add_argument(
            "--min-version", type=int, metavar="N",
            help="revoke this environment's releases below vN (signed; never lowered)",
        )  # fmt: skip


def add_release_commands(sub: Any, common: _Adder, env: _Adder, json: _Adder) -> None:
    """Add `release` and `keys` with their sub-commands to the top-level subparsers."""

    def group(name: str, help_text: str) -> Any:
        parser = sub.add_parser(name, help=help_text, description=help_text)
        common(parser)
        return parser.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)

    def action(group_: Any, name: str, handler: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group_.add_parser(
            name, help=help_text, description=help_text
        )
        common(parser)
        parser.set_defaults(handler=_H + handler)
        return parser

    rel = group("release", "immutable, signed releases: code + dependencies + config")
    cmd = action(rel, "create", "cmd_create", "snapshot this machine as the next release of ENV")
    env(cmd)
    _key(cmd)
    _person(cmd)
    json(cmd)
    cmd = action(rel, "list", "cmd_list", "list releases, newest first, marking the current one")
    env(cmd)
    json(cmd)
    cmd = action(rel, "show", "cmd_show", "show one release")
    cmd.add_argument("release", metavar="R", help="a release id, unique prefix, or vN with --env")
    env(cmd)
    json(cmd)
    cmd = action(rel, "diff", "cmd_diff", "list files, dependencies and config keys that differ")
    cmd.add_argument("old", metavar="A", help="a release id, unique prefix, or vN with --env")
    cmd.add_argument("new", metavar="B", help="the release to compare A with")
    env(cmd)
    json(cmd)
    cmd = action(rel, "verify", "cmd_verify", "check a release's signature and this machine")
    cmd.add_argument("release", metavar="R", nargs="?", help="default: the current release")
    env(cmd)
    cmd.add_argument(
        "--no-cache", action="store_true",
        help="trust no cache: hash every file, check the signature, list dependencies afresh",
    )  # fmt: skip
    json(cmd)
    cmd = action(rel, "promote", "cmd_promote", "re-create release R for another environment")
    cmd.add_argument("release", metavar="R", help="the release to promote (id or unique prefix)")
    env(cmd, required=True)
    _key(cmd)
    _person(cmd)
    json(cmd)
    cmd = action(rel, "rollback", "cmd_rollback", "make the previous release current again")
    env(cmd, required=True)
    _person(cmd, floor=False)

    keys = group("keys", "release signing keys")
    cmd = action(keys, "generate", "cmd_keys_generate", "create an Ed25519 key pair")
    cmd.add_argument(
        "--out", metavar="DIR", required=True,
        help="where to write release.key (0600) and release.pub; keep it outside the app",
    )  # fmt: skip
    cmd.add_argument("--name", default="release", help="file name stem (default: release)")
