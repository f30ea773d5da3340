"""Signed approvals per second through a real `oneoff server` on PostgreSQL (issue #13:
target >= 500 requests/s with p99 <= 50 ms on this 2-core machine).

Usage: python bench/bench_server_api.py [--quick] [--clients N] [--threads N]
       [--approvals N] [--rounds N] [--workers 1,2]

Starts a throw-away PostgreSQL (tests/_pgserver.py: fsync and synchronous_commit on) and,
for each count of ``--workers`` (default: 1 and the number of CPUs), a real ``oneoff
server`` on 127.0.0.1 with that many worker processes (tests/_serverproc.py), all on one
database, serving the access tests' app (tests/_access_kit.py: migrate in production needs
two approvals of the dba group: bob, carol and erin). Then, each round, for each server in
turn (interleaved, so that a change in the machine's load hits each alike):

1. setup (not timed): alice asks for approval of ``approvals / 3`` plans through the API,
   from the client processes at once;
2. each client process signs its share of approval calls in advance (the approver's
   SSHSIG over the plan hash inside the body, the API envelope over the call), as a client
   that has already decided would send them;
3. on a common start signal, every client process sends its calls from N threads, each
   over its own keep-alive HTTP/1.1 connection to 127.0.0.1, one call at a time (a bounded
   loop: exactly its share of calls), and records each call's latency; every answer must
   be 201.

Prints per round and as the median of rounds, for each worker count: requests/s (all
calls over the time from the first start to the last end), median and p99 latency, and
the server's CPU time per request (its worker processes' and its parent's); the machine's
load average beside them (the machine is shared); then each count's rate against one
worker's.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

APPROVERS = ("bob", "carol", "erin")
TARGET_RATE, TARGET_P99_MS = 500, 50.0


def _plan(app_dir: Path) -> dict[str, Any]:
    from oneoff._app import open_app
    from oneoff._pipeline import RunRequest, make_plan

    app = open_app(app_dir)
    try:
        return make_plan(app, RunRequest("migrate", "production")).to_json()
    finally:
        app.close()


def _ask_body(key: Path, plan: dict[str, Any]) -> dict[str, Any]:
    from oneoff._canonical import canonical_json
    from oneoff._identity import NAMESPACE_REQUEST, Signer, request_statement

    doc = plan["document"]
    statement = request_statement(
        "request", app=doc["app"], task=doc["task"], environment=doc["environment"],
        plan_hash=plan["hash"],
    )  # fmt: skip
    signature = Signer(key, agent=False).sign(canonical_json(statement), NAMESPACE_REQUEST)
    return {"plan": plan, "plan_hash": plan["hash"], "statement": statement,
            "signature": signature.decode()}  # fmt: skip


def _approval_call(
    keys: dict[str, Path], who: str, request: dict[str, Any], server_id: str
) -> tuple[str, bytes, dict[str, str]]:
    from _serverproc import signed_headers
    from oneoff._identity import NAMESPACE_APPROVE, Signer, approval_statement, iso, utc_now
    from oneoff._store.interface import RequestRecord

    record = RequestRecord(**request)
    version, when = record.policy_version or "", iso(utc_now())
    data = approval_statement(record, version, when)
    signature = Signer(keys[who], agent=False).sign(data, NAMESPACE_APPROVE).decode()
    path = f"/v1/requests/{record.id}/approvals"
    body = json.dumps({"time": when, "policy_version": version, "signature": signature}).encode()
    return path, body, signed_headers(keys[who], "POST", path, body, server_id)


def _send(
    conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
    answer = conn.getresponse()
    return answer.status, answer.read()


def client(spec: dict[str, Any]) -> int:
    """One client process: ask, sign, say ready, wait for the start signal, fire, report."""
    from _serverproc import signed_headers

    keys = {name: Path(path) for name, path in spec["keys"].items()}
    host, port, server_id = spec["host"], spec["port"], spec["server_id"]
    conn = http.client.HTTPConnection(host, port, timeout=120)
    made = []
    for _ in range(spec["requests"]):
        body = json.dumps(_ask_body(keys["alice"], spec["plan"])).encode()
        headers = signed_headers(keys["alice"], "POST", "/v1/requests", body, server_id)
        status, answer = _send(conn, "/v1/requests", body, headers)
        if status != 201:
            raise SystemExit(f"asking failed: {status} {answer[:300]!r}")
        made.append(json.loads(answer)["request"])
    conn.close()
    calls = [_approval_call(keys, who, r, server_id) for r in made for who in APPROVERS]
    print("ready", flush=True)
    go = Path(spec["go"])
    while not go.exists():
        time.sleep(0.001)
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def fire(share: list[tuple[str, bytes, dict[str, str]]]) -> None:
        own = http.client.HTTPConnection(host, port, timeout=120)
        mine, codes = [], []
        for path, body, headers in share:  # bounded: exactly this share, one at a time
            start = time.perf_counter()
            codes.append(_send(own, path, body, headers)[0])
            mine.append(time.perf_counter() - start)
        own.close()
        with lock:
            latencies.extend(mine)
            statuses.extend(codes)

    threads = spec["threads"]
    workers = [threading.Thread(target=fire, args=(calls[i::threads],)) for i in range(threads)]
    start = time.time()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    end = time.time()
    print(json.dumps({"start": start, "end": end, "latencies": latencies, "statuses": statuses}))
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu(server: Any) -> float:
    """CPU seconds of a server's process and its live workers (its children)."""
    pid = server.proc.pid
    workers = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return _cpu_seconds(pid) + sum(_cpu_seconds(int(w)) for w in workers)


def _pg_cpu(pg: Any) -> float:
    """CPU seconds of a PostgreSQL cluster's postmaster and its live backends."""
    pid = int((pg.data / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = _cpu_seconds(pid)
    for child in children:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += _cpu_seconds(int(child))
    return total


def run_round(
    server: Any, spec: dict[str, Any], clients: int, per_client: int, pg: Any
) -> dict[str, Any]:
    """One measured round; requests/s, latencies and the server's CPU per request."""
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        procs = []
        for i in range(clients):
            own = Path(tmp) / f"client-{i}.json"  # a file: nothing of it in `ps`
            own.write_text(json.dumps({**spec, "go": str(go), "requests": per_client}))
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--client", str(own)], stdout=subprocess.PIPE,
                text=True,
            ))  # fmt: skip
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline().strip()
                if line != "ready":
                    raise SystemExit(f"a client failed to start: {line!r} (exit {proc.wait()})")
            cpu, db_cpu = _server_cpu(server), _pg_cpu(pg)
            go.touch()
            outs = [json.loads(proc.communicate(timeout=900)[0]) for proc in procs]
            cpu, db_cpu = _server_cpu(server) - cpu, _pg_cpu(pg) - db_cpu
        finally:
            for proc in procs:  # a failed client must not leave the others waiting for "go"
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    statuses = [code for out in outs for code in out["statuses"]]
    bad = [code for code in statuses if code != 201]
    if bad:
        raise SystemExit(f"{len(bad)} of {len(statuses)} approvals failed: {sorted(set(bad))}")
    latencies = sorted(x for out in outs for x in out["latencies"])
    elapsed = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    return {
        "rate": len(latencies) / elapsed,
        "median_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "cpu_ms": cpu / len(latencies) * 1000,
        "db_cpu_ms": db_cpu / len(latencies) * 1000,
        "calls": len(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, one round")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--threads", type=int, default=4, help="connections per client")
    parser.add_argument("--approvals", type=int, default=None, help="calls per round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--workers", default=f"1,{len(os.sched_getaffinity(0))}",
        help="comma-separated worker counts to compare (default: 1 and the CPUs)",
    )  # fmt: skip
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client(json.loads(Path(args.client).read_text()))
    # A SIGTERM (timeout, Ctrl-C's cousin) still stops the server and PostgreSQL.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from _access_kit import make_access_app, make_keys
    from _pgserver import PgServer, find_bindir
    from _serverproc import ServerProc
    from oneoff._store.postgres import migrate

    approvals = args.approvals or (600 if args.quick else 3000)
    rounds = args.rounds or (1 if args.quick else 3)
    per_client = max(1, approvals // len(APPROVERS) // args.clients)
    bindir = find_bindir()
    if bindir is None:
        print("PostgreSQL is not installed: skipped")
        return 0
    counts = sorted({int(n) for n in args.workers.split(",")})
    pg = PgServer(bindir)
    pg.start()
    servers: dict[int, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            keys = make_keys(Path(tmp) / "keys")
            app_dir = make_access_app(Path(tmp) / "app", keys)
            url = pg.database("api")
            migrate(url)
            for n in counts:
                servers[n] = ServerProc(app_dir, store_url=url, workers=n).start()
            print(
                f"{args.clients} client processes x {args.threads} connections, "
                f"{per_client * len(APPROVERS) * args.clients} signed approvals a round, "
                f"{rounds} rounds; servers of {', '.join(map(str, counts))} worker processes "
                f"on one PostgreSQL (synchronous_commit on), {len(os.sched_getaffinity(0))} "
                "CPUs",
                flush=True,
            )
            plan = _plan(app_dir)
            results: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
            for i in range(rounds):
                for n, server in servers.items():
                    spec = {
                        "keys": {name: str(path) for name, path in keys.items()},
                        "host": server.host, "port": server.port,
                        "server_id": server.server_id, "plan": plan, "threads": args.threads,
                    }  # fmt: skip
                    result = run_round(server, spec, args.clients, per_client, pg)
                    results[n].append(result)
                    print(
                        f"  round {i + 1}, {n} worker(s): {result['rate']:,.0f} req/s, median "
                        f"{result['median_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, server "
                        f"CPU {result['cpu_ms']:.2f} ms/req, PostgreSQL CPU "
                        f"{result['db_cpu_ms']:.2f} ms/req; load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
            print("median of rounds:")
            base = statistics.median(r["rate"] for r in results[counts[0]])
            for n in counts:
                rate = statistics.median(r["rate"] for r in results[n])
                p99 = statistics.median(r["p99_ms"] for r in results[n])
                median = statistics.median(r["median_ms"] for r in results[n])
                cpu = statistics.median(r["cpu_ms"] for r in results[n])
                ok = "ok " if rate >= TARGET_RATE and p99 <= TARGET_P99_MS else "LOW"
                print(
                    f"  {n} worker(s): {rate:,.0f} req/s (x{rate / base:.2f} of "
                    f"{counts[0]}; target >= {TARGET_RATE}), median {median:.1f} ms, p99 "
                    f"{p99:.1f} ms (target <= {TARGET_P99_MS:.0f}), server CPU {cpu:.2f} "
                    f"ms/req {ok}"
                )
            print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        for server in servers.values():
            server.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
