"""oneoff's own log lines on stderr: one per event, JSON when not on a terminal, never forgeable.

The format is ``ONEOFF_LOG_FORMAT`` (``json`` or ``text``) when set, otherwise JSON unless
stderr is a terminal. A text line reads ``oneoff: <message>`` (``oneoff: error: <message>``
for errors); a JSON line is one object with ``ts``, ``level``, ``event``, ``msg`` and the
event's fields. Values come from users (task names, params, paths), so in text every control
character (CR, LF, ESC, C1, bidi overrides...) is shown escaped, and JSON escapes everything
outside printable ASCII: one event is always exactly one line.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from typing import IO, Any

__all__ = ["escape", "log", "log_format"]

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def log_format(stream: IO[str] | None = None) -> str:
    """``json`` or ``text`` for lines written to ``stream`` (default stderr)."""
    chosen = os.environ.get("ONEOFF_LOG_FORMAT", "").strip().lower()
    if chosen in ("json", "text"):
        return chosen
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def escape(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\n``, ``\\x1b``, ``\\u202e``)."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        else:
            out.append(_SHORT.get(char) or spell(char))
    return "".join(out)


def spell(char: str) -> str:
    """One character as a Python string literal spells it (``\\x1b``, ``\\u202e``)."""
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def log(
    event: str,
    message: str,
    *,
    level: str = "info",
    hint: str | None = None,
    stream: IO[str] | None = None,
    **fields: Any,
) -> None:
    """Write one log line for ``event``; ``message`` is human text, ``fields`` are data."""
    out = sys.stderr if stream is None else stream
    if log_format(out) == "json":
        record: dict[str, Any] = {
            "ts": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": level,
            "event": event,
            "msg": message,
        }
        if hint:
            record["hint"] = hint
        for key, value in fields.items():
            record.setdefault(key, value)
        line = json.dumps(record, ensure_ascii=True, default=str)
    else:
        prefix = "oneoff: error: " if level == "error" else "oneoff: "
        if level == "warning":
            prefix = "oneoff: warning: "
        line = prefix + escape(message)
        if hint:
            line += "\n  hint: " + escape(hint)
    out.write(line + "\n")
    out.flush()
