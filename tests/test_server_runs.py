"""Run grants against a real server: a granted run is recorded there, and grants are signed,
single-use, bound to one plan and one run, and fenced by their locks' lease."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from _grant_kit import ask_grant, cli, plan_for, runner_call, runner_checkout, start, wait_for
from _serverproc import Response, ServerProc

KEYS = dict[str, Path]
LEASE = "3"  # seconds: short, so that a lost lease shows within a test


BOTH_STORES = pytest.mark.parametrize(
    "served", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def served(
    request: pytest.FixtureRequest,
    server_app: Path,
    server_factory: Callable[..., ServerProc],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[ServerProc, Path]:
    """A server on the access kit's app (SQLite, or PostgreSQL when parametrised so) and a
    runner's checkout of that app."""
    runner = runner_checkout(server_app, tmp_path / "runner")
    monkeypatch.setenv("ONEOFF_SERVER_LEASE", LEASE)
    backend = getattr(request, "param", "sqlite")
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    return server_factory(server_app, url), runner


def _ids(text: str) -> str:
    return re.sub(r"r\d{14}[0-9a-f]{8}", "RUN", re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "TS", text))


@BOTH_STORES
def test_a_run_through_the_server_prints_and_exits_like_a_local_run(
    served: tuple[ServerProc, Path], server_keys: KEYS
) -> None:
    """The same task prints the same output and summary, and exits with the same code,
    whether run locally or granted and recorded by the server."""
    server, runner = served
    key = str(server_keys["alice"])
    local = cli(runner, "run", "noop", "--env", "production", "--key", key)
    remote = cli(runner, "run", "noop", "--env", "production", "--key", key, server=server)
    assert remote.returncode == local.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout == "noop ran\n"
    assert _ids(remote.stderr) == _ids(local.stderr)
    run_id = re.search(r"run (r\d{14}[0-9a-f]{8})", remote.stderr)
    assert run_id, remote.stderr
    shown = server.read(server_keys["alice"], f"/v1/runs/{run_id[1]}").json
    assert (shown["status"], shown["exit_code"], shown["principal"]) == ("succeeded", 0, "alice")
    output = server.read(server_keys["alice"], f"/v1/runs/{run_id[1]}/output").json
    assert b"".join(base64.b64decode(c["data"]) for c in output["chunks"]) == b"noop ran\n"


def test_a_failing_task_exits_with_its_code_through_the_server(
    served: tuple[ServerProc, Path], server_keys: KEYS
) -> None:
    """A task that fails prints the same error and exits with the same code through the
    server as locally, and the server records it as failed with that code."""
    server, runner = served
    argv = ("run", "hold", "--env", "development", "--param", "pidfile=/nonexistent/x",
            "--key", str(server_keys["alice"]))  # fmt: skip
    local = cli(runner, *argv)
    remote = cli(runner, *argv, server=server)
    assert remote.returncode == local.returncode == 1, remote.stderr
    assert _ids(remote.stderr) == _ids(local.stderr)
    run_id = re.search(r"run (r\d{14}[0-9a-f]{8})", remote.stderr)
    assert run_id, remote.stderr
    shown = server.read(server_keys["alice"], f"/v1/runs/{run_id[1]}").json
    assert (shown["status"], shown["exit_code"]) == ("failed", 1)


def _grant_and_start(server: ServerProc, runner: Path, key: Path, task: str = "noop") -> Response:
    plan = plan_for(runner, task, "development")
    answer = ask_grant(server, key, plan)
    assert answer.status == 200, answer
    assert start(server, answer).status == 200
    return answer


@BOTH_STORES
def test_a_replayed_grant_is_refused(served: tuple[ServerProc, Path], server_keys: KEYS) -> None:
    """A grant starts its run once: presenting it again is a replay (409, exit 3)."""
    server, runner = served
    answer = _grant_and_start(server, runner, server_keys["alice"])
    again = start(server, answer)
    assert again.status == 409, again
    assert again.error["exit"] == 3
    assert "already used" in again.error["message"]


def test_an_altered_grant_is_refused(served: tuple[ServerProc, Path], server_keys: KEYS) -> None:
    """A grant whose fencing token (or anything) was changed after signing is refused."""
    server, runner = served
    plan = plan_for(runner, "hold", "development")
    answer = ask_grant(server, server_keys["alice"], plan)
    grant = {**answer.json["grant"], "fencing": 10**9}
    altered = runner_call(
        server, grant["run"], "start",
        {"grant": grant, "signature": answer.json["signature"], "plan_hash": plan.hash},
    )  # fmt: skip
    assert altered.status == 403, altered
    assert "altered or forged" in altered.error["message"]


def test_a_grant_for_another_plan_hash_or_run_is_refused(
    served: tuple[ServerProc, Path], server_keys: KEYS
) -> None:
    """A grant starts only the plan it was issued for, and only its own run."""
    server, runner = served
    key = server_keys["alice"]
    first = ask_grant(server, key, plan_for(runner, "noop", "development"))
    other = plan_for(runner, "hold", "development", seconds="1")
    assert start(server, first, plan_hash=other.hash).status == 403
    second = ask_grant(server, key, other)
    swapped = runner_call(
        server, second.json["grant"]["run"], "start",
        {"grant": first.json["grant"], "signature": first.json["signature"],
         "plan_hash": first.json["grant"]["plan_hash"]},
    )  # fmt: skip
    assert swapped.status == 403
    assert "for run" in swapped.error["message"]


def test_a_plan_whose_document_does_not_match_its_hash_gets_no_grant(
    served: tuple[ServerProc, Path], server_keys: KEYS
) -> None:
    """The server hashes the plan document itself: a document edited after hashing (here
    with its lock removed) is refused before any decision."""
    server, runner = served
    plan = plan_for(runner, "hold", "development")
    from _grant_kit import grant_body

    body = grant_body(plan, server_keys["alice"])
    body["plan"]["document"]["locks"] = []
    answer = server.signed(server_keys["alice"], "POST", "/v1/grants", body)
    assert answer.status == 400, answer
    assert "does not hash" in answer.error["message"]


def test_output_sent_again_is_stored_once_and_a_gap_is_refused(
    served: tuple[ServerProc, Path], server_keys: KEYS
) -> None:
    """Output chunks are idempotent by sequence number: a retry never duplicates, a chunk
    after a missing one is refused with the number expected."""
    server, runner = served
    answer = _grant_and_start(server, runner, server_keys["alice"])
    run_id, token = answer.json["grant"]["run"], answer.json["run_token"]

    def chunk(seq: int, text: bytes) -> dict[str, object]:
        return {"seq": seq, "stream": 1, "data": base64.b64encode(text).decode()}

    def send(*chunks: dict[str, object]) -> Response:
        return runner_call(server, run_id, "output", {"run_token": token, "chunks": list(chunks)})

    assert send(chunk(1, b"one\n")).json["next"] == 2
    assert send(chunk(1, b"one\n"), chunk(2, b"two\n")).json["next"] == 3
    gap = send(chunk(5, b"five\n"))
    assert gap.status == 409
    assert "next chunk expected is 3" in gap.error["message"]
    forged = runner_call(server, run_id, "output", {"run_token": "x" * 86, "chunks": []})
    assert forged.status == 403
    stored = server.read(server_keys["alice"], f"/v1/runs/{run_id}/output").json["chunks"]
    assert [base64.b64decode(c["data"]) for c in stored] == [b"one\n", b"two\n"]


def test_the_server_redacts_output_again_with_the_secrets_it_knows(
    served: tuple[ServerProc, Path], server_keys: KEYS
) -> None:
    """Output a runner failed to redact is redacted by the server before it is stored,
    with the secrets of the environment's dotenv files in the server's checkout."""
    server, runner = served
    plan = plan_for(runner, "noop", "production")
    answer = ask_grant(server, server_keys["alice"], plan)
    assert answer.status == 200, answer
    assert start(server, answer).status == 200
    run_id, token = answer.json["grant"]["run"], answer.json["run_token"]
    leak = base64.b64encode(b"connecting with prod-pass-999 now\n").decode()
    sent = runner_call(
        server, run_id, "output",
        {"run_token": token, "chunks": [{"seq": 1, "stream": 1, "data": leak}]},
    )  # fmt: skip
    assert sent.status == 200, sent
    stored = server.read(server_keys["alice"], f"/v1/runs/{run_id}/output").json["chunks"]
    text = base64.b64decode(stored[0]["data"])
    assert b"prod-pass-999" not in text
    assert b"[REDACTED:DATABASE_URL" in text


@BOTH_STORES
def test_two_runners_racing_for_one_lock_get_one_grant(
    served: tuple[ServerProc, Path], server_keys: KEYS
) -> None:
    """Of two grants asked at once for tasks sharing a lock, exactly one is given; the
    other is refused as busy (409, exit 5)."""
    server, runner = served
    plans = [plan_for(runner, "hold", "development", seconds=str(n)) for n in (5, 6)]
    answers: list[Response] = []

    def ask(n: int) -> None:
        answers.append(ask_grant(server, server_keys["alice"], plans[n]))

    threads = [threading.Thread(target=ask, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status for a in answers) == [200, 409], answers
    busy = next(a for a in answers if a.status == 409)
    assert busy.error["exit"] == 5


@BOTH_STORES
def test_a_runner_whose_lease_ran_out_is_fenced_off(
    served: tuple[ServerProc, Path], server_keys: KEYS
) -> None:
    """A runner that stopped heartbeating loses its lease: the lock goes to the next run
    with a larger fencing token, and the stale runner's heartbeat, output and outcome are
    refused (its outcome audited as refused, not silently dropped)."""
    server, runner = served
    key = server_keys["alice"]
    first = _grant_and_start(server, runner, key, task="hold")
    old = first.json["grant"]
    # No heartbeat: once the lease (3 s) is over, a new grant for the lock is given.
    plan = plan_for(runner, "hold", "development", seconds="7")
    second = wait_for(
        lambda: (a := ask_grant(server, key, plan)).status == 200 and a, "the lock to be freed"
    )
    new = second.json["grant"]
    assert new["locks"]["database"] > old["locks"]["database"]
    token = first.json["run_token"]
    beat = runner_call(server, old["run"], "heartbeat", {"run_token": token})
    assert beat.status == 409
    assert beat.error["kind"] == "LockBusy"
    late = runner_call(
        server, old["run"], "finish",
        {"run_token": token, "status": "succeeded", "exit_code": 0, "output": {"chunks": 0}},
    )  # fmt: skip
    assert late.status == 409
    shown = server.read(key, f"/v1/runs/{old['run']}").json
    assert shown["status"] == "lost"
    locks = server.read(key, "/v1/locks").json["locks"]
    assert [(lk["name"], lk["run_id"], lk["fencing"]) for lk in locks] == [
        ("database", new["run"], new["locks"]["database"])
    ]


def test_the_stream_shows_output_live_then_the_end(
    served: tuple[ServerProc, Path], server_keys: KEYS
) -> None:
    """``/v1/runs/{id}/stream`` sends output as it is stored (Server-Sent Events), and an
    ``end`` event with the outcome once the run is finished."""
    import http.client
    import json

    server, runner = served
    answer = _grant_and_start(server, runner, server_keys["alice"])
    run_id, token = answer.json["grant"]["run"], answer.json["run_token"]
    session = server.token(server_keys["alice"])
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    try:
        conn.request("GET", f"/v1/runs/{run_id}/stream",
                     headers={"Authorization": f"Bearer {session}"})  # fmt: skip
        stream = conn.getresponse()
        assert stream.status == 200
        assert stream.getheader("Content-Type", "").startswith("text/event-stream")

        def event() -> tuple[str, dict[str, object]]:
            kind, data = "", ""
            while True:
                line = stream.readline().decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and kind:
                    return kind, json.loads(data)

        data = base64.b64encode(b"live line\n").decode()
        chunks = [{"seq": 1, "stream": 1, "data": data}]
        sent = runner_call(server, run_id, "output", {"run_token": token, "chunks": chunks})
        assert sent.status == 200, sent
        assert event() == ("output", {"seq": 1, "stream": 1, "text": "live line\n"})
        done = runner_call(
            server, run_id, "finish",
            {"run_token": token, "status": "succeeded", "exit_code": 0,
             "output": {"bytes": 10, "chunks": 1}},
        )  # fmt: skip
        assert done.status == 200, done
        assert event() == ("end", {"status": "succeeded", "exit_code": 0})
    finally:
        conn.close()


def test_a_finish_is_idempotent_and_needs_all_the_output(
    served: tuple[ServerProc, Path], server_keys: KEYS
) -> None:
    """An outcome is refused while output chunks are missing; once recorded, the same
    outcome sent again answers the same, and another outcome is refused."""
    server, runner = served
    answer = _grant_and_start(server, runner, server_keys["alice"])
    run_id, token = answer.json["grant"]["run"], answer.json["run_token"]
    body = {"run_token": token, "status": "failed", "exit_code": 4,
            "output": {"bytes": 3, "chunks": 1}}  # fmt: skip
    early = runner_call(server, run_id, "finish", body)
    assert early.status == 409
    assert "incomplete" in early.error["message"]
    data = base64.b64encode(b"ab\n").decode()
    chunks = [{"seq": 1, "stream": 2, "data": data}]
    runner_call(server, run_id, "output", {"run_token": token, "chunks": chunks})
    first = runner_call(server, run_id, "finish", body)
    again = runner_call(server, run_id, "finish", body)
    assert first.status == again.status == 200
    assert first.json["run_record"] == again.json["run_record"]
    other = runner_call(server, run_id, "finish", {**body, "status": "succeeded", "exit_code": 0})
    assert other.status == 409
    shown = server.read(server_keys["alice"], f"/v1/runs/{run_id}").json
    assert (shown["status"], shown["exit_code"]) == ("failed", 4)


def test_break_glass_through_the_server_is_announced_by_the_server(
    served: tuple[ServerProc, Path], server_keys: KEYS
) -> None:
    """A break-glass run asked of the server is decided with the break-glass policy, and
    announced (the app's notifier, run by the server) before the runner gets its grant;
    someone policy does not allow to break the glass gets nothing."""
    server, runner = served
    why = ("--break-glass", "--reason", "the site is down")
    refused = cli(runner, "run", "migrate", "--env", "production", *why,
                  "--key", str(server_keys["alice"]), server=server)  # fmt: skip
    assert refused.returncode == 3, refused.stderr
    assert not (server.app_dir / "notified").exists()
    ran = cli(runner, "run", "migrate", "--env", "production", *why,
              "--key", str(server_keys["dave"]), server=server)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "migrated to latest\n"
    assert (server.app_dir / "notified").read_text() == "the site is down"
    assert not (runner / "notified").exists()  # the server's notifier, not the runner's
    runs = server.read(server_keys["dave"], "/v1/runs").json["runs"]
    assert [(r["task"], r["break_glass"], r["reason"]) for r in runs] == [
        ("migrate", True, "the site is down")
    ]
