"""A throw-away ssh-agent for tests, ready only once it accepts connections."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def ssh_agent(sock: Path, within: float = 30.0) -> Iterator[Path]:
    """Run ``ssh-agent -D -a SOCK`` until the block ends. The socket file appears at
    bind(), before listen(): waiting for the file alone let a loaded machine's first
    ssh-add be refused, so this waits until a connection is accepted."""
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        until = time.monotonic() + within
        while True:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(sock))
                    break
                except OSError:
                    pass
            if proc.poll() is not None:
                raise RuntimeError(f"ssh-agent exited with {proc.returncode}")
            if time.monotonic() > until:
                raise RuntimeError(f"ssh-agent did not listen on {sock} within {within} s")
            time.sleep(0.01)
        yield sock
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
