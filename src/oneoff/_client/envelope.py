"""The signed envelope of an acting call: ``Oneoff-Statement`` and ``Oneoff-Signature``.

The statement names the exact HTTP request (method, API path, raw query, SHA-256 of the
exact body bytes), the server it is meant for (its ``server_id``: a statement made for one
server is refused by another), the time and a fresh nonce (single use, server-side). It is
signed with the person's SSH key in the ``oneoff-api`` namespace, so it can never pass for
a request or approval statement, nor one of those for it. The path is the API path
(``/v1/...``), without any prefix a reverse proxy adds.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import TYPE_CHECKING

from oneoff._canonical import canonical_json

if TYPE_CHECKING:
    from oneoff._identity import Signer

__all__ = ["API_VERSION", "NAMESPACE_API", "SIGNATURE_HEADER", "STATEMENT_HEADER", "envelope"]

API_VERSION = 1
NAMESPACE_API = "oneoff-api"
STATEMENT_HEADER = "Oneoff-Statement"
SIGNATURE_HEADER = "Oneoff-Signature"


def envelope(
    signer: Signer, method: str, path: str, query: str, body: bytes, server_id: str
) -> dict[str, str]:
    """The two headers that make this exact call an act signed by ``signer``'s key."""
    from oneoff._identity import iso, utc_now

    statement = {
        "oneoff_api": API_VERSION,
        "method": method,
        "path": path,
        "query": query,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "server": server_id,
        "time": iso(utc_now()),
        "nonce": secrets.token_hex(16),
    }
    data = canonical_json(statement)
    armored = signer.sign(data, NAMESPACE_API)
    return {
        STATEMENT_HEADER: base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii"),
        SIGNATURE_HEADER: base64.b64encode(armored).decode("ascii"),
    }
