"""The one unknown-key check every oneoff.toml table uses: the error lists the valid keys."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from oneoff.errors import ManifestError

__all__ = ["check_keys"]


def check_keys(table: Mapping[str, Any], allowed: Collection[str], where: str) -> None:
    """Refuse keys of ``table`` not in ``allowed``, naming them and every valid key (a typo
    is then fixed from the message alone; tests/test_reference.py reads this list)."""
    unknown = set(table) - set(allowed)
    if unknown:
        raise ManifestError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
            f"(valid keys: {', '.join(sorted(allowed))})"
        )
