"""Whether the daemon may serve a run request, or must refuse it (the client then runs
in-process). Every check compares the caller with the daemon; a fork cannot take over
what differs, so any difference is a refusal, named without values."""

from __future__ import annotations

import os
from collections.abc import Mapping

from oneoff._daemon.client import (
    ARGC_AT,
    PERSONALITY_AT,
    SIGBLK_AT,
    caller_state,
    identity_fields,
)
from oneoff._daemon.peer import differences, umask_of
from oneoff._daemon.preload import code_fingerprint

__all__ = [
    "FDS", "STALE", "Baseline", "quick_refusal", "refusal", "startup_environment", "well_formed",
]  # fmt: skip

FDS = 4  # stdin, stdout, stderr, working directory
STALE = "oneoff's code changed on disk since the daemon started"
# Read once at interpreter or library start-up, so a fork keeps the daemon's: the
# caller's must be the same (names are compared by value, reported by name only).
_STARTUP_PREFIXES = ("PYTHON", "LD_", "OPENSSL_", "MALLOC_", "LC_")
_STARTUP_NAMES = frozenset({"LANG", "LANGUAGE", "GLIBC_TUNABLES"})


def startup_environment(environ: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    return {
        key: value
        for key, value in environ.items()
        if key.startswith(tuple(p.encode() for p in _STARTUP_PREFIXES))
        or key.decode(errors="replace") in _STARTUP_NAMES
    }


class Baseline:
    """The daemon's own side of every comparison, taken once at start."""

    def __init__(self, code: list[str], traits: dict[str, str]) -> None:
        self.code = code
        self.fingerprint = code_fingerprint(code)
        self.traits = traits
        self.identity = dict(enumerate(identity_fields(), start=1))
        self.personality = caller_state()[0]
        self.environment = startup_environment(os.environb)


def _environment_of(fields: list[bytes]) -> dict[bytes, bytes]:
    argc = int(fields[ARGC_AT])
    environ = {}
    for item in fields[ARGC_AT + 1 + argc :]:
        key, _, value = item.partition(b"=")
        environ[key] = value
    return environ


def _is_hex(value: bytes) -> bool:
    return bool(value) and all(c in b"0123456789abcdefABCDEF" for c in value)


def well_formed(fields: list[bytes], fds: list[int]) -> bool:
    """The request has every field a runner reads (checked before a runner sees it)."""
    return not (
        len(fields) <= ARGC_AT
        or len(fds) != FDS
        or not fields[ARGC_AT].isdigit()
        or len(fields) < ARGC_AT + 1 + int(fields[ARGC_AT])
        or not all(_is_hex(f) for f in fields[PERSONALITY_AT : SIGBLK_AT + 1])
    )


def quick_refusal(fields: list[bytes], fds: list[int], base: Baseline) -> str | None:
    """The checks a runner must pass before it may even read the request: its shape, and
    the interpreter and installation it comes from."""
    if not well_formed(fields, fds):
        return "malformed request"
    for index, value in base.identity.items():
        if fields[index] != value:
            return "a different interpreter, oneoff version, installation or import path"
    return None


def refusal(fields: list[bytes], fds: list[int], pid: int, base: Baseline) -> str | None:
    """Why this request cannot be served, or None."""
    quick = quick_refusal(fields, fds, base)
    if quick is not None:
        return quick
    if code_fingerprint(base.code) != base.fingerprint:
        return STALE
    if fields[PERSONALITY_AT] != base.personality:
        return "the caller differs from the daemon in: personality"
    caller_env = startup_environment(_environment_of(fields))
    if caller_env != base.environment:
        names = sorted(
            k.decode(errors="replace") for k in caller_env.keys() ^ base.environment.keys()
        )
        names += sorted(
            k.decode(errors="replace")
            for k in caller_env.keys() & base.environment.keys()
            if caller_env[k] != base.environment[k]
        )
        return "start-up variables differ from the daemon's: " + ", ".join(names)
    if umask_of(pid) is None:
        return "the caller's umask cannot be read"
    differ = differences(base.traits, pid)
    if differ:
        return "the caller differs from the daemon in: " + ", ".join(differ)
    return None
