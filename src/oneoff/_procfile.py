"""Procfile process types read as argv lists; a line that needs a shell is refused."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from oneoff.errors import ManifestError

__all__ = ["parse_procfile"]

_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
# Operators only a shell understands; running the line without one would change its meaning.
_SHELL_ONLY = {"&&", "||", "|", ";", "&", ">", ">>", "<", "2>", "2>&1", "$("}


def parse_procfile(path: Path) -> dict[str, tuple[str, ...]]:
    """Parse ``name: command`` lines into argv tuples.

    ``$VAR``/``${VAR}`` stay in the argv and are filled from the process's materialised
    environment when it starts (see ``expand_vars``), never by a shell.
    """
    processes: dict[str, tuple[str, ...]] = {}
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(stripped)
        if not match:
            raise ManifestError(f"{path}:{number}: expected 'name: command'")
        try:
            argv = shlex.split(match.group(2), comments=False, posix=True)
        except ValueError as exc:
            raise ManifestError(f"{path}:{number}: cannot split command: {exc}") from None
        bad = [a for a in argv if a in _SHELL_ONLY or "$(" in a or "`" in a]
        if bad:
            raise ManifestError(
                f"{path}:{number}: {bad[0]!r} needs a shell; declare this process in "
                "oneoff.toml [processes] as an argv list instead"
            )
        processes[match.group(1)] = tuple(argv)
    return processes


_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand_vars(arg: str, env: dict[str, str], where: str) -> str:
    """Replace ``$VAR`` and ``${VAR}`` from ``env``; an unset variable is an error."""

    def _sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            raise ManifestError(f"{where}: ${name} is not set in the environment's config")
        return env[name]

    return _VAR.sub(_sub, arg)
