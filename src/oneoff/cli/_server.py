"""`oneoff server migrate`: the team server's commands (only the schema, for now)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["add_server_commands", "cmd_migrate"]


def add_server_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `server` with its sub-commands to the top-level subparsers."""
    text = "the team server's PostgreSQL store"
    parser = sub.add_parser("server", help=text, description=text)
    common(parser)
    actions = parser.add_subparsers(dest="server_command", metavar="ACTION", required=True)
    text = (
        "create or upgrade the PostgreSQL store's schema (URL from ONEOFF_STORE_URL, "
        "else [store] url in the app's manifest)"
    )
    cmd = actions.add_parser("migrate", help=text, description=text)
    common(cmd)
    cmd.set_defaults(handler="oneoff.cli._server:cmd_migrate")


def cmd_migrate(args: argparse.Namespace) -> int:
    import os

    from oneoff._store.postgres import migrate
    from oneoff._store.postgres_errors import display_url
    from oneoff._store.select import ENV_VAR, store_url
    from oneoff.errors import UsageError

    # The variable alone is enough (a database administrator need not have the app); the
    # URL never comes from argv, where other users of the machine could read it.
    url = store_url({}) if os.environ.get(ENV_VAR, "").strip() else None
    if url is None:
        from oneoff.cli._common import app_from

        url = app_from(args).store_url
    if url is None:
        raise UsageError(
            "no PostgreSQL store to migrate: the app uses the embedded SQLite store",
            hint=f"set {ENV_VAR} or [store] url in oneoff.toml",
        )
    before, after = migrate(url)
    where = display_url(url)
    if before == after:
        print(f"{where}: schema already at v{after}")
    else:
        print(f"{where}: schema migrated from v{before} to v{after}")
    return 0
