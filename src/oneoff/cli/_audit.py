"""`oneoff audit verify|checkpoint|key|prove|consistency|verify-proof|export|break-glass|tail`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from oneoff._log import escape, log
from oneoff.cli._common import app_from, bounded, emit_json
from oneoff.errors import AuditError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from oneoff._app import App
    from oneoff._audit.checkpoint import Checkpoint
    from oneoff._audit.log import AuditEvent

__all__ = [
    "cmd_break_glass", "cmd_checkpoint", "cmd_consistency", "cmd_export", "cmd_forget", "cmd_key",
    "cmd_prove", "cmd_tail", "cmd_verify", "cmd_verify_proof", "cmd_witness",
]  # fmt: skip

_POLL_SECONDS = 0.5


def _trusted_key(app: App, given: Path | None) -> Ed25519PublicKey | None:
    from oneoff._audit.keys import public_key_from

    if given is not None:
        return public_key_from(given)
    key = app.audit.key
    if key is None or not (key.exists() or key.public_path.exists()):
        return None
    return key.public()


def _against_memory(app: App, key: Ed25519PublicKey | None, newest: Checkpoint | None) -> int:
    """Check the log against the checkpoints this account remembers (exit 8 when it does not
    extend them), then remember ``newest``; the largest size checked (0: none)."""
    from oneoff._audit.remembered import check_remembered, remember

    identity = app.store_identity
    checked = check_remembered(app.store, key, identity, newest)
    if newest is not None and key is not None:
        remember(identity, key, newest)
    return max((m.checkpoint.size for m in checked), default=0)


def cmd_verify(args: argparse.Namespace) -> int:
    from oneoff._audit.verify import verify_log
    from oneoff.cli._remote import resolve

    remote, app = resolve(args)
    if remote is not None:
        from oneoff.cli._remote_audit import remote_verify

        return remote_verify(remote, args)
    assert app is not None
    key = _trusted_key(app, args.key)
    report = verify_log(app.store, key, all_signatures=args.all_signatures)
    latest = app.store.audit_latest_checkpoint()
    recalled = _against_memory(app, key, None if latest is None else latest[0])
    witnessed: dict[str, int] = {}
    if args.witness:
        from oneoff._audit.keys import public_key_from
        from oneoff._audit.witness import check_witnesses

        witnessed = check_witnesses(app.store, [public_key_from(p) for p in args.witness])
    if args.json:
        emit_json(
            {"ok": True, "events": report.events, "checkpoints": report.checkpoints,
             "checkpointed": report.checkpointed, "uncovered": report.uncovered,
             "signatures": report.signatures, "head": report.head.hex(),
             "remembered": recalled, "witnessed": witnessed}
        )  # fmt: skip
    elif report.signatures == report.checkpoints:
        print(
            f"OK: {report.events} events, hash chain intact; {report.checkpoints} signed "
            f"checkpoints verify (the newest covers {report.checkpointed} events)"
        )
    else:
        print(
            f"OK: {report.events} events, hash chain intact; {report.checkpoints} checkpoints "
            f"match the log, {report.signatures} signatures checked: the newest (it covers "
            f"{report.checkpointed} events) and a random sample (--all-signatures checks all)"
        )
    if recalled and not args.json:
        print(f"OK: extends the checkpoint of {recalled} events verified here before")
    for kid, size in witnessed.items():
        if not args.json:
            print(f"OK: witness {kid} co-signed the first {size} events")
    if report.uncovered:
        message = f"{report.uncovered} newest events are not yet covered by a signed checkpoint"
        if args.strict:
            raise AuditError(message, hint="run `oneoff audit checkpoint`")
        log("audit.uncovered", message, level="warning", uncovered=report.uncovered)
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    app = app_from(args)
    cp = app.audit.checkpoint()
    key = app.audit.key
    _against_memory(app, None if key is None else key.public(), cp)
    sys.stdout.write(cp.to_json())
    return 0


def cmd_witness(args: argparse.Namespace) -> int:
    from oneoff._audit.checkpoint import load_private_key
    from oneoff._audit.witness import witness_log
    from oneoff.cli._remote import resolve

    remote, app = resolve(args)
    if remote is not None:
        from oneoff.cli._remote_audit import remote_witness

        return remote_witness(remote, args)
    assert app is not None
    log_key = _trusted_key(app, args.log_key)
    if log_key is None:
        raise AuditError("no audit public key to verify the log with", hint="pass --log-key")
    witness = load_private_key(args.key)
    if log_key.public_bytes_raw() == witness.public_key().public_bytes_raw():
        raise AuditError("--key is the log's own audit key: a witness co-signs with its own")
    cp, cos, stored = witness_log(app.store, log_key, witness, app.store_identity)
    state = "co-signed" if stored else "already co-signed"
    print(f"OK: verified {cp.size} events; {state} checkpoint {cp.size} as witness "
          f"{cos.witness_key_id}")  # fmt: skip
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from oneoff._audit.remembered import forget
    from oneoff.cli._remote import resolve

    remote, app = resolve(args)
    if remote is not None:  # a server's log is remembered under its URL
        from oneoff._client.witness import identity as server_identity

        identity = server_identity(remote.url)
        remote.close()
    else:
        assert app is not None
        identity = app.store_identity
    if forget(identity):
        log("audit.forgotten", f"forgot the checkpoint remembered for {identity}",
            level="warning", store=identity)  # fmt: skip
    else:
        print(f"no checkpoint remembered for {identity}")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    from oneoff._audit.checkpoint import key_id

    key = app_from(args).audit.key
    assert key is not None  # App always attaches its key
    key.ensure()
    sys.stdout.write(key.public_pem())
    kid = key_id(key.public())
    log("audit.key", f"audit key id {kid}; keep this public key outside the app", key_id=kid)
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    from oneoff._audit.verify import prove_inclusion

    event = bounded(args.event, "EVENT", 0)
    app = app_from(args)
    key = _trusted_key(app, None)
    if key is None:
        raise AuditError("no audit key yet: nothing was checkpointed")
    doc, _entry = prove_inclusion(app.store, key, event)
    sys.stdout.write(doc.to_json())
    return 0


def _checkpoint_arg(app: App, value: str) -> Checkpoint:
    from oneoff._audit.checkpoint import Checkpoint
    from oneoff._audit.verify import stored_checkpoint

    if value.isdigit():
        return stored_checkpoint(app.store, bounded(int(value), "OLD", 0))
    try:
        text = Path(value).read_bytes()
    except OSError as exc:
        raise UsageError(
            f"{value!r} is neither a checkpoint size nor a readable file: {exc.strerror}"
        ) from None
    return Checkpoint.from_json(text)


def cmd_consistency(args: argparse.Namespace) -> int:
    from oneoff._audit.verify import prove_consistency

    if args.old.isdigit():
        bounded(int(args.old), "OLD", 0)
    app = app_from(args)
    key = _trusted_key(app, None)
    if key is None:
        raise AuditError("no audit key yet: nothing was checkpointed")
    old = _checkpoint_arg(app, args.old)
    new_size = None
    if args.new is not None:
        if not args.new.isdigit():
            raise UsageError(f"NEW must be a checkpoint size, not {args.new!r}")
        new_size = bounded(int(args.new), "NEW", 0)
    sys.stdout.write(prove_consistency(app.store, key, old, new_size).to_json())
    return 0


def cmd_verify_proof(args: argparse.Namespace) -> int:
    from oneoff._audit.checkpoint import load_proof_doc, verify_proof_doc
    from oneoff._audit.keys import public_key_from

    text = sys.stdin.buffer.read() if str(args.proof) == "-" else _read(args.proof)
    doc = load_proof_doc(text)
    leaf_data = None
    if args.event is not None:
        try:
            line = json.loads(_read(args.event))
            leaf_data = bytes.fromhex(line["prev_hash"]) + line["body"].encode("utf-8")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise AuditError(f"{args.event}: not an exported audit event line: {exc}") from None
    print(verify_proof_doc(doc, public_key_from(args.key), leaf_data=leaf_data))
    return 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def cmd_export(args: argparse.Namespace) -> int:
    from oneoff._identity import os_user, signer_from

    bounded(args.since, "--since", 0)
    from oneoff.cli._remote import resolve

    remote, app = resolve(args, key=args.key)
    if remote is not None:
        from oneoff.cli._remote_audit import remote_export

        return remote_export(remote, args)
    assert app is not None
    from oneoff._auth.grant import authorize_on_app, open_gate

    actor = os_user()
    if open_gate(app) is not None:  # [access]: who exports, and may they (audit-export)
        from oneoff._auth.operations import whole_app

        query = {"since": args.since, "run": args.run, "kind": args.kind}
        actor = authorize_on_app(
            app, "audit-export", whole_app(app.project), signer_from(args.key), query
        ).name
    out = sys.stdout
    count, last = 0, args.since
    if args.format == "ocsf":
        import socket

        from oneoff._audit.ocsf import to_ocsf
        from oneoff._version import __version__

        host = socket.gethostname()
    for event in app.audit.events(since=args.since, run_id=args.run, kind=args.kind):
        line = event.to_json()
        if args.format == "ocsf":
            line = to_ocsf(event, hostname=host, version=__version__)
        # ensure_ascii: one line per event whatever the event holds; `body` stays exact.
        out.write(json.dumps(line, sort_keys=True, ensure_ascii=True) + "\n")
        count, last = count + 1, event.seq
    out.flush()
    app.audit.append(
        "audit.exported",
        actor=actor,
        run_id=args.run,
        payload={"format": args.format, "events": count, "since": args.since, "through": last,
                 "kind": args.kind},
    )  # fmt: skip
    app.audit.checkpoint_or_warn()
    return 0


def cmd_break_glass(args: argparse.Namespace) -> int:
    from oneoff._breakglass import break_glass_runs

    runs = break_glass_runs(app_from(args))
    if args.json:
        emit_json(
            [{"run_id": run.run_id, "at": run.at, "actor": run.actor, "task": run.task,
              "environment": run.environment, "reason": run.reason, "status": run.status}
             for run in runs]
        )  # fmt: skip
        return 0
    for run in runs:
        print(
            f"{run.at}  {run.run_id}  {escape(run.actor)}  {escape(run.task)} on "
            f"{escape(run.environment)}  {run.status}  reason: {escape(run.reason)}"
        )
    if not runs:
        print("no break-glass runs")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    bounded(args.lines, "--lines", 0)
    app = app_from(args)
    audit = app.audit
    since = max(0, audit.head() - args.lines)
    try:
        while True:
            for event in audit.events(since=since):
                print(json.dumps(event.to_json(), sort_keys=True) if args.json else _line(event))
                since = event.seq
            sys.stdout.flush()
            if not args.follow:
                return 0
            time.sleep(_POLL_SECONDS)
    except KeyboardInterrupt:  # the normal way to stop following
        return 0


def _line(event: AuditEvent) -> str:
    where = " ".join(
        f"{name}={escape(str(value))}"
        for name, value in (("env", event.environment), ("task", event.task),
                            ("run", event.run_id), ("release", event.release_id))
        if value
    )  # fmt: skip
    payload = escape(json.dumps(dict(event.payload), sort_keys=True, ensure_ascii=False))
    head = f"{event.seq:>6}  {event.ts}  {escape(event.kind):<16} {escape(event.actor)}"
    return f"{head}  {where}  {payload}"
