"""A bound on failed authentications per client address, shared by every server process.

Threat: a client that cannot authenticate hammering the API or the console's login
(forged or stale envelopes and tokens, replayed or forged login links). Guessing is
hopeless against Ed25519 signatures and 256-bit HMAC tokens, but every refusal costs a
signature check and an audit append: unbounded, a flood grows the audit log and the store
and slows everyone else down. So failures are counted per client address in fixed windows
of ``WINDOW`` seconds, in the store's ``server_state`` (every server process on one
database adds to the same count). Once an address has ``limit()`` failures in the current
window, every call from it that needs a signature, a token or a login link is answered
429 with ``Retry-After`` (seconds to the window's end) before its credentials are looked
at, and is not audited: one ``auth.throttled`` event marks the moment the limit is
reached. Successful calls are never counted and never reset the count.

Bounds: the count lives in one of ``BUCKETS`` rows chosen by a hash of the address, so the
store holds at most that many rows whatever addresses come (an IPv6 client has many);
addresses that share a bucket share its count. A bucket with failures in the current
window is read from the store on every call; one without is read at most once per
``RECHECK`` seconds per process (calls from addresses that never fail cost no read), so
another process's first failures may take that long to be seen. The address is the TCP
peer's, or the one a reverse proxy named with ``--trusted-proxy`` forwards
(``oneoff._server.proxies``); behind a proxy not named, every client is the proxy's address.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import TYPE_CHECKING

from oneoff._server.errors import ApiError
from oneoff.errors import NotPermitted

if TYPE_CHECKING:
    from oneoff._store.interface import Store

__all__ = ["WINDOW", "count_failure", "limit", "throttled"]

WINDOW = 60
DEFAULT_LIMIT = 30
BUCKETS = 4096
RECHECK = 1.0
# (store id, bucket) -> (read at, window, failures): this process's latest view.
_seen: dict[tuple[int, str], tuple[float, int, int]] = {}
_lock = threading.Lock()


def limit() -> int:
    """Failures allowed per address and window (``ONEOFF_SERVER_AUTH_FAILURES``, >= 1)."""
    try:
        return max(1, int(os.environ.get("ONEOFF_SERVER_AUTH_FAILURES", DEFAULT_LIMIT)))
    except ValueError:
        return DEFAULT_LIMIT


def _bucket(address: str) -> str:
    digest = hashlib.sha256(address.encode("utf-8", "replace")).digest()
    return f"auth-failures:{int.from_bytes(digest[:4], 'big') % BUCKETS:04d}"


def _read(store: Store, name: str, window: int) -> int:
    raw = store.server_value(name)
    try:
        data = json.loads(raw or b"{}")
        return int(data["failures"]) if data.get("window") == window else 0
    except (ValueError, TypeError, KeyError, AttributeError):
        return 0  # an unreadable count starts afresh: it can only delay a refusal


def _remember(store: Store, name: str, now: float, window: int, failures: int) -> None:
    with _lock:
        _seen[(id(store), name)] = (now, window, failures)


def throttled(store: Store, address: str, now: float) -> ApiError | None:
    """The 429 for ``address`` when it failed too often in this window, else None."""
    name, window = _bucket(address), int(now // WINDOW)
    with _lock:
        seen = _seen.get((id(store), name))
    if seen is not None and seen[1] == window and seen[2] == 0 and now - seen[0] < RECHECK:
        failures = 0  # the common case, spared a read: nobody failed here a moment ago
    else:
        failures = _read(store, name, window)
        _remember(store, name, now, window, failures)
    if failures < limit():
        return None
    retry = max(1, WINDOW - int(now % WINDOW))
    error = NotPermitted(
        f"too many failed authentications from {address}: refused for {retry} s",
        hint="check your key, clock and server URL; wait before trying again",
    )
    return ApiError(429, error, headers={"Retry-After": str(retry)})


def count_failure(store: Store, address: str, now: float) -> bool:
    """Count one failed authentication; True when it is the one that reaches the limit."""
    from oneoff._identity import iso, utc_now

    name, window = _bucket(address), int(now // WINDOW)
    with store.tx():  # one writer at a time, across processes: no count is lost
        failures = _read(store, name, window) + 1
        value = json.dumps({"window": window, "failures": failures}).encode()
        store.put_server_value(name, value, iso(utc_now()), replace=True)
    _remember(store, name, now, window, failures)
    return failures == limit()
