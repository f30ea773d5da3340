"""The server's state shared by every route: the app, its pinned gate, its id and keys.

Handlers run in a thread pool; each thread gets its own ``Worker`` (an App with its own
store connection, and a Gate built from the pinned bytes), since a store connection is
not shared between threads. The pinned files, the server id and the token key are read
once at start (``oneoff._server.pinning``) and are the same for every worker; so is the
fingerprint key (``GET /v1/fingerprint-key``), which every worker's App uses.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from oneoff._record import dataclass
from oneoff.errors import UsageError

if TYPE_CHECKING:
    from starlette.requests import Request

    from oneoff._access import AccessConfig
    from oneoff._app import App
    from oneoff._auth.files import AccessFiles
    from oneoff._identity import Principal
    from oneoff._manifest import Project
    from oneoff._server.auth import PendingNonce
    from oneoff._server.pinning import PinnedGate

__all__ = ["MAX_BODY", "ServerContext", "Worker"]

MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Worker:
    """One thread's App (its own store connection) and pinned Gate."""

    app: App
    gate: PinnedGate


class ServerContext:
    """Config, pinned access files, server id, token and fingerprint keys; a Worker per
    thread."""

    def __init__(
        self,
        project: Project,
        *,
        max_body: int = MAX_BODY,
        threads: int = 8,
        trusted_proxies: tuple[str, ...] = (),
    ) -> None:
        from oneoff._access import access_config
        from oneoff._app import SERVER_FINGERPRINT_KEY
        from oneoff._server.pinning import load_pin, release_keys, server_id, server_secret

        config = access_config(project)
        if config is None:
            raise UsageError(
                "a team server needs the app's [access] section: without people and "
                "policies it cannot tell who is calling",
                hint="add [access] to oneoff.toml (see the README's Access section)",
            )
        self.project = project
        self.config: AccessConfig = config
        self.max_body = max_body
        self.threads = threads
        # Addresses (or networks) of reverse proxies whose X-Forwarded-For/-Proto name the
        # client and scheme (``oneoff._server.proxies``); none by default.
        self.trusted_proxies = trusted_proxies
        self._local = threading.local()
        self._workers: list[Worker] = []
        self._owners: dict[int, threading.Thread] = {}  # id(Worker) -> the thread it serves
        self._lock = threading.Lock()
        app = self._open_app()
        try:
            self.files: AccessFiles = load_pin(app, config)
            # Pinned with the manifest: a key file swapped later is refused at each push.
            self.release_keys = release_keys(app)
            self.server_id = server_id(app)
            self.session_key = server_secret(app, "session_key", _random_key)
            # One per server (per store): every machine that talks to this server
            # fingerprints a plan's values with it, so a plan hashes the same everywhere.
            self.fingerprint_key = server_secret(app, SERVER_FINGERPRINT_KEY, _random_key)
            # The audit (and grant) signing key, made now if new: every worker process
            # forked after this signs with this one key, read from the state directory.
            _audit_public_key(app)
        finally:
            app.close()

    def _open_app(self) -> App:
        from oneoff._app import App

        return App(self.project)

    def worker(self) -> Worker:
        """This thread's Worker, opened on first use."""
        found: Worker | None = getattr(self._local, "worker", None)
        if found is None:
            from oneoff._server.pinning import PinnedGate

            self._close_orphans()
            app = self._open_app()
            # The App's own reads of the access files (release checks) see the pinned bytes.
            app._access_files = self.files
            # ... and checks the values a plan shows with the key its clients fingerprint with.
            app.use_fingerprint_key(self.fingerprint_key)
            found = Worker(app, PinnedGate(app, self.config, self.files))
            self._local.worker = found
            with self._lock:
                self._workers.append(found)
                self._owners[id(found)] = threading.current_thread()
        return found

    def _close_orphans(self) -> None:
        """Close the Workers of threads that have ended. The thread pool ends a thread
        that idled for a while (anyio: 10 s) and starts new ones when calls come again;
        each new thread opens its own Worker, so without this every quiet spell would leak
        one store connection per thread, until the pool (``POOL_MAX``) has none left and
        every call fails with 503."""
        with self._lock:
            dead = [w for w in self._workers if not self._owners[id(w)].is_alive()]
            for worker in dead:
                self._workers.remove(worker)
                del self._owners[id(worker)]
        for worker in dead:
            # A PostgreSQL connection goes back to the pool. A SQLite one may be closed only
            # by its own (ended) thread: dropping it lets the garbage collector close it.
            with contextlib.suppress(Exception):
                worker.app.close()

    def discard_worker(self) -> None:
        """Drop this thread's Worker after a store failure: its connection may be dead
        (the database restarted), and a long-lived server must not keep it. The next
        call on this thread opens a fresh one."""
        found: Worker | None = getattr(self._local, "worker", None)
        if found is None:
            return
        self._local.worker = None
        with self._lock:
            self._workers = [w for w in self._workers if w is not found]
            self._owners.pop(id(found), None)
        with contextlib.suppress(Exception):  # closing a dead connection may fail too
            found.app.close()

    def authenticate(
        self, request: Request, body: bytes, *, defer: list[PendingNonce] | None = None
    ) -> Principal:
        """The person whose signed envelope authorises this acting call (in a thread); with
        ``defer``, its nonce is left there for the handler to spend."""
        from oneoff._server.auth import check_envelope

        return check_envelope(
            self.worker().gate,
            dict(request.headers),
            method=request.method,
            path=request.url.path,
            query=request.scope.get("query_string", b"").decode("latin-1"),
            body=body,
            server_id=self.server_id,
            defer=defer,
        )

    def session(self, request: Request) -> Principal:
        """The person a read call's bearer token was issued to (in a thread)."""
        from oneoff._server.auth import check_token

        return check_token(
            self.worker().gate,
            self.session_key,
            request.headers.get("authorization"),
            self.server_id,
            where={"method": request.method, "path": request.url.path},
        )

    def info(self) -> dict[str, Any]:
        """What ``GET /v1/server`` tells anyone: which server, app and pinned set this is."""
        from oneoff._version import __version__

        worker = self.worker()
        return {
            "server_id": self.server_id,
            "app": self.project.name,
            "version": __version__,
            "audit_public_key": _audit_public_key(worker.app),
            "pinned_version": self.files.version(),
        }

    def close(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
            self._owners.clear()
        for worker in workers:
            # A SQLite connection can be closed only by the thread that opened it (a worker
            # thread, gone by now): the process is exiting and closes its files with it.
            with contextlib.suppress(Exception):
                worker.app.close()


def _random_key() -> bytes:
    import os

    return os.urandom(32)


def _audit_public_key(app: App) -> str:
    """The PEM public key the server's audit checkpoints are signed with (made if new)."""
    key = app.audit.key
    if key is None:  # AuditLog of an App always has one; keep mypy and readers honest
        raise UsageError("the server's audit log has no key")
    key.ensure()
    return key.public_pem()
