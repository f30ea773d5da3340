"""Choosing the team server: URL checks, precedence of --server, $ONEOFF_SERVER, [server] url."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneoff._client.url import chosen_server, parse_server_url
from oneoff.cli import main
from oneoff.errors import ManifestError, UsageError
from oneoff.testing import make_app

BASIC = "[environments.development]\n[tasks.x]\nargv = ['true']\n"


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("http://127.0.0.1:8421", "http://127.0.0.1:8421"),
        ("http://localhost:8421/", "http://localhost:8421"),
        ("http://[::1]:9000/oneoff/", "http://[::1]:9000/oneoff"),
        ("https://oneoff.example.com", "https://oneoff.example.com"),
        ("https://oneoff.example.com:443/team", "https://oneoff.example.com/team"),
        ("https://oneoff.example.com:8443", "https://oneoff.example.com:8443"),
    ],
)
def test_a_good_url_is_kept_in_one_canonical_spelling(text: str, url: str) -> None:
    """A server URL is normalised (default port, trailing slash) so it names one server."""
    assert parse_server_url(text).url == url


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("ftp://example.com", "scheme"),
        ("example.com:8421", "scheme"),
        ("http://", "no host"),
        ("https://alice:pw@example.com", "user or password"),
        ("https://example.com/?x=1", "query or fragment"),
        ("https://example.com/#top", "query or fragment"),
        ("https://example.com:99999", "Port out of range"),
        ("http://oneoff.example.com", "plain http is only for a server on this machine"),
        ("http://10.0.0.5:8421", "plain http is only for a server on this machine"),
        (" http://127.0.0.1", "spaces"),
        ("https://example.com/a%2Fb", "plain prefix"),
    ],
)
def test_a_bad_url_is_a_usage_error(text: str, why: str) -> None:
    """A URL the client cannot use safely is refused with the reason, as a usage error."""
    with pytest.raises(UsageError, match=why):
        parse_server_url(text)


@given(st.text(max_size=60))
def test_any_text_parses_or_is_a_usage_error(text: str) -> None:
    """Whatever the text, the parser returns a usable URL or raises UsageError, nothing else;
    a URL it accepts is a fixed point of its own canonical spelling."""
    try:
        parsed = parse_server_url(text)
    except UsageError:
        return
    assert parse_server_url(parsed.url) == parsed


def test_the_flag_wins_over_the_variable_which_wins_over_the_manifest() -> None:
    """--server > $ONEOFF_SERVER > [server] url; an empty variable counts as unset."""
    section = {"url": "http://127.0.0.1:3"}
    env = {"ONEOFF_SERVER": "http://127.0.0.1:2"}
    chosen = chosen_server("http://127.0.0.1:1", section, env)
    assert chosen is not None
    assert chosen.port == 1
    chosen = chosen_server(None, section, env)
    assert chosen is not None
    assert chosen.port == 2
    chosen = chosen_server(None, section, {"ONEOFF_SERVER": ""})
    assert chosen is not None
    assert chosen.port == 3
    assert chosen_server(None, {}, {}) is None


def test_an_invalid_server_flag_exits_2_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--server` with a bad URL is a usage error (exit 2) naming the flag."""
    make_app(tmp_path, BASIC)
    code = main(["audit", "verify", "--app", str(tmp_path), "--server", "http://example.com"])
    assert code == 2
    assert "--server" in capsys.readouterr().err


def test_an_invalid_server_variable_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """$ONEOFF_SERVER with a bad URL is a usage error (exit 2) naming the variable."""
    make_app(tmp_path, BASIC)
    monkeypatch.setenv("ONEOFF_SERVER", "gopher://x")
    assert main(["audit", "verify", "--app", str(tmp_path)]) == 2
    assert "ONEOFF_SERVER" in capsys.readouterr().err


def test_the_manifest_server_table_is_checked_on_load(tmp_path: Path) -> None:
    """[server] url must be a usable server URL and [server] holds nothing else."""
    from oneoff._manifest import load_project

    make_app(tmp_path, "[server]\nurl = 'http://db.example.com'\n" + BASIC)
    with pytest.raises(ManifestError, match=r"\[server\] url"):
        load_project(tmp_path)
    make_app(tmp_path, "[server]\nulr = 'https://x.example'\n" + BASIC)
    with pytest.raises(ManifestError, match="ulr"):
        load_project(tmp_path)
    make_app(tmp_path, "[server]\nurl = 'https://x.example'\n" + BASIC)
    assert load_project(tmp_path).section("server")["url"] == "https://x.example"
