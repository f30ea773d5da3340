"""The command word of an argv, found without argparse (the daemon client needs it cheaply)."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs milliseconds on this path
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["wanted_command"]


def wanted_command(argv: Sequence[str]) -> str | None:
    """The command word in ``argv`` (skipping top-level options), if any."""
    args = iter(argv)
    for arg in args:
        if arg == "--app":
            next(args, None)
        elif arg in ("-h", "--help", "--version"):
            return None
        elif not arg.startswith("-"):
            return arg
    return None
