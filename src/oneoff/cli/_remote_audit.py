"""`oneoff audit verify|witness|export --server URL`: the audit commands against a server.

Output and exit codes are those of local mode (``cli/_audit.py``). What each one trusts:
``verify`` prints the server's own end-to-end verification, then checks, here, the
server's newest checkpoint against the one this account remembers for it (exit 8 when
the log is shorter, forked or signed by another key), and any ``--witness`` against the
co-signatures it publishes; ``witness`` co-signs only a checkpoint that passed that check.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from oneoff._log import log
from oneoff.cli._common import emit_json, terminal_safe
from oneoff.cli._remote import closing
from oneoff.errors import AuditError

if TYPE_CHECKING:
    from oneoff._client.remote import Remote

__all__ = ["remote_export", "remote_verify", "remote_witness"]


@closing
def remote_verify(remote: Remote, args: argparse.Namespace) -> int:
    from oneoff._audit.keys import public_key_from
    from oneoff._client.witness import check_witnessed, see_checkpoint

    key = None if args.key is None else public_key_from(args.key)
    report = remote.read("/v1/audit/verify", {"all": "1" if args.all_signatures else None})
    if not isinstance(report, dict) or report.get("ok") is not True:
        raise AuditError(f"the server at {remote.url} did not report a verified log")
    seen = see_checkpoint(remote, key)
    recalled = seen.recalled
    witnessed: dict[str, int] = {}
    if args.witness:
        witnessed = check_witnessed(remote, seen, [public_key_from(p) for p in args.witness])
    events, checkpoints = report.get("events"), report.get("checkpoints")
    signatures, checkpointed = report.get("signatures"), report.get("checkpointed")
    uncovered = report.get("uncovered") or 0
    if args.json:
        emit_json(
            {"ok": True, "events": events, "checkpoints": checkpoints,
             "checkpointed": checkpointed, "uncovered": uncovered, "signatures": signatures,
             "head": report.get("head"), "remembered": recalled, "witnessed": witnessed}
        )  # fmt: skip
    # The counts come from the server: escaped, so an answer cannot add a line of its own.
    elif signatures == checkpoints:
        print(
            terminal_safe(
                f"OK: {events} events, hash chain intact; {checkpoints} signed "
                f"checkpoints verify (the newest covers {checkpointed} events)"
            )
        )
    else:
        print(
            terminal_safe(
                f"OK: {events} events, hash chain intact; {checkpoints} checkpoints "
                f"match the log, {signatures} signatures checked: the newest (it covers "
                f"{checkpointed} events) and a random sample (--all-signatures checks all)"
            )
        )
    if recalled and not args.json:
        print(f"OK: extends the checkpoint of {recalled} events verified here before")
    for kid, size in witnessed.items():
        if not args.json:
            print(terminal_safe(f"OK: witness {kid} co-signed the first {size} events"))
    if uncovered:
        message = f"{uncovered} newest events are not yet covered by a signed checkpoint"
        if args.strict:
            raise AuditError(message, hint="run `oneoff audit checkpoint`")
        log("audit.uncovered", message, level="warning", uncovered=uncovered)
    return 0


@closing
def remote_witness(remote: Remote, args: argparse.Namespace) -> int:
    from oneoff._audit.checkpoint import load_private_key
    from oneoff._audit.keys import public_key_from
    from oneoff._client.witness import cosign_remote

    log_key = None if args.log_key is None else public_key_from(args.log_key)
    witness = load_private_key(args.key)
    seen, cos, stored = cosign_remote(remote, log_key, witness)
    state = "co-signed" if stored else "already co-signed"
    print(terminal_safe(f"OK: verified {seen.checkpoint.size} events; {state} checkpoint "
          f"{seen.checkpoint.size} as witness {cos['witness_key_id']}"))  # fmt: skip
    return 0


@closing
def remote_export(remote: Remote, args: argparse.Namespace) -> int:
    from oneoff._audit.log import decode_event

    out = sys.stdout
    after = args.since
    if args.format == "ocsf":
        import socket

        from oneoff._audit.ocsf import to_ocsf
        from oneoff._version import __version__

        host = socket.gethostname()
    while True:
        page = remote.read("/v1/audit/events", {"after": after, "run": args.run, "kind": args.kind})
        events = page.get("events") if isinstance(page, dict) else None
        if not isinstance(events, list):
            raise AuditError(f"the server at {remote.url} sent no events")
        for data in events:
            try:
                seq, body = int(data["seq"]), data["body"].encode("utf-8")
                prev, digest = bytes.fromhex(data["prev_hash"]), bytes.fromhex(data["hash"])
                event = decode_event(seq, prev, body, digest)
            except (KeyError, TypeError, ValueError, AttributeError):
                raise AuditError("the server sent a malformed event") from None
            line = event.to_json()
            if args.format == "ocsf":
                line = to_ocsf(event, hostname=host, version=__version__)
            out.write(json.dumps(line, sort_keys=True, ensure_ascii=True) + "\n")
            after = event.seq
        nxt = page.get("next")
        if not events or nxt is None:
            break
    out.flush()
    return 0
