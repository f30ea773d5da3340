"""A throw-away PostgreSQL server from Debian's ``postgresql`` package, for tests and benches.

``pg_config --bindir`` (else /usr/lib/postgresql/*/bin) finds initdb and pg_ctl. Run as
root, the server runs as the ``postgres`` user (PostgreSQL refuses root), with its data
directory in a fresh temporary directory it owns. It listens only on a Unix socket in that
directory; fsync and synchronous_commit stay on, as in production. A watchdog process
stops it even when the test session is killed before its cleanup runs.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["PgServer", "find_bindir"]

# Stops the server and removes its directory once the pipe from the test process closes:
# at the end of the session, and also when that process is killed before its cleanup ran.
_WATCHDOG = (
    "import shutil, subprocess, sys; sys.stdin.buffer.read();"
    " subprocess.run(sys.argv[1:-1], capture_output=True, timeout=120);"
    " shutil.rmtree(sys.argv[-1], ignore_errors=True)"
)


def find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if all(os.access(os.path.join(directory, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(directory)
    return None


class PgServer:
    """One server for a test session; ``database()`` makes a fresh, empty database."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # In /tmp, not pytest's 0700 tmp tree: the postgres user must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="oneoff-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.log = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o755)
        self._counter = 0

    def _run(self, *argv: str) -> None:
        result = subprocess.run(
            [*self._as, *argv], capture_output=True, text=True, timeout=240, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {result.stderr}{result.stdout}\n{log}")

    def start(self) -> None:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        self.resume()
        read, self._alive = os.pipe()  # the write end stays here, not inherited
        stop = [*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                "-w", "-t", "100", "stop"]  # fmt: skip
        # Started through a short-lived middle process, so the watchdog is not a child of
        # the test process (tests there may check they leave no child behind).
        spawn = (
            "import subprocess, sys; subprocess.Popen(sys.argv[1:], stdin=sys.stdin,"
            " start_new_session=True)"
        )
        subprocess.run(
            [sys.executable, "-c", spawn, sys.executable, "-c", _WATCHDOG, *stop, str(self.root)],
            stdin=read, check=True, timeout=60,
        )  # fmt: skip
        os.close(read)

    def halt(self) -> None:
        """Stop the server, keeping its data: the database goes away (``resume`` is back).

        A fast stop writes a shutdown checkpoint, which on a loaded disk has taken over a
        minute (pg_ctl's default wait): wait up to 180 s.
        """
        pg_ctl = str(self.bindir / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "-t", "180", "stop")

    def resume(self) -> None:
        """Start the server on its data directory (first start, or after ``halt``)."""
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}'"
            " -c fsync=on -c synchronous_commit=on -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", "120", "-o", options, "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop for good: the data is thrown away, so no shutdown checkpoint is written (a
        fast stop's checkpoint once outlasted pg_ctl's 60 s wait on a loaded CI disk)."""
        try:
            pg_ctl = str(self.bindir / "pg_ctl")
            self._run(pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "-t", "180", "stop")
        finally:
            os.close(self._alive)  # the watchdog finds the server stopped, and exits
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}"

    def database(self, prefix: str = "t") -> str:
        """Create a new empty database; its URL."""
        import psycopg

        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
