"""A REAL team server process for the tests: ``oneoff server`` on 127.0.0.1, a free port.

``ServerProc(app_dir).start()`` runs ``python -m oneoff server --listen 127.0.0.1:0
--ready-file F``, waits for F (the server writes it once listening: no sleeps) and for
``GET /v1/health``; ``stop()`` sends SIGTERM and waits. ``call()`` makes one HTTP call
with the standard library; ``signed_headers()`` makes the ``Oneoff-Statement`` /
``Oneoff-Signature`` envelope with a test's SSH key (``oneoff._envelope``), and
``token()`` a session token. Other server tests import these.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from oneoff._envelope import sign_envelope
from oneoff._identity import Signer

__all__ = ["Response", "ServerProc", "signed_headers"]

START_TIMEOUT = 120.0  # generous: the machine is shared by many test runs


class Response:
    """One HTTP answer: status, headers, raw body and (if JSON) the parsed body."""

    def __init__(self, status: int, headers: dict[str, str], raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw
        try:
            self.json: Any = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object of an error answer."""
        assert isinstance(self.json, dict), (self.status, self.raw)
        assert "error" in self.json, (self.status, self.raw)
        return dict(self.json["error"])

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.raw[:300]!r})"


def signed_headers(
    key: Path, method: str, path: str, body: bytes, server_id: str, query: str = "", **kw: Any
) -> dict[str, str]:
    """The envelope headers of an acting call, signed with the private key file ``key``."""
    return sign_envelope(Signer(key, agent=False), method, path, query, body, server_id, **kw)


class ServerProc:
    """One ``oneoff server`` subprocess; ``store_url`` None: the app's SQLite store;
    ``workers``: its worker processes (1 unless a test is about several)."""

    def __init__(
        self,
        app_dir: Path,
        *,
        store_url: str | None = None,
        workers: int = 1,
        args: tuple[str, ...] = (),
    ) -> None:
        self.app_dir = app_dir
        self.store_url = store_url
        self.workers = workers
        self.args = args  # more `oneoff server` options
        self.proc: subprocess.Popen[bytes] | None = None
        self.host, self.port = "127.0.0.1", 0
        self.server_id = ""
        self._dir = Path(tempfile.mkdtemp(prefix="oneoff-server-"))
        self.log = self._dir / "server.log"

    def env(self) -> dict[str, str]:
        env = dict(os.environ, ONEOFF_LOG_FORMAT="text")
        env.pop("ONEOFF_STORE_URL", None)
        if self.store_url is not None:
            env["ONEOFF_STORE_URL"] = self.store_url
        return env

    def start(self) -> ServerProc:
        ready = self._dir / "ready"
        ready.unlink(missing_ok=True)
        argv = [
            sys.executable, "-m", "oneoff", "server", "--app", str(self.app_dir),
            "--listen", "127.0.0.1:0", "--ready-file", str(ready),
            "--workers", str(self.workers), *self.args,
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=self.env())
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start: {self.output()}")
            time.sleep(0.02)  # polling a real condition (the ready file), not a fixed wait
        self.host, port = ready.read_text().strip().rsplit(":", 1)
        self.port = int(port)
        health = self.call("GET", "/v1/health")
        assert health.status == 200, health
        self.server_id = self.call("GET", "/v1/server").json["server_id"]
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit status (None if it was not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        query: str = "",
        headers: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> Response:
        """One HTTP call, as sent (nothing signed unless ``headers`` carry a signature)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            target = path + (f"?{query}" if query else "")
            sent = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, target, body=body, headers=sent)
            answer = conn.getresponse()
            return Response(answer.status, dict(answer.getheaders()), answer.read())
        finally:
            conn.close()

    def signed(
        self,
        key: Path,
        method: str,
        path: str,
        payload: Any = None,
        *,
        query: str = "",
        timeout: float = 120,
    ) -> Response:
        """An acting call whose JSON ``payload`` is signed with ``key``."""
        body = json.dumps({} if payload is None else payload).encode()
        headers = signed_headers(key, method, path, body, self.server_id, query)
        return self.call(method, path, body=body, query=query, headers=headers, timeout=timeout)

    def token(self, key: Path) -> str:
        """A session token for the holder of ``key``."""
        answer = self.signed(key, "POST", "/v1/session")
        assert answer.status == 200, answer
        return str(answer.json["token"])

    def read(self, key_or_token: Path | str, path: str, *, query: str = "") -> Response:
        """A read call with a session token (made for ``key`` if a key path is given)."""
        token = self.token(key_or_token) if isinstance(key_or_token, Path) else key_or_token
        return self.call("GET", path, query=query, headers={"Authorization": f"Bearer {token}"})
