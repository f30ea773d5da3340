"""Shared fixtures: temporary apps built with oneoff.testing."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from oneoff.testing import make_app

if TYPE_CHECKING:
    from collections.abc import Callable

    from _pgserver import PgServer
    from _serverproc import ServerProc
    from oneoff._store.interface import Store

# A developer's own `oneoff daemon` must not serve the suite's subprocesses (tests that
# kill a runner by pid expect it in-process); tests/test_daemon.py starts its own.
os.environ["ONEOFF_DAEMON"] = "off"
# A developer's own team server must not turn the suite's local commands into calls to it.
for _name in ("ONEOFF_SERVER", "ONEOFF_SERVER_CA", "ONEOFF_SERVER_TIMEOUT"):
    os.environ.pop(_name, None)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "notes"

BASIC = """
[environments.development]
config = [{ dotenv = ".env" }]

[environments.production]
protected = true
config = [{ dotenv = ".env.production" }]

[tasks.hello]
argv = ["python", "-c", "import sys; print('hello', *sys.argv[1:])", "{name}"]
params.name = { type = "string", default = "world" }

[tasks.printenv]
argv = ["python", "-c", "import json, os; print(json.dumps(dict(os.environ)))"]

[tasks.fail]
argv = ["python", "-c", "import sys; sys.exit(int(sys.argv[1]))", "{code}"]
params.code = { type = "int", min = 0, max = 255 }

[tasks.wipe]
argv = ["python", "-c", "print('wiped')"]
risk = "critical"
"""


@pytest.fixture(scope="session", autouse=True)
def _private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Remembered audit checkpoints and the cache key (``oneoff._userkey``) go to the
    session's own state directory, never the developer's (each test's app is a store of
    its own there)."""
    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))
    yield
    if saved is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = saved


@pytest.fixture(scope="session")
def release_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A release signing key kept outside every app, and the trusted_keys entry for it."""
    from oneoff._audit.checkpoint import generate_keypair
    from oneoff._release.settings import public_key_line

    out = tmp_path_factory.mktemp("release-keys")
    generate_keypair(out / "release.key", out / "release.pub")
    return out / "release.key", public_key_line(out / "release.pub")


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, release_key: tuple[Path, str]) -> Path:
    """A small app with development and protected production, as the working directory.

    Its manifest trusts ``release_key``; add ``production_release`` to run on production.
    """
    root = make_app(
        tmp_path / "app",
        f'[release]\ntrusted_keys = ["{release_key[1]}"]\n' + BASIC,
        {
            ".env": "DATABASE_URL=postgres://app:s3cr3t-pass@db/app\nSECRET_KEY=dev-secret-value-123\nGREETING=hi\n",
            ".env.production": "DATABASE_URL=postgres://app:prod-pass-999@db/app\nSECRET_KEY=prod-secret-value-456\n",
        },
    )
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def production_release(app: Path, release_key: tuple[Path, str]) -> str:
    """A current signed release of the ``app`` fixture's production (protected environments
    refuse to run without one); returns its id."""
    from oneoff._app import open_app
    from oneoff._release.lifecycle import create_release

    opened = open_app(app)
    release = create_release(opened, "production", key_file=str(release_key[0]))
    opened.close()
    return release.id


@pytest.fixture
def example_app(tmp_path: Path) -> Path:
    """A private copy of examples/notes (its state and database stay in tmp_path)."""
    target = tmp_path / "notes"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("var", ".oneoff", "__pycache__"))
    return target


@pytest.fixture
def cli_env() -> dict[str, str]:
    """The environment a test operator's shell has: this interpreter first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    # Captured stderr is not a terminal, so oneoff would log JSON; tests read the text form
    # (tests/test_logs.py covers JSON).
    env["ONEOFF_LOG_FORMAT"] = "text"
    return env


# [postgres] A throw-away PostgreSQL server for the session (tests/_pgserver.py), started on
# first use; every test that uses it gets a fresh database.
@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server; skipped, saying why, only when it is not installed."""
    from _pgserver import PgServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    server = PgServer(bindir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a fresh database on the session's server, migrated to the current schema."""
    from oneoff._store.postgres import migrate

    url = pg_server.database()
    migrate(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each backend: the contract suite runs once per backend."""
    opened: Store
    if request.param == "sqlite":
        from oneoff._store.sqlite import SQLiteStore

        opened = SQLiteStore(tmp_path / "state.db")
    else:
        from oneoff._store.postgres import PostgresStore

        opened = PostgresStore(request.getfixturevalue("pg_url"))
    try:
        yield opened
    finally:
        opened.close()


# [server] A REAL team server process (tests/_serverproc.py) on an app with [access]
# (tests/_access_kit.py: alice..erin and mallory, their keys in ``server_keys``).
@pytest.fixture(scope="session")
def server_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The access kit's people's SSH keys (ssh-keygen'd once per session), by name."""
    from _access_kit import make_keys

    return make_keys(tmp_path_factory.mktemp("server-keys"))


@pytest.fixture
def server_app(tmp_path: Path, server_keys: dict[str, Path]) -> Path:
    """A fresh access-kit app (production and staging released) for a server to serve."""
    from _access_kit import make_access_app

    return make_access_app(tmp_path / "served", server_keys)


@pytest.fixture
def server_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., ServerProc]]:
    """``start(app_dir, store_url=None, workers=1)``: start a server; every one is stopped
    at teardown."""
    from _serverproc import ServerProc

    started: list[ServerProc] = []

    def start(app_dir: Path, store_url: str | None = None, workers: int = 1) -> ServerProc:
        proc = ServerProc(app_dir, store_url=store_url, workers=workers)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def server(
    request: pytest.FixtureRequest, server_app: Path, server_factory: Callable[..., ServerProc]
) -> ServerProc:
    """A running server on ``server_app`` with SQLite; parametrise it indirectly with
    ``"postgres"`` for the throw-away PostgreSQL (``@pytest.mark.parametrize("server",
    ["sqlite", "postgres"], indirect=True)``)."""
    backend = getattr(request, "param", "sqlite")
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    return server_factory(server_app, url)
