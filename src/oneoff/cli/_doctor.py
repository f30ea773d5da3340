"""`oneoff doctor`: what this machine lets oneoff guarantee (see oneoff._doctor)."""

from __future__ import annotations

import argparse

from oneoff.cli._common import emit_json

__all__ = ["cmd_doctor"]


def cmd_doctor(args: argparse.Namespace) -> int:
    from oneoff._doctor import checks

    found = checks()
    if args.json:
        emit_json([
            {"name": c.name, "ok": c.ok, "value": c.value, "detail": c.detail} for c in found
        ])  # fmt: skip
        return 0
    width = max(len(c.name) for c in found)
    for check in found:
        mark = "ok  " if check.ok else "weak"
        print(f"{mark} {check.name:<{width}}  {check.value}: {check.detail}")
    return 0
