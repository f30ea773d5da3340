"""The container executor, for real with podman and runc, on an image built offline here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from _podman import build_busybox_image, remove_image, why_podman_cannot_run, write_engine_conf
from oneoff.testing import make_app, run_cli

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "notes"

pytestmark = pytest.mark.skipif(
    why_podman_cannot_run() is not None, reason=str(why_podman_cannot_run())
)


@pytest.fixture(scope="session")
def engine_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The operator's environment for podman on this machine: runc, no default ulimits."""
    return write_engine_conf(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory, engine_env: dict[str, str]) -> Iterator[str]:
    """A busybox image imported from a rootfs built here (no registry), as name@sha256:..."""
    reference = build_busybox_image(tmp_path_factory.mktemp("rootfs"), engine_env)
    yield reference
    remove_image(reference, engine_env)


MANIFEST = """
[environments.boxed]
config = [{{ dotenv = ".env" }}]
executor = {{ kind = "container", image = "{image}", runtime = "runc", memory = "{memory}" }}

[environments.limited.executor]
kind = "container"
image = "{image}"
runtime = "runc"
user = "1000:1000"
cpus = 0.5
read_only = false

[tasks.whoami]
argv = ["sh", "-c", "id -u; id -g; touch /made-here && echo root-writable"]

[tasks.hello]
argv = ["sh", "-c", "echo hello $GREETING from $(id -u) in $(pwd); ls /sys/class/net"]

[tasks.secret]
argv = ["sh", "-c", "echo key=$SECRET_KEY home=$HOME"]

[tasks.exit]
argv = ["sh", "-c", "exit $0", "{{code}}"]
params.code = {{ type = "int", min = 0, max = 255 }}

[tasks.write-root]
argv = ["sh", "-c", "touch /tmp/ok && echo tmp-ok && touch /bin/evil"]

[tasks.host]
argv = ["ls", "{{path}}"]
params.path = {{ type = "string" }}

[tasks.hog]
argv = ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\\\0' a); echo survived"]

[tasks.slow]
argv = ["sleep", "300"]
timeout = 2
grace = 1

[tasks.stubborn]
argv = ["sh", "-c", "trap '' TERM; sleep 300"]
timeout = 2
grace = 1
"""


@pytest.fixture
def container_app(tmp_path: Path, image: str) -> Path:
    return make_app(
        tmp_path / "app",
        MANIFEST.format(image=image, memory="32m"),
        {".env": "GREETING=hi\nSECRET_KEY=super-secret-value-42\n"},
    )


@pytest.fixture
def env(cli_env: dict[str, str], engine_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, "CONTAINERS_CONF": engine_env["CONTAINERS_CONF"]}


def _containers(env: dict[str, str], app: Path) -> list[str]:
    """Containers left behind by this app's runs (other test runs may have their own)."""
    runs = json.loads(run_cli(["runs", "--json"], cwd=app, env=env).stdout)
    names = {f"oneoff-{run['id']}".lower() for run in runs}
    assert names
    done = subprocess.run(
        ["podman", "ps", "--all", "--filter", "label=oneoff.run", "--format", "{{.Names}}"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [name for name in done.stdout.split() if name in names]


def test_task_runs_in_the_image_with_the_plans_environment(
    container_app: Path, env: dict[str, str]
) -> None:
    """The task runs in the pinned image, in its working directory, with the env's config,
    without network, and leaves no container behind."""
    result = run_cli(["run", "hello", "--env", "boxed", "-q"], cwd=container_app, env=env)
    assert result.exit_code == 0, result.stderr
    first, *nets = result.stdout.split("\n")
    assert first == "hello hi from 0 in /app"
    assert [n for n in nets if n] == ["lo"]
    assert _containers(env, container_app) == []


def test_secrets_are_redacted_and_host_values_stay_out(
    container_app: Path, env: dict[str, str]
) -> None:
    """A secret the task prints is redacted; the host's HOME does not replace the image's."""
    result = run_cli(["run", "secret", "--env", "boxed", "-q"], cwd=container_app, env=env)
    assert result.exit_code == 0, result.stderr
    assert "super-secret" not in result.stdout
    assert "key=[REDACTED:SECRET_KEY]" in result.stdout
    assert f"home={os.environ.get('HOME')}" not in result.stdout


def test_environment_values_never_reach_the_engine_command_line(
    container_app: Path, cli_env: dict[str, str]
) -> None:
    """The engine gets variable names on its command line; their values only in its env."""
    from oneoff._app import open_app
    from oneoff._executor.container import container_argv, engine_env, task_env
    from oneoff._plan import build_plan

    app = open_app(container_app)
    try:
        plan = build_plan(app.project, "secret", "boxed", {}, fingerprint_key=b"k" * 32)
    finally:
        app.close()
    inner = task_env(plan, plan.env.values)
    argv = container_argv(plan, list(inner), "podman", "oneoff-x", interactive=False, stdin=False)
    assert not any("super-secret" in a for a in argv)
    assert argv[argv.index("SECRET_KEY") - 1] == "--env"
    assert "PATH" not in inner
    assert engine_env({"PATH": "/usr/bin"}, inner)["SECRET_KEY"] == "super-secret-value-42"


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_code_passes_through(container_app: Path, env: dict[str, str], code: int) -> None:
    """The task's exit code inside the container is oneoff's exit code."""
    result = run_cli(
        ["run", "exit", "--env", "boxed", "-q", "-p", f"code={code}"], cwd=container_app, env=env
    )
    assert result.exit_code == code, result.stderr


def test_root_filesystem_is_read_only(container_app: Path, env: dict[str, str]) -> None:
    """The image cannot be written to; the container's own /tmp can."""
    result = run_cli(["run", "write-root", "--env", "boxed", "-q"], cwd=container_app, env=env)
    assert result.exit_code == 1
    assert "tmp-ok" in result.stdout
    assert "Read-only file system" in result.stderr


def test_no_host_path_is_visible(container_app: Path, env: dict[str, str]) -> None:
    """Nothing of the host is mounted unless declared: the app's own files are not there."""
    result = run_cli(
        ["run", "host", "--env", "boxed", "-q", "-p", f"path={container_app}"],
        cwd=container_app, env=env,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "No such file or directory" in result.stderr


def test_out_of_memory_is_reported_as_such(container_app: Path, env: dict[str, str]) -> None:
    """A task killed at its memory limit ends with a clear message and exit 137, audited."""
    result = run_cli(["run", "hog", "--env", "boxed", "-q"], cwd=container_app, env=env)
    assert result.exit_code == 137, result.stderr
    assert "out of memory" in result.stderr
    assert "survived" not in result.stdout
    runs = json.loads(run_cli(["runs", "--json"], cwd=container_app, env=env).stdout)
    assert runs[0]["status"] == "failed"
    assert _containers(env, container_app) == []


def test_timeout_stops_and_removes_the_container(container_app: Path, env: dict[str, str]) -> None:
    """A task past its timeout is stopped, then killed; no container is left (exit 124)."""
    result = run_cli(["run", "slow", "--env", "boxed", "-q"], cwd=container_app, env=env)
    assert result.exit_code == 124, result.stderr
    assert _containers(env, container_app) == []


def _flaky_engine(tmp_path: Path, env: dict[str, str], failures: int) -> dict[str, str]:
    """podman behind a shim whose first FAILURES `rm` calls fail, as a racing clean-up's do."""
    real = shutil.which("podman", path=env.get("PATH"))
    assert real is not None
    bin_dir = tmp_path / "shim"
    bin_dir.mkdir()
    count = tmp_path / "rm-calls"
    count.write_text("0")
    shim = bin_dir / "podman"
    shim.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = rm ]; then\n'
        f"  n=$(cat {count}); echo $((n + 1)) > {count}\n"
        f'  if [ "$n" -lt {failures} ]; then\n'
        '    echo "Error: cannot remove container: it is being stopped" >&2; exit 125\n'
        "  fi\n"
        "fi\n"
        # While its removal fails, the engine still lists the container ("stopping"), as a
        # real racing clean-up does: otherwise the run's own SIGKILL of the tree can let
        # conmon's exit clean-up remove it first, and the retries go untested.
        'if [ "$1" = container ] && [ "$2" = inspect ]; then\n'
        f'  if [ "$(cat {count})" -le {failures} ]; then echo stopping; exit 0; fi\n'
        "fi\n"
        f'exec {real} "$@"\n'
    )
    shim.chmod(0o755)
    return {**env, "PATH": f"{bin_dir}:{env.get('PATH', '')}"}


def test_timed_out_container_is_gone_even_when_removal_fails_at_first(
    container_app: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """The run returns only once the engine says the container is gone, retrying `rm`."""
    flaky = _flaky_engine(tmp_path, env, failures=2)
    # A task that ignores SIGTERM: its container outlives the killed client until removed.
    result = run_cli(["run", "stubborn", "--env", "boxed", "-q"], cwd=container_app, env=flaky)
    assert result.exit_code == 124, result.stderr
    assert int((tmp_path / "rm-calls").read_text()) >= 3
    assert _containers(env, container_app) == []


def test_container_that_cannot_be_removed_fails_the_run_naming_it(
    container_app: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """A container the engine will not remove is an error (exit 125), never a silent leftover."""
    flaky = _flaky_engine(tmp_path, env, failures=10_000)
    # A task that ignores SIGTERM: nothing but `rm` would take its container away.
    result = run_cli(["run", "stubborn", "--env", "boxed", "-q"], cwd=container_app, env=flaky)
    left = _containers(env, container_app)
    for name in left:
        subprocess.run(["podman", "rm", "--force", "--time", "0", name], env=env, check=False)
    assert result.exit_code == 125, result.stderr
    run = json.loads(run_cli(["runs", "--json"], cwd=container_app, env=env).stdout)[0]
    container = f"oneoff-{run['id']}".lower()
    assert f"the container {container} could not be removed" in result.stderr
    assert f"podman rm --force {container}" in result.stderr
    assert run["status"] == "failed"


def test_missing_engine_is_a_clear_error(container_app: Path, env: dict[str, str]) -> None:
    """Without podman on PATH the run fails closed (exit 125) and says what is missing."""
    bare = container_app.parent / "bin"
    bare.mkdir()
    result = run_cli(
        ["run", "hello", "--env", "boxed"], cwd=container_app, env={**env, "PATH": str(bare)}
    )
    assert result.exit_code == 125
    assert "needs podman, which is not installed" in result.stderr


def test_plan_shows_the_image_digest_and_hashes_it(
    container_app: Path, env: dict[str, str], image: str
) -> None:
    """`oneoff plan` shows the full container spec; another digest is another plan hash."""
    plan = run_cli(["plan", "hello", "--env", "boxed"], cwd=container_app, env=env)
    assert plan.exit_code == 0, plan.stderr
    assert f"executor   container (podman, runtime runc); image {image}; network none" in (
        plan.stdout
    )
    first = json.loads(
        run_cli(["plan", "hello", "--env", "boxed", "--json"], cwd=container_app, env=env).stdout
    )
    assert first["document"]["executor"]["image"] == image
    manifest = container_app / "oneoff.toml"
    manifest.write_text(manifest.read_text().replace(image[-64:], "0" * 64))
    second = json.loads(
        run_cli(["plan", "hello", "--env", "boxed", "--json"], cwd=container_app, env=env).stdout
    )
    assert second["hash"] != first["hash"]


def test_protected_environment_needs_a_digest(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A protected environment refuses an image named by a tag alone (exit 2)."""
    app = make_app(
        tmp_path / "app",
        """
        [environments.production]
        protected = true
        executor = { kind = "container", image = "registry.example/app:latest" }

        [tasks.hello]
        argv = ["true"]
        """,
    )
    result = run_cli(["tasks"], cwd=app, env=cli_env)
    assert result.exit_code == 2
    assert "has no digest; a protected environment pins its image" in result.stderr


def test_release_refuses_another_image_digest(
    container_app: Path, env: dict[str, str], image: str, release_key: tuple[Path, str]
) -> None:
    """The release records the image digest (in its manifest digest): a changed digest is
    drift, and the run is refused (exit 6)."""
    manifest = container_app / "oneoff.toml"
    manifest.write_text(
        f'[release]\ntrusted_keys = ["{release_key[1]}"]\n'
        + manifest.read_text().replace(
            "[environments.boxed]", "[environments.boxed]\nrelease = { require_signed = true }"
        )
    )
    created = run_cli(
        ["release", "create", "--env", "boxed", "--key", str(release_key[0])],
        cwd=container_app, env=env,
    )  # fmt: skip
    assert created.exit_code == 0, created.stderr
    verified = run_cli(["release", "verify", "--env", "boxed"], cwd=container_app, env=env)
    manifest.write_text(manifest.read_text().replace(image[-64:], "1" * 64))
    changed = run_cli(["release", "verify", "--env", "boxed"], cwd=container_app, env=env)
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    assert changed.exit_code == 6
    assert "oneoff.toml" in changed.stdout + changed.stderr


@pytest.mark.skipif(not Path("/usr/bin/python3").is_file(), reason="needs Debian's python3")
def test_example_app_migrates_in_its_own_image(
    example_app: Path, env: dict[str, str], engine_env: dict[str, str]
) -> None:
    """The README's container example: build the notes image offline with its documented
    command, then `oneoff run migrate --env container` migrates the database in ./var."""
    built = subprocess.run(
        [sys.executable, "container/build_image.py", "--tag", "oneoff-test"],
        cwd=example_app, env=engine_env, capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    pinned = built.stdout.strip()
    assert pinned.startswith("localhost/notes@sha256:")
    try:
        manifest = example_app / "oneoff.toml"
        manifest.write_text(manifest.read_text().replace("localhost/notes:latest", pinned))
        (example_app / "var").mkdir()
        result = run_cli(["run", "migrate", "--env", "container"], cwd=example_app, env=env)
        plan = run_cli(["plan", "migrate", "--env", "container"], cwd=example_app, env=env)
    finally:
        remove_image("localhost/notes:oneoff-test", engine_env)
    assert result.exit_code == 0, result.stderr
    assert "3 migration(s) applied; database is at 0003" in result.stdout
    assert (example_app / "var" / "notes-dev.db").stat().st_size > 0
    assert f"image {pinned}" in plan.stdout


def test_user_limits_and_writable_root_as_declared(
    container_app: Path, env: dict[str, str]
) -> None:
    """The declared user runs the task; read_only = false gives a writable root, which the
    declared user still cannot write to where the image does not let it."""
    result = run_cli(["run", "whoami", "--env", "limited", "-q"], cwd=container_app, env=env)
    assert result.stdout.split("\n")[:2] == ["1000", "1000"], result.stderr
    assert result.exit_code == 1
    assert "Permission denied" in result.stderr
