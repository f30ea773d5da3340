"""The newest audit checkpoint this user has verified, per log, kept outside the app.

A log's owner can delete the store, cut the log back together with its checkpoints, or
rewrite old events and re-sign every checkpoint with the audit key: the log then verifies
on its own. What they cannot change is what someone who verified it before remembers. So
after a successful ``oneoff audit verify`` (and ``oneoff audit checkpoint``), the newest
verified checkpoint is kept in the user's state directory (``$XDG_STATE_HOME/oneoff/
checkpoints/``, else ``~/.local/state/oneoff/checkpoints/``; directory 0700, files 0600,
written atomically), and every later verify requires the log to extend it (an RFC 6962
consistency proof from it to the newest stored checkpoint), or fails with exit 8.

**Identity.** A remembered checkpoint belongs to a *store*: the SQLite file's real path,
or the PostgreSQL URL's host, port and database (never user or password). It also pins
the audit key it was signed with. It applies to a log when the store matches *or* the key
matches, so each of these is caught:

* the store deleted and recreated (same path): shorter than remembered, whatever its key;
* the same store with another audit key (``.oneoff/`` deleted whole): the key changed;
* a copy of the log, rewound, verified from elsewhere: same key, shorter or inconsistent.

**What it does not do.** It protects only someone who verified the log before, on this
account, and only back to what they saw; the owner of a log nobody else has verified can
still rewrite it. An app moved to another directory is a new store (its key still
matches). ``oneoff audit forget`` drops a store's remembered checkpoint (after a reset
you meant). Runs' automatic checkpoints are not remembered: checking each one against
memory would read the whole log per run. A separate server witnessing checkpoints
(issue #13) is what protects everyone else.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneoff._record import dataclass
from oneoff.errors import AuditError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from oneoff._audit.checkpoint import Checkpoint
    from oneoff._store.interface import Store

__all__ = [
    "Remembered", "check_extends", "check_remembered", "forget", "memory_dir", "remember",
    "remembered",
]  # fmt: skip

_VERSION = 1


def memory_dir() -> Path:
    """Where remembered checkpoints live (not created here)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "oneoff" / "checkpoints"


@dataclass(frozen=True)
class Remembered:
    """One remembered checkpoint: which store, which key, what was verified, when."""

    store: str
    checkpoint: Checkpoint
    public_key: bytes  # raw Ed25519, so a swapped audit.pub cannot hide a changed key
    verified_at: str

    def to_json(self) -> str:
        return json.dumps(
            {"v": _VERSION, "store": self.store, "checkpoint": self.checkpoint.to_dict(),
             "public_key": base64.b64encode(self.public_key).decode("ascii"),
             "verified_at": self.verified_at},
            indent=2, sort_keys=True,
        ) + "\n"  # fmt: skip

    @classmethod
    def from_json(cls, text: bytes) -> Remembered:
        from oneoff._audit.checkpoint import Checkpoint

        data: Any = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != _VERSION:
            raise ValueError("not a version 1 remembered checkpoint")
        key = base64.b64decode(data["public_key"], validate=True)
        if len(key) != 32 or not isinstance(data["store"], str):
            raise ValueError("malformed store or public key")
        return cls(
            store=data["store"], checkpoint=Checkpoint.from_dict(data["checkpoint"]),
            public_key=key, verified_at=str(data["verified_at"]),
        )  # fmt: skip


def _file(store: str) -> Path:
    return memory_dir() / (hashlib.sha256(store.encode()).hexdigest()[:32] + ".json")


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def remembered(store: str, key: Ed25519PublicKey | None) -> list[Remembered]:
    """Every remembered checkpoint that applies: the store's own (a damaged one is an
    AuditError: fail closed), and any other store's signed by the same key."""
    found: list[Remembered] = []
    own = _file(store)
    try:
        found.append(Remembered.from_json(own.read_bytes()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, AuditError) as exc:
        raise AuditError(
            f"cannot read the checkpoint remembered for {store} ({own}): {exc}",
            hint="`oneoff audit forget` drops it, if you know why it is damaged",
        ) from None
    if key is None:
        return found
    raw = _raw(key)
    with contextlib.suppress(OSError):
        for path in sorted(memory_dir().glob("*.json")):
            if path == own:
                continue
            try:
                other = Remembered.from_json(path.read_bytes())
            except (OSError, ValueError, KeyError, TypeError, AuditError):
                continue  # another store's damaged memory is that store's verify's business
            if other.public_key == raw:
                found.append(other)
    return found


def check_remembered(
    store: Store, key: Ed25519PublicKey | None, identity: str, newest: Checkpoint | None
) -> list[Remembered]:
    """Require the log (already verified on its own, ``newest`` its newest checkpoint) to
    extend every remembered checkpoint that applies; AuditError (exit 8) names the first
    that it does not. Returns the ones checked."""
    from oneoff._audit.verify import prove_consistency

    def prove(old: Checkpoint, new: Checkpoint) -> tuple[bytes, ...]:
        assert key is not None  # check_extends refuses a missing key first
        return prove_consistency(store, key, old, new.size).path

    return check_extends(remembered(identity, key), key, identity, newest, prove)


def check_extends(
    memories: list[Remembered],
    key: Ed25519PublicKey | None,
    identity: str,
    newest: Checkpoint | None,
    prove: Callable[[Checkpoint, Checkpoint], tuple[bytes, ...]],
    *,
    what: str = "store",
) -> list[Remembered]:
    """Require ``newest`` (signature already checked by the caller) to extend each of
    ``memories``: same key, no smaller, and ``prove(old, newest)`` an RFC 6962 consistency
    proof that verifies. A store checks its own proof; a server's comes from the server,
    which is why it is recomputed here and never taken on trust."""
    from oneoff._audit import merkle

    for memory in memories:
        old = memory.checkpoint
        where = (
            f"this {what}" if memory.store == identity else f"a copy of this log ({memory.store})"
        )
        if key is None or _raw(key) != memory.public_key:
            raise AuditError(
                f"the audit key of {where} changed since you verified its log at "
                f"{memory.verified_at} (key "
                f"{old.key_id} then, {'none' if key is None else _key_id(key)} now): the log "
                "was replaced",
                hint="the audit log was tampered with; `oneoff audit forget` if you reset it",
            )
        if newest is None or newest.size < old.size:
            size = 0 if newest is None else newest.size
            raise AuditError(
                f"the audit log of {where} is shorter than when you verified it at "
                f"{memory.verified_at}: {size} "
                f"signed events now, {old.size} then (deleted, or cut back)",
                hint="the audit log was tampered with; `oneoff audit forget` if you reset it",
            )
        path = prove(old, newest)
        if not merkle.verify_consistency(old.size, newest.size, old.root, newest.root, path):
            raise AuditError(
                f"the audit log of {where} does not extend the checkpoint of {old.size} "
                f"events you verified at {memory.verified_at}: events were rewritten and "
                "re-signed, or the log was replaced (forked)",
                hint="the audit log was tampered with",
            )
    return memories


def _key_id(key: Ed25519PublicKey) -> str:
    from oneoff._audit.checkpoint import key_id

    return key_id(key)


def remember(identity: str, key: Ed25519PublicKey, cp: Checkpoint) -> bool:
    """Keep ``cp`` as this store's newest verified checkpoint, unless one at least as large
    is kept already (call after ``check_remembered``). True when written."""
    import fcntl

    from oneoff._clock import utc_iso

    directory = memory_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    with open(directory / ".lock", "a+b") as lock:  # concurrent verifies: largest wins
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = [m for m in remembered(identity, key) if m.store == identity]
        if current and current[0].checkpoint.size >= cp.size:
            return False
        memory = Remembered(identity, cp, _raw(key), utc_iso())
        target = _file(identity)
        temp = target.with_name(f".{target.name}.{os.getpid()}.{time.monotonic_ns()}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(memory.to_json().encode())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    return True


def forget(identity: str) -> bool:
    """Drop the checkpoint remembered for this store; False when there was none."""
    try:
        os.unlink(_file(identity))
    except FileNotFoundError:
        return False
    return True
