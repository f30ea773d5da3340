"""The container executor: the task in the release's image, through podman's (or docker's) CLI.

Threat model: the same as the sandbox's (a hostile task must not change the release, see
the operator's files or reach the network it did not declare), plus *identity*: the task
runs in the image the app's processes run in, pinned by digest, so a moved tag cannot
swap the code under an approval. The environment reaches the engine as its own
environment and the container by name only (``-e NAME``): values are never in argv
(visible in ``ps``) nor in a file. The engine keeps no log of the output
(``--log-driver none``): the only copy is the redacted one oneoff shows and stores.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
from collections.abc import Mapping
from typing import TYPE_CHECKING

from oneoff._executor.interface import OutputSink
from oneoff.errors import ExecError, OutOfMemory

if TYPE_CHECKING:
    from oneoff._contain import RunTree
    from oneoff._plan import Plan
    from oneoff._proc import ProcessResult

__all__ = ["ContainerExecutor", "container_argv", "engine_env", "find_engine"]

# What the engine itself needs from the operator's environment to find its storage,
# configuration and socket; nothing else of the operator's shell reaches it.
ENGINE_VARS = (
    "PATH", "HOME", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "TMPDIR",
    "CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF",
    "CONTAINER_HOST", "CONTAINER_CONNECTION", "DOCKER_HOST", "DOCKER_CONFIG",
    "DOCKER_CONTEXT", "REGISTRY_AUTH_FILE", "DBUS_SESSION_BUS_ADDRESS",
)  # fmt: skip
# Host-specific values oneoff adds for a local process; the image has its own.
_HOST_ONLY = {"PATH": "oneoff default", "HOME": "OS user"}
_CLEANUP_SECONDS = 60
# How long a stopped container may take to go away before the run fails, naming it.
_REMOVAL_SECONDS = 10


def find_engine(engine: str) -> str:
    found = shutil.which(engine)
    if found is None:
        raise ExecError(
            f"the container executor needs {engine}, which is not installed",
            hint=f"apt-get install {engine}, or choose another executor for this environment",
        )
    return found


def engine_env(operator_env: Mapping[str, str], task_env: Mapping[str, str]) -> dict[str, str]:
    """The engine's environment: its own variables plus the task's, which it passes on."""
    own = {k: operator_env[k] for k in ENGINE_VARS if k in operator_env}
    for key, value in task_env.items():
        if key in own and own[key] != value:
            raise ExecError(
                f"the task's variable {key} is also one the container engine reads itself; "
                "it cannot be passed without changing the engine's own setting"
            )
    return {**own, **task_env}


def task_env(plan: Plan, env: Mapping[str, str]) -> dict[str, str]:
    """The plan's environment and the run's ``ONEOFF_*`` variables, minus what only makes
    sense on this host: its PATH and HOME, and the runner's own additions (such as its
    bytecode cache directory)."""
    origin = plan.env.origin
    return {
        k: v for k, v in env.items()
        if (k in origin or k.startswith("ONEOFF_"))
        and (k not in _HOST_ONLY or origin.get(k) != _HOST_ONLY[k])
    }  # fmt: skip


def container_argv(
    plan: Plan, names: list[str], engine: str, container: str, *, interactive: bool, stdin: bool
) -> list[str]:
    """The engine command line: options and variable *names*, never a variable's value."""
    spec = plan.environment.executor
    assert spec.image is not None
    workdir = posixpath.normpath(posixpath.join(spec.workdir, plan.task.cwd))
    argv = [engine, "run", "--rm", "--name", container, "--pull", "never"]
    argv += ["--log-driver", "none", "--workdir", workdir]
    argv += ["--network", spec.network if plan.task.network else "none"]
    if spec.runtime:
        argv += ["--runtime", spec.runtime]
    if engine.endswith("podman"):
        # A backstop should the runner die (SIGKILL) mid-run: conmon itself kills the
        # container once the task's timeout and grace are over.
        argv += ["--timeout", str(plan.task.timeout + plan.task.grace)]
    if spec.read_only:
        argv += ["--read-only", "--tmpfs", "/tmp"]  # noqa: S108 (a mount in the container)
    if spec.user:
        argv += ["--user", spec.user]
    if spec.memory:
        argv += ["--memory", spec.memory, "--memory-swap", spec.memory]
    if spec.cpus is not None:
        argv += ["--cpus", f"{spec.cpus:g}"]
    for mount in spec.mounts:
        source = os.path.join(plan.project.root, mount.source)  # absolute sources stay
        if not os.path.exists(source):
            raise ExecError(f"container mount source {mount.source} does not exist ({source})")
        option = f"type=bind,source={source},target={mount.target}"
        argv += ["--mount", option + (",readonly" if mount.read_only else "")]
    argv += ["--label", f"oneoff.run={container}", "--label", f"oneoff.plan={plan.hash}"]
    if interactive:
        argv += ["--interactive", "--tty"]
    elif stdin:
        argv.append("--interactive")
    for name in sorted(names):
        argv += ["--env", name]
    return [*argv, spec.image, *plan.argv]


class ContainerExecutor:
    name = "container"

    def execute(
        self,
        plan: Plan,
        env: Mapping[str, str],
        on_output: OutputSink,
        *,
        stdin_data: bytes | None,
        tree: RunTree | None = None,
    ) -> ProcessResult:
        import sys

        from oneoff._proc import run_process

        spec = plan.environment.executor
        engine = find_engine(spec.engine)
        inner = task_env(plan, env)
        full = engine_env(os.environ, inner)
        container = "oneoff-" + env.get("ONEOFF_RUN_ID", "run").lower()
        interactive = plan.task.interactive and os.isatty(0)
        if plan.task.interactive and not interactive:
            # No terminal to relay: the console reads the piped script as plain stdin.
            stdin_data = (stdin_data or b"") + sys.stdin.buffer.read()
        argv = container_argv(
            plan, list(inner), engine, container,
            interactive=interactive, stdin=stdin_data is not None,
        )  # fmt: skip
        result = None
        try:
            result = run_process(
                argv, env=full, cwd=plan.project.root, timeout=float(plan.task.timeout),
                grace=float(plan.task.grace), on_output=on_output, stdin_data=stdin_data,
                interactive=interactive, tree=tree,
            )  # fmt: skip
        finally:
            if result is None or result.status in ("timed_out", "cancelled") or result.signal:
                # The engine's client was stopped, not the container: make sure it is gone.
                _remove(engine, container, full)
        if result.exit_code == 137 and result.status == "failed" and spec.memory:
            raise OutOfMemory(
                f"the container was killed (SIGKILL) with a memory limit of {spec.memory}: "
                "out of memory",
                hint="raise memory in the environment's executor, or make the task use less",
            )
        return result


def _remove(engine: str, container: str, env: Mapping[str, str]) -> None:
    """Remove the container and see it gone before the run ends, or say it is not.

    ``rm --force`` can fail or race: the killed client's own ``--rm`` clean-up may hold
    the container, or it may still be "stopping". So it is asked again until the engine
    answers "no such container"; a container that stays is an error (the run fails,
    naming it), never a silent leftover. conmon's ``--timeout`` is the backstop.
    """
    import time

    deadline = time.monotonic() + _REMOVAL_SECONDS
    why = ""
    while True:
        removal = subprocess.run(
            [engine, "rm", "--force", "--time", "0", "--ignore", container],
            env=dict(env), stdin=subprocess.DEVNULL, capture_output=True,
            timeout=_CLEANUP_SECONDS, check=False,
        )  # fmt: skip
        if removal.returncode != 0:
            why = _last_line(removal.stderr) or f"{engine} rm exited {removal.returncode}"
        probe = subprocess.run(
            [engine, "container", "inspect", "--format", "{{.State.Status}}", container],
            env=dict(env), stdin=subprocess.DEVNULL, capture_output=True,
            timeout=_CLEANUP_SECONDS, check=False,
        )  # fmt: skip
        if probe.returncode != 0 and "no such" in probe.stderr.decode(errors="replace").lower():
            return
        if probe.returncode == 0:
            why = why or f"it is still {probe.stdout.decode(errors='replace').strip()}"
        else:
            why = _last_line(probe.stderr) or why
        if time.monotonic() >= deadline:
            raise ExecError(
                f"the container {container} could not be removed: {why}",
                hint=f"remove it yourself: {engine} rm --force {container}",
            )
        time.sleep(0.2)


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def available(engine: str = "podman") -> tuple[bool, str]:
    """Whether the engine answers here (its runtime and storage are usable)."""
    try:
        path = find_engine(engine)
    except ExecError as exc:
        return False, exc.message
    env = {k: os.environ[k] for k in ENGINE_VARS if k in os.environ}
    probe = [path, "info", "--format", "{{.Host.OCIRuntime.Name}}"]
    if engine == "docker":
        probe = [path, "info", "--format", "{{.DefaultRuntime}}"]
    try:
        done = subprocess.run(probe, env=env, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return False, f"{engine} info did not answer within 60 s"
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return False, f"{engine} does not work here: " + (lines[-1] if lines else "")
    runtime = done.stdout.decode(errors="replace").strip()
    return True, f"{engine} at {path} (runtime {runtime})"
