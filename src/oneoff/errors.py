"""Every error oneoff raises on purpose, each knowing its exit code and its message.

The tree (exit code in brackets)::

    OneoffError [1]
    ├── UsageError [2]                 bad input: unknown task/param/env, bad value, injection
    │   ├── ManifestError [2]          oneoff.toml malformed or invalid (names file and line)
    │   └── ParamError [2]             a param fails its type, pattern or range
    ├── ConfigError [2]                a config source cannot be read or sets a forbidden variable
    ├── NotPermitted [3]               policy denied, identity unknown, signature forged
    ├── ApprovalError [4]              quorum missing, approval void, expired or replayed
    ├── LockBusy [5]                   a lock is held by another run
    ├── ReleaseError [6]               release missing, unsigned, untrusted, drifted
    │   └── DriftError [6]             code, dependencies or config differ from the release
    ├── StoreError [7]                 the store is corrupt, locked or from a newer oneoff
    ├── AuditError [8]                 the audit log failed verification
    ├── SecretError [9]                a secret cannot be handled safely (too short, in argv)
    ├── OutOfMemory [137]              the executor killed the task at its memory limit
    ├── PodNeverScheduled [124]        a Kubernetes Job's pod did not start before the timeout
    └── ExecError [125]                the task could not be started at all
        └── CommandNotFound [127]

The CLI catches ``OneoffError`` in exactly one place (``oneoff.cli.main``), prints
``oneoff: error: <message>`` on one line and exits with ``exit_code``. A task's own exit
code is passed through unchanged and is not an error here.
"""

from __future__ import annotations

__all__ = [
    "ApprovalError",
    "AuditError",
    "CommandNotFound",
    "ConfigError",
    "DriftError",
    "ExecError",
    "LockBusy",
    "ManifestError",
    "NotPermitted",
    "OneoffError",
    "OutOfMemory",
    "ParamError",
    "PodNeverScheduled",
    "ReleaseError",
    "SecretError",
    "StoreError",
    "UsageError",
]


class OneoffError(Exception):
    """Root of every deliberate oneoff failure."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        """The one-line message shown to the user, with a hint on a second line if any."""
        text = _one_line(self.message)
        if self.hint:
            text += "\n  hint: " + _one_line(self.hint)
        return text


def _one_line(text: str) -> str:
    # User-controlled values end up in messages; never let them forge extra lines.
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\x00", "\\x00")


class UsageError(OneoffError):
    exit_code = 2


class ManifestError(UsageError):
    pass


class ParamError(UsageError):
    pass


class ConfigError(OneoffError):
    exit_code = 2


class NotPermitted(OneoffError):
    exit_code = 3


class ApprovalError(OneoffError):
    exit_code = 4


class LockBusy(OneoffError):
    exit_code = 5


class ReleaseError(OneoffError):
    exit_code = 6


class DriftError(ReleaseError):
    pass


class StoreError(OneoffError):
    exit_code = 7


class AuditError(OneoffError):
    exit_code = 8


class SecretError(OneoffError):
    exit_code = 9


class ExecError(OneoffError):
    exit_code = 125


class OutOfMemory(OneoffError):
    exit_code = 137  # what a shell shows for a SIGKILLed process, which it was


class PodNeverScheduled(OneoffError):
    exit_code = 124  # the task's timeout ran out, before it could even start


class CommandNotFound(ExecError):
    exit_code = 127
