"""Arguments of the access commands (request, approve, deny, requests, policy, locks,
break-glass) and the access options of `oneoff run`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["access_run_options", "add_access_commands", "key_option", "server_option"]

_Adder = Callable[..., None]
_A = "oneoff.cli._access:"
_P = "oneoff.cli._policy:"


def key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key",
        metavar="FILE",
        help="your SSH Ed25519 key: a private key file, or a .pub whose key ssh-agent holds "
        "(default: $ONEOFF_SIGNING_KEY); the signature, not the name, identifies you",
    )


def server_option(parser: argparse.ArgumentParser) -> None:
    """``--server URL`` (see ``oneoff.cli._remote``; defined here to keep parsing light)."""
    parser.add_argument(
        "--server", metavar="URL",
        help="ask this team server instead of the app's own store (default: "
        "$ONEOFF_SERVER, else [server] url in oneoff.toml)",
    )  # fmt: skip


def access_run_options(parser: argparse.ArgumentParser) -> None:
    key_option(parser)
    parser.add_argument(
        "--request", metavar="ID", help="run this approved request (its task, env and params)"
    )
    parser.add_argument(
        "--break-glass",
        action="store_true",
        help="run without the approval quorum, where policy allows it (needs --reason; "
        "audited and announced)",
    )
    parser.add_argument("--reason", metavar="TEXT", help="why (with --break-glass)")
    parser.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="wait this long for the task's locks instead of failing at once",
    )


def add_access_commands(
    sub: Any, common: _Adder, env: _Adder, json: _Adder, params: _Adder
) -> None:
    """Add the access commands to the top-level subparsers."""

    def command(name: str, handler: str, help_text: str, parent: Any = sub) -> Any:
        parser = parent.add_parser(name, help=help_text, description=help_text)
        common(parser)
        parser.set_defaults(handler=handler)
        return parser

    cmd = command("request", _A + "cmd_request", "ask others to approve one exact run")
    cmd.add_argument("task", help="the task to run once approved")
    env(cmd)
    params(cmd)
    key_option(cmd)
    server_option(cmd)
    json(cmd)

    cmd = command("approve", _A + "cmd_approve", "review a request's plan and sign it")
    cmd.add_argument("request", metavar="REQUEST", help="the request id (see `oneoff requests`)")
    key_option(cmd)
    cmd.add_argument("--yes", action="store_true", help="approve without asking (no terminal)")
    server_option(cmd)
    json(cmd)

    cmd = command("deny", _A + "cmd_deny", "refuse a request (or withdraw your own)")
    cmd.add_argument("request", metavar="REQUEST", help="the request id (see `oneoff requests`)")
    cmd.add_argument("--reason", required=True, metavar="TEXT", help="why, kept in the audit log")
    key_option(cmd)
    server_option(cmd)
    json(cmd)

    cmd = command("requests", _A + "cmd_requests", "list pending requests and their approvals")
    cmd.add_argument("--all", action="store_true", help="include used and denied requests")
    key_option(cmd)
    server_option(cmd)
    json(cmd)

    cmd = command("locks", _A + "cmd_locks", "list held resource locks and their runs")
    key_option(cmd)
    server_option(cmd)
    json(cmd)

    text = "explain and test the app's Cedar policies"
    group = sub.add_parser("policy", help=text, description=text)
    common(group)
    actions = group.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    cmd = command(
        "explain", _P + "cmd_explain", "show a what-if decision and its policies", actions
    )
    cmd.add_argument("task", help="the task the decision is about")
    env(cmd, required=True)
    cmd.add_argument(
        "--as",
        dest="as_name",
        required=True,
        metavar="NAME",
        help="a person in the allowed signers (a what-if query: it grants no identity)",
    )
    cmd.add_argument("--action", default="run", help="plan, run, approve, console, ...")
    cmd.add_argument("--break-glass", action="store_true", help="decide as for a break-glass run")
    cmd = command("test", _P + "cmd_test", "check a table of expected decisions (for CI)", actions)
    cmd.add_argument("file", help="a TOML file of [[case]] rows")
