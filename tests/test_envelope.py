"""The signed envelope of API calls (oneoff._envelope) and the body schema validator:
round trips, and properties over arbitrary input."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oneoff._envelope import (
    SIGNATURE_HEADER,
    STATEMENT_HEADER,
    EnvelopeError,
    api_statement,
    decode_envelope,
    envelope_problem,
    sign_envelope,
)
from oneoff._identity import Signer, utc_now
from oneoff._server.schema import SchemaViolation, validate

NOW = _dt.datetime(2026, 12, 6, 23, 0, tzinfo=_dt.UTC)
CALL: dict[str, Any] = {
    "method": "POST", "path": "/v1/requests", "query": "", "body": b"{}", "server_id": "a" * 32,
}  # fmt: skip


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from _access_kit import keygen

    return keygen(tmp_path_factory.mktemp("envelope"), "bob")


def test_signed_envelope_round_trips(key: Path) -> None:
    """The headers decode to the statement signed, which authorises exactly that call, and
    the signature verifies over the decoded bytes in namespace oneoff-api."""
    from oneoff._auth.signers import Signers
    from oneoff._auth.sshsig import verify

    c = CALL
    headers = sign_envelope(
        Signer(key, agent=False), c["method"], c["path"], c["query"], c["body"],
        c["server_id"], now=NOW,
    )  # fmt: skip
    statement, signed, signature = decode_envelope(
        headers[STATEMENT_HEADER], headers[SIGNATURE_HEADER]
    )
    assert envelope_problem(statement, now=NOW, **CALL) is None
    kind, blob = Path(f"{key}.pub").read_text().split()[:2]
    people = Signers.parse(f"bob {kind} {blob}\n", source="test")
    assert verify(signed, signature, namespace="oneoff-api", allowed=people).name == "bob"


@given(
    field=st.sampled_from(["method", "path", "query", "body_sha256", "server", "nonce"]),
    value=st.text(max_size=40),
)
def test_any_changed_field_is_a_problem(field: str, value: str) -> None:
    """Changing any one field of a statement makes it authorise nothing for the call."""
    statement = api_statement("POST", "/v1/requests", "", b"{}", "a" * 32, now=NOW)
    if statement[field] == value:
        return
    statement[field] = value
    assert envelope_problem(statement, now=NOW, **CALL) is not None


@given(st.integers(min_value=-10_000, max_value=10_000))
def test_time_window_is_five_minutes(seconds: int) -> None:
    """A statement is accepted exactly when its time is within 5 minutes of the server's."""
    statement = api_statement("POST", "/v1/requests", "", b"{}", "a" * 32, now=NOW)
    later = NOW + _dt.timedelta(seconds=seconds)
    problem = envelope_problem(statement, now=later, **CALL)
    assert (problem is None) == (abs(seconds) <= 300)


@settings(max_examples=300)
@given(st.text(max_size=200), st.text(max_size=200))
def test_decoding_arbitrary_headers_fails_cleanly(statement: str, signature: str) -> None:
    """Any header text either decodes to a JSON object or raises EnvelopeError, nothing else."""
    try:
        decoded, _, _ = decode_envelope(statement, signature)
    except EnvelopeError:
        return
    assert isinstance(decoded, dict)
    assert envelope_problem(decoded, now=utc_now(), **CALL) is not None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(JSON)
def test_schema_validation_fails_only_with_violations(value: Any) -> None:
    """Validating any JSON value against the access schemas either passes or raises
    SchemaViolation; a value that passes has every required field."""
    from oneoff._server.api_access import APPROVAL, DENIAL, NEW_REQUEST

    for schema in (NEW_REQUEST, APPROVAL, DENIAL):
        try:
            validate(value, schema)
        except SchemaViolation:
            continue
        assert isinstance(value, dict)
        assert set(schema["required"]) <= set(value)
