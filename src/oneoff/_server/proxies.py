"""Which reverse proxies the server believes about the client's address and scheme.

Threat: the client address decides whose failed authentications count toward a limit
(``oneoff._server.ratelimit``), and the scheme decides whether the console's cookies are
``Secure`` and which origin its CSRF check expects. Behind a TLS-terminating reverse proxy
every call comes from the proxy over plain HTTP: one client's failures throttle everyone,
and the console sees ``http`` where the browser sent ``https``. The proxy says who and
how in ``X-Forwarded-For`` / ``X-Forwarded-Proto``, but any client can send those headers
too. So they are read only from the addresses named with ``--trusted-proxy`` (none by
default: the TCP peer is the client), never from everyone (``*`` is refused), and from a
chain of proxies the right-most address that is not a trusted proxy is the client's
(uvicorn's ProxyHeadersMiddleware).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from oneoff.errors import UsageError

__all__ = ["trusted_proxies"]


def trusted_proxies(given: Iterable[str]) -> tuple[str, ...]:
    """The ``--trusted-proxy`` values, each an IP address or network; UsageError (exit 2)
    for anything else, naming it."""
    out: list[str] = []
    for raw in given:
        text = raw.strip()
        try:
            if "/" in text:
                out.append(str(ipaddress.ip_network(text, strict=False)))
            else:
                out.append(str(ipaddress.ip_address(text)))
        except ValueError:
            raise UsageError(
                f"--trusted-proxy must be an IP address or network, not {raw[:60]!r}",
                hint="name the reverse proxy's own address, e.g. 127.0.0.1 or 10.0.0.0/24; "
                "trusting every address would let any client choose its own",
            ) from None
    return tuple(dict.fromkeys(out))
