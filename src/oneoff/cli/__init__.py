"""The thin command line over the oneoff library: parse, call, render, map errors to exit codes."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: importing typing costs milliseconds on this path
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code; nothing below raises SystemExit.

    Called without ``argv`` (the console script), the command goes to the preloaded runner
    when one is running and will take it (see ``oneoff._daemon``); with ``argv`` (library
    use, tests, and the runner itself) it always runs in this process.
    """
    if argv is None:
        from oneoff._daemon.client import via_daemon

        code = via_daemon(sys.argv[1:])
        if code is not None:
            return code
    from oneoff.cli._parser import build_parser

    args_list = list(sys.argv[1:] if argv is None else argv)
    not_utf8 = _first_not_utf8(args_list)
    if not_utf8 is not None:
        # Python hands undecodable argv bytes over as lone surrogates, which every later
        # encode (SQLite, JSON, the terminal) rejects; refuse them here, in one place.
        from oneoff._log import log

        log(
            "error", f"argument {not_utf8} is not valid UTF-8", level="error",
            error="UsageError", exit_code=2,
        )  # fmt: skip
        return 2
    parser = build_parser(args_list)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    verbose = any(v for k, v in vars(args).items() if k.partition("@")[0] == "verbose")
    from oneoff.cli._streams import escaping_streams

    with escaping_streams():
        return _dispatch(args, verbose)


def _dispatch(args: argparse.Namespace, verbose: bool) -> int:
    from oneoff.cli._parser import dispatch, merge_common
    from oneoff.errors import OneoffError

    try:
        return dispatch(merge_common(args))
    except OneoffError as exc:
        if verbose:
            raise
        from oneoff._log import log

        # Text: `oneoff: error: <message>` (+ hint line); JSON off a terminal. Escaped either way.
        log(
            "error", exc.message, level="error", hint=exc.hint,
            error=type(exc).__name__, exit_code=exc.exit_code,
        )  # fmt: skip
        return exc.exit_code
    except KeyboardInterrupt:
        if verbose:
            raise
        print("oneoff: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `oneoff runs | head`: the reader left; that is not our failure.
        return 0


def _first_not_utf8(args: list[str]) -> str | None:
    """The first argument that is not valid UTF-8, shown escaped; None when all are."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return ascii(arg if len(arg) <= 60 else arg[:60] + "...")
    return None
