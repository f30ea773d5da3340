"""Signed approvals per second through a real `oneoff server` on PostgreSQL (issue #13:
target >= 500 requests/s with p99 <= 50 ms on this 2-core machine).

Usage: python bench/bench_server_api.py [--quick] [--clients N] [--connections 8,16,24]
       [--approvals N] [--rounds N] [--workers 1,2] [--firing raw|threads]
       [--baseline SRC_DIR]

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
   that has already decided would send them, and writes each call down as the exact
   HTTP/1.1 request bytes it will send;
3. timed: ONE process (this one) sends all the calls over N keep-alive connections to
   127.0.0.1 (each count of ``--connections`` in turn, default 8, 16 and 24), one call
   at a time per connection (a bounded loop: exactly the calls signed in 2, each sent
   once), reading each answer's status line and body (Content-Length) with a selector;
   every answer must be 201. A call's latency runs from its send to its whole answer.

Why one process and raw sockets: the machine has 2 cores for the server, PostgreSQL AND
the load generator. The first version fired from 4 processes x 4 ``http.client`` threads,
and took about a third of the machine itself (``--firing threads`` still runs it, to
compare); the selector loop costs a fraction of that, which the printout shows.

Prints per round and as the median of rounds, for each server: requests/s (all calls over
the time from the first send to the last answer), median and p99 latency, and CPU time per
request of the server (its worker processes' and its parent's), of PostgreSQL (postmaster
and backends) and of the load generator (the firing process or processes, timed phase
only); the machine's load average beside them (the machine is shared); then each server's
rate against the first's, and its capacity at the target: the highest median rate among
the connection counts whose median p99 is within it. Why several counts: with a fixed
number of callers, each waiting for its answer, the rate is callers / latency (Little's
law); more callers raise the rate until the CPUs are busy, then only the queue (and p99)
grows. A service's capacity is the rate it sustains within its latency target.

``--baseline SRC_DIR`` also starts, for each worker count, a server running the code of
another checkout's ``src`` (e.g. ``git worktree add --detach ../base main``) on its own
database migrated by that code, measured in the same rounds, interleaved with this one.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pickle
import re
import selectors
import signal
import socket
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


def _raw(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The exact HTTP/1.1 request ``http.client`` would send for this call (keep-alive)."""
    lines = [
        f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Accept-Encoding: identity",
        "Content-Type: application/json", f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


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
    if spec["firing"] == "raw":  # the parent sends them: write them down, done
        raw = [_raw(host, port, *call) for call in calls]
        Path(spec["out"]).write_bytes(pickle.dumps(raw))
        print("ready", flush=True)
        return 0
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
    start, cpu = time.time(), time.process_time()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    end, cpu = time.time(), time.process_time() - cpu
    out = {"start": start, "end": end, "latencies": latencies, "statuses": statuses, "cpu": cpu}
    print(json.dumps(out))
    return 0


class _Conn:
    """One keep-alive connection of the raw firing loop: its calls, its unread answer."""

    __slots__ = ("buf", "calls", "next", "sent", "sock")

    def __init__(self, sock: socket.socket, calls: list[bytes]) -> None:
        self.sock, self.calls, self.next = sock, calls, 0
        self.buf = bytearray()
        self.sent = 0.0

    def send(self) -> bool:
        """Send the next call; False when all of this connection's calls were sent."""
        if self.next == len(self.calls):
            return False
        self.sent = time.perf_counter()
        self.sock.sendall(self.calls[self.next])
        self.next += 1
        return True

    def answer(self) -> int | None:
        """The status of the whole answer in the buffer (consumed), None if not all in."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buf[:end]).lower()
        found = re.search(rb"\r\ncontent-length: *(\d+)", head)
        if found is None or not head.startswith(b"http/1.1 "):
            raise SystemExit(f"an answer without Content-Length: {head[:200]!r}")
        total = end + 4 + int(found.group(1))
        if len(self.buf) < total:
            return None
        del self.buf[:total]
        return int(head[9:12])


def fire_raw(host: str, port: int, calls: list[bytes], connections: int) -> dict[str, Any]:
    """Send every call once over ``connections`` keep-alive sockets, one call at a time on
    each; each call's latency (send to whole answer) and status, and this process's CPU."""
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(connections):
        sock = socket.create_connection((host, port), timeout=120)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(_Conn(sock, calls[i::connections]))
    latencies: list[float] = []
    statuses: list[int] = []
    start, cpu = time.time(), time.process_time()
    for conn in conns:
        if conn.send():
            sel.register(conn.sock, selectors.EVENT_READ, conn)
    while sel.get_map():  # bounded: every connection stops after its share of calls
        for key, _ in sel.select(timeout=120):
            conn = key.data
            chunk = conn.sock.recv(262144)
            if not chunk:
                raise SystemExit("the server closed a connection before answering")
            conn.buf += chunk
            status = conn.answer()
            if status is None:
                continue
            latencies.append(time.perf_counter() - conn.sent)
            statuses.append(status)
            if not conn.send():
                sel.unregister(conn.sock)
    end, cpu = time.time(), time.process_time() - cpu
    for conn in conns:
        conn.sock.close()
    sel.close()
    return {"start": start, "end": end, "latencies": latencies, "statuses": statuses, "cpu": cpu}


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
    """One measured round; requests/s, latencies, CPU per request of each part."""
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        procs = []
        for i in range(clients):
            own = Path(tmp) / f"client-{i}.json"  # a file: nothing of it in `ps`
            out = str(Path(tmp) / f"calls-{i}.pickle")
            own.write_text(json.dumps({**spec, "go": str(go), "requests": per_client, "out": out}))
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
            if spec["firing"] == "raw":
                calls = []
                for i, proc in enumerate(procs):
                    if proc.wait(timeout=900) != 0:
                        raise SystemExit(f"a client failed (exit {proc.returncode})")
                    calls.extend(pickle.loads((Path(tmp) / f"calls-{i}.pickle").read_bytes()))
                cpu, db_cpu = _server_cpu(server), _pg_cpu(pg)
                outs = [fire_raw(server.host, server.port, calls, spec["connections"])]
            else:
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
        "client_cpu_ms": sum(o["cpu"] for o in outs) / len(latencies) * 1000,
        "calls": len(latencies),
    }


class _BaseServer:
    """A ``ServerProc`` running another checkout's ``src`` (``--baseline``)."""

    @staticmethod
    def make(src: Path, app_dir: Path, url: str, workers: int) -> Any:
        from _serverproc import ServerProc

        class Base(ServerProc):
            def env(self) -> dict[str, str]:
                return {**super().env(), "PYTHONPATH": str(src)}

        return Base(app_dir, store_url=url, workers=workers)

    @staticmethod
    def migrate(src: Path, url: str) -> None:
        code = "import sys; from oneoff._store.postgres import migrate; migrate(sys.argv[1])"
        env = {**os.environ, "PYTHONPATH": str(src)}
        subprocess.run([sys.executable, "-c", code, url], env=env, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, one round")
    parser.add_argument("--clients", type=int, default=4, help="signing client processes")
    parser.add_argument(
        "--connections", default="8,16,24",
        help="comma-separated counts of connections (all) to measure each server at",
    )  # fmt: skip
    parser.add_argument("--approvals", type=int, default=None, help="calls per round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--workers", default=f"1,{len(os.sched_getaffinity(0))}",
        help="comma-separated worker counts to compare (default: 1 and the CPUs)",
    )  # fmt: skip
    parser.add_argument(
        "--firing", choices=("raw", "threads"), default="raw",
        help="raw: one process, a selector over raw sockets (default); threads: the client "
        "processes fire from connections/clients http.client threads each (the old way)",
    )  # fmt: skip
    parser.add_argument("--baseline", type=Path, help="also run this checkout's src")
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
    conns = sorted({int(n) for n in args.connections.split(",")})
    pg = PgServer(bindir)
    pg.start()
    servers: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            keys = make_keys(Path(tmp) / "keys")
            app_dir = make_access_app(Path(tmp) / "app", keys)
            url = pg.database("api")
            migrate(url)
            base_url = ""
            if args.baseline:
                base_url = pg.database("base")
                _BaseServer.migrate(args.baseline.resolve(), base_url)
            for n in counts:
                if args.baseline:
                    servers[f"base, {n} worker(s)"] = _BaseServer.make(
                        args.baseline.resolve(), app_dir, base_url, n
                    ).start()
                servers[f"{n} worker(s)"] = ServerProc(app_dir, store_url=url, workers=n).start()
            shown = "/".join(map(str, conns))
            firing = (
                f"one process, {shown} raw keep-alive connections"
                if args.firing == "raw"
                else f"{args.clients} processes x ({shown}) / {args.clients} http.client threads"
            )
            print(
                f"{per_client * len(APPROVERS) * args.clients} signed approvals a round "
                f"(signed by {args.clients} processes, untimed), fired by {firing}; "
                f"{rounds} rounds; servers: {', '.join(servers)} on one PostgreSQL "
                f"(synchronous_commit on), {len(os.sched_getaffinity(0))} CPUs",
                flush=True,
            )
            plan = _plan(app_dir)
            results: dict[tuple[str, int], list[dict[str, Any]]] = {
                (name, c): [] for name in servers for c in conns
            }
            for i in range(rounds):
                for (name, c), server in ((k, servers[k[0]]) for k in results):
                    spec = {
                        "keys": {k: str(path) for k, path in keys.items()},
                        "host": server.host, "port": server.port,
                        "server_id": server.server_id, "plan": plan, "firing": args.firing,
                        "threads": max(1, c // args.clients),
                        "connections": c,
                    }  # fmt: skip
                    result = run_round(server, spec, args.clients, per_client, pg)
                    results[name, c].append(result)
                    print(
                        f"  round {i + 1}, {name}, {c} conn.: {result['rate']:,.0f} req/s, median "
                        f"{result['median_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; CPU "
                        f"ms/req: server {result['cpu_ms']:.2f}, PostgreSQL "
                        f"{result['db_cpu_ms']:.2f}, load generator "
                        f"{result['client_cpu_ms']:.2f} (2 CPUs give "
                        f"{2000 / result['rate']:.2f}); load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
            print("median of rounds:")
            first = next(iter(results))
            base = statistics.median(r["rate"] for r in results[first])
            capacity: dict[str, float] = dict.fromkeys(servers, 0.0)
            for name, c in results:
                mid = {
                    k: statistics.median(r[k] for r in results[name, c])
                    for k in ("rate", "p99_ms", "median_ms", "cpu_ms", "db_cpu_ms",
                              "client_cpu_ms")
                }  # fmt: skip
                ok = (
                    "ok "
                    if mid["rate"] >= TARGET_RATE and mid["p99_ms"] <= TARGET_P99_MS
                    else "LOW"
                )
                if mid["p99_ms"] <= TARGET_P99_MS:
                    capacity[name] = max(capacity[name], mid["rate"])
                print(
                    f"  {name}, {c} conn.: {mid['rate']:,.0f} req/s (x{mid['rate'] / base:.2f} "
                    f"of {first[0]}, {first[1]}; target >= {TARGET_RATE}), median "
                    f"{mid['median_ms']:.1f} ms, "
                    f"p99 {mid['p99_ms']:.1f} ms (target <= {TARGET_P99_MS:.0f}); CPU ms/req: "
                    f"server {mid['cpu_ms']:.2f}, PostgreSQL {mid['db_cpu_ms']:.2f}, load "
                    f"generator {mid['client_cpu_ms']:.2f} {ok}"
                )
            for name, rate in capacity.items():
                ok = "ok " if rate >= TARGET_RATE else "LOW"
                print(
                    f"capacity of {name} within p99 <= {TARGET_P99_MS:.0f} ms: {rate:,.0f} req/s "
                    f"(target >= {TARGET_RATE}) {ok}"
                )
            print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        for server in servers.values():
            server.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
