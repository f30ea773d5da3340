"""The sandbox executor: the local executor inside bubblewrap (Linux).

Threat model: the task itself, or a dependency it imports, is hostile or compromised. It
must not change the release it runs from (code and virtualenv are read-only), read the
operator's credentials (``~/.ssh``, ``~/.aws``, ``~/.kube``: every home is hidden behind an
empty tmpfs), reach the network unless the task declares ``network = true`` (a new network
namespace holds only a down loopback), talk to host daemons over their sockets (``/run``
is hidden too without network), or leave anything running (a new pid namespace: when the
task ends its init dies and the kernel kills everything left in it). It keeps every
capability dropped, so even as root it cannot remount its way out.

It cannot read or change oneoff's own state either (the app's ``.oneoff/``: the store with
every run's output, the audit signing key): an empty tmpfs covers it.

Not defended: the kernel itself, and files outside the homes that the operator can read
(the sandbox sees the host's ``/`` read-only, like the task would without it).
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Mapping
from typing import TYPE_CHECKING

from oneoff._executor.interface import OutputSink
from oneoff._executor.local import LocalExecutor
from oneoff._record import replace
from oneoff.errors import ExecError

if TYPE_CHECKING:
    from oneoff._contain import RunTree
    from oneoff._plan import Plan
    from oneoff._proc import ProcessResult

__all__ = ["SandboxExecutor", "bwrap_argv", "find_bwrap"]

_HOMES = ("/home", "/root")


def find_bwrap() -> str:
    """The bubblewrap binary on the operator's PATH, or a clear error."""
    found = shutil.which("bwrap")
    if found is None:
        raise ExecError(
            "the sandbox executor needs bubblewrap, which is not installed",
            hint='apt-get install bubblewrap (Debian/Ubuntu), or use kind = "local"',
        )
    return found


def hidden_paths() -> list[str]:
    """Every home directory, and where the operator's own is if it lives elsewhere."""
    paths = list(_HOMES)
    for home in (os.environ.get("HOME"), pwd.getpwuid(os.getuid()).pw_dir):
        if home and os.path.isabs(home) and home != "/":
            paths.append(os.path.realpath(home))
    return sorted({p for p in paths if os.path.isdir(p)})


def bwrap_argv(plan: Plan, env: Mapping[str, str], bwrap: str, hide: list[str]) -> list[str]:
    """The bubblewrap command line (no secrets: the environment is inherited, not argv)."""
    root = str(plan.project.root)
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    # Private, writable and empty: the task's scratch space, gone when it ends.
    covered = ["/tmp", "/var/tmp", *hide]  # noqa: S108 (mount points, not files)
    if not plan.task.network:
        covered.append("/run")
    for path in covered:
        if os.path.isdir(path):
            argv += ["--tmpfs", path]
    # The app and the programs on its PATH come back (read-only) when a hidden tree holds
    # them; bubblewrap applies mounts in order, so these land on top of the tmpfs.
    exposed = {root, *_path_roots(env.get("PATH", ""))}
    for path in sorted(exposed):
        if any(_under(path, h) for h in covered):
            argv += ["--ro-bind", path, path]
    argv += _bytecode_cache(env.get("PYTHONPYCACHEPREFIX", ""), covered, exposed)
    for rel in plan.environment.executor.writable:
        target = (plan.project.root / rel).resolve()
        if not _under(str(target), root) or not target.is_dir():
            raise ExecError(
                f"sandbox writable path {rel!r} is not an existing directory inside the app"
            )
        argv += ["--bind", str(target), str(target)]
    # oneoff's own state (the store with every run's output and approvals, the audit
    # signing key) is not the task's to read or change, even where the app is writable.
    state = os.path.join(root, ".oneoff")
    for path in dict.fromkeys([state, os.path.realpath(state)]):
        if os.path.isdir(path):
            argv += ["--tmpfs", path]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not plan.task.network:
        argv.append("--unshare-net")
    argv += ["--die-with-parent", "--cap-drop", "ALL"]
    if not plan.task.interactive:
        # A new session: the task cannot push keystrokes into the operator's terminal
        # (TIOCSTI). A console needs the terminal as its controlling one, so it keeps it.
        argv.append("--new-session")
    argv += ["--chdir", str(plan.cwd), "--"]
    return argv


def _bytecode_cache(prefix: str, covered: list[str], exposed: set[str]) -> list[str]:
    """The app's bytecode cache (oneoff._bytecode), read-only, as far as the sandbox sees
    the sources it mirrors.

    Why: the cache lives in the operator's home, hidden like the rest of it; without it
    every sandboxed Python recompiles each module it imports that is not frozen into the
    interpreter, on every run (milliseconds for a ``python -c``, seconds for a framework).
    Read-only, so a task cannot plant bytecode that a later run would execute; what it
    compiles itself is thrown away. The cache mirrors sources by absolute path, so its
    subtrees for hidden directories are covered again (bytecode of a module that lives in
    a home says what the module says) and come back only for the app and its interpreter.
    """
    if not os.path.isabs(prefix) or not os.path.isdir(prefix):
        return []
    # Mounted where Python looks (the variable's path), from where it really is.
    source, target = os.path.realpath(prefix), os.path.normpath(prefix)
    argv = ["--ro-bind", source, target]
    for path in covered:
        if os.path.isdir(source + path):
            argv += ["--tmpfs", target + path]
    for path in sorted(exposed):
        if any(_under(path, h) for h in covered) and os.path.isdir(source + path):
            argv += ["--ro-bind", source + path, target + path]
    return argv


def _path_roots(path_var: str) -> list[str]:
    roots = []
    for entry in path_var.split(os.pathsep):
        if not os.path.isabs(entry) or not os.path.isdir(entry):
            continue
        real = os.path.realpath(entry)
        parent = os.path.dirname(real)
        cfg = os.path.join(parent, "pyvenv.cfg")
        if not os.path.isfile(cfg):
            roots.append(real)
            continue
        # A virtualenv's bin: expose the whole environment (its site-packages too) and the
        # interpreter it was made from (pyenv and friends keep that in a home directory).
        roots.append(parent)
        base = _venv_home(cfg)
        if base:
            roots.append(os.path.dirname(base) if os.path.basename(base) == "bin" else base)
    return roots


def _venv_home(cfg: str) -> str | None:
    try:
        with open(cfg, encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition("=")
                if key.strip() == "home" and os.path.isabs(value.strip()):
                    return os.path.realpath(value.strip())
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


class SandboxExecutor:
    name = "sandbox"

    def __init__(self, hide: list[str] | None = None) -> None:
        self.hide = hide

    def execute(
        self,
        plan: Plan,
        env: Mapping[str, str],
        on_output: OutputSink,
        *,
        stdin_data: bytes | None,
        tree: RunTree | None = None,
    ) -> ProcessResult:
        bwrap = find_bwrap()
        hide = self.hide if self.hide is not None else hidden_paths()
        prefix = bwrap_argv(plan, env, bwrap, hide)
        inner = replace(plan, argv=(*prefix, *plan.argv))
        return LocalExecutor().execute(inner, env, on_output, stdin_data=stdin_data, tree=tree)


def available() -> tuple[bool, str]:
    """Whether this machine can run the sandbox, by running an empty one."""
    import subprocess

    try:
        bwrap = find_bwrap()
    except ExecError as exc:
        return False, exc.message
    probe = [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
             "--unshare-pid", "--unshare-net", "--cap-drop", "ALL", "--", "true"]  # fmt: skip
    done = subprocess.run(probe, capture_output=True, timeout=30, check=False)
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        return False, "bubblewrap cannot create namespaces here: " + (reason[-1] if reason else "")
    return True, f"bubblewrap at {bwrap}"
