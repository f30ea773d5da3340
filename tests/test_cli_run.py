"""`oneoff run` end to end, as real processes started from an operator's shell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oneoff.testing import make_app, run_cli


def runs_json(app: Path, env: dict[str, str]) -> list[dict[str, object]]:
    result = run_cli(["runs", "--json"], cwd=app, env=env)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, list)
    return data


def test_example_app_migrates_and_is_recorded(example_app: Path, cli_env: dict[str, str]) -> None:
    """The README's main job works: migrate the example app and see the run recorded."""
    result = run_cli(["run", "migrate", "--env", "development"], cwd=example_app, env=cli_env)
    assert result.exit_code == 0, result.stderr
    assert "applied 0001_notes.sql" in result.stdout
    runs = runs_json(example_app, cli_env)
    assert runs[0]["task"] == "migrate"
    assert runs[0]["status"] == "succeeded"
    assert runs[0]["exit_code"] == 0
    assert runs[0]["params"] == {"target": "latest"}
    shown = run_cli(["show", str(runs[0]["id"])[:12]], cwd=example_app, env=cli_env)
    assert "succeeded" in shown.stdout


def test_shell_variables_do_not_reach_the_task(app: Path, cli_env: dict[str, str]) -> None:
    """A variable exported in the operator's shell does not reach the task."""
    env = {**cli_env, "LEAKY_SECRET": "from-my-shell", "LD_PRELOAD": "", "PYTHONPATH": "/tmp/evil"}
    result = run_cli(["run", "printenv", "--env", "development", "-q"], cwd=app, env=env)
    assert result.exit_code == 0, result.stderr
    seen = json.loads(result.stdout)
    assert "LEAKY_SECRET" not in seen
    assert "PYTHONPATH" not in seen
    assert "LD_PRELOAD" not in seen
    assert seen["GREETING"] == "hi"
    assert seen["ONEOFF_TASK"] == "printenv"
    assert seen["ONEOFF_ENVIRONMENT"] == "development"
    assert seen["ONEOFF_RUN_ID"].startswith("r")


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_code_propagates(app: Path, cli_env: dict[str, str], code: int) -> None:
    """The task's exit code is oneoff's exit code, and it is recorded."""
    result = run_cli(
        ["run", "fail", "--env", "development", "-p", f"code={code}"], cwd=app, env=cli_env
    )
    assert result.exit_code == code
    run = runs_json(app, cli_env)[0]
    assert run["exit_code"] == code
    assert run["status"] == ("succeeded" if code == 0 else "failed")


BAD_INPUTS = [
    (["run", "nope", "--env", "development"], "unknown task"),
    (["run", "hello", "--env", "staging"], "unknown environment"),
    (["run", "hello"], "--env is required"),
    (["run", "hello", "--env", "development", "-p", "colour=red"], "has no param"),
    (["run", "hello", "--env", "development", "-p", "name"], "NAME=VALUE"),
    (["run", "fail", "--env", "development", "-p", "code=1; rm -rf ~"], "must be an integer"),
    (["run", "fail", "--env", "development", "-p", "code=256"], "<= 255"),
    (["run", "hello", "--env", "development", "-p", "name=; rm -rf ~"], "shell metacharacters"),
    (["run", "hello", "--env", "development", "-p", "name=$(id)"], "shell metacharacters"),
    (["run", "hello", "--env", "development", "-p", "name=`id`"], "shell metacharacters"),
    (["run", "hello", "--env", "development", "-p", "name=a\nb"], "newline"),
    (["run", "hello", "--env", "development", "-p", "name=--help"], "read as an option"),
    (["run", "wipe", "--env", "production"], "--confirm production"),
    (["run", "wipe", "--env", "production", "--confirm", "prod"], "does not match"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_runs_nothing(
    app: Path, cli_env: dict[str, str], args: list[str], message: str
) -> None:
    """Bad input: a one-line error naming the problem, exit 2, nothing run or recorded."""
    result = run_cli(args, cwd=app, env=cli_env)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("oneoff: error:")]
    assert len(error_lines) == 1
    assert result.stdout == ""
    assert not (app / ".oneoff" / "state.db").exists() or runs_json(app, cli_env) == []


def test_nul_byte_refused(app: Path) -> None:
    """A NUL in a param (possible in-process, not via exec) is refused."""
    from oneoff.testing import invoke

    result = invoke(["run", "hello", "--env", "development", "-p", "name=a\x00b"])
    assert result.exit_code == 2
    assert "NUL" in result.stderr


def test_injection_is_inert_when_pattern_allows_it(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """Even a value full of shell syntax reaches the task as one literal argument."""
    root = make_app(
        tmp_path,
        """
        [environments.development]
        [tasks.echo]
        argv = ["python", "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", "{v}"]
        params.v = { type = "string", pattern = ".*", max_length = 2000 }
        """,
    )
    marker = tmp_path / "pwned"
    value = f"x; touch {marker} $(touch {marker}) `touch {marker}` | touch {marker}"
    result = run_cli(["run", "echo", "-p", f"v={value}", "-q"], cwd=root, env=cli_env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [value]
    assert not marker.exists()


def test_critical_task_on_protected_env_with_confirmation(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Typing the environment's name lets a permitted person run a critical task there."""
    from _access_kit import make_access_app, make_keys, release

    keys = make_keys(tmp_path / "keys")
    root = make_access_app(tmp_path / "app", keys)
    with (root / "oneoff.toml").open("a") as fh:
        fh.write('\n[tasks.wipe]\nargv = ["python", "-c", "print(\'wiped\')"]\nrisk = "critical"\n')
    (root / "policies" / "wipe.cedar").write_text(
        'permit (principal in Oneoff::Group::"oncall", action == Oneoff::Action::"run",'
        ' resource == Oneoff::Task::"wipe");\n'
    )
    release(root, "production", keys["alice"].parent / "release.key")
    base = ["run", "wipe", "--env", "production", "--key", str(keys["dave"])]
    unconfirmed = run_cli(base, cwd=root, env=cli_env)
    assert unconfirmed.exit_code == 2
    assert "--confirm production" in unconfirmed.stderr
    wrong = run_cli([*base, "--confirm", "staging"], cwd=root, env=cli_env)
    assert wrong.exit_code == 2
    confirmed = run_cli([*base, "--confirm", "production"], cwd=root, env=cli_env)
    assert confirmed.exit_code == 0, confirmed.stderr
    assert "wiped" in confirmed.stdout


def test_timeout_kills_task_and_grandchildren(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A timed-out task is killed with its grandchildren (no orphans) and exits 124."""
    pids = tmp_path / "pids"
    script = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)'])\n"
        f"open({str(pids)!r}, 'w').write('%d %d' % (os.getpid(), child.pid))\n"
        "time.sleep(300)\n"
    )
    root = make_app(
        tmp_path / "app",
        f"""
        [environments.development]
        [tasks.hang]
        argv = ["python", "-c", {json.dumps(script)}]
        timeout = 1
        grace = 1
        """,
    )
    started = time.monotonic()
    result = run_cli(["run", "hang"], cwd=root, env=cli_env, timeout=60)
    assert result.exit_code == 124, result.output
    assert time.monotonic() - started < 30
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid), f"pid {pid} survived the timeout"
    assert "timed_out" in result.stderr


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def start_waiting_task(
    tmp_path: Path, script: str, env: dict[str, str]
) -> tuple[Path, subprocess.Popen[bytes]]:
    """Start `oneoff run wait` for a task running ``script``, as a real background process."""
    root = make_app(
        tmp_path / "app",
        f"""
        [environments.development]
        [tasks.wait]
        argv = ["python", "-c", {json.dumps(script)}]
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "oneoff", "run", "wait"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return root, proc


def wait_for_file(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_are_forwarded(tmp_path: Path, cli_env: dict[str, str], signum: int) -> None:
    """SIGINT/SIGTERM sent to oneoff reach the task, which can clean up; the run is cancelled."""
    ready, marker = tmp_path / "ready", tmp_path / "got-signal"
    script = (
        "import signal, sys, time, pathlib\n"
        "def handler(n, f):\n"
        f"    pathlib.Path({str(marker)!r}).write_text(str(n)); sys.exit(128 + n)\n"
        "signal.signal(signal.SIGINT, handler); signal.signal(signal.SIGTERM, handler)\n"
        f"pathlib.Path({str(ready)!r}).write_text('1')\n"
        "time.sleep(60)\n"
    )
    root, proc = start_waiting_task(tmp_path, script, cli_env)
    wait_for_file(ready)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert marker.read_text() == str(int(signum))
    assert proc.returncode == 128 + signum
    run = runs_json(root, cli_env)[0]
    assert run["status"] == "cancelled", err


def test_killed_runner_leaves_a_lost_run_not_a_running_one(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """After kill -9 of the runner, its task dies too and the next command marks the run lost."""
    pid_file = tmp_path / "task-pid"
    script = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    )
    root, proc = start_waiting_task(tmp_path, script, cli_env)
    wait_for_file(pid_file)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    task_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(task_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(task_pid), "the task outlived its runner"
    run = runs_json(root, cli_env)[0]
    assert run["status"] == "lost"
    assert run["ended_at"]


def test_command_not_found(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A program missing from the task's PATH exits 127 before anything is recorded."""
    root = make_app(
        tmp_path, '[environments.development]\n[tasks.x]\nargv = ["no-such-program-xyz"]\n'
    )
    result = run_cli(["run", "x"], cwd=root, env=cli_env)
    assert result.exit_code == 127
    assert "no-such-program-xyz" in result.stderr
