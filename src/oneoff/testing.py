"""Test helpers shipped as API: a temporary app, an in-process CLI runner, a subprocess one."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from oneoff._record import dataclass

__all__ = ["CliResult", "invoke", "make_app", "run_cli"]


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def make_app(root: Path, manifest: str, files: Mapping[str, str] | None = None) -> Path:
    """Write an app (``oneoff.toml`` plus ``files``) under ``root`` and return its root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "oneoff.toml").write_text(textwrap.dedent(manifest))
    for name, content in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))
    return root


def invoke(args: Sequence[str], *, stdin: str = "") -> CliResult:
    """Run ``oneoff ARGS`` in this process, capturing what it writes (task output too)."""
    from oneoff.cli import main

    out_buf, err_buf = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_buf, encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(err_buf, encoding="utf-8", write_through=True)
    saved = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr, sys.stdin = out, err, io.StringIO(stdin)
    try:
        code = main(list(args))
    finally:
        out.flush()
        err.flush()
        sys.stdout, sys.stderr, sys.stdin = saved
    return CliResult(
        code,
        out_buf.getvalue().decode("utf-8", "replace"),
        err_buf.getvalue().decode("utf-8", "replace"),
    )


def run_cli(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> CliResult:
    """Run ``python -m oneoff ARGS`` as a real process, as an operator's shell would."""
    full_env = dict(os.environ if env is None else env)
    done = subprocess.run(
        [sys.executable, "-m", "oneoff", *args],
        cwd=cwd,
        env=full_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)
