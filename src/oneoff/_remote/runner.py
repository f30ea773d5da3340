"""``oneoff run --server URL``: plan here, let the server decide, run here, record there.

The runner plans against its verified release exactly as a local run does (the same
refusals before anything is asked), signs a statement over the plan hash with the
operator's key, and asks the server for a grant. It checks the grant (the server's key,
its run, this very plan hash, not expired) before anything runs, starts the run by
presenting it, runs the task with the same executor, redaction and output as a local run,
and streams the redacted output and the outcome back (``oneoff._remote.sink``). The
terminal shows the same bytes and the command exits with the same code as a local run.

The task also gets ``ONEOFF_FENCING_TOKEN``: the grant's fencing token, larger for every
later holder of the same locks, so a resource that remembers the largest token it saw can
refuse a writer whose lease was already taken over (see docs/server.md).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from oneoff._pipeline import RunOutcome, RunRequest, exit_code_for, plan_with_release
from oneoff._pipeline import require_confirmation as _confirm
from oneoff._remote.sink import RemoteSink, retrying, stop_task
from oneoff._store.interface import RequestRecord, RunRecord, RunStatus
from oneoff.errors import LockBusy, NotPermitted, OneoffError, StoreError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from oneoff._app import App
    from oneoff._client.remote import Remote
    from oneoff._executor.interface import Executor

__all__ = ["Channel", "remote_request", "run_remote"]


class Channel:
    """Calls to one server for one run: the signed grant request, then the run's calls.

    The runner's thread and the sink's thread share one connection: one call at a time.
    """

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.token = ""
        self._lock = threading.Lock()
        with self._lock:
            info = remote.info()
        self.server_id = str(info["server_id"])
        self.grant_key = info.get("audit_public_key")  # it signs the grants too

    def act(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            data = self.remote.act(path, payload)
        return data if isinstance(data, dict) else {}

    def run_call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A runner call: its proof (the run token) rides in the body."""
        body = json.dumps({**payload, "run_token": self.token} if self.token else payload)
        with self._lock:
            _status, data = self.remote.client.call("POST", path, body=body.encode())
        return data if isinstance(data, dict) else {}


def remote_request(remote: Remote, request_id: str) -> RequestRecord:
    """The server's request ``request_id`` (what ``run --request`` fills its task from)."""
    from oneoff._client.remote import segment

    data = remote.read(f"/v1/requests/{segment(request_id)}")
    found = data.get("request") if isinstance(data, dict) else None
    if not isinstance(found, dict):
        raise UsageError(f"the server sent no request {request_id}")
    return RequestRecord(**{k: v for k, v in found.items() if k in _names(RequestRecord)})


def _grant(channel: Channel, app: App, plan: Any, request: RunRequest) -> dict[str, Any]:
    """Ask for the grant (waiting for busy locks with ``--wait``) and check it."""
    from oneoff._canonical import canonical_json
    from oneoff._identity import NAMESPACE_REQUEST, request_statement
    from oneoff._liveness import host_id
    from oneoff._remote.grant import public_key_from_text, verify_grant

    assert request.signer is not None
    deadline = time.monotonic() + (request.wait or 0.0)
    while True:
        statement = request_statement(
            "run", app=app.project.name, task=plan.task.name,
            environment=plan.environment.name, plan_hash=plan.hash,
            request_id=request.request_id,
        )  # fmt: skip
        signature = request.signer.sign(canonical_json(statement), NAMESPACE_REQUEST)
        body = {
            "plan": plan.to_json(), "plan_hash": plan.hash, "request": request.request_id,
            "break_glass": {"reason": request.reason or ""} if request.break_glass else None,
            "statement": statement, "signature": signature.decode("ascii"),
            "runner": {"host": host_id(), "pid": os.getpid()},
        }  # fmt: skip
        try:
            answer = channel.act("/v1/grants", body)
            break
        except LockBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
    document = answer.get("grant")
    run_id = document.get("run", "") if isinstance(document, dict) else ""
    verify_grant(
        public_key_from_text(channel.grant_key), document, answer.get("signature"),
        run_id=str(run_id), plan_hash=plan.hash, now=_dt.datetime.now(_dt.UTC),
        server_id=channel.server_id,
    )  # fmt: skip
    return answer


def run_remote(
    app: App,
    request: RunRequest,
    remote: Remote,
    *,
    stdout: IO[bytes],
    stderr: IO[bytes],
    ask: Callable[[str], str] | None = None,
    executor: Executor | None = None,
) -> RunOutcome:
    """One run granted and recorded by the server ``remote`` talks to; see the module
    docstring."""
    from oneoff._locks import check_wait

    check_wait(request.wait)
    plan, _checked = plan_with_release(
        app, request, before_verify=lambda p: _confirm(p, request.confirm, ask)
    )
    if request.signer is None:
        raise NotPermitted(
            "a run through the server needs your signing key",
            hint="pass --key ~/.ssh/id_ed25519, or set ONEOFF_SIGNING_KEY",
        )
    from oneoff._proc import resolve_command

    if plan.environment.executor.kind in ("local", "sandbox"):
        resolve_command(plan.argv[0], plan.env.values, str(plan.cwd))
    from oneoff._output import build_redactors, output_cap

    redactors = build_redactors(plan)
    plan.refuse_secrets_in_argv(redactors[1])
    cap = output_cap(app.project.section("audit"))
    channel = Channel(remote)
    answer = _grant(channel, app, plan, request)
    grant = answer["grant"]
    run_id = str(grant["run"])
    channel.token = str(answer.get("run_token", ""))
    if executor is None:
        from oneoff._executor import executor_for

        executor = executor_for(plan.environment.executor, requester=str(grant["principal"]))
    base = f"/v1/runs/{run_id}"
    started = {
        "argv": [redactors[1].redact_text(a) for a in plan.argv], "executor": executor.name,
    }  # fmt: skip
    _start(channel, base, answer, plan.hash, started)
    from oneoff._proc import hold_signals

    with hold_signals():
        status, code, result, finished = _execute(
            app, plan, executor, redactors, cap, stdout, stderr, channel, answer,
            verified=None if _checked.drift else plan.release_id,
        )  # fmt: skip
    assert result is not None
    fields = {
        "id": run_id, "task": plan.task.name, "environment": plan.environment.name,
        "params": plan.shown_params(redactors[1]), "principal": str(grant["principal"]),
        "plan_hash": plan.hash, "status": status, "started_at": "", "runner_host": "",
        "runner_pid": os.getpid(), "runner_token": "", "release_id": plan.release_id,
        "exit_code": code, "request_id": request.request_id,
        "break_glass": request.break_glass, "reason": request.reason,
        **{k: v for k, v in finished.items() if k in _names(RunRecord)},
    }  # fmt: skip
    return RunOutcome(run=RunRecord(**fields), result=result, exit_code=exit_code_for(result))


def _start(
    channel: Channel, base: str, answer: dict[str, Any], plan_hash: str, started: dict[str, Any]
) -> None:
    """Present the grant; retried while the server is away (as every runner call)."""
    body = {
        "grant": answer["grant"], "signature": answer["signature"], "plan_hash": plan_hash,
        "started": started,
    }  # fmt: skip
    retried = False
    deadline = time.monotonic() + 30.0
    while True:
        try:
            channel.run_call(base + "/start", body)
            return
        except StoreError:
            if time.monotonic() >= deadline:
                raise
            retried = True
            time.sleep(0.2)
        except NotPermitted as exc:
            # After a try whose answer was lost, "already used" is our own start having
            # got through. On a first try it means someone else presented this grant.
            if not (retried and "already used" in exc.message):
                raise
            return


def _execute(
    app: App,
    plan: Any,
    executor: Executor,
    redactors: Any,
    cap: int,
    stdout: IO[bytes],
    stderr: IO[bytes],
    channel: Channel,
    answer: dict[str, Any],
    *,
    verified: str | None,
) -> tuple[str, int | None, Any, dict[str, Any]]:
    from oneoff._bytecode import bytecode_env
    from oneoff._contain import RunTree
    from oneoff._output import OutputRecorder

    grant = answer["grant"]
    run_id = str(grant["run"])
    tree = RunTree.new(run_id)
    env = dict(plan.env.values)
    env.update(
        {
            "ONEOFF_RUN_ID": run_id,
            "ONEOFF_TASK": plan.task.name,
            "ONEOFF_ENVIRONMENT": plan.environment.name,
            "ONEOFF_FENCING_TOKEN": str(grant.get("fencing", 0)),
        }
    )
    if plan.release_id:
        env["ONEOFF_RELEASE"] = plan.release_id
    env.update(bytecode_env(app.root, verified))
    grace = float(plan.task.grace)

    def lost(why: str) -> None:
        from oneoff._log import log

        log("lock.lease_lost", f"run {run_id}: lost the lease ({why}); stopping the task",
            level="warning")  # fmt: skip
        threading.Thread(target=stop_task, args=(run_id, grace), daemon=True).start()

    sink = RemoteSink(
        channel.run_call, run_id, heartbeat=float(answer.get("heartbeat_seconds", 10)),
        lease=float(grant["lease_seconds"]), grace=grace, on_lost=lost,
    )  # fmt: skip
    recorder = OutputRecorder(
        sink, run_id, redactors, {1: stdout, 2: stderr}, cap=cap,
        quiet_release=0.1 if plan.task.interactive else None,
    )  # fmt: skip
    status: RunStatus = "failed"
    code: int | None = None
    error: dict[str, str] = {}
    result = None
    try:
        try:
            result = executor.execute(plan, env, recorder, stdin_data=plan.stdin_data(), tree=tree)
        except OneoffError as exc:
            error = {"error": exc.message}
            raise
        status, code = result.status, result.exit_code
        if sink.lost:
            status = "lost"
    finally:
        output = recorder.close()
        try:
            sink.close()
        finally:
            tree.stop(marks=False)
        finished = _finish(channel, f"/v1/runs/{run_id}", status, code, output, sink, error)
        from oneoff._after import after_reply
        from oneoff._watchdog import reap

        after_reply(reap)  # the run's watchdog (oneoff._proc), disarmed and exiting by now
    return status, code, result, finished


def _finish(
    channel: Channel,
    base: str,
    status: str,
    code: int | None,
    output: Any,
    sink: RemoteSink,
    error: dict[str, str],
) -> dict[str, Any]:
    """Record the outcome (retried while the server or its store is away); the run as the
    server stored it, or only its status when the server had already marked it lost."""
    body = {
        "status": status, "exit_code": code,
        "output": {
            "bytes": output.bytes, "digest": output.digest, "truncated": output.truncated,
            "chunks": sink.sent,
        },
        **error,
    }  # fmt: skip
    try:
        answer = retrying(channel.run_call, base + "/finish", body)
    except LockBusy:
        # The server marked the run lost (its lease ran out) before the outcome came.
        return {"status": "lost", "exit_code": code}
    run = answer.get("run_record")
    return run if isinstance(run, dict) else {"status": status, "exit_code": code}


def _names(cls: type) -> set[str]:
    from oneoff._record import fields

    return {f.name for f in fields(cls)}
