"""Spawning a task straight into its run's cgroup (clone3 + CLONE_INTO_CGROUP), for real."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneoff._contain import capability
from oneoff._spawn import spawn_into

pytestmark = pytest.mark.skipif(
    capability().method != "cgroup2", reason=f"no writable cgroup v2 here: {capability().detail}"
)

REPORT = """
import json, os
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
print(json.dumps({
    "cgroup": open("/proc/self/cgroup").read(),
    "cwd": os.getcwd(),
    "leads_group": os.getpgid(0) == os.getpid(),
    "fds": [fd for fd in range(1024) if is_open(fd)],
    "stdin": os.read(0, 10).decode(),
    "var": os.environ.get("SPAWN_TEST"),
    "env_size": len(os.environ),
}))
"""


@pytest.fixture
def cgroup() -> Iterator[str]:
    base = capability().base
    assert base is not None
    path = os.path.join(base, f"rtest-{uuid.uuid4().hex[:12]}")
    os.mkdir(path)
    try:
        yield path
    finally:
        os.rmdir(path)


def _spawn(cgroup: str, argv: list[str], cwd: str) -> tuple[int, bytes]:
    """Run argv to completion in ``cgroup``; its exit code and stdout."""
    out_r, out_w = os.pipe()
    try:
        child = spawn_into(
            cgroup, argv, argv[0], {"SPAWN_TEST": "yes"}, cwd,
            streams=(None, out_w, out_w), new_session=False, setup=None,
        )  # fmt: skip
        os.close(out_w)
        out_w = -1
        assert child is not None
        data = b""
        while chunk := os.read(out_r, 65536):
            data += chunk
        code = child.wait(timeout=60)
        assert code is not None
        return code, data
    finally:
        os.close(out_r)
        if out_w >= 0:
            os.close(out_w)


def test_the_child_is_born_in_the_cgroup_with_a_clean_start(cgroup: str, tmp_path: Path) -> None:
    """The task starts inside the run's cgroup (this process never enters it), in its own
    process group, in the given directory, with only stdin/stdout/stderr open, stdin on
    /dev/null, SIGPIPE back to its default and exactly the given environment."""
    held = os.open(os.devnull, os.O_RDONLY)  # an inheritable descriptor of ours
    os.set_inheritable(held, True)
    before = Path("/proc/self/cgroup").read_text()
    try:
        code, out = _spawn(cgroup, [sys.executable, "-c", REPORT], str(tmp_path))
    finally:
        os.close(held)
    assert code == 0, out
    report = json.loads(out)
    unified = [ln for ln in report["cgroup"].splitlines() if ln.startswith("0::")]
    assert unified == ["0::/oneoff/" + os.path.basename(cgroup)] or unified[0].endswith(
        "/oneoff/" + os.path.basename(cgroup)
    ), report["cgroup"]
    assert Path("/proc/self/cgroup").read_text() == before
    assert report["cwd"] == str(tmp_path)
    assert report["leads_group"] is True
    assert report["fds"] == [0, 1, 2]
    assert report["stdin"] == ""
    assert report["var"] == "yes"
    assert report["env_size"] <= 3  # ours, plus what the interpreter itself sets (LC_CTYPE)
    # Python ignores SIGPIPE in this process (and in any Python it starts, by itself); a
    # program started here gets the default back, as with subprocess.
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    code, out = _spawn(cgroup, ["/bin/grep", "SigIgn", "/proc/self/status"], str(tmp_path))
    assert code == 0, out
    assert int(out.split()[1], 16) & (1 << (signal.SIGPIPE - 1)) == 0


def test_an_exec_failure_is_an_oserror_and_leaves_no_child(cgroup: str, tmp_path: Path) -> None:
    """A program that cannot be executed raises OSError with its errno, as subprocess does,
    and nothing is left in the cgroup."""
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError, match="Permission denied") as caught:
        _spawn(cgroup, [str(script)], str(tmp_path))
    assert caught.value.errno == 13  # EACCES
    assert Path(cgroup, "cgroup.procs").read_text() == ""


def test_a_failing_set_up_is_reported(cgroup: str, tmp_path: Path) -> None:
    """An exception in the set-up function run between clone and exec becomes an OSError."""

    def setup() -> None:
        raise RuntimeError("refused in the child")

    out_r, out_w = os.pipe()
    try:
        with pytest.raises(OSError, match="refused in the child"):
            spawn_into(
                cgroup, ["/bin/true"], "/bin/true", {}, str(tmp_path),
                streams=(None, out_w, out_w), new_session=False, setup=setup,
            )  # fmt: skip
    finally:
        os.close(out_r)
        os.close(out_w)


def test_a_threaded_process_spawns_through_a_fork(cgroup: str, tmp_path: Path) -> None:
    """With another thread running (a lock's lease renewer), a single-threaded fork does
    the clone: the task is still born in the cgroup, and is this process's own child."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        code, out = _spawn(cgroup, [sys.executable, "-c", REPORT], str(tmp_path))
    finally:
        stop.set()
        thread.join()
    assert code == 0, out  # reaped by waitpid here: our child
    report = json.loads(out)
    assert report["cgroup"].rstrip().endswith("/oneoff/" + os.path.basename(cgroup))
    assert report["leads_group"] is True
    assert report["fds"] == [0, 1, 2]
