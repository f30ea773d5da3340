"""UTC timestamps as oneoff stores them: ISO 8601 with a Z, sortable as text."""

from __future__ import annotations

import datetime as _dt

__all__ = ["utc_iso"]


def utc_iso(when: _dt.datetime | None = None, *, timespec: str = "milliseconds") -> str:
    """``when`` (default: now) in UTC as ``2026-11-29T04:48:51.123Z``."""
    moment = _dt.datetime.now(_dt.UTC) if when is None else when.astimezone(_dt.UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")
