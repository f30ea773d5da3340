"""Secrets under the names real tools read them from are secrets by default: libpq's
PGPASSWORD, MySQL's MYSQL_PWD, a GPG passphrase, and any of them in lower or mixed case."""

from __future__ import annotations

from pathlib import Path

import pytest

from oneoff.testing import make_app, run_cli

VALUES = {
    "PGPASSWORD": "pgpass-Zq8xPlm3",
    "MYSQL_PWD": "mysqlpwd-Rt7vWk2n",
    "GPG_PASSPHRASE": "correct horse battery staple 9",
    "db_password": "lowercase-Hq5mNx8r",
    "Api_Token": "mixedcase-Lp3kVb7w",
}
MANIFEST = """
[environments.development]
config = [{ dotenv = ".env" }]

[tasks.dump]
argv = ["python", "-c", "import os; print(dict(os.environ))"]
"""


@pytest.mark.parametrize("name", sorted(VALUES))
def test_a_well_known_secret_variable_is_masked_and_redacted(
    tmp_path: Path, cli_env: dict[str, str], name: str
) -> None:
    """`oneoff env` masks it and a task printing its environment shows it redacted."""
    value = VALUES[name]
    app = make_app(tmp_path / "app", MANIFEST, {".env": f'{name}="{value}"\n'})
    shown = run_cli(["env"], cwd=app, env=cli_env)
    assert shown.exit_code == 0, shown.output
    assert f"{name}=********" in shown.stdout
    done = run_cli(["run", "dump"], cwd=app, env=cli_env)
    assert done.exit_code == 0, done.output
    assert f"[REDACTED:{name}]" in done.stdout
    assert value not in done.output
