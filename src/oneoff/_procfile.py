"""Procfile process types read as argv lists; a line that needs a shell is refused."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from oneoff._record import dataclass
from oneoff.errors import ManifestError, SecretError

if TYPE_CHECKING:
    from oneoff._environ import Materialized

__all__ = ["Procfile", "expand_vars", "parse_procfile", "refuse_secrets_in_argv"]

_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
# Operators only a shell understands; running the line without one would change its meaning.
_SHELL_ONLY = {"&&", "||", "|", ";", "&", ">", ">>", "<", "2>", "2>&1", "$("}
_REDIRECT = re.compile(r"^[0-9]*(?:>>?|<)(?:&[0-9-])?")
# $NAME, ${NAME}, and POSIX ${NAME:-default} / ${NAME-default} with a literal default.
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^${}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Procfile:
    """The process types of a Procfile, and the lines that could not be read as argv."""

    processes: Mapping[str, tuple[str, ...]]
    # process name (or "line N" when even the name is unreadable) -> why it was refused
    problems: Mapping[str, str]


def parse_procfile(path: Path) -> Procfile:
    """Parse ``name: command`` lines into argv tuples.

    ``$VAR``/``${VAR}``/``${VAR:-default}`` stay in the argv and are filled from the
    process's materialised environment when it starts (see ``expand_vars``), never by a
    shell. A line that needs a shell is reported in ``problems``; the others still load,
    so one bad line does not take every command down with it.
    """
    processes: dict[str, tuple[str, ...]] = {}
    problems: dict[str, str] = {}
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
            problems[f"line {number}"] = f"{path}:{number}: expected 'name: command'"
            continue
        name = match.group(1)
        try:
            processes[name] = _argv(match.group(2), f"{path}:{number}")
        except ManifestError as exc:
            problems[name] = exc.message
    return Procfile(processes=processes, problems=problems)


def _argv(command: str, where: str) -> tuple[str, ...]:
    try:
        argv = shlex.split(command, comments=False, posix=True)
    except ValueError as exc:
        raise ManifestError(f"{where}: cannot split command: {exc}") from None
    for arg in argv:
        if arg in _SHELL_ONLY or "$(" in arg or "`" in arg or _REDIRECT.match(arg):
            raise ManifestError(
                f"{where}: {arg!r} needs a shell; declare this process in oneoff.toml "
                "[processes] as an argv list instead"
            )
        leftover = _VAR.sub("", arg)
        if "${" in leftover:
            raise ManifestError(
                f"{where}: {arg!r} uses a ${{...}} form only a shell understands "
                "(oneoff expands $VAR, ${VAR}, ${VAR:-default} and ${VAR-default})"
            )
    return tuple(argv)


def expand_vars(arg: str, env: Mapping[str, str], where: str) -> str:
    """Replace ``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` from ``env``.

    As in POSIX sh, ``:-`` uses the default when the variable is unset or empty, ``-``
    only when it is unset. An unset variable without a default is an error.
    """

    def _sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        operator, default = match.group(2), match.group(3)
        value = env.get(name)
        if operator == ":-" and not value:
            return default
        if operator == "-" and value is None:
            return default
        if value is None:
            raise ManifestError(f"{where}: ${name} is not set in the environment's config")
        return value

    return _VAR.sub(_sub, arg)


def refuse_secrets_in_argv(
    where: str, declared: Sequence[str], argv: Sequence[str], env: Materialized
) -> None:
    """SecretError if a process's argv names a secret variable or holds a secret's value.

    Any user of the machine can read a process's argv (``/proc/PID/cmdline``, ``ps``): a
    secret belongs in the process's environment, where only the process and root see it.
    """
    for arg in declared:
        for match in _VAR.finditer(arg):
            name = match.group(1) or match.group(4)
            if name in env.secret_keys:
                raise SecretError(
                    f"{where}: argv names the secret ${name}; secrets never go in argv",
                    hint=f"let the process read {name} from its environment instead",
                )
    from oneoff._redact import MIN_SAFE_LENGTH, Redactor

    redactor = Redactor(env.secret_values(), min_length=MIN_SAFE_LENGTH, skip_short=True)
    for arg in argv:
        if redactor.redact_text(arg) != arg:
            raise SecretError(
                f"{where}: an argument holds a secret's value (a password in a URL, say); "
                "secrets never go in argv",
                hint="let the process read that value from its environment instead",
            )
