"""Arguments of `oneoff audit ...` and `oneoff logs` (handlers: cli/_audit.py, cli/_logs.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oneoff.cli._access_args import server_option

__all__ = ["add_audit_commands"]

_Adder = Callable[[argparse.ArgumentParser], None]
_H = "oneoff.cli._audit:"


def _key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key", type=Path, metavar="PUB",
        help="the audit public key to trust (default .oneoff/audit.pub); "
        "give the copy you kept elsewhere",
    )  # fmt: skip


def add_audit_commands(sub: Any, common: _Adder, json: _Adder) -> None:
    """Add `audit` with its sub-commands, and `logs`, to the top-level subparsers."""
    group_parser = sub.add_parser(
        "audit", help="the tamper-evident audit log", description="the tamper-evident audit log"
    )
    common(group_parser)
    group = group_parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    def action(name: str, handler: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(
            name, help=help_text, description=help_text
        )
        common(parser)
        parser.set_defaults(handler=_H + handler)
        return parser

    cmd = action("verify", "cmd_verify", "recompute the hash chain and every signed checkpoint")
    _key(cmd)
    cmd.add_argument(
        "--strict", action="store_true", help="fail when events are not yet in a checkpoint"
    )
    cmd.add_argument(
        "--all-signatures", action=argparse.BooleanOptionalAction, default=False,
        help="check every checkpoint's signature (default: the newest and a random sample of "
        "32 to 64 others; every checkpoint's tree state is still checked against the events)",
    )  # fmt: skip
    cmd.add_argument(
        "--witness", type=Path, action="append", default=[], metavar="PUB",
        help="require a valid co-signature by this witness's public key (repeatable)",
    )  # fmt: skip
    server_option(cmd)
    json(cmd)
    cmd = action("checkpoint", "cmd_checkpoint", "sign a checkpoint now and print it (keep it)")
    cmd = action(
        "witness", "cmd_witness",
        "as an independent witness: verify the log, then co-sign its newest checkpoint",
    )  # fmt: skip
    cmd.add_argument(
        "--key", type=Path, metavar="KEY", required=True,
        help="your own Ed25519 private key (`oneoff keys generate`), not the app's",
    )  # fmt: skip
    cmd.add_argument(
        "--log-key", type=Path, metavar="PUB",
        help="the audit public key to trust (default .oneoff/audit.pub); give your own copy",
    )  # fmt: skip
    server_option(cmd)
    cmd = action(
        "forget", "cmd_forget",
        "drop the checkpoint this account remembers for this store (after a reset you meant)",
    )  # fmt: skip
    server_option(cmd)
    cmd = action("key", "cmd_key", "print the audit public key and its key id")
    cmd = action("prove", "cmd_prove", "inclusion proof of EVENT against the newest checkpoint")
    cmd.add_argument("event", type=int, metavar="EVENT", help="the event's number (seq)")
    cmd = action(
        "consistency", "cmd_consistency", "prove checkpoint NEW extends the older checkpoint OLD"
    )
    cmd.add_argument("old", metavar="OLD", help="a checkpoint size, or a checkpoint JSON file")
    cmd.add_argument("new", metavar="NEW", nargs="?", help="a checkpoint size (default newest)")
    cmd = action("verify-proof", "cmd_verify_proof", "check a proof offline against a public key")
    cmd.add_argument("proof", type=Path, metavar="PROOF", help="a proof file, or - for stdin")
    cmd.add_argument("--key", type=Path, metavar="PUB", required=True, help="audit public key")
    cmd.add_argument(
        "--event", type=Path, metavar="FILE",
        help="the event's exported JSON line: also check it is the proven event",
    )  # fmt: skip
    cmd = action("export", "cmd_export", "write the events, with their hashes, one a line")
    cmd.add_argument(
        "--format",
        choices=["jsonl", "ocsf"],
        default="jsonl",
        help="jsonl: the events as stored, with their hashes (default); ocsf: one OCSF 1.3 "
        "event a line (runs as Process Activity, the rest as API Activity) for a SIEM",
    )
    cmd.add_argument("--since", type=int, default=0, metavar="SEQ", help="events after SEQ")
    cmd.add_argument("--run", metavar="RUN", help="only this run's events")
    cmd.add_argument("--kind", metavar="KIND", help="only events of this kind")
    cmd.add_argument(
        "--key", metavar="FILE",
        help="your SSH key (default: $ONEOFF_SIGNING_KEY); with [access], policy decides "
        "'audit-export'",
    )  # fmt: skip
    server_option(cmd)
    cmd = action("break-glass", "cmd_break_glass", "list break-glass runs for review, newest first")
    json(cmd)
    cmd = action("tail", "cmd_tail", "show the newest events; -f keeps following")
    cmd.add_argument(
        "-n", "--lines", type=int, default=10, metavar="N", help="how many (default: 10)"
    )
    cmd.add_argument("-f", "--follow", action="store_true", help="wait for new events")
    json(cmd)

    logs = sub.add_parser(
        "logs", help="replay a run's stored output", description="replay a run's stored output"
    )
    common(logs)
    logs.set_defaults(handler="oneoff.cli._logs:cmd_logs")
    logs.add_argument("run", metavar="RUN", help="a run id or a unique prefix of one")
    logs.add_argument(
        "--stream", choices=["all", "stdout", "stderr"], default="all", help="which stream"
    )
    logs.add_argument(
        "--raw",
        action="store_true",
        help="write the stored bytes as they are even to a terminal (escape sequences act)",
    )
    from oneoff.cli._access_args import key_option

    key_option(logs)
    server_option(logs)
    json(logs)
