"""`oneoff login --web`: mint a short-lived, single-use web console login link.

The link is signed with the person's SSH key (see ``oneoff._weblogin``) for one server,
named by the id that server reports at ``GET /v1/server``: a link minted for one server
(even a look-alike the person was tricked into naming) is refused by every other.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oneoff._client.url import ServerURL

__all__ = ["add_login_command", "cmd_login", "server_id_of"]

SERVER_ENV = "ONEOFF_SERVER"


def add_login_command(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `login` to the top-level subparsers."""
    from oneoff.cli._access_args import key_option

    text = "print a signed, single-use login link for the team server's web console"
    parser = sub.add_parser("login", help=text, description=text)
    common(parser)
    parser.set_defaults(handler="oneoff.cli._login:cmd_login")
    parser.add_argument(
        "--web", action="store_true", help="print a web console login link (valid 5 minutes)"
    )
    parser.add_argument(
        "--server", metavar="URL",
        help=f"the team server (default: ${SERVER_ENV}, else [server] url in oneoff.toml)",
    )  # fmt: skip
    key_option(parser)


def server_id_of(server: ServerURL) -> str:
    """The id the server reports (``GET /v1/server``), through the CLI's own client (TLS,
    ``$ONEOFF_SERVER_CA``, timeouts, error mapping); UsageError if it is not a server's."""
    from oneoff._client.http import Client
    from oneoff.errors import UsageError

    client = Client(server)
    try:
        _status, data = client.call("GET", "/v1/server")
    finally:
        client.close()
    found = data.get("server_id") if isinstance(data, dict) else None
    if not isinstance(found, str):
        raise UsageError(f"{server.url} did not answer like a oneoff server (GET /v1/server)")
    return found


def cmd_login(args: argparse.Namespace) -> int:
    from oneoff._client.url import chosen_server
    from oneoff._identity import signer_from
    from oneoff._weblogin import login_link, login_statement
    from oneoff.errors import NotPermitted, UsageError

    if not args.web:
        raise UsageError("`oneoff login` makes a web console link: pass --web")
    section = None
    if args.server is None and not os.environ.get(SERVER_ENV):
        from oneoff.cli._common import app_from

        try:
            section = app_from(args).project.section("server")
        except UsageError:
            section = None  # no app here: the server must then be named
    server = chosen_server(args.server, section)
    if server is None:
        raise UsageError(
            f"which server? pass --server URL, set ${SERVER_ENV}, or [server] url in oneoff.toml"
        )
    signer = signer_from(args.key)
    if signer is None:
        raise NotPermitted(
            "a login link is signed with your SSH key; none was given",
            hint="pass --key ~/.ssh/id_ed25519, or set ONEOFF_SIGNING_KEY",
        )
    link = login_link(server.url, login_statement(server_id_of(server)), signer)
    print(link)
    if sys.stderr.isatty():
        print("oneoff: open it within 5 minutes; it works once", file=sys.stderr)
    return 0
