"""A strict dotenv parser: no interpolation, no command substitution, errors name the line."""

from __future__ import annotations

import os
import re
import stat

from oneoff.errors import ConfigError

__all__ = ["format_dotenv", "parse_dotenv", "read_dotenv_file"]

MAX_DOTENV_BYTES = 16 * 1024 * 1024

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INLINE_COMMENT = re.compile(r"[ \t]#")
_DQ_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$"}


def read_dotenv_file(path: str, source: str) -> str | None:
    """The text of the dotenv file at ``path``; None when it does not exist.

    Opened without blocking and refused unless it is a regular file: a FIFO, a device or
    a socket would hang the command or feed it endless data.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"dotenv {source}: cannot read: {exc.strerror}") from None
    except ValueError:  # a NUL in the path
        raise ConfigError(f"dotenv {source}: not a valid path") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"dotenv {source}: not a regular file")
        chunks, size = [], 0
        while size <= MAX_DOTENV_BYTES:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"dotenv {source}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_DOTENV_BYTES:
        raise ConfigError(f"dotenv {source}: larger than {MAX_DOTENV_BYTES >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"dotenv {source}: not UTF-8 (byte {exc.start} is not valid)") from None


def parse_dotenv(text: str, source: str = "<dotenv>") -> dict[str, str]:
    """Parse dotenv text into a dict; later keys win, as in every dotenv loader.

    Supported: ``KEY=value``, ``export KEY=value``, ``#`` comments (unquoted values end at
    `` #``), single quotes (literal, may span lines), double quotes (``\\n \\r \\t \\\\ \\"
    \\$`` escapes, may span lines). ``$VAR`` is never expanded: config is data, not a script.
    """
    values: dict[str, str] = {}
    pos = 0
    line = 1
    n = len(text)
    while pos < n:
        # Skip blank space and comment lines.
        char = text[pos]
        if char == "\n":
            pos += 1
            line += 1
            continue
        if char in " \t\r":
            pos += 1
            continue
        if char == "#":
            end = text.find("\n", pos)
            pos = n if end < 0 else end
            continue
        start_line = line
        if text.startswith("export", pos) and pos + 6 < n and text[pos + 6] in " \t":
            pos += 6
            while pos < n and text[pos] in " \t":
                pos += 1
        match = _KEY.match(text, pos)
        if not match:
            raise ConfigError(f"{source}:{start_line}: expected KEY=value")
        key = match.group(0)
        pos = match.end()
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos >= n or text[pos] != "=":
            # The word is not echoed: a line holding only a value (a secrets CLI printing a
            # bare token, a pasted key) would put that secret on the terminal.
            raise ConfigError(f"{source}:{start_line}: expected KEY=value ('=' missing)")
        pos += 1
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos < n and text[pos] in "'\"":
            value, pos, line = _quoted(text, pos, line, source, start_line)
            # Only white space or a comment may follow a closing quote.
            end = text.find("\n", pos)
            rest = text[pos : n if end < 0 else end]
            if rest.strip() and not rest.strip().startswith("#"):
                raise ConfigError(f"{source}:{line}: unexpected text after closing quote")
            pos = n if end < 0 else end
        else:
            end = text.find("\n", pos)
            raw = text[pos : n if end < 0 else end]
            comment = _INLINE_COMMENT.search(raw)
            if comment:
                raw = raw[: comment.start()]
            value = raw.strip().removesuffix("\r").strip()
            pos = n if end < 0 else end
        if "\x00" in value:
            raise ConfigError(f"{source}:{start_line}: {key} contains a NUL byte")
        values[key] = value
    return values


def _quoted(text: str, pos: int, line: int, source: str, start: int) -> tuple[str, int, int]:
    quote = text[pos]
    pos += 1
    out: list[str] = []
    n = len(text)
    while pos < n:
        char = text[pos]
        if char == quote:
            return "".join(out), pos + 1, line
        if char == "\n":
            line += 1
        if char == "\\" and quote == '"' and pos + 1 < n:
            nxt = text[pos + 1]
            if nxt in _DQ_ESCAPES:
                out.append(_DQ_ESCAPES[nxt])
                pos += 2
                continue
        out.append(char)
        pos += 1
    raise ConfigError(f"{source}:{start}: unterminated {quote} quote")


def format_dotenv(values: dict[str, str]) -> str:
    """Write values so that ``parse_dotenv`` reads them back exactly."""
    lines = []
    for key, value in values.items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"invalid key {key!r}")
        escaped = "".join("\\" + c if c in '\\"$' else c for c in value)
        escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        lines.append(f'{key}="{escaped}"')
    return "\n".join(lines) + ("\n" if lines else "")
