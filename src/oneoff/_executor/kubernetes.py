"""The Kubernetes Job executor: the task as a Job built from the app's own Deployment.

Through the official ``kubernetes`` client (the ``oneoff[kubernetes]`` extra, imported only
here): read the Deployment, create the Job suspended, create the per-run Secret owned by
it, resume the Job, wait for its pod, stream its log through the same redaction as local
output, and map how the pod ended to the run's outcome. Cancelling (SIGINT/SIGTERM) or any
failure on our side deletes the Job with foreground propagation, so its pod and Secret go
with it; a finished Job stays for ``ttl`` seconds (its output is already in oneoff's store).

Threat model: the one-off runs with exactly the app's pod identity and config (service
account, env, envFrom, volumes), in the image the release pins by digest; secret params
never appear in the Job's manifest, only in a Secret that dies with the Job. Not defended:
whoever may read Secrets or exec into pods in the namespace sees what the app sees.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from oneoff._executor.interface import OutputSink
from oneoff._executor.k8s_job import build_job, build_secret, job_name
from oneoff.errors import ExecError, OutOfMemory, PodNeverScheduled

if TYPE_CHECKING:
    from oneoff._contain import RunTree
    from oneoff._plan import Plan
    from oneoff._proc import ProcessResult

__all__ = ["KubernetesExecutor", "job_env", "load_client"]

# A pod still waiting for one of these will not start by waiting longer.
_FATAL_WAITING = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
     "CreateContainerError", "RunContainerError"}
)  # fmt: skip


def load_client(context: str | None) -> Any:
    """An API client from the kubeconfig (``$KUBECONFIG``, ``~/.kube/config``) or the pod's
    service account; a clear error when the extra or the configuration is missing."""
    try:
        from kubernetes import client
        from kubernetes import config as kube_config
    except ImportError:
        raise ExecError(
            "the kubernetes executor needs the official Kubernetes client",
            hint="pip install 'oneoff[kubernetes]'",
        ) from None
    import os

    # A configuration of our own, not the client's global one: KUBECONFIG is read now (the
    # client reads it once, at import), and nothing else in the process is affected.
    config: Any = kube_config  # its loaders are untyped
    settings = client.Configuration()
    try:
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), context=context,
            client_configuration=settings,
        )  # fmt: skip
    except (config.ConfigException, OSError, TypeError) as kube_error:
        try:
            config.load_incluster_config(client_configuration=settings)
        except config.ConfigException:
            raise ExecError(f"no usable Kubernetes configuration: {kube_error}") from None
    return client.ApiClient(settings)


def job_env(plan: Plan, env: Mapping[str, str]) -> dict[str, str]:
    """What the Job adds to the Deployment's own env: the run's ``ONEOFF_*`` variables and
    oneoff's process defaults. Config comes from the Deployment (identical by
    construction); secret params come from the run's Secret; this host's PATH, HOME and
    terminal stay here."""
    origin = plan.env.origin
    return {
        k: v for k, v in env.items()
        if k.startswith("ONEOFF_") or (origin.get(k) == "oneoff default" and k != "PATH")
    }  # fmt: skip


class _Cancelled(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class KubernetesExecutor:
    name = "kubernetes"

    def __init__(self, poll: float = 1.0, requester: str = "") -> None:
        self.poll = poll
        self.requester = requester

    def execute(
        self,
        plan: Plan,
        env: Mapping[str, str],
        on_output: OutputSink,
        *,
        stdin_data: bytes | None,
        tree: RunTree | None = None,
    ) -> ProcessResult:
        from kubernetes.client import ApiException

        if plan.task.interactive:
            raise ExecError("interactive tasks cannot run as Kubernetes Jobs")
        spec = plan.environment.executor
        api = load_client(spec.context)
        run_id = env.get("ONEOFF_RUN_ID", "")
        run_env = job_env(plan, env)
        requester = env.get("ONEOFF_REQUESTER", self.requester)
        session = _Session(api, str(spec.namespace), job_name(run_id), self.poll)
        try:
            deployment = session.deployment(str(spec.deployment))
        except ApiException as exc:
            raise _api_error(exc, f"deployment {spec.namespace}/{spec.deployment}") from None
        job = build_job(deployment, plan, run_id, requester, run_env)
        start = time.monotonic()
        previous = _catch_signals()
        try:
            try:
                uid = session.create_job(job)
                secret = build_secret(plan, run_id, uid)
                if secret is not None:
                    session.create_secret(secret)
                session.resume()
                deadline = start + plan.task.timeout + plan.task.grace
                pod = session.wait_for_pod(deadline)
                container = job["spec"]["template"]["spec"]["containers"]
                name = spec.container or container[0]["name"]
                for chunk in session.logs(pod, name):
                    on_output(1, chunk)
                return _outcome(session.wait_for_end(pod, name, deadline), start, spec.memory)
            except _Cancelled as cancel:
                session.delete()
                return _result(128 + cancel.signum, "cancelled", start)
            except ApiException as exc:
                session.delete()
                raise _api_error(exc, f"job {session.namespace}/{session.job}") from None
            except BaseException:
                session.delete()
                raise
        finally:
            _restore_signals(previous)


class _Session:
    """One run's conversation with the API server."""

    def __init__(self, api: Any, namespace: str, job: str, poll: float) -> None:
        from kubernetes import client

        self.api = api
        self.namespace = namespace
        self.job = job
        self.poll = poll
        # The client's models are typed, its raw responses are not: read both as Any.
        self.apps: Any = client.AppsV1Api(api)
        self.batch: Any = client.BatchV1Api(api)
        self.core: Any = client.CoreV1Api(api)
        self.created = False

    def deployment(self, name: str) -> dict[str, Any]:
        found = self.apps.read_namespaced_deployment(name, self.namespace)
        return dict(self.api.sanitize_for_serialization(found))

    def create_job(self, job: dict[str, Any]) -> str:
        created = self.batch.create_namespaced_job(self.namespace, job)
        self.created = True
        return str(created.metadata.uid)

    def create_secret(self, secret: dict[str, Any]) -> None:
        self.core.create_namespaced_secret(self.namespace, secret)

    def resume(self) -> None:
        self.batch.patch_namespaced_job(self.job, self.namespace, {"spec": {"suspend": False}})

    def _pod(self) -> Any | None:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={self.job}")
        return pods.items[0] if pods.items else None

    def wait_for_pod(self, deadline: float) -> str:
        """The pod's name once its container started (or ended); refuses a stuck pod."""
        why = "no pod was created for the job"
        while time.monotonic() < deadline:
            pod = self._pod()
            if pod is not None:
                phase = pod.status.phase
                if phase in ("Running", "Succeeded", "Failed"):
                    return str(pod.metadata.name)
                why = _pending_reason(pod)
                for status in pod.status.container_statuses or []:
                    waiting = status.state.waiting if status.state else None
                    if waiting is not None and waiting.reason in _FATAL_WAITING:
                        raise ExecError(
                            f"pod {pod.metadata.name} cannot start: {waiting.reason}: "
                            f"{waiting.message or ''}".rstrip(": ")
                        )
            time.sleep(self.poll)
        self.delete()
        raise PodNeverScheduled(f"the job's pod did not start before the task's timeout: {why}")

    def logs(self, pod: str, container: str) -> Iterator[bytes]:
        response = self.core.read_namespaced_pod_log(
            pod, self.namespace, container=container, follow=True, _preload_content=False
        )
        try:
            yield from response.stream(65536)
        finally:
            response.release_conn()

    def wait_for_end(self, pod: str, container: str, deadline: float) -> tuple[int, str]:
        """The container's exit code and reason once it terminated, or (-1, why)."""
        from kubernetes.client import ApiException

        while True:
            try:
                found = self.core.read_namespaced_pod(pod, self.namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                # The Job controller deletes the pods of a Job past its deadline.
                return -1, "DeadlineExceeded" if self.deadline_exceeded() else "pod deleted"
            for status in found.status.container_statuses or []:
                term = status.state.terminated if status.state else None
                if status.name == container and term is not None:
                    code, reason = int(term.exit_code), str(term.reason or "")
                    if code in (137, 143) and reason != "OOMKilled" and self.deadline_exceeded():
                        return -1, "DeadlineExceeded"
                    return code, reason
            if found.status.phase == "Failed":
                return -1, str(found.status.reason or found.status.message or "pod failed")
            if time.monotonic() >= deadline:
                self.delete()
                return -1, "DeadlineExceeded"
            time.sleep(self.poll)

    def deadline_exceeded(self) -> bool:
        """Whether the Job failed at its activeDeadlineSeconds (the task's timeout)."""
        job = self.batch.read_namespaced_job(self.job, self.namespace)
        conditions = (job.status.conditions if job.status else None) or []
        return any(c.type == "Failed" and c.reason == "DeadlineExceeded" for c in conditions)

    def delete(self) -> None:
        if not self.created:
            return
        from kubernetes.client import ApiException

        try:
            self.batch.delete_namespaced_job(
                self.job, self.namespace, propagation_policy="Foreground"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        self.created = False


def _pending_reason(pod: Any) -> str:
    for condition in pod.status.conditions or []:
        if condition.type == "PodScheduled" and condition.status != "True":
            return f"not scheduled: {condition.reason}: {condition.message}"
    return f"pod {pod.metadata.name} is {pod.status.phase}"


def _outcome(ended: tuple[int, str], start: float, memory: str | None) -> ProcessResult:
    code, reason = ended
    if reason == "OOMKilled":
        raise OutOfMemory(
            "the job's container was killed at its memory limit (OOMKilled)",
            hint="raise the memory limit in the app's Deployment, or make the task use less",
        )
    if reason == "DeadlineExceeded":
        return _result(124, "timed_out", start)
    if code < 0:
        raise ExecError(f"the job's pod failed before its container ended: {reason}")
    return _result(code, "succeeded" if code == 0 else "failed", start)


def _result(code: int, status: Any, start: float) -> ProcessResult:
    from oneoff._proc import ProcessResult

    return ProcessResult(code, status, None, time.monotonic() - start)


def _api_error(exc: Any, what: str) -> ExecError:
    if exc.status == 404:
        return ExecError(f"{what} not found")
    if exc.status in (401, 403):
        return ExecError(f"the Kubernetes API refused access to {what} ({exc.status} {exc.reason})")
    return ExecError(f"the Kubernetes API failed on {what}: {exc.status} {exc.reason}")


def _catch_signals() -> dict[int, Any]:
    """SIGINT/SIGTERM end the run by deleting its Job, not by killing oneoff mid-way."""

    def on_signal(signum: int, frame: object) -> None:
        raise _Cancelled(signum)

    previous: dict[int, Any] = {}
    handler: Callable[[int, Any], None] = on_signal
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: the caller handles signals
            break
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
