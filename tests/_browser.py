"""Debian's chromium driven by Playwright for the console's browser tests.

No browser is ever downloaded: Playwright drives ``/usr/bin/chromium`` (``.ci/run``
installs it; ``playwright`` comes with the ``test`` extra). Tests skip, saying why, only
when either is missing. Each browser gets its own profile directory; on close, any
process still using that directory is killed by pid and the test fails: no chromium is
left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CHROMIUM", "chromium", "need_browser"]

CHROMIUM = os.environ.get("ONEOFF_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def need_browser() -> None:
    """Skip (with the reason) when Playwright or Debian's chromium is not installed."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")


def _users_of(profile: Path) -> list[int]:
    """Processes whose command line names ``profile`` (this browser's, and only its)."""
    needle = str(profile).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A fresh browser context (its own cookies); closed, and checked gone, on exit."""
    from playwright.sync_api import sync_playwright

    need_browser()
    profile = Path(tempfile.mkdtemp(prefix="oneoff-chromium-"))
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(profile), executable_path=CHROMIUM, args=ARGS, headless=True
            )
            context.set_default_timeout(60_000)  # generous: the machine is shared
            try:
                yield context
            finally:
                context.close()
        left = _users_of(profile)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"chromium processes left behind: {left}"
    finally:
        shutil.rmtree(profile, ignore_errors=True)
