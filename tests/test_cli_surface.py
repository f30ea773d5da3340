"""The CLI's surface: help for every option, typed JSON, --json where a script needs it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from oneoff.cli._parser import build_parser
from oneoff.testing import run_cli


def _undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    if not parser.description:
        missing.append(f"{path} (no description)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _undocumented(sub, f"{path} {name}")
        elif isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        elif not action.help or action.help == argparse.SUPPRESS:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_command_option_and_argument_has_help() -> None:
    """Every command has a description, and every option and argument a help text."""
    assert _undocumented(build_parser(), "oneoff") == []


def test_tasks_json_defaults_are_typed(app: Path, cli_env: dict[str, str]) -> None:
    """`tasks --json` gives an int param's default as a number and a bool's as a boolean."""
    (app / "oneoff.toml").write_text(
        (app / "oneoff.toml").read_text()
        + '\n[tasks.typed]\nargv = ["true", "{n}", "{flag}", "{name}"]\n'
        'params.n = { type = "int", default = 3 }\n'
        'params.flag = { type = "bool", default = true }\n'
        'params.name = { type = "string", default = "x" }\n'
    )
    tasks = json.loads(run_cli(["tasks", "--json"], cwd=app, env=cli_env).stdout)
    params = tasks["typed"]["params"]
    assert (params["n"]["default"], params["flag"]["default"]) == (3, True)
    assert params["name"]["default"] == "x"


def test_run_json_keeps_stdout_for_the_record(app: Path, cli_env: dict[str, str]) -> None:
    """`run --json` prints only the run's record on stdout; the task's output goes to
    stderr, and the exit code is still the task's."""
    ran = run_cli(["run", "fail", "--env", "development", "-p", "code=7", "--json"],
                  cwd=app, env=cli_env)  # fmt: skip
    assert ran.exit_code == 7
    record = json.loads(ran.stdout)
    assert (record["task"], record["status"], record["exit_code"]) == ("fail", "failed", 7)
    hello = run_cli(["run", "hello", "--env", "development", "--json"], cwd=app, env=cli_env)
    assert "hello world" in hello.stderr
    assert json.loads(hello.stdout)["status"] == "succeeded"
