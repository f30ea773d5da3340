"""`oneoff server`: serve the team server, `migrate` its PostgreSQL store, `pin` access files."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from oneoff._server_limits import DEFAULT, Limits

__all__ = ["add_server_commands", "cmd_migrate", "cmd_pin", "cmd_serve"]

_SERVE = "oneoff.cli._server:cmd_serve"
DEFAULT_LISTEN = "127.0.0.1:8421"
#: Workers a server on PostgreSQL starts unless told (each holds up to POOL_MAX connections).
MAX_DEFAULT_WORKERS = 8
MAX_WORKERS = 64
#: The longest --stop-grace and --request-timeout.
MAX_SECONDS = 3600


def add_server_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `server` with its sub-commands to the top-level subparsers."""
    from oneoff.cli._access_args import key_option

    text = "the team server: serve its API (bare), migrate its store, pin its access files"
    parser = sub.add_parser("server", help=text, description=text)
    common(parser)
    _listen_options(parser)
    parser.set_defaults(handler=_SERVE)
    actions = parser.add_subparsers(dest="server_command", metavar="ACTION", required=False)
    text = "serve the API and web console (the same as a bare `oneoff server`)"
    cmd = actions.add_parser("serve", help=text, description=text)
    common(cmd)
    _listen_options(cmd)
    cmd.set_defaults(handler=_SERVE)
    text = (
        "create or upgrade the PostgreSQL store's schema (URL from ONEOFF_STORE_URL, "
        "else [store] url in the app's manifest)"
    )
    cmd = actions.add_parser("migrate", help=text, description=text)
    common(cmd)
    cmd.set_defaults(handler="oneoff.cli._server:cmd_migrate")
    text = (
        "pin the checkout's people and policy files as the server's (a signed, audited "
        "statement by a person the currently pinned policy lets release)"
    )
    cmd = actions.add_parser("pin", help=text, description=text)
    common(cmd)
    key_option(cmd)
    cmd.set_defaults(handler="oneoff.cli._server:cmd_pin")


def _listen_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", metavar="HOST:PORT", default=argparse.SUPPRESS,
        help=f"the address to serve on (default {DEFAULT_LISTEN}; port 0: any free port)",
    )  # fmt: skip
    parser.add_argument(
        "--ready-file", metavar="FILE", default=argparse.SUPPRESS,
        help="write HOST:PORT to FILE once listening (for supervisors and tests)",
    )  # fmt: skip
    parser.add_argument(
        "--trusted-proxy", metavar="ADDRESS", action="append", default=argparse.SUPPRESS,
        help="a reverse proxy (IP address or network) whose X-Forwarded-For and "
        "X-Forwarded-Proto name the client and scheme (repeatable; default: none)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", metavar="N", type=int, default=argparse.SUPPRESS,
        help="server processes sharing the port (default: one per CPU, at most "
        f"{MAX_DEFAULT_WORKERS}, on PostgreSQL; 1 on SQLite)",
    )  # fmt: skip
    parser.add_argument(
        "--stop-grace", metavar="SECONDS", type=int, default=argparse.SUPPRESS,
        help="once asked to stop, calls in flight (and live output streams) get SECONDS to "
        f"finish, then are cut (default {DEFAULT.stop_grace}; 0 to {MAX_SECONDS})",
    )  # fmt: skip
    parser.add_argument(
        "--request-timeout", metavar="SECONDS", type=int, default=argparse.SUPPRESS,
        help="a connection that has not sent a whole request within SECONDS gets 408 and is "
        f"closed (default {DEFAULT.request_timeout}; 1 to {MAX_SECONDS})",
    )  # fmt: skip
    parser.add_argument(
        "--connections-per-address", metavar="N", type=int, default=argparse.SUPPRESS,
        help="connections one client address may hold at once, per worker; more get 503 "
        f"(default {DEFAULT.per_address}; a --trusted-proxy is exempt)",
    )  # fmt: skip


def cmd_serve(args: argparse.Namespace) -> int:
    _require_server_extra()
    from oneoff._server.context import ServerContext
    from oneoff._server.serve import parse_listen, serve
    from oneoff.cli._common import app_from

    host, port = parse_listen(getattr(args, "listen", DEFAULT_LISTEN))
    app = app_from(args)
    workers = _workers(getattr(args, "workers", None), postgres=app.store_url is not None)
    from oneoff._server.proxies import trusted_proxies

    proxies = trusted_proxies(getattr(args, "trusted_proxy", []))
    ctx = ServerContext(app.project, trusted_proxies=proxies)
    ready = getattr(args, "ready_file", None)
    return serve(ctx, host, port, ready=ready, workers=workers, limits=_limits(args))


def _limits(args: argparse.Namespace) -> Limits:
    """The connection limits asked for, each within its bounds (else exit 2)."""
    from oneoff.cli._common import bounded

    def given(name: str, default: int, low: int, high: int) -> int:
        value = getattr(args, name, None)
        option = "--" + name.replace("_", "-")
        return default if value is None else bounded(value, option, low, high)

    return Limits(
        stop_grace=given("stop_grace", DEFAULT.stop_grace, 0, MAX_SECONDS),
        request_timeout=given("request_timeout", DEFAULT.request_timeout, 1, MAX_SECONDS),
        per_address=given("connections_per_address", DEFAULT.per_address, 1, 100_000),
    )


def _workers(asked: int | None, *, postgres: bool) -> int:
    """How many server processes: as asked, else one per usable CPU on PostgreSQL (the
    GIL lets one process use one core) and one on SQLite (its writes take turns anyway)."""
    import os

    from oneoff.cli._common import bounded

    if asked is None:
        if not postgres:
            return 1
        return max(1, min(MAX_DEFAULT_WORKERS, len(os.sched_getaffinity(0))))
    return bounded(asked, "--workers", 1, MAX_WORKERS)


def cmd_pin(args: argparse.Namespace) -> int:
    from oneoff._identity import signer_from
    from oneoff._server.repin import repin
    from oneoff.cli._common import app_from
    from oneoff.errors import UsageError

    signer = signer_from(args.key)
    if signer is None:
        raise UsageError("pinning needs your signature: pass --key (or ONEOFF_SIGNING_KEY)")
    app = app_from(args)
    try:
        before, after, person = repin(app, signer)
    finally:
        app.close()
    if before == after:
        print(f"pinned access files unchanged ({after}); re-pinned by {person}")
    else:
        print(f"pinned access files {before} -> {after} by {person}")
    return 0


def _require_server_extra() -> None:
    import importlib.util

    from oneoff.errors import UsageError

    needed = ("starlette", "uvicorn", "httptools")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"the team server needs {', '.join(missing)}, which are not installed",
            hint="pip install 'oneoff[server]'",
        )


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
