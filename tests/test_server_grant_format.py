"""The run grant's format: signed by the server, bound to one run and one plan, short-lived."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from oneoff._clock import utc_iso
from oneoff._remote.grant import (
    GRANT_TTL,
    check_run_token,
    public_key_b64,
    public_key_from_text,
    run_token,
    sign_grant,
    verify_grant,
)
from oneoff.errors import NotPermitted

KEY = Ed25519PrivateKey.generate()
NOW = _dt.datetime(2026, 12, 6, 23, 0, 0, tzinfo=_dt.UTC)
PLAN = "sha256:" + "ab" * 32


def grant(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "oneoff_grant": 1, "id": "0" * 32, "server": "s" * 32, "app": "app", "run": "r1",
        "plan_hash": PLAN, "task": "migrate", "environment": "production", "release": None,
        "principal": "alice", "locks": {"database": 7}, "fencing": 7, "lease_seconds": 30,
        "issued_at": utc_iso(NOW), "expires_at": utc_iso(NOW + _dt.timedelta(seconds=60)),
        "single_use": True,
    }  # fmt: skip
    doc.update(changes)
    return doc


def check(doc: Any, signature: Any, *, run_id: str = "r1", plan_hash: str = PLAN) -> Any:
    return verify_grant(
        KEY.public_key(), doc, signature, run_id=run_id, plan_hash=plan_hash, now=NOW,
        server_id="s" * 32,
    )  # fmt: skip


def test_a_grant_signed_by_the_server_is_accepted_for_its_run_and_plan() -> None:
    """A genuine grant verifies for the run and the plan hash it names."""
    doc = grant()
    assert check(doc, sign_grant(KEY, doc)) == doc


def test_an_altered_grant_is_refused() -> None:
    """Changing any value after signing (here the fencing token) breaks the signature."""
    doc = grant()
    signature = sign_grant(KEY, doc)
    with pytest.raises(NotPermitted, match="altered or forged"):
        check({**doc, "locks": {"database": 99}}, signature)


def test_a_grant_for_another_plan_or_run_is_refused() -> None:
    """A grant starts only the run and the plan hash it was issued for."""
    doc = grant()
    signature = sign_grant(KEY, doc)
    with pytest.raises(NotPermitted, match="for plan"):
        check(doc, signature, plan_hash="sha256:" + "cd" * 32)
    with pytest.raises(NotPermitted, match="for run r1, not r2"):
        check(doc, signature, run_id="r2")


def test_an_expired_or_long_lived_grant_is_refused() -> None:
    """A grant must be started before it expires, and may not live past GRANT_TTL seconds."""
    old = grant(
        issued_at=utc_iso(NOW - _dt.timedelta(seconds=61)),
        expires_at=utc_iso(NOW - _dt.timedelta(seconds=1)),
    )
    with pytest.raises(NotPermitted, match="expired"):
        check(old, sign_grant(KEY, old))
    long = grant(expires_at=utc_iso(NOW + _dt.timedelta(seconds=GRANT_TTL + 1)))
    with pytest.raises(NotPermitted, match="lifetime"):
        check(long, sign_grant(KEY, long))


def test_a_grant_signed_by_another_key_is_refused() -> None:
    """Only the server's key makes a grant."""
    doc = grant()
    with pytest.raises(NotPermitted, match="not the server's"):
        check(doc, sign_grant(Ed25519PrivateKey.generate(), doc))


def test_a_grant_from_another_server_is_refused() -> None:
    """A grant names the server that issued it; another server's is refused."""
    doc = grant(server="t" * 32)
    with pytest.raises(NotPermitted, match="issued by server"):
        check(doc, sign_grant(KEY, doc))


@settings(max_examples=150, deadline=None)
@given(
    field=st.sampled_from(sorted(grant())),
    value=st.one_of(st.none(), st.integers(), st.text(max_size=20), st.booleans()),
)
def test_any_change_to_a_signed_grant_is_refused(field: str, value: Any) -> None:
    """Whatever field is changed to whatever value, the altered grant never verifies."""
    doc = grant()
    signature = sign_grant(KEY, doc)
    altered = {**doc, field: value}
    if altered == doc:
        return
    with pytest.raises(NotPermitted):
        check(altered, signature)


def test_the_run_token_is_good_for_its_run_only() -> None:
    """The run token the server hands out proves nothing for another run, nor when edited."""
    token = run_token(KEY, "r1")
    public = public_key_from_text(public_key_b64(KEY.public_key()))
    assert check_run_token(public, "r1", token)
    assert not check_run_token(public, "r2", token)
    assert not check_run_token(public, "r1", token[:-2] + ("AA" if token[-2:] != "AA" else "BA"))
    assert not check_run_token(public, "r1", "")
