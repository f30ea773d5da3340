"""Loading oneoff.toml: every mistake is a one-line error naming the file (and line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oneoff._manifest import find_app_root, load_project
from oneoff.errors import ManifestError, UsageError
from oneoff.testing import make_app

ENV = "[environments.development]\nconfig = []\n"


def load(tmp_path: Path, text: str) -> object:
    return load_project(make_app(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ENV + '[tasks.a]\nargv = "rm -rf /"\n', "not a shell string"),
        (ENV + "[tasks.a]\nargv = []\n", "must not be empty"),
        (ENV + '[tasks.a]\nargv = ["x", "{nope}"]\n', "declares no such param"),
        (ENV + '[tasks.a]\nargv = ["{p}"]\nparams.p = {}\n', r"argv\[0\]"),
        (
            ENV + '[tasks.a]\nargv = ["x", "{p}"]\nparams.p = { type = "secret" }\n',
            "cannot appear in argv",
        ),
        (ENV + '[tasks.a]\nargv = ["x"]\nparams.p = {}\n', "not used in argv"),
        (ENV + '[tasks.a]\nargv = ["x"]\nrisk = "medium"\n', "risk must be"),
        (ENV + '[tasks.a]\nargv = ["x"]\nenvironments = ["prod"]\n', "unknown environment"),
        (ENV + '[tasks.a]\nargv = ["x"]\ntimeout = "soon"\n', "duration"),
        (ENV + '[tasks.a]\nargv = ["x"]\nshell = true\n', "unknown key"),
        (ENV + '[tasks.A]\nargv = ["x"]\n', "name must match"),
        (ENV + '[tasks.a]\nargv = ["x", "{bad name}"]\n', "malformed placeholder"),
        ("[environments.p]\nprotected = true\nallow_os_user = true\n", "OS user"),
        ('[environments.p]\nconfig = [{ inherit = ["*"] }]\n', "bare"),
        ('[environments.p]\nconfig = [{ dotenv = ".env", command = ["x"] }]\n', "exactly one"),
        ('[tasks.a]\nargv = ["x"]\n', "declares no"),
    ],
)
def test_invalid_declarations(tmp_path: Path, text: str, message: str) -> None:
    """Each invalid declaration is refused with a message saying what is wrong."""
    with pytest.raises(ManifestError, match=message) as info:
        load(tmp_path, text)
    assert "oneoff.toml" in info.value.message


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    """A TOML syntax error names the file and the line."""
    with pytest.raises(ManifestError, match=r"oneoff\.toml.*line 3"):
        load(tmp_path, ENV + "[tasks.a\n")


def test_task_errors_name_the_line(tmp_path: Path) -> None:
    """A task's error points at the line its table starts on."""
    with pytest.raises(ManifestError, match=r"oneoff\.toml:4: task 'a'"):
        load(tmp_path, ENV + '\n[tasks.a]\nargv = "x"\n')


def test_pyproject_table_is_accepted(tmp_path: Path) -> None:
    """[tool.oneoff] in pyproject.toml works like oneoff.toml."""
    (tmp_path / "pyproject.toml").write_text(
        "[project]\nname='x'\n[tool.oneoff.environments.development]\n"
        "[tool.oneoff.tasks.t]\nargv=['true']\n"
    )
    assert find_app_root(tmp_path / ".") == tmp_path.resolve()
    assert list(load_project(tmp_path).tasks) == ["t"]


def test_procfile_is_read_as_argv(tmp_path: Path) -> None:
    """Process types come from the Procfile when oneoff.toml declares none."""
    make_app(
        tmp_path,
        ENV,
        {"Procfile": "web: gunicorn app:app --bind 0.0.0.0:$PORT\nworker: rq worker\n"},
    )
    project = load_project(tmp_path)
    assert project.processes["web"] == ("gunicorn", "app:app", "--bind", "0.0.0.0:$PORT")


def test_procfile_shell_syntax_refused(tmp_path: Path) -> None:
    """A Procfile line that needs a shell is refused, not run through one."""
    make_app(tmp_path, ENV, {"Procfile": "web: migrate && gunicorn app\n"})
    project = load_project(tmp_path)
    assert "web" not in project.processes
    with pytest.raises(ManifestError, match=r"Procfile:1: '&&' needs a shell"):
        project.process("web")


def test_environment_is_never_guessed(tmp_path: Path) -> None:
    """With several environments, or a protected one, --env is required."""
    two = load_project(make_app(tmp_path / "a", ENV + "[environments.staging]\n"))
    with pytest.raises(UsageError, match="--env is required"):
        two.environment(None)  # type: ignore[attr-defined]
    protected = load_project(
        make_app(tmp_path / "b", "[environments.production]\nprotected = true\n")
    )
    with pytest.raises(UsageError, match="protected"):
        protected.environment(None)  # type: ignore[attr-defined]
    one = load_project(make_app(tmp_path / "c", ENV))
    assert one.environment(None).name == "development"  # type: ignore[attr-defined]


def test_missing_manifest(tmp_path: Path) -> None:
    """Without a declaration anywhere above, oneoff says how to create one."""
    with pytest.raises(UsageError, match=r"no oneoff\.toml") as info:
        find_app_root(tmp_path)
    assert info.value.hint is not None
    assert "oneoff init" in info.value.hint
