"""The argument parser; each command's code is imported only when that command runs."""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from oneoff._version import __version__
from oneoff.cli._access_args import access_run_options, add_access_commands, key_option
from oneoff.cli._release_args import add_release_commands, release_options
from oneoff.cli._words import wanted_command

__all__ = ["build_parser", "dispatch"]

DESCRIPTION = (
    "Run a twelve-factor app's one-off admin processes (migrations, consoles, scripts) "
    "against its release, with its config and nothing else, recorded."
)
EPILOG = "Exit codes: 0 ok, 2 bad input, 3 not permitted, 4 approval, 5 lock busy, 6 release, " \
    "7 store, 8 audit, 9 secret, 124 timed out, 125 could not start, 127 not found; " \
    "otherwise the task's own exit code."  # fmt: skip


def _common(parser: argparse.ArgumentParser | _Skipped) -> None:
    # Each (sub)command keeps its own copy (dest tagged with its prog) whose default is
    # "not given": argparse copies a subcommand's namespace over the top level's, so a
    # shared dest with a default would silently undo `oneoff --app DIR run ...`.
    # ``merge_common`` reconciles the copies after parsing.
    if isinstance(parser, _Skipped):
        return
    top = parser.prog == "oneoff"
    suffix = "" if top else _COMMON_SEP + parser.prog
    parser.add_argument(
        "--app", type=Path, metavar="DIR", dest="app" + suffix,
        default=None if top else argparse.SUPPRESS,
        help="the app's root (default: search upward from .)",
    )  # fmt: skip
    parser.add_argument(
        "-v", "--verbose", action="store_true", dest="verbose" + suffix,
        default=False if top else argparse.SUPPRESS, help="show tracebacks for errors",
    )  # fmt: skip


_COMMON_SEP = "@"


def merge_common(args: argparse.Namespace) -> argparse.Namespace:
    """Fold every level's --app/-v into ``args.app``/``args.verbose``; two apps refuse."""
    apps: dict[str, Path] = {}
    for name, value in list(vars(args).items()):
        base, sep, _ = name.partition(_COMMON_SEP)
        if base == "app" and value is not None:
            apps.setdefault(os.path.abspath(value), value)
        if sep:
            delattr(args, name)
            if base == "verbose" and value:
                args.verbose = True
    if len(apps) > 1:
        from oneoff.errors import UsageError

        named = ", ".join(str(p) for p in apps.values())
        raise UsageError(f"--app names more than one app ({named}); name exactly one")
    args.app = next(iter(apps.values()), None)
    return args


def _env(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument(
        "-e", "--env", metavar="ENV", required=required,
        help="target environment (required when there are several, always for protected ones)",
    )  # fmt: skip


def _params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="NAME=VALUE",
        help="a task param; secret params take @FILE or @- (stdin), or are asked for",
    )  # fmt: skip


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _remote_read(parser: argparse.ArgumentParser) -> None:
    from oneoff.cli._access_args import server_option

    key_option(parser)
    server_option(parser)


class _Skipped:
    """Stands in for the parsers of commands not being run: every call is a cheap no-op."""

    def __getattr__(self, name: str) -> Callable[..., _Skipped]:
        return lambda *args, **kwargs: self


def _formatter(prog: str) -> argparse.HelpFormatter:
    # With an explicit width argparse does not import shutil (and zlib, bz2, lzma with it)
    # for every parser it builds.
    try:
        width = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(2).columns
    except (ValueError, OSError):
        width = 80
    return argparse.HelpFormatter(prog, width=max(width - 2, 40))


class _OnlyOne:
    """Builds only the named command's parser; argparse spends ~1 ms on each one it builds."""

    def __init__(self, sub: Any, wanted: str | None) -> None:
        self.sub = sub
        self.wanted = wanted
        self.found = False

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if self.wanted is not None and name != self.wanted:
            return _Skipped()
        self.found = True
        kwargs.setdefault("formatter_class", _formatter)
        parser: argparse.ArgumentParser = self.sub.add_parser(name, **kwargs)
        return parser


_prebuilt: argparse.ArgumentParser | None = None


def prebuild_parser() -> None:
    """Build the whole parser now and reuse it (the daemon does this once, before forking).

    Parsing does not change a parser, and nothing in it depends on the caller: widths for
    help are read from the caller's terminal when help is printed.
    """
    global _prebuilt
    _prebuilt = _build(_OnlyOne(None, None))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the command it names is built (the rest on --help)."""
    if _prebuilt is not None:
        return _prebuilt
    wanted = wanted_command(argv) if argv is not None else None
    if wanted is not None:
        only = _OnlyOne(None, wanted)
        parser = _build(only)
        if only.found:
            return parser
    return _build(_OnlyOne(None, None))


def _build(only: _OnlyOne) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oneoff", description=DESCRIPTION, epilog=EPILOG, formatter_class=_formatter
    )
    parser.add_argument("--version", action="version", version=f"oneoff {__version__}")
    _common(parser)
    only.sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub: Any = only

    def command(name: str, handler: str, help_text: str) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        _common(cmd)
        cmd.set_defaults(handler=handler)
        return cmd

    cmd = command("init", "oneoff.cli._init:cmd_init", "scaffold oneoff.toml for this app")
    cmd.add_argument("--force", action="store_true", help="overwrite an existing oneoff.toml")

    cmd = command("tasks", "oneoff.cli._init:cmd_tasks", "list the app's tasks")
    _json(cmd)

    cmd = command("plan", "oneoff.cli._run:cmd_plan", "show exactly what a run would do")
    cmd.add_argument("task", help="the task (see `oneoff tasks`)")
    _env(cmd)
    _params(cmd)
    _json(cmd)
    release_options(cmd)
    key_option(cmd)

    cmd = command("run", "oneoff.cli._run:cmd_run", "run a task as a one-off process")
    cmd.add_argument("task", nargs="?", help="the task (omit with --request)")
    _env(cmd)
    _params(cmd)
    cmd.add_argument(
        "--confirm", metavar="ENV", help="the environment's name, for critical tasks on "
        "protected environments when not on a terminal",
    )  # fmt: skip
    cmd.add_argument("-q", "--quiet", action="store_true", help="no summary line at the end")
    cmd.add_argument(
        "--json", action="store_true",
        help="print the run's record as JSON on stdout; the task's output goes to stderr",
    )  # fmt: skip
    release_options(cmd)
    access_run_options(cmd)
    from oneoff.cli._access_args import server_option

    server_option(cmd)  # [server] granted by the team server, recorded there

    cmd = command(
        "exec", "oneoff.cli._run:cmd_exec",
        "replace oneoff with a long-running process type (container entrypoint, systemd)",
    )  # fmt: skip
    cmd.add_argument("process", help="the process type (oneoff.toml [processes] or Procfile)")
    _env(cmd)
    release_options(cmd)

    cmd = command("env", "oneoff.cli._run:cmd_env", "show an environment's variables (masked)")
    _env(cmd)
    cmd.add_argument(
        "--diff", metavar="PROCESS",
        help="compare a one-off process's environment with this process type's",
    )  # fmt: skip
    _json(cmd)

    cmd = command("runs", "oneoff.cli._runs:cmd_runs", "list recorded runs, newest first")
    cmd.add_argument("--task", help="only runs of this task")
    _env(cmd)
    cmd.add_argument(
        "--status",
        help="only runs with this status: running, succeeded, failed, timed_out, cancelled, lost",
    )
    cmd.add_argument(
        "-n", "--limit", type=int, default=20, help="show at most this many (default: 20)"
    )
    _remote_read(cmd)
    _json(cmd)

    cmd = command("show", "oneoff.cli._runs:cmd_show", "show one run")
    cmd.add_argument("run", metavar="RUN", help="a run id or a unique prefix of one")
    _remote_read(cmd)
    _json(cmd)

    cmd = command(
        "completion", "oneoff.cli._completion:cmd_completion",
        "print shell completion for bash, zsh or fish (see the script's first line)",
    )  # fmt: skip
    cmd.add_argument("shell", choices=["bash", "zsh", "fish"], help="the shell to complete in")

    _add_daemon_commands(sub)
    cmd = command(
        "doctor", "oneoff.cli._doctor:cmd_doctor",
        "say what this machine lets oneoff guarantee and which executors it can run",
    )  # fmt: skip
    _json(cmd)
    # [commands: release] oneoff release ..., oneoff keys ...
    add_release_commands(sub, _common, _env, _json)
    # [commands: audit] oneoff audit ..., oneoff logs ...
    from oneoff.cli._audit_args import add_audit_commands

    add_audit_commands(sub, _common, _json)
    # [commands: access] oneoff request/approve/deny/requests/policy/locks ...
    add_access_commands(sub, _common, _env, _json, _params)
    # [commands: server] oneoff server migrate (issue #13)
    from oneoff.cli._server import add_server_commands

    add_server_commands(sub, _common)
    # [commands: login] oneoff login --web (issue #13, the web console)
    from oneoff.cli._login import add_login_command

    add_login_command(sub, _common)
    return parser


def _add_daemon_commands(sub: Any) -> None:
    help_text = "the preloaded runner that makes scripted runs start fast"
    parser = sub.add_parser("daemon", help=help_text, description=help_text)
    _common(parser)
    actions = parser.add_subparsers(dest="daemon_command", metavar="ACTION", required=True)
    for name, text in (
        ("start", "start it for this user and installation (idempotent)"),
        ("stop", "stop it"),
        ("status", "show whether it runs (exit 1 when not)"),
    ):
        cmd = actions.add_parser(name, help=text, description=text, formatter_class=_formatter)
        _common(cmd)
        cmd.set_defaults(handler=f"oneoff.cli._daemon:cmd_daemon_{name}")
        if name == "start":
            cmd.add_argument(
                "--idle", type=float, default=1800.0, metavar="SECONDS",
                help="exit after this long without a request (default: 1800)",
            )  # fmt: skip
            cmd.add_argument(
                "--foreground", action="store_true", help="stay attached (for systemd units)"
            )


def dispatch(args: argparse.Namespace) -> int:
    handler = getattr(args, "handler", None)
    if handler is None:
        build_parser().print_help()
        return 2
    module_name, func_name = handler.split(":")
    module = importlib.import_module(module_name)
    func = cast(Callable[[argparse.Namespace], int], getattr(module, func_name))
    return func(args)
