"""Plans: fully resolved, hashed canonically, and changed by anything that changes the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oneoff._app import App
from oneoff._canonical import canonical_json
from oneoff._manifest import load_project
from oneoff._pipeline import RunRequest, make_plan
from oneoff.errors import ParamError, UsageError
from oneoff.testing import make_app

KEY = b"k" * 32

MANIFEST = """
[environments.dev]
config = [{ dotenv = ".env" }]

[environments.other]
config = [{ dotenv = ".env" }]

[tasks.t]
argv = ["tool", "--name={name}", "{target}"]
params.name = { type = "string", default = "x" }
params.target = { type = "string", pattern = "[-a-z]+", default = "db" }
params.token = { type = "secret", required = false }
"""


def plan_for(root: Path, env: str = "dev", shell: dict[str, str] | None = None, **params: str):  # type: ignore[no-untyped-def]
    app = App(load_project(root))
    return make_plan(app, RunRequest("t", env, params), operator_env=shell or {})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_app(tmp_path, MANIFEST, {".env": "A=1\nAPI_TOKEN=tok-123456789\n"})


def test_hash_is_stable(root: Path) -> None:
    """The same request on the same config gives the same hash, whatever the terminal."""
    first = plan_for(root, shell={"TERM": "xterm"})
    second = plan_for(root, shell={"TERM": "dumb", "COLUMNS": "80"})
    assert first.hash == second.hash
    assert first.hash.startswith("sha256:")


@pytest.mark.parametrize(
    "change",
    [
        {"params": {"name": "y"}},
        {"env": "other"},
        {"dotenv": "A=2\nAPI_TOKEN=tok-123456789\n"},
        {"params": {"token": "another-secret-1"}},
    ],
)
def test_anything_that_changes_the_run_changes_the_hash(
    root: Path, change: dict[str, object]
) -> None:
    """Params, environment, config values and secret params are all covered by the hash."""
    base = plan_for(root, **{"token": "first-secret-123"})
    if "dotenv" in change:
        (root / ".env").write_text(str(change["dotenv"]))
    params = {"token": "first-secret-123", **dict(change.get("params", {}))}  # type: ignore[call-overload]
    other = plan_for(root, env=str(change.get("env", "dev")), **params)
    assert other.hash != base.hash


def test_document_holds_no_secret(root: Path) -> None:
    """The hashed document carries fingerprints, never a secret value."""
    plan = plan_for(root, token="super-secret-value")
    text = canonical_json(plan.document()).decode()
    assert "super-secret-value" not in text
    assert "tok-123456789" not in text
    assert "super-secret-value" not in json.dumps(plan.to_json())
    assert plan.env.values["ONEOFF_PARAM_TOKEN"] == "super-secret-value"


def test_params_stay_single_arguments(root: Path) -> None:
    """A param value is substituted inside one argv element and never split."""
    plan = plan_for(root, name="a-b", target="with-dash")
    assert plan.argv == ("tool", "--name=a-b", "with-dash")


def test_leading_dash_refused_for_whole_argument(root: Path) -> None:
    """A value that would be read as an option is refused."""
    with pytest.raises(ParamError, match="read as an option"):
        plan_for(root, target="-rf")


def test_unknown_things(root: Path) -> None:
    """Unknown tasks, environments and params are usage errors naming the alternatives."""
    app = App(load_project(root))
    with pytest.raises(UsageError, match="unknown task 'nope'"):
        make_plan(app, RunRequest("nope", "dev", {}))
    with pytest.raises(UsageError, match=r"unknown environment 'prod'.*dev, other"):
        make_plan(app, RunRequest("t", "prod", {}))
    with pytest.raises(ParamError, match="has no param 'colour'"):
        make_plan(app, RunRequest("t", "dev", {"colour": "red"}))
