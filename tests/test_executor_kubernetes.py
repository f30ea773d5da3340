"""The Kubernetes Job executor: manifests checked against the real OpenAPI schema, the pod
spec run for real with `podman kube play`, and the client's state machine driven by the
official client against replayed API responses (no API server can run on this machine).

The replayed responses are written from the Kubernetes API reference in the exact shape
the API server returns; they are not captures from a live cluster. ``test_live_cluster``
runs against a real cluster when ``KUBECONFIG`` is set (see README, Executors).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from _podman import build_busybox_image, remove_image, why_podman_cannot_run, write_engine_conf
from oneoff._executor.k8s_job import build_job, build_secret
from oneoff._plan import Plan, build_plan
from oneoff.testing import make_app

K8S_VERSION = "1.30.0"
DIGEST = "registry.example/notes@sha256:" + "ab" * 32
EXAMPLE_DEPLOYMENT = (
    Path(__file__).resolve().parent.parent / "examples" / "notes" / "k8s" / "deployment.yaml"
)

MANIFEST = """
[environments.cluster.executor]
kind = "kubernetes"
namespace = "notes"
deployment = "notes-web"
image = "{image}"
ttl = 600

[tasks.migrate]
argv = ["python", "-m", "notes.migrate", "--to", "{{target}}"]
timeout = "{timeout}"
grace = 1
params.target = {{ type = "string", pattern = "latest|[0-9]{{4}}", default = "latest" }}
params.token = {{ type = "secret" }}
"""


def make_plan(tmp_path: Path, image: str = DIGEST, timeout: str = "10m") -> Plan:
    from oneoff._app import open_app

    root = make_app(tmp_path / "app", MANIFEST.format(image=image, timeout=timeout))
    app = open_app(root)
    try:
        return build_plan(
            app.project, "migrate", "cluster", {"token": "tok-very-secret-123"},
            fingerprint_key=b"k" * 32,
        )  # fmt: skip
    finally:
        app.close()


def deployment() -> dict[str, Any]:
    loaded = yaml.safe_load(EXAMPLE_DEPLOYMENT.read_text())
    assert isinstance(loaded, dict)
    return loaded


RUN_ENV = {"ONEOFF_RUN_ID": "r20261206abc", "ONEOFF_TASK": "migrate"}


# -- (a) the manifests, against the real Kubernetes OpenAPI schema -------------------------


def test_job_is_built_from_the_deployment_and_valid(tmp_path: Path) -> None:
    """The Job is the Deployment's pod with only the command, image, probes, ports and
    labels changed, and it validates strictly against the Kubernetes schema."""
    plan = make_plan(tmp_path)
    job = build_job(deployment(), plan, "r20261206abc", "alice", RUN_ENV)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["ttlSecondsAfterFinished"] == 600
    assert spec["suspend"] is True
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "notes"
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000}
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "notes.migrate", "--to", "latest"]
    assert container["image"] == DIGEST
    assert "readinessProbe" not in container
    assert "ports" not in container
    assert container["envFrom"] == [
        {"configMapRef": {"name": "notes-config"}},
        {"secretRef": {"name": "notes-secrets"}},
    ]
    assert container["resources"] == {"limits": {"memory": "256Mi", "cpu": "1"}}
    # The app's Service selects app=notes: the one-off pod must not receive its traffic.
    assert "app" not in spec["template"]["metadata"]["labels"]
    annotations = job["metadata"]["annotations"]
    assert annotations["oneoff.dev/plan-hash"] == plan.hash
    assert annotations["oneoff.dev/requester"] == "alice"
    assert job["metadata"]["labels"]["oneoff.dev/run-id"] == "r20261206abc"


def test_secret_params_live_only_in_the_owned_secret(tmp_path: Path) -> None:
    """A secret param is referenced by the Job and held by a Secret the Job owns; its value
    is nowhere in the Job's manifest."""
    plan = make_plan(tmp_path)
    job = build_job(deployment(), plan, "r20261206abc", "alice", RUN_ENV)
    secret = build_secret(plan, "r20261206abc", "uid-1234")
    assert secret is not None
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    assert "tok-very-secret-123" not in json.dumps(job)
    assert base64.b64encode(b"tok-very-secret-123").decode() not in json.dumps(job)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    ref = next(e for e in container["env"] if e["name"] == "ONEOFF_PARAM_TOKEN")
    assert ref["valueFrom"] == {
        "secretKeyRef": {"name": "oneoff-r20261206abc-params", "key": "token"}
    }
    assert base64.b64decode(secret["data"]["token"]) == b"tok-very-secret-123"
    (owner,) = secret["metadata"]["ownerReferences"]
    assert owner["kind"] == "Job"
    assert owner["uid"] == "uid-1234"
    assert owner["name"] == job["metadata"]["name"]


def test_the_schema_check_catches_a_broken_manifest(tmp_path: Path) -> None:
    """The validation above can fail: a Job with a wrongly typed field is rejected."""
    job = build_job(deployment(), make_plan(tmp_path), "r1", "alice", RUN_ENV)
    job["spec"]["backoffLimit"] = "zero"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_missing_container_is_a_clear_error(tmp_path: Path) -> None:
    """A container name the Deployment does not have is refused, naming the ones it has."""
    from oneoff.errors import UsageError

    plan = make_plan(tmp_path)
    spec = plan.environment.executor
    other = Plan(
        **{
            **plan.__dict__,
            "environment": type(plan.environment)(
                **{
                    **plan.environment.__dict__,
                    "executor": type(spec)(**{**spec.__dict__, "container": "worker"}),
                }
            ),
        }
    )
    with pytest.raises(UsageError, match=r"has no container 'worker' \(containers: web\)"):
        build_job(deployment(), other, "r1", "alice", RUN_ENV)


# -- (b) the pod spec, executed for real by podman kube play -------------------------------

podman_missing = why_podman_cannot_run()


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_engine_conf(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory, podman_env: dict[str, str]) -> Iterator[str]:
    image = build_busybox_image(tmp_path_factory.mktemp("image"), podman_env)
    yield image
    remove_image(image, podman_env)


@pytest.mark.skipif(podman_missing is not None, reason=str(podman_missing))
def test_job_pod_spec_runs_under_podman_kube_play(
    tmp_path: Path, podman_env: dict[str, str], busybox: str
) -> None:
    """The Job's pod, as generated, runs: its command, env (ConfigMap and Secret refs
    included), security context and volumes work, and its exit code comes back."""
    app_deployment = deployment()
    template = app_deployment["spec"]["template"]
    template["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False}
    del template["spec"]["serviceAccountName"]
    template["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "notes-config"}}]
    plan = make_plan(tmp_path, image=busybox)
    plan = Plan(
        **{
            **plan.__dict__,
            "argv": ("sh", "-c", "echo $GREETING $ONEOFF_TASK $ONEOFF_PARAM_TOKEN; id -u; "
                     "echo scratch > /tmp/f && cat /tmp/f; exit 7"),
        }
    )  # fmt: skip
    run_id = "r" + os.urandom(6).hex()
    job = build_job(app_deployment, plan, run_id, "alice", RUN_ENV)
    secret = build_secret(plan, run_id, "uid-1")
    assert secret is not None
    pod_name = job["metadata"]["name"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, **job["spec"]["template"]["metadata"]},
        "spec": job["spec"]["template"]["spec"],
    }
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "notes-config"}, "data": {"GREETING": "hello"},
    }  # fmt: skip
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod))
    (tmp_path / "cm.yaml").write_text(yaml.safe_dump(config_map))
    secret_name = secret["metadata"]["name"]

    def podman(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["podman", *args], env=podman_env, input=data, capture_output=True, timeout=300,
            check=False,
        )  # fmt: skip

    # podman keeps a kube Secret's data as a JSON map of base64 values under the same name.
    made = podman("secret", "create", secret_name, "-", data=json.dumps(secret["data"]).encode())
    assert made.returncode == 0, made.stderr
    try:
        played = podman("kube", "play", "--configmap", str(tmp_path / "cm.yaml"),
                        str(tmp_path / "pod.yaml"))  # fmt: skip
        assert played.returncode == 0, played.stderr
        container = f"{pod_name}-web"
        waited = podman("wait", container)
        logs = podman("logs", container)
    finally:
        podman("kube", "down", str(tmp_path / "pod.yaml"))
        podman("secret", "rm", secret_name)
    assert waited.stdout.strip() == b"7"
    assert logs.stdout.decode().split("\n")[:3] == [
        "hello migrate tok-very-secret-123",
        "1000",
        "scratch",
    ]
    assert podman("pod", "exists", pod_name).returncode == 1


# -- (c) the client's state machine, against replayed API responses ------------------------

RECORDED = Path(__file__).resolve().parent / "k8s_replayed"


class Replay:
    """An HTTP server answering the Kubernetes API paths the executor calls, in order."""

    def __init__(self, routes: list[tuple[str, str, int, Any]]) -> None:
        self.routes = [[m, re.compile(p), s, b] for m, p, s, b in routes]
        self.requests: list[tuple[str, str, Any]] = []
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                replay.requests.append((self.command, self.path, body))
                status, payload = replay.answer(self.command, self.path)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                kind = "text/plain" if isinstance(payload, bytes) else "application/json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, method: str, path: str) -> tuple[int, Any]:
        matching = [r for r in self.routes if r[0] == method and r[1].search(path)]
        if not matching:
            return 404, _status(404, f"no replayed response for {method} {path}")
        route = matching[0]
        if len(matching) > 1:  # answered once; the last one for a path repeats
            self.routes.remove(route)
        return int(route[2]), route[3]

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        port = self.server.server_address[1]
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1", "kind": "Config", "current-context": "replay",
                    "clusters": [{"name": "replay",
                                  "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                    "users": [{"name": "u", "user": {"token": "replayed-token"}}],
                    "contexts": [{"name": "replay", "context": {"cluster": "replay", "user": "u"}}],
                }
            )
        )  # fmt: skip
        return path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _status(code: int, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": "NotFound" if code == 404 else "Unknown", "code": code}  # fmt: skip


def recorded(name: str) -> Any:
    return json.loads((RECORDED / f"{name}.json").read_text())


JOBS = r"^/apis/batch/v1/namespaces/notes/jobs"
PODS = r"^/api/v1/namespaces/notes/pods\?"
POD = r"^/api/v1/namespaces/notes/pods/oneoff-r20261206abc-x7k2p$"
LOG = r"^/api/v1/namespaces/notes/pods/oneoff-r20261206abc-x7k2p/log\?"
DEPLOYMENT = r"^/apis/apps/v1/namespaces/notes/deployments/notes-web$"


def pod_in(state: str) -> dict[str, Any]:
    """The replayed pod list/pod with its container in one of the states the API reports."""
    pod = recorded("pod_pending")
    states = recorded("container_states")
    if state != "unschedulable":
        pod["status"] = states[state]
    return pod


def pods(state: str) -> dict[str, Any]:
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [pod_in(state)]}


def happy_path(end: str, log: bytes) -> list[tuple[str, str, int, Any]]:
    return [
        ("GET", DEPLOYMENT, 200, recorded("deployment")),
        ("POST", JOBS + "$", 201, recorded("job_created")),
        ("POST", r"^/api/v1/namespaces/notes/secrets$", 201, recorded("secret_created")),
        ("PATCH", JOBS + "/oneoff-r20261206abc$", 200, recorded("job_created")),
        ("GET", PODS, 200, pods("unschedulable")),
        ("GET", PODS, 200, pods("running")),
        ("GET", LOG, 200, log),
        ("GET", POD, 200, pod_in(end)),
        ("DELETE", JOBS + "/oneoff-r20261206abc$", 200, recorded("job_created")),
    ]


@pytest.fixture
def replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    servers: list[Replay] = []

    def start(routes: list[tuple[str, str, int, Any]]) -> Replay:
        server = Replay(routes)
        servers.append(server)
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path)))
        return server

    yield start
    for server in servers:
        server.close()


def execute(plan: Plan) -> tuple[Any, bytes]:
    from oneoff._executor.kubernetes import KubernetesExecutor

    out: list[bytes] = []
    env = {**RUN_ENV, "ONEOFF_ENVIRONMENT": "cluster"}
    result = KubernetesExecutor(poll=0.01, requester="alice").execute(
        plan, env, lambda fd, chunk: out.append(chunk), stdin_data=None
    )
    return result, b"".join(out)


def test_replayed_run_creates_resumes_streams_and_succeeds(tmp_path: Path, replay: Any) -> None:
    """Create the Job suspended, its owned Secret, resume, wait out Pending, stream the log,
    and report the container's exit code; a finished Job is left to its TTL."""
    server = replay(happy_path("succeeded", b"applied 0001_notes.sql\n"))
    result, output = execute(make_plan(tmp_path))
    assert (result.exit_code, result.status) == (0, "succeeded")
    assert output == b"applied 0001_notes.sql\n"
    methods = [(m, p.split("?")[0]) for m, p, _ in server.requests]
    assert methods[:4] == [
        ("GET", "/apis/apps/v1/namespaces/notes/deployments/notes-web"),
        ("POST", "/apis/batch/v1/namespaces/notes/jobs"),
        ("POST", "/api/v1/namespaces/notes/secrets"),
        ("PATCH", "/apis/batch/v1/namespaces/notes/jobs/oneoff-r20261206abc"),
    ]
    assert "DELETE" not in [m for m, _ in methods]
    job, secret, patch = (server.requests[i][2] for i in (1, 2, 3))
    assert job["spec"]["suspend"] is True
    assert "tok-very-secret-123" not in json.dumps(job)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "5f0c9a7e-1b2d-4c3e-9f10-aa11bb22cc33"
    assert patch == {"spec": {"suspend": False}}


def test_replayed_failure_passes_the_exit_code(tmp_path: Path, replay: Any) -> None:
    """A container that exits 3 makes a failed run with exit code 3."""
    replay(happy_path("failed", b"boom\n"))
    result, _ = execute(make_plan(tmp_path))
    assert (result.exit_code, result.status) == (3, "failed")


def test_replayed_oom_is_reported_and_the_job_deleted(tmp_path: Path, replay: Any) -> None:
    """An OOMKilled container is reported as out of memory (exit 137)."""
    from oneoff.errors import OutOfMemory

    server = replay(happy_path("oomkilled", b""))
    with pytest.raises(OutOfMemory, match="OOMKilled"):
        execute(make_plan(tmp_path))
    assert server.requests[-1][0] == "DELETE"


def test_replayed_unschedulable_pod_times_out_clearly(tmp_path: Path, replay: Any) -> None:
    """A pod that never schedules ends at the task's timeout with the scheduler's reason,
    and the Job is deleted with foreground propagation."""
    from oneoff.errors import PodNeverScheduled

    routes = [r for r in happy_path("succeeded", b"") if r[1] != PODS]
    routes.insert(4, ("GET", PODS, 200, pods("unschedulable")))
    server = replay(routes)
    with pytest.raises(PodNeverScheduled, match=r"Unschedulable: 0/3 nodes are available"):
        execute(make_plan(tmp_path, timeout="1s"))
    method, path, _ = server.requests[-1]
    assert method == "DELETE"
    assert path.startswith("/apis/batch/v1/namespaces/notes/jobs/oneoff-r20261206abc?")
    assert "propagationPolicy=Foreground" in path


def test_replayed_image_pull_failure_is_refused(tmp_path: Path, replay: Any) -> None:
    """A pod stuck pulling its image fails at once with the kubelet's reason."""
    from oneoff.errors import ExecError

    routes = [r for r in happy_path("succeeded", b"") if r[1] != PODS]
    routes.insert(4, ("GET", PODS, 200, pods("image_pull_backoff")))
    server = replay(routes)
    with pytest.raises(ExecError, match="cannot start: ImagePullBackOff"):
        execute(make_plan(tmp_path))
    assert server.requests[-1][0] == "DELETE"


def test_missing_deployment_refuses_before_creating_anything(
    tmp_path: Path, replay: Any, cli_env: dict[str, str]
) -> None:
    """`oneoff run` on a missing Deployment exits 125 with a clear message; no Job is made,
    and the run is recorded as failed with the reason."""
    from oneoff.testing import run_cli

    server = replay([])
    plan = make_plan(tmp_path)
    env = {**cli_env, "KUBECONFIG": os.environ["KUBECONFIG"]}
    result = run_cli(
        ["run", "migrate", "--env", "cluster", "-p", "token=@-"], cwd=plan.project.root,
        env=env, stdin="tok-very-secret-123\n",
    )  # fmt: skip
    assert result.exit_code == 125, result.stderr
    assert "deployment notes/notes-web not found" in result.stderr
    # Reads only: nothing was created. (Under load the client may repeat its GET after a
    # slow answer, so the reads are not counted.)
    assert server.requests
    assert {m for m, _, _ in server.requests} == {"GET"}
    runs = json.loads(run_cli(["runs", "--json"], cwd=plan.project.root, env=env).stdout)
    assert runs[0]["status"] == "failed"


# -- (d) a real cluster, when there is one ----------------------------------------------------


@pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"),
    reason="no cluster: KUBECONFIG is not set (README, Executors: how to run this on kind or k3d)",
)
def test_live_cluster(tmp_path: Path) -> None:
    """Against a real cluster: a Job built from a Deployment runs `echo` and succeeds."""
    from kubernetes import client, config

    image = os.environ.get("ONEOFF_TEST_K8S_IMAGE", "busybox:1.36")
    config.load_kube_config()
    apps = client.AppsV1Api()
    namespace = "default"
    name = "oneoff-live-test"
    body = yaml.safe_load(EXAMPLE_DEPLOYMENT.read_text())
    body["metadata"] = {"name": name, "namespace": namespace}
    body["spec"]["replicas"] = 0
    body["spec"]["template"]["spec"] = {"containers": [{"name": "web", "image": image}]}
    apps.create_namespaced_deployment(namespace, body)
    try:
        root = make_app(
            tmp_path / "app",
            f"""
            [environments.cluster.executor]
            kind = "kubernetes"
            namespace = "{namespace}"
            deployment = "{name}"
            image = "{image}"
            [tasks.hello]
            argv = ["echo", "hello from the cluster"]
            timeout = "5m"
            """,
        )
        from oneoff._app import open_app
        from oneoff._executor.kubernetes import KubernetesExecutor

        app = open_app(root)
        try:
            plan = build_plan(app.project, "hello", "cluster", {}, fingerprint_key=b"k" * 32)
        finally:
            app.close()
        out: list[bytes] = []
        env = {"ONEOFF_RUN_ID": "r" + os.urandom(6).hex(), "ONEOFF_TASK": "hello"}
        result = KubernetesExecutor().execute(
            plan, env, lambda fd, chunk: out.append(chunk), stdin_data=None
        )
        assert result.exit_code == 0
        assert b"hello from the cluster" in b"".join(out)
    finally:
        apps.delete_namespaced_deployment(name, namespace)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('config = [{ dotenv = ".env" }]', "takes its config from the app's Deployment"),
        ("", None),
    ],
)
def test_kubernetes_environment_declaration(
    tmp_path: Path, cli_env: dict[str, str], extra: str, message: str | None
) -> None:
    """A kubernetes environment shows its Job's source and image in the plan, and refuses
    config sources of its own (its config is the Deployment's)."""
    from oneoff.testing import run_cli

    root = make_app(tmp_path / "app", MANIFEST.format(image=DIGEST, timeout="5m"))
    manifest = root / "oneoff.toml"
    manifest.write_text(
        manifest.read_text().replace(
            "[environments.cluster.executor]",
            f"[environments.cluster]\n{extra}\n[environments.cluster.executor]",
        )
    )
    result = run_cli(["plan", "migrate", "--env", "cluster", "-p", "token=@-"], cwd=root,
                     env=cli_env, stdin="tok-very-secret-123\n")  # fmt: skip
    if message is not None:
        assert result.exit_code == 2
        assert message in result.stderr
        return
    assert result.exit_code == 0, result.stderr
    assert (
        "executor   kubernetes Job (from deployment notes/notes-web); "
        f"image {DIGEST}; ttl 600s after finishing; context current"
    ) in result.stdout


def test_replayed_job_deadline_is_a_timeout(tmp_path: Path, replay: Any) -> None:
    """A container ended by the Job's activeDeadlineSeconds is a timed-out run (exit 124)."""
    job_failed = recorded("job_created")
    job_failed["status"] = {
        "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                        "message": "Job was active longer than specified deadline"}],
    }  # fmt: skip
    routes = happy_path("failed", b"working...\n")
    routes = [r for r in routes if r[1] != POD]
    killed = pod_in("failed")
    killed["status"]["containerStatuses"][0]["state"]["terminated"].update(
        exitCode=143, reason="Error"
    )
    routes.insert(7, ("GET", POD, 200, killed))
    routes.insert(8, ("GET", JOBS + "/oneoff-r20261206abc$", 200, job_failed))
    replay(routes)
    result, output = execute(make_plan(tmp_path))
    assert (result.exit_code, result.status) == (124, "timed_out")
    assert output == b"working...\n"


def test_replayed_cancel_deletes_the_job_in_the_foreground(tmp_path: Path, replay: Any) -> None:
    """Ctrl-C while the pod waits deletes the Job with foreground propagation (its pod and
    Secret go with it), and the run ends as cancelled (exit 130)."""
    import signal
    import time

    routes = [r for r in happy_path("succeeded", b"") if r[1] != PODS]
    routes.insert(4, ("GET", PODS, 200, pods("unschedulable")))
    server = replay(routes)

    def interrupt_once_waiting() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(m == "GET" and "/pods?" in p for m, p, _ in server.requests):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=interrupt_once_waiting)
    thread.start()
    try:
        result, _ = execute(make_plan(tmp_path))
    finally:
        thread.join()
    assert (result.exit_code, result.status) == (130, "cancelled")
    method, path, _ = server.requests[-1]
    assert method == "DELETE"
    assert "propagationPolicy=Foreground" in path
