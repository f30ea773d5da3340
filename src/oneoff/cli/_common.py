"""What every command shares: opening the app, reading params, printing safely."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from oneoff._app import App, open_app
from oneoff._manifest import Task
from oneoff.errors import OneoffError, ParamError, UsageError

if TYPE_CHECKING:
    from oneoff._store.interface import Store

__all__ = ["app_from", "bounded", "emit_json", "read_params", "terminal_safe"]

# The largest integer both SQLite and the audit log's canonical JSON (I-JSON) hold exactly.
MAX_INT = 2**53 - 1


class _ReapingApp(App):
    """An app whose store, once opened, first puts down runs whose runner died."""

    @property
    def store(self) -> Store:
        opening = self._store is None
        store = super().store
        if opening:
            # Every command, `logs` and `audit verify` included: whatever a SIGKILLed
            # runner left running is killed before anyone reads or takes its state.
            from oneoff._log import log
            from oneoff._reap import reap_lost_runs

            try:
                reap_lost_runs(self)
            except OneoffError as exc:  # the command itself reports a broken store or log
                log("run.reap_failed", f"could not record lost runs: {exc}", level="warning")
        return store


def app_from(args: argparse.Namespace) -> App:
    app = _ReapingApp(open_app(args.app).project)
    if app.project.broken_processes:
        from oneoff._log import log

        # One bad Procfile line is reported, not fatal: every other command still works.
        for problem in app.project.broken_processes.values():
            log("procfile.line_skipped", problem + "; line skipped", level="warning")
    return app


def bounded(value: int, option: str, low: int, high: int = MAX_INT) -> int:
    """``value`` if ``low <= value <= high``, else a usage error naming ``option``."""
    if not low <= value <= high:
        raise UsageError(f"{option} must be between {low} and {high}, not {value}")
    return value


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def terminal_safe(text: str) -> str:
    """Escape control, format and bidi characters so values cannot rewrite the operator's
    terminal or forge a line (``\\n``, ``\\x1b``, ``\\u202e``; see oneoff._text)."""
    from oneoff._log import escape

    return escape(text)


def read_params(task: Task, pairs: list[str], *, interactive: bool) -> dict[str, str]:
    """Turn ``NAME=VALUE`` pairs into values; secrets never come from the command line."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--param wants NAME=VALUE, got {pair!r}")
        if name in values:
            raise UsageError(f"param {name!r} given twice")
        spec = task.params.get(name)
        if spec is not None and spec.secret:
            value = _secret_value(name, value, spec.max_length)
        values[name] = value
    for name, spec in task.params.items():
        if spec.secret and name not in values and spec.required and interactive:
            import getpass

            values[name] = getpass.getpass(f"{name} (secret, not echoed): ")
    return values


def _secret_value(name: str, value: str, max_length: int) -> str:
    # At most 4 bytes a character plus a line ending: anything longer is refused without
    # reading on (``@/dev/zero`` or ``yes |`` must not fill memory until the OOM killer).
    limit = max_length * 4 + 2
    raw: bytes | str
    if value == "@-":
        stream = getattr(sys.stdin, "buffer", None)
        raw = stream.read(limit + 1) if stream is not None else sys.stdin.read(limit + 1)
    elif value.startswith("@"):
        try:
            with open(value[1:], "rb") as fh:
                raw = fh.read(limit + 1)
        except OSError as exc:
            raise ParamError(
                f"secret param {name!r}: cannot read {value[1:]}: {exc.strerror}"
            ) from None
    else:
        raise ParamError(
            f"secret param {name!r} cannot be given on the command line "
            "(visible in ps and shell history)",
            hint=f"use --param {name}=@FILE, --param {name}=@- (stdin), or let oneoff ask",
        )
    if len(raw) > limit:
        raise ParamError(f"param {name!r} is longer than {max_length} characters")
    try:
        data = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data.encode("utf-8")  # a text stream may hold lone surrogates
    except UnicodeError:
        raise ParamError(f"secret param {name!r} is not valid UTF-8") from None
    return data.removesuffix("\n").removesuffix("\r")


def on_terminal() -> bool:
    return sys.stdin.isatty() and os.environ.get("CI") is None
