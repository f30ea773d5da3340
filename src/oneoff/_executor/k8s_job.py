"""The Kubernetes Job of a run, built from the app's own Deployment (pure data, no client).

The Job's pod is the Deployment's pod template with only what makes it a one-off changed:
the chosen container's command is the task's argv (args cleared), its image is the one the
release pins by digest, probes and ports go (nothing serves traffic), and the template's
labels are replaced by oneoff's, so the app's Services and ReplicaSets never select the
one-off pod. Everything else (env, envFrom ConfigMaps and Secrets, volumes, service
account, security contexts, resources, node selection) stays the app's own: identical by
construction. Secret params never appear in the manifest: they live in a per-run Secret
the Job owns (deleted with it), referenced by name.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from oneoff.errors import ExecError, UsageError

if TYPE_CHECKING:
    from oneoff._plan import Plan

__all__ = ["build_job", "build_secret", "job_name"]

LABEL_PREFIX = "oneoff.dev/"
_DROP_FROM_CONTAINER = ("args", "livenessProbe", "readinessProbe", "startupProbe", "ports")


def job_name(run_id: str) -> str:
    """A valid DNS-1123 name for the run's Job (run ids are lowercase letters and digits)."""
    return "oneoff-" + run_id.lower()


def run_labels(plan: Plan, run_id: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "oneoff",
        LABEL_PREFIX + "run-id": run_id.lower(),
        LABEL_PREFIX + "task": plan.task.name,
        LABEL_PREFIX + "environment": plan.environment.name,
    }


def build_job(
    deployment: Mapping[str, Any],
    plan: Plan,
    run_id: str,
    requester: str,
    run_env: Mapping[str, str],
) -> dict[str, Any]:
    """The ``batch/v1`` Job for one run, created suspended (its Secret is made first)."""
    spec = plan.environment.executor
    template = copy.deepcopy(deployment.get("spec", {}).get("template", {}))
    pod = template.get("spec") or {}
    containers = pod.get("containers") or []
    if not containers:
        raise ExecError(f"deployment {spec.namespace}/{spec.deployment} has no containers")
    wanted = spec.container or containers[0].get("name")
    matches = [c for c in containers if c.get("name") == wanted]
    if not matches:
        names = ", ".join(str(c.get("name")) for c in containers)
        raise UsageError(
            f"deployment {spec.namespace}/{spec.deployment} has no container {wanted!r} "
            f"(containers: {names})"
        )
    container = matches[0]
    for key in _DROP_FROM_CONTAINER:
        container.pop(key, None)
    container["image"] = spec.image
    container["command"] = list(plan.argv)
    if plan.task.cwd != ".":
        base = container.get("workingDir") or "/"
        container["workingDir"] = base.rstrip("/") + "/" + plan.task.cwd
    env = [
        e for e in container.get("env") or [] if not str(e.get("name", "")).startswith("ONEOFF_")
    ]
    env += [{"name": k, "value": v} for k, v in sorted(run_env.items())]
    secret = secret_name(run_id)
    for name, param in sorted(plan.task.params.items()):
        if param.secret and name in plan.params:
            if param.deliver != "env":
                raise UsageError(
                    f"secret param {name!r} is delivered on stdin, which a Kubernetes Job "
                    'does not have; use deliver = "env" for this environment'
                )
            ref = {"secretKeyRef": {"name": secret, "key": _secret_key(name)}}
            env.append({"name": param.env_var, "valueFrom": ref})
    container["env"] = env
    # Sidecars and init containers of the app stay; but a one-off pod must end, so
    # restartable (sidecar) init containers keep running only until the task ends.
    pod["containers"] = [c if c.get("name") != wanted else container for c in containers]
    pod["restartPolicy"] = "Never"
    pod["terminationGracePeriodSeconds"] = plan.task.grace
    labels = run_labels(plan, run_id)
    annotations = {
        LABEL_PREFIX + "plan-hash": plan.hash,
        LABEL_PREFIX + "requester": requester,
        LABEL_PREFIX + "release": plan.release_id or "",
    }
    # The pod carries the run's labels; the plan hash and requester annotate the Job (the
    # pod's owner), which also keeps them within podman kube play's 63-character limit.
    template["metadata"] = {"labels": dict(labels)}
    template["spec"] = pod
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(run_id),
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "suspend": True,
            "backoffLimit": 0,
            "activeDeadlineSeconds": plan.task.timeout,
            "ttlSecondsAfterFinished": spec.ttl,
            "template": template,
        },
    }


def secret_name(run_id: str) -> str:
    return job_name(run_id) + "-params"


def _secret_key(param: str) -> str:
    return param.replace("_", "-")  # keys are [-._a-zA-Z0-9]; params are snake_case


def build_secret(plan: Plan, run_id: str, job_uid: str) -> dict[str, Any] | None:
    """The per-run Secret holding the secret params, owned by (deleted with) the Job."""
    values = plan.secret_param_values()
    if not values:
        return None
    spec = plan.environment.executor
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(run_id),
            "namespace": spec.namespace,
            "labels": run_labels(plan, run_id),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job_name(run_id),
                    "uid": job_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {
            _secret_key(k): base64.b64encode(v.encode()).decode() for k, v in sorted(values.items())
        },
    }
