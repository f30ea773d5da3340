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
from typing import Any

__all__ = ["add_login_command", "cmd_login", "server_id_of"]

SERVER_ENV = "ONEOFF_SERVER"
_TIMEOUT = 15.0
_MAX_REPLY = 64 * 1024


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
    parser.add_argument("--server", metavar="URL", help=f"the team server (default: ${SERVER_ENV})")
    key_option(parser)


def server_id_of(url: str) -> str:
    """The id the server at ``url`` reports (``GET /v1/server``); UsageError if none."""
    import json
    import urllib.error
    import urllib.request

    from oneoff.errors import UsageError

    try:
        with urllib.request.urlopen(  # noqa: S310 - the scheme was checked by the caller
            url.rstrip("/") + "/v1/server", timeout=_TIMEOUT
        ) as reply:
            body = reply.read(_MAX_REPLY + 1)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        raise UsageError(f"cannot reach the server at {url}: {exc}") from None
    try:
        server = json.loads(body)["server_id"]
    except (ValueError, KeyError, TypeError):
        server = None
    if not isinstance(server, str) or len(body) > _MAX_REPLY:
        raise UsageError(f"{url} did not answer like a oneoff server (GET /v1/server)")
    return server


def cmd_login(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from oneoff._identity import signer_from
    from oneoff._weblogin import login_link, login_statement
    from oneoff.errors import NotPermitted, UsageError

    if not args.web:
        raise UsageError("`oneoff login` makes a web console link: pass --web")
    url = (args.server or os.environ.get(SERVER_ENV, "")).strip()
    if not url:
        raise UsageError(f"which server? pass --server URL or set ${SERVER_ENV}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise UsageError(
            f"--server must be an http(s) URL like https://oneoff.example, not {url!r}"
        )
    signer = signer_from(args.key)
    if signer is None:
        raise NotPermitted(
            "a login link is signed with your SSH key; none was given",
            hint="pass --key ~/.ssh/id_ed25519, or set ONEOFF_SIGNING_KEY",
        )
    base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    link = login_link(base, login_statement(server_id_of(base)), signer)
    print(link)
    if sys.stderr.isatty():
        print("oneoff: open it within 5 minutes; it works once", file=sys.stderr)
    return 0
