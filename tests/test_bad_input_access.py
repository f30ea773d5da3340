"""Bad input in [access]: each case is refused when the manifest loads (exit 2, one line),
never a traceback later in the middle of an approval."""

from __future__ import annotations

from pathlib import Path

import pytest

from _access_kit import Keys, make_access_app
from oneoff.testing import run_cli

pytest_plugins = ["_access_kit"]


@pytest.mark.parametrize(
    ("table", "line"),
    [
        ("[access]", 'approval_ttl = "9999999999999h"'),
        ("[access]", "approval_ttl = 99999999999999999999"),
        ("[access]", 'approval_ttl = "367d"'),
        ("[environments.production]", 'approvals = { quorum = 1, ttl = "99999999999d" }'),
    ],
    ids=["hours", "seconds", "past-a-year", "environment-rule"],
)
def test_an_approval_ttl_past_a_year_is_refused_at_load(
    tmp_path: Path, keys: Keys, cli_env: dict[str, str], table: str, line: str
) -> None:
    """A TTL beyond 366 days is a manifest error; it was an OverflowError traceback when
    the first approval was signed (its expiry lies past the calendar's end)."""
    root = make_access_app(tmp_path / "app", keys)
    manifest = root / "oneoff.toml"
    text = manifest.read_text()
    if table == "[access]":
        text = text.replace('approval_ttl = "1h"', line)
    else:
        text = text.replace(f"{table}\nprotected = true", f"{table}\nprotected = true\n{line}")
    assert line in text
    manifest.write_text(text)
    done = run_cli(["plan", "noop", "--env", "development"], cwd=root, env=cli_env)
    assert done.exit_code == 2, done.output
    assert "Traceback" not in done.output
    assert done.stderr.splitlines()[0].startswith("oneoff: error: ")
    assert "at most 366 days" in done.stderr
