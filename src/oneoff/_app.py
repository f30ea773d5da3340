"""An app opened for work: its declaration, its state directory, its store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from oneoff._manifest import Project, find_app_root, load_project
from oneoff.errors import StoreError

if TYPE_CHECKING:
    from oneoff._access import AccessConfig
    from oneoff._audit.log import AuditLog
    from oneoff._auth.files import AccessFiles
    from oneoff._store.interface import Store

__all__ = ["App", "open_app"]

STATE_DIR = ".oneoff"
FINGERPRINT_KEY_SIZE = 32
SERVER_FINGERPRINT_KEY = "fingerprint_key"  # its name in a team server's store


class App:
    """The library's entry point for one app; the CLI and a future server both use it."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.root = project.root
        self.state_dir = project.root / STATE_DIR
        self._store: Store | None = None
        self._audit: AuditLog | None = None
        self._access_files: AccessFiles | None = None
        self._fingerprint_key: bytes | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            from oneoff._store.select import open_store

            self._ensure_state_dir()  # the audit key and other local keys live there
            self._store = open_store(self.store_url, self.state_dir)
        return self._store

    @property
    def store_url(self) -> str | None:
        """The PostgreSQL store's URL, or None for the embedded SQLite store."""
        from oneoff._store.select import store_url

        return store_url(self.project.section("store"))

    @property
    def store_identity(self) -> str:
        """Which store this is, for remembering its audit log (``oneoff._audit.remembered``):
        the SQLite file's real path, or the PostgreSQL database without user or password."""
        url = self.store_url
        if url is None:
            return "sqlite:" + os.path.realpath(self.state_dir / "state.db")
        from oneoff._store.postgres_errors import display_url

        return display_url(url, user=False)

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            from oneoff._audit.keys import AuditKey
            from oneoff._audit.log import AuditLog

            store = self.store  # creates the state directory the key lives in
            self._audit = AuditLog(store, AuditKey(self.state_dir))
        return self._audit

    def close(self) -> None:
        self._audit = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def _ensure_state_dir(self) -> None:
        if not self.state_dir.is_dir():
            self.state_dir.mkdir(mode=0o700, exist_ok=True)
            # Keep state out of the app's repository even if .gitignore forgets it.
            (self.state_dir / ".gitignore").write_text("*\n")

    def secret_file(self, name: str, size: int = 32) -> bytes:
        """A random key kept beside the store (mode 0600), created on first use."""
        self._ensure_state_dir()
        path = self.state_dir / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = _create_key_file(path, size)
        if len(data) != size:
            raise StoreError(f"{path}: key file has the wrong size; refusing to use it")
        return data

    def cache_key(self, purpose: str) -> bytes | None:
        """The key for one of this app's caches, held outside ``.oneoff/`` (None: no cache).

        Never ``secret_file``: a key beside the cache authenticates nothing against
        whoever can write ``.oneoff/`` (see ``oneoff._userkey``).
        """
        from oneoff._userkey import cache_key

        return cache_key(purpose, self.root)

    def access_files(self, config: AccessConfig) -> AccessFiles:
        """The people and policy files, read once for this App: the release check compares
        these bytes and the gate evaluates these bytes (see ``oneoff._auth.files``)."""
        if self._access_files is None:
            from oneoff._auth.files import read_access_files

            self._access_files = read_access_files(config)
        return self._access_files

    @property
    def fingerprint_key(self) -> bytes:
        """The HMAC key a plan's values are fingerprinted with: this checkout's own, or
        the team server's when a command talks to one (``use_fingerprint_key``) or when
        this store is a server's."""
        if self._fingerprint_key is None:
            # A store a team server owns (its own checkout, a one-machine trial): local
            # commands on it fingerprint as the server and its clients do, or a request
            # made through the server would not verify here.
            served = self.store.server_value(SERVER_FINGERPRINT_KEY)
            if served is not None:
                self.use_fingerprint_key(served)
        if self._fingerprint_key is not None:
            return self._fingerprint_key
        return self.secret_file("fingerprint.key")

    def use_fingerprint_key(self, key: bytes) -> None:
        """Fingerprint with ``key`` (a team server's, ``oneoff._fpkey``) for this App's life.

        A plan made against a server must hash the same on every machine, so that a request
        approved from a laptop can be spent on a deploy host and the server can check the
        values it is shown; a key local to each checkout gives each machine its own hash.
        """
        if len(key) != FINGERPRINT_KEY_SIZE:
            raise StoreError(f"a fingerprint key is {FINGERPRINT_KEY_SIZE} bytes, not {len(key)}")
        self._fingerprint_key = bytes(key)


def _create_key_file(path: Path, size: int) -> bytes:
    """Write a new random key so that readers only ever see it whole (link, never rename)."""
    data = os.urandom(size)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if another runner got there first: use its key
        except FileExistsError:
            data = path.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    return data


def open_app(app_dir: Path | None = None) -> App:
    """Find and load the app at or above ``app_dir`` (default: the working directory)."""
    root = find_app_root(app_dir or Path.cwd())
    return App(load_project(root))
