"""Which team server the CLI talks to: ``--server`` > ``$ONEOFF_SERVER`` > ``[server] url``.

A URL is ``http://`` or ``https://``, a host, an optional port and optional path prefix;
nothing else (no user or password: people are their keys; no query or fragment). Plain
``http://`` is accepted only for a loopback host: over any network the session token and
the request bodies would cross it in clear, so a remote server needs TLS.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any

from oneoff._record import dataclass
from oneoff.errors import ManifestError, UsageError

__all__ = ["ENV_VAR", "ServerURL", "chosen_server", "parse_server_url", "validate_server_table"]

ENV_VAR = "ONEOFF_SERVER"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


@dataclass(frozen=True)
class ServerURL:
    """A checked server URL, split for ``http.client``."""

    scheme: str  # "http" or "https"
    host: str
    port: int
    prefix: str  # "" or "/something" (no trailing slash)

    @property
    def url(self) -> str:
        """The canonical spelling: what sessions and remembered checkpoints are keyed by."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.prefix}"


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_server_url(text: str, *, where: str = "--server") -> ServerURL:
    """Check ``text`` as a server URL; UsageError (exit 2) naming ``where`` otherwise."""
    from urllib.parse import urlsplit

    def bad(why: str) -> UsageError:
        shown = text if len(text) <= 80 else text[:77] + "..."
        return UsageError(
            f"{where}: {shown!r} is not a usable server URL: {why}",
            hint="e.g. https://oneoff.example.com or http://127.0.0.1:8421",
        )

    if not text or text != text.strip() or any(not c.isprintable() for c in text):
        raise bad("empty, or it holds spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise bad(str(exc)) from None
    if parts.scheme not in ("http", "https"):
        raise bad("the scheme must be http or https")
    if not host:
        raise bad("it names no host")
    if parts.username is not None or parts.password is not None:
        raise bad("it carries a user or password (your SSH key is who you are)")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise bad("it has a query or fragment")
    prefix = parts.path.rstrip("/")
    if prefix and (not prefix.startswith("/") or "//" in prefix or "%" in prefix):
        raise bad("its path is not a plain prefix")
    if parts.scheme == "http" and not _is_loopback(host):
        raise bad("plain http is only for a server on this machine; use https")
    default = 443 if parts.scheme == "https" else 80
    return ServerURL(parts.scheme, host, port or default, prefix)


def validate_server_table(where: str, table: object) -> None:
    """Check ``[server]`` in the manifest: a table whose ``url`` (optional) is a server URL."""
    if not isinstance(table, dict):
        raise ManifestError(f"{where}: [server] must be a table")
    from oneoff._keys import check_keys

    check_keys(table, {"url"}, f"{where}: [server]")
    url = table.get("url")
    if url is None:
        return
    if not isinstance(url, str):
        raise ManifestError(f"{where}: [server] url must be a string")
    try:
        parse_server_url(url, where=f"{where}: [server] url")
    except UsageError as exc:
        raise ManifestError(exc.message, hint=exc.hint) from None


def chosen_server(
    flag: str | None,
    section: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None = None,
) -> ServerURL | None:
    """The server to talk to, or None for local mode. An empty ``$ONEOFF_SERVER`` is unset."""
    env = os.environ if environ is None else environ
    if flag is not None:
        return parse_server_url(flag, where="--server")
    value = env.get(ENV_VAR, "")
    if value:
        return parse_server_url(value, where=ENV_VAR)
    url = (section or {}).get("url")
    if isinstance(url, str):
        return parse_server_url(url, where="[server] url")
    return None
