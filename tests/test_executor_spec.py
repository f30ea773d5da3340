"""Executor selection in oneoff.toml: validation, `oneoff doctor`, and an absent executor."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oneoff.testing import make_app, run_cli

SANDBOXED = """
[environments.boxed]
executor = { kind = "sandbox" }

[tasks.hello]
argv = ["python", "-c", "print('hello')"]
"""


@pytest.mark.parametrize(
    ("executor", "message"),
    [
        ('{ kind = "vm" }', "unknown kind 'vm'"),
        ('"sandbox"', "must be a table"),
        ('{ kind = "sandbox", image = "x" }', "unknown key(s) for kind 'sandbox': image"),
        ('{ kind = "sandbox", writable = ["../elsewhere"] }', "relative path inside the app"),
        ('{ kind = "sandbox", writable = ["/etc"] }', "relative path inside the app"),
    ],
)
def test_bad_executor_is_a_clear_manifest_error(
    tmp_path: Path, cli_env: dict[str, str], executor: str, message: str
) -> None:
    """An unknown or malformed executor is refused at load, naming the environment (exit 2)."""
    app = make_app(tmp_path / "app", SANDBOXED.replace('{ kind = "sandbox" }', executor))
    result = run_cli(["plan", "hello", "--env", "boxed"], cwd=app, env=cli_env)
    assert result.exit_code == 2
    assert "environment 'boxed': executor" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_reports_the_executors_this_machine_runs(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """`oneoff doctor` lists each executor with whether it works here, found by trying it."""
    result = run_cli(["doctor", "--json"], cwd=tmp_path, env=cli_env)
    assert result.exit_code == 0, result.stderr
    report = {c["name"]: c for c in json.loads(result.stdout)}
    assert report["executor local"]["ok"] is True
    assert report["executor sandbox"]["ok"] is os.path.exists("/usr/bin/bwrap")
    assert "executor container (podman)" in report
    assert "executor kubernetes" in report
    assert not any(name.startswith("environment ") for name in report)


def test_missing_bubblewrap_is_reported_refused_and_audited(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Without bwrap on PATH, doctor says why, and a sandboxed run fails closed (exit 125),
    recorded as failed with the reason in the audit log."""
    app = make_app(tmp_path / "app", SANDBOXED)
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(Path(cli_env["PATH"].split(os.pathsep)[0]) / "python")
    env = {**cli_env, "PATH": str(bare)}
    doctor = run_cli(["doctor"], cwd=app, env=env)
    assert doctor.exit_code == 1
    lines = doctor.stdout.splitlines()
    sandbox = next(line for line in lines if " executor sandbox " in line)
    assert sandbox.split()[:4] == ["weak", "executor", "sandbox", "cannot"]
    assert "the sandbox executor needs bubblewrap" in sandbox
    boxed = next(line for line in lines if " environment boxed " in line)
    assert "its tasks cannot run here: see executor sandbox" in boxed
    result = run_cli(["run", "hello", "--env", "boxed"], cwd=app, env=env)
    assert result.exit_code == 125
    assert "needs bubblewrap" in result.stderr
    assert "hello" not in result.stdout
    runs = json.loads(run_cli(["runs", "--json"], cwd=app, env=cli_env).stdout)
    assert runs[0]["status"] == "failed"
    from oneoff._app import open_app

    opened = open_app(app)
    try:
        events = [e for e in opened.audit.events() if e.kind == "run.finished"]
    finally:
        opened.close()
    assert events[-1].payload["error"].startswith("the sandbox executor needs bubblewrap")


_ANY = st.none() | st.booleans() | st.integers(-5, 5000) | st.floats() | st.text(max_size=8)
# Per key: values that pass its check, values near the edge, and anything at all.
_FIELDS = {
    "image": st.sampled_from(["app@sha256:" + "0" * 64, "app:latest", "a b", ""]),
    "engine": st.sampled_from(["podman", "docker", "lxc"]),
    "runtime": st.sampled_from(["runc", "crun", "-x"]),
    "workdir": st.sampled_from(["/app", "app", "/"]),
    "user": st.sampled_from(["1000:1000", "app", "x y"]),
    "memory": st.sampled_from(["256m", "2g", "0", "lots"]),
    "cpus": st.floats(min_value=0.01, max_value=64) | st.integers(-1, 8),
    "read_only": st.booleans(),
    "network": st.sampled_from(["bridge", "none", "host"]),
    "mounts": st.lists(
        st.fixed_dictionaries(
            {"source": st.sampled_from(["var", "/srv/x", "../up", "a,b"]),
             "target": st.sampled_from(["/data", "data", "/x:y"])},
            optional={"read_only": st.booleans()},
        ),
        max_size=2,
    ),
    "writable": st.lists(st.sampled_from(["var", "/etc", "a/../b", ""]), max_size=2),
    "namespace": st.sampled_from(["notes", "Notes", ""]),
    "deployment": st.sampled_from(["web", "-web"]),
    "container": st.sampled_from(["web", "WEB"]),
    "ttl": st.integers(-1, 10_000),
    "context": st.sampled_from(["prod", None]),
}  # fmt: skip
_kinds = st.sampled_from(["local", "sandbox", "container", "kubernetes", "vm"])
_tables = st.fixed_dictionaries(
    {},
    optional={k: v | _ANY for k, v in _FIELDS.items()},
)


@settings(max_examples=300, deadline=None)
@given(kind=_kinds, table=_tables, protected=st.booleans())
def test_any_executor_table_is_a_spec_or_a_manifest_error(
    kind: object, table: dict[str, object], protected: bool
) -> None:
    """Whatever an executor table holds, it parses into a spec whose plan document hashes
    canonically, or it is refused with a ManifestError naming the environment."""
    from oneoff._canonical import canonical_hash
    from oneoff._executor.spec import parse_executor
    from oneoff.errors import ManifestError

    try:
        spec = parse_executor({**table, "kind": kind}, "env 'e'", protected=protected)
    except ManifestError as exc:
        message = exc.message
        spec = None
    if spec is None:
        assert message.startswith("env 'e': executor")
        return
    assert len(canonical_hash(spec.document())) == 64
    if protected and spec.kind in ("container", "kubernetes"):
        assert spec.pinned


@settings(max_examples=200, deadline=None)
@given(
    cpus=st.floats(min_value=0.01, max_value=512) | st.integers(1, 64),
    memory=st.sampled_from(["64m", "256m", "2g"]),
    read_only=st.booleans(),
    user=st.sampled_from(["1000", "1000:1000", "app"]),
)
def test_valid_container_specs_hash_and_differ(
    cpus: float, memory: str, read_only: bool, user: str
) -> None:
    """Every valid container spec hashes into a plan, and each knob changes the hash."""
    from oneoff._canonical import canonical_hash
    from oneoff._executor.spec import parse_executor

    table = {"kind": "container", "image": "app@sha256:" + "0" * 64, "cpus": cpus,
             "memory": memory, "read_only": read_only, "user": user}  # fmt: skip
    spec = parse_executor(table, "env 'e'", protected=True)
    digest = canonical_hash(spec.document())
    assert canonical_hash(parse_executor({**table, "cpus": cpus + 1}, "e", protected=True)
                          .document()) != digest  # fmt: skip
    assert canonical_hash(parse_executor({**table, "read_only": not read_only}, "e",
                                         protected=True).document()) != digest  # fmt: skip
