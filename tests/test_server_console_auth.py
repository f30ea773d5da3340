"""The console's login links and session cookies, checked without a browser or a server."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _access_kit import keygen, signers_text
from oneoff._auth.signers import Signers
from oneoff._canonical import canonical_json
from oneoff._identity import Principal, Signer
from oneoff._server.console.session import (
    SESSION_TTL,
    console_key,
    csrf_token,
    make_cookie,
    origin_problem,
    read_cookie,
)
from oneoff._weblogin import (
    LOGIN_NAMESPACE,
    _b64,
    decode_token,
    login_link,
    login_statement,
    verify_token,
)
from oneoff.errors import NotPermitted

SERVER = "ab" * 16
OTHER = "cd" * 16
NOW = dt.datetime(2026, 12, 6, 22, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Signers]:
    """Real ssh-keygen keys for bob (allowed) and mallory (in nobody's allowed signers)."""
    where = tmp_path_factory.mktemp("keys")
    keys = {name: keygen(where, name) for name in ("bob", "mallory")}
    return keys, Signers.parse(signers_text(keys, {"bob": "dba"}))


def token_of(link: str) -> str:
    return link.split("#", 1)[1]


def mint(key: Path, **kw: object) -> str:
    statement = login_statement(SERVER, now=NOW, **kw)  # type: ignore[arg-type]
    return token_of(login_link("http://127.0.0.1:8421", statement, Signer(key, agent=False)))


def test_a_link_names_the_console_login_page_with_the_token_in_its_fragment(people):
    """The link opens /console/login and carries the signed token after '#' only."""
    keys, _ = people
    statement = login_statement(SERVER, now=NOW)
    link = login_link("https://oneoff.example/", statement, Signer(keys["bob"], agent=False))
    assert link.startswith("https://oneoff.example/console/login#")
    assert "?" not in link


def test_a_fresh_link_verifies_as_its_signer(people):
    """A link bob signed for this server, opened within its five minutes, is bob's."""
    keys, signers = people
    token = decode_token(mint(keys["bob"]))
    person = verify_token(
        token, allowed=signers, server_id=SERVER, now=NOW + dt.timedelta(minutes=1)
    )
    assert person.name == "bob"
    assert len(token.nonce) == 32


@pytest.mark.parametrize(
    ("server", "later", "why"),
    [
        (OTHER, 0, "another server"),
        (SERVER, 5 * 60, "expired"),
        (SERVER, 60 * 60, "more than 5 minutes from ours"),
        (SERVER, -6 * 60, "more than 5 minutes from ours"),
    ],
)
def test_a_link_for_another_server_or_out_of_its_time_is_refused(people, server, later, why):
    """The audience and the five-minute window are enforced, both ways of the clock."""
    keys, signers = people
    token = decode_token(mint(keys["bob"]))
    with pytest.raises(NotPermitted, match=why):
        verify_token(
            token, allowed=signers, server_id=server, now=NOW + dt.timedelta(seconds=later)
        )


def test_a_link_claiming_a_longer_life_is_refused(people):
    """A statement whose expiry is more than 5 minutes after its time is refused, signed or not."""
    keys, signers = people
    statement = login_statement(SERVER, now=NOW)
    statement["expires"] = "2026-12-06T23:00:00Z"
    token = decode_token(
        token_of(login_link("http://x", statement, Signer(keys["bob"], agent=False)))
    )
    with pytest.raises(NotPermitted, match="longer than 5 minutes"):
        verify_token(token, allowed=signers, server_id=SERVER, now=NOW)
    with pytest.raises(ValueError, match="5 minutes"):
        login_statement(SERVER, ttl=dt.timedelta(hours=1))


def test_a_key_outside_the_pinned_people_cannot_log_in(people):
    """Mallory's well-formed link is refused: her key is in no allowed signers."""
    keys, signers = people
    with pytest.raises(NotPermitted, match="not in"):
        verify_token(
            decode_token(mint(keys["mallory"])), allowed=signers, server_id=SERVER, now=NOW
        )


def test_a_signature_for_another_namespace_is_refused(people):
    """A signature bob made for the API (or any other namespace) is no login link."""
    keys, signers = people
    signed = canonical_json(login_statement(SERVER, now=NOW))
    from oneoff._auth.sshsig import dearmor

    blob = dearmor(Signer(keys["bob"], agent=False).sign(signed, "oneoff-api"))
    with pytest.raises(NotPermitted, match="namespace"):
        verify_token(
            decode_token(f"{_b64(signed)}.{_b64(blob)}"), allowed=signers, server_id=SERVER, now=NOW
        )
    assert LOGIN_NAMESPACE == "oneoff-login"


def test_an_edited_statement_no_longer_matches_its_signature(people):
    """Changing the signed statement (here its server) breaks the signature."""
    keys, signers = people
    head, tail = mint(keys["bob"]).split(".")
    from oneoff._weblogin import _unb64

    statement = json.loads(_unb64(head))
    statement["server"] = OTHER
    forged = f"{_b64(canonical_json(statement))}.{tail}"
    with pytest.raises(NotPermitted, match="bad signature"):
        verify_token(decode_token(forged), allowed=signers, server_id=OTHER, now=NOW)


def test_a_statement_that_is_not_canonical_json_is_refused(people):
    """Only the exact canonical bytes count: the same JSON spaced differently is refused."""
    keys, _ = people
    head, tail = mint(keys["bob"]).split(".")
    from oneoff._weblogin import _unb64

    spaced = json.dumps(json.loads(_unb64(head)), indent=1).encode()
    with pytest.raises(NotPermitted, match="canonical"):
        decode_token(f"{_b64(spaced)}.{tail}")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
def test_any_text_as_a_token_is_refused_cleanly_or_decoded(text):
    """Whatever is pasted, decoding raises NotPermitted or yields a login statement."""
    try:
        token = decode_token(text)
    except NotPermitted:
        return
    assert set(token.statement) == {"oneoff_login", "server", "time", "expires", "nonce"}


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["oneoff_login", "server", "time", "expires", "nonce"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=40)),
        min_size=5,
    )
)
def test_any_statement_values_are_judged_without_crashing(statement):
    """login_problem says yes or gives a reason for any values of the five fields."""
    from oneoff._weblogin import login_problem

    assert login_problem(statement, server_id=SERVER, now=NOW) is not None


# -- the session cookie -----------------------------------------------------------------

KEY = console_key(b"s" * 32)


def bob_of(signers: Signers) -> Principal:
    bob = signers.person("bob")
    return Principal(bob.name, bob.groups, bob.fingerprint)


def test_a_session_cookie_proves_its_person_until_it_expires(people):
    """The cookie reads back as bob with his groups, and not after its lifetime."""
    _, signers = people
    value, max_age = make_cookie(KEY, bob_of(signers), SERVER, now=NOW)
    session = read_cookie(KEY, value, SERVER, signers, now=NOW + dt.timedelta(minutes=1))
    assert session is not None
    assert session.principal.name == "bob"
    assert "dba" in session.principal.groups
    assert max_age == SESSION_TTL.total_seconds()
    assert read_cookie(KEY, value, SERVER, signers, now=NOW + SESSION_TTL) is None


def test_a_forged_or_foreign_cookie_proves_nothing(people):
    """An edited cookie, one MAC'd under another key, or made for another server is refused."""
    _, signers = people
    value, _ = make_cookie(KEY, bob_of(signers), SERVER, now=NOW)
    body, mac = value.split(".")
    claims = json.loads(__import__("base64").urlsafe_b64decode(body + "=="))
    claims["person"] = "carol"
    edited = _b64(json.dumps(claims).encode()) + "." + mac
    later = NOW + dt.timedelta(minutes=1)
    assert read_cookie(KEY, edited, SERVER, signers, now=later) is None
    assert read_cookie(console_key(b"t" * 32), value, SERVER, signers, now=later) is None
    assert read_cookie(KEY, value, OTHER, signers, now=later) is None
    assert read_cookie(KEY, "x" * 5000, SERVER, signers, now=later) is None
    assert read_cookie(KEY, None, SERVER, signers, now=later) is None


def test_a_cookie_ends_when_its_key_leaves_the_people(people):
    """Once bob's key is no longer among the people, his session is gone."""
    keys, signers = people
    value, _ = make_cookie(KEY, bob_of(signers), SERVER, now=NOW)
    without_bob = Signers.parse(signers_text(keys, {"mallory": "dba"}))
    assert read_cookie(KEY, value, SERVER, without_bob, now=NOW) is None


def test_the_console_key_is_not_the_api_token_key():
    """Cookies and API tokens are MAC'd under different keys derived from one secret."""
    assert console_key(b"s" * 32) != b"s" * 32


def test_the_csrf_token_is_bound_to_one_session(people):
    """Each session has its own CSRF token; another session's token does not pass."""
    _, signers = people
    one = read_cookie(
        KEY, make_cookie(KEY, bob_of(signers), SERVER, now=NOW)[0], SERVER, signers, now=NOW
    )
    two = read_cookie(
        KEY, make_cookie(KEY, bob_of(signers), SERVER, now=NOW)[0], SERVER, signers, now=NOW
    )
    assert one is not None
    assert two is not None
    assert one.check_csrf(one.csrf)
    assert not one.check_csrf(two.csrf)
    assert not one.check_csrf(None)
    assert not one.check_csrf("")
    assert one.csrf == csrf_token(KEY, one.id)


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ({"origin": "http://127.0.0.1:8421"}, True),
        ({"origin": "null", "sec-fetch-site": "same-origin"}, True),
        ({"sec-fetch-site": "same-origin"}, True),
        ({"origin": "https://evil.example"}, False),
        ({"origin": "http://127.0.0.1:8421.evil.example"}, False),
        ({"origin": "null", "sec-fetch-site": "cross-site"}, False),
        ({"origin": "null"}, False),
        ({"sec-fetch-site": "same-site"}, False),
        ({}, False),
    ],
)
def test_only_a_post_from_our_own_origin_passes(headers, ok):
    """Origin must be ours; with Origin null the browser's Sec-Fetch-Site must say
    same-origin; with neither, the POST is refused (fail closed)."""
    assert (origin_problem(headers, "http://127.0.0.1:8421") is None) is ok


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=3000)))
def test_any_cookie_value_proves_nothing_without_crashing(people, value):
    """Whatever a browser sends as the cookie, reading it returns None or a session."""
    _, signers = people
    assert read_cookie(KEY, value, SERVER, signers, now=NOW) is None
