"""Pieces of the run-grant tests: a runner's own checkout, plans, grants asked by hand, the CLI.

The server serves the access kit's app from its own directory; a runner plans from a copy
of it (``runner_checkout``), as a deploy host would from its checkout of the release, and
keeps its own store there. PYTEST_DONT_REWRITE (no asserts here to rewrite).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _serverproc import Response, ServerProc
from oneoff._app import open_app
from oneoff._canonical import canonical_json
from oneoff._identity import NAMESPACE_REQUEST, Signer, request_statement
from oneoff._pipeline import RunRequest, make_plan
from oneoff._plan import Plan

__all__ = [
    "add_ticker",
    "ask_grant",
    "cli",
    "grant_body",
    "pid_alive",
    "plan_for",
    "restart",
    "runner_call",
    "runner_checkout",
    "wait_for",
]


def runner_checkout(server_app: Path, where: Path) -> Path:
    """A deploy host's checkout of the served app: same name, its own store."""
    target = where / server_app.name
    shutil.copytree(server_app, target)
    return target


def plan_for(root: Path, task: str, env: str, **params: str) -> Plan:
    app = open_app(root)
    try:
        return make_plan(app, RunRequest(task=task, environment=env, params=params))
    finally:
        app.close()


def grant_body(plan: Plan, key: Path, **extra: Any) -> dict[str, Any]:
    """What a runner sends to ``POST /v1/grants``: the plan and a statement over its hash."""
    statement = request_statement(
        "run", app=plan.project.name, task=plan.task.name,
        environment=plan.environment.name, plan_hash=plan.hash,
        request_id=extra.get("request"),
    )  # fmt: skip
    signature = Signer(key, agent=False).sign(canonical_json(statement), NAMESPACE_REQUEST)
    return {
        "plan": plan.to_json(), "plan_hash": plan.hash, "statement": statement,
        "signature": signature.decode("ascii"), **extra,
    }  # fmt: skip


def ask_grant(server: ServerProc, key: Path, plan: Plan, **extra: Any) -> Response:
    return server.signed(key, "POST", "/v1/grants", grant_body(plan, key, **extra))


def runner_call(server: ServerProc, run_id: str, action: str, body: dict[str, Any]) -> Response:
    """A runner's call for a run (``start``, ``output``, ``heartbeat``, ``finish``)."""
    raw = json.dumps(body).encode()
    return server.call("POST", f"/v1/runs/{run_id}/{action}", body=raw)


def start(server: ServerProc, answer: Response, plan_hash: str | None = None) -> Response:
    grant = answer.json["grant"]
    return runner_call(
        server, grant["run"], "start",
        {"grant": grant, "signature": answer.json["signature"],
         "plan_hash": plan_hash or grant["plan_hash"]},
    )  # fmt: skip


def cli(
    root: Path, *argv: str, server: ServerProc | None = None, timeout: float = 180, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """``oneoff ARGV --app ROOT`` in a subprocess (with ``--server`` for ``server``)."""
    extra = ["--server", f"http://{server.host}:{server.port}"] if server is not None else []
    env = dict(os.environ, ONEOFF_LOG_FORMAT="text")
    return subprocess.run(
        [sys.executable, "-m", "oneoff", *argv, "--app", str(root), *extra],
        capture_output=True, text=True, timeout=timeout, env=env, check=False, **kw,
    )  # fmt: skip


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """Poll ``check`` (a real condition) until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def restart(server: ServerProc) -> None:
    """Stop ``server`` and start it again on the same port (its runners know only that)."""
    server.stop()
    ready = server._dir / "ready"
    ready.unlink(missing_ok=True)
    argv = [
        sys.executable, "-m", "oneoff", "server", "--app", str(server.app_dir),
        "--listen", f"127.0.0.1:{server.port}", "--ready-file", str(ready),
    ]  # fmt: skip
    with open(server.log, "ab") as log:
        server.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=server.env())
    proc = server.proc
    wait_for(lambda: ready.exists() or proc.poll() is not None, "the server to listen again")
    if proc.poll() is not None:
        raise RuntimeError(f"the server did not start again: {server.output()[-2000:]}")


TICKER_TASK = """
[tasks.ticker]
argv = ["python", "ticker.py", "{dir}"]
params.dir = { type = "string" }
"""

# Prints "before", says its pid, waits for DIR/resume, prints "after" and exits 0.
TICKER = """
import os, sys, time
where = sys.argv[1]
print("before", flush=True)
with open(os.path.join(where, "task.pid.tmp"), "w") as fh:
    fh.write(str(os.getpid()))
os.rename(os.path.join(where, "task.pid.tmp"), os.path.join(where, "task.pid"))
while not os.path.exists(os.path.join(where, "resume")):
    time.sleep(0.05)
print("after", flush=True)
"""


def add_ticker(app_dir: Path) -> None:
    """The ``ticker`` task (development only needs no release) in an app's checkout."""
    manifest = app_dir / "oneoff.toml"
    manifest.write_text(manifest.read_text() + TICKER_TASK)
    (app_dir / "ticker.py").write_text(TICKER)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False
