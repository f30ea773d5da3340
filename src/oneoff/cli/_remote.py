"""The switch to the team server: ``--server URL`` > ``$ONEOFF_SERVER`` > ``[server] url``.

A command that can talk to a server calls :func:`resolve` first: with a server named it
gets a ``Remote`` (and opens no store); otherwise the app, as before. The manifest is read
for ``[server] url`` only when neither the flag nor the variable names a server, and then
it is the same App the local command goes on to use (no second load). An App opened for
a server-mode command fingerprints plan values with that server's key (``oneoff._fpkey``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from oneoff.cli._access_args import server_option

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._client.remote import Remote

__all__ = ["closed", "closing", "resolve", "server_option", "signing_key"]

_Command = Callable[["Remote", argparse.Namespace], int]


@contextlib.contextmanager
def closed(remote: Remote) -> Iterator[None]:
    """Close ``remote``'s connection when the block ends, however it ends."""
    try:
        yield
    finally:
        remote.close()


def closing(command: _Command) -> _Command:
    """A remote command that closes its connection however it ends."""

    @functools.wraps(command)
    def run(remote: Remote, args: argparse.Namespace) -> int:
        try:
            return command(remote, args)
        finally:
            remote.close()

    return run


def signing_key(args: argparse.Namespace) -> str | Path | None:
    """The SSH key a remote call signs with: the command's ``--key`` where that names an
    SSH key, else ``$ONEOFF_SIGNING_KEY`` (``signer_from`` reads it)."""
    key: str | Path | None = getattr(args, "key", None)
    return key


def resolve(
    args: argparse.Namespace, *, key: str | Path | None = None, need_app: bool = False
) -> tuple[Remote | None, App | None]:
    """``(remote, None)`` when a server is named, else ``(None, app)``. ``need_app``: the
    command needs the app's checkout in remote mode too (``request`` plans locally)."""
    from oneoff._client.url import ENV_VAR, chosen_server

    flag = getattr(args, "server", None)
    app = None
    section = None
    if need_app or (flag is None and not os.environ.get(ENV_VAR)):
        from oneoff.cli._common import app_from

        app = app_from(args)
        section = app.project.section("server")
    server = chosen_server(flag, section)
    if server is None:
        return None, app
    from oneoff._client.remote import Remote
    from oneoff._identity import signer_from

    remote = Remote(server, signer_from(key))
    if need_app and app is not None:  # the commands that plan (request) or check a plan
        from oneoff._fpkey import PATH, use_server_key

        # A plan made for a server hashes alike on every machine: the server's key.
        try:
            use_server_key(app, remote.info()["server_id"], lambda: remote.read(PATH))
        except BaseException:
            remote.close()
            raise
    return remote, app
