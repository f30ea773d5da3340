"""The people allowed to sign, read from an ssh-keygen allowed_signers file with groups.

Format: each line is what ``ssh-keygen -Y verify -f`` accepts (see ssh-keygen(1),
"ALLOWED SIGNERS")::

    # name   [options]                          keytype      base64-key   [comment]
    alice    ssh-ed25519 AAAAC3Nz...  alice@laptop groups=dba,ops
    bob      namespaces="oneoff",valid-before="20271231Z" ssh-ed25519 AAAAC3Nz...  groups=ops

Groups live in the trailing comment as one ``groups=a,b`` word: ssh-keygen ignores the
comment, whereas an unknown option (``groups="a"``) makes it reject the line. Stricter
than ssh-keygen, so that every file read here means one thing everywhere:

- the principals field is literal names (no patterns); in a comma list such as git's
  ``alice,alice@example.com`` the first is the person's name and the others are aliases;
- only ``ssh-ed25519`` keys; a ``cert-authority`` line (no certificates yet) or another
  key type is skipped with a warning naming the line, and the rest of the file still
  loads (fail closed: those keys sign nothing);
- option values must be quoted (ssh-keygen requires that too); ``valid-after`` /
  ``valid-before`` are enforced, in UTC when they end in ``Z`` and otherwise, as
  ssh-keygen reads them, in this machine's local time zone;
- a key may appear on one line only. One person may have several lines (several keys);
  their groups are the union of all their lines' groups.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from oneoff._auth.sshsig import ED25519, ed25519_public_key, fingerprint
from oneoff._record import dataclass, field, replace
from oneoff.errors import ManifestError, NotPermitted

__all__ = ["Person", "Signers"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@+-]{0,127}")
_GROUP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_TIMESTAMP = re.compile(r"(\d{8})(\d{4}(\d{2})?)?Z?")
_KNOWN_KEY_TYPES = frozenset(
    {
        ED25519,
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


@dataclass(frozen=True)
class Person:
    """One allowed signing key and the person it belongs to.

    ``groups`` are the person's groups (from all their lines); the other fields describe
    this key. ``namespaces`` is the ``namespaces=`` pattern list, or None for any.
    """

    name: str
    groups: frozenset[str]
    fingerprint: str
    namespaces: tuple[str, ...] | None = None
    valid_after: datetime | None = None
    valid_before: datetime | None = None
    public_key: bytes = field(default=b"", repr=False)
    line: int = 0
    aliases: tuple[str, ...] = ()  # further principals of this line (git's email, ...)

    def allows_namespace(self, namespace: str) -> bool:
        """Whether this key's ``namespaces=`` option admits ``namespace``."""
        return self.namespaces is None or _match_pattern_list(namespace, self.namespaces)

    def check_usable(self, namespace: str, when: datetime) -> None:
        """Raise NotPermitted unless this key may sign for ``namespace`` at ``when``."""
        if not self.allows_namespace(namespace):
            raise NotPermitted(
                f"{self.name}'s key {self.fingerprint} is not allowed to sign in "
                f"namespace {namespace!r} (namespaces={','.join(self.namespaces or ())})"
            )
        if self.valid_after is not None and when < self.valid_after:
            raise NotPermitted(
                f"{self.name}'s key {self.fingerprint} is not valid before "
                f"{self.valid_after.isoformat()}"
            )
        if self.valid_before is not None and when > self.valid_before:
            raise NotPermitted(
                f"{self.name}'s key {self.fingerprint} expired at {self.valid_before.isoformat()}"
            )


def _match_pattern(text: str, pattern: str) -> bool:
    # ssh_config(5) PATTERNS: only * and ? are special (unlike fnmatch's [...]).
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, text, flags=re.DOTALL) is not None


def _match_pattern_list(text: str, patterns: Iterable[str]) -> bool:
    matched = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if _match_pattern(text, pattern[1:]):
                return False
        elif _match_pattern(text, pattern):
            matched = True
    return matched


class Signers:
    """The allowed signers: look people up by key, by name, or by group."""

    def __init__(
        self,
        people: Iterable[Person] = (),
        *,
        source: str = "allowed_signers",
        skipped: Iterable[str] = (),
    ) -> None:
        self.source = source
        self.skipped = tuple(skipped)  # lines ignored as unsupported, each with its reason
        self._by_key: dict[bytes, Person] = {}
        self._by_name: dict[str, list[Person]] = {}
        self._aliases: dict[str, str] = {}
        for person in people:
            if person.public_key in self._by_key:
                other = self._by_key[person.public_key]
                raise ManifestError(
                    f"{source}:{person.line}: key {person.fingerprint} is already listed "
                    f"for {other.name} on line {other.line}"
                )
            self._by_key[person.public_key] = person
            self._by_name.setdefault(person.name, []).append(person)
        for name, keys in self._by_name.items():
            if len(keys) == 1:
                continue
            groups = frozenset().union(*(key.groups for key in keys))
            self._by_name[name] = [replace(key, groups=groups) for key in keys]
            for key in self._by_name[name]:
                self._by_key[key.public_key] = key
        for person in self._by_key.values():
            for alias in person.aliases:
                owner = self._aliases.setdefault(alias, person.name)
                if alias in self._by_name or owner != person.name:
                    raise ManifestError(
                        f"{source}:{person.line}: principal {alias!r} names two people"
                    )
        self._members: dict[str, tuple[str, ...]] = {}
        for name, keys in sorted(self._by_name.items()):
            for group in keys[0].groups:
                self._members[group] = (*self._members.get(group, ()), name)

    @classmethod
    def load(cls, path: Path) -> Signers:
        """Read an allowed_signers file; ManifestError names the file and line of any fault."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"{path}: allowed signers file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path}: cannot read allowed signers file: {exc}") from None
        signers = cls.parse(text, source=str(path))
        if signers.skipped:
            from oneoff._log import log

            for reason in signers.skipped:
                log("signers.line_skipped", reason, level="warning")
        return signers

    @classmethod
    def parse(cls, text: str, *, source: str = "allowed_signers") -> Signers:
        """Parse allowed_signers text; ``source`` names it in error messages."""
        people, skipped = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            try:
                people.append(_parse_line(stripped, number))
            except _Unsupported as exc:
                skipped.append(f"{source}:{number}: {exc}; line skipped")
            except _LineError as exc:
                raise ManifestError(f"{source}:{number}: {exc}") from None
        return cls(people, source=source, skipped=skipped)

    def by_key(self, public_key: bytes) -> Person | None:
        """The entry for an SSH public key blob, or None if the key is not allowed."""
        return self._by_key.get(public_key)

    def person(self, name: str) -> Person:
        """The person called ``name`` (their first key); NotPermitted if unknown."""
        keys = self._by_name.get(self._aliases.get(name, name))
        if not keys:
            raise NotPermitted(f"{name!r} is not in {self.source}")
        return keys[0]

    def keys_of(self, name: str) -> tuple[Person, ...]:
        """Every key entry of ``name`` (empty if unknown)."""
        return tuple(self._by_name.get(self._aliases.get(name, name), ()))

    def members(self, group: str) -> tuple[str, ...]:
        """The names in ``group``, sorted (empty for an unknown group)."""
        return self._members.get(group, ())

    def groups(self) -> tuple[str, ...]:
        """Every group named in the file, sorted."""
        return tuple(sorted(self._members))

    def names(self) -> tuple[str, ...]:
        """Every person's name, sorted."""
        return tuple(sorted(self._by_name))

    def __contains__(self, name: object) -> bool:
        return name in self._by_name or name in self._aliases

    def __iter__(self) -> Iterator[Person]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_name)


class _LineError(ValueError):
    pass


class _Unsupported(_LineError):
    """A line ssh-keygen accepts that oneoff cannot use: skipped, not fatal."""


def _parse_line(line: str, number: int) -> Person:
    principals, rest = _split_word(line)
    if not rest:
        raise _LineError("missing key type and key")
    word, _ = _split_word(rest)
    options: dict[str, str] = {}
    if word not in _KNOWN_KEY_TYPES:
        # Options first: a cert-authority line (principals "*@example.com") is skipped, not
        # refused for its pattern.
        options_text, rest = _split_options(rest)
        options = _parse_options(options_text)
    names = principals.split(",")
    for name in names:
        _check_name(name)
    if len(set(names)) != len(names):
        raise _LineError(f"principals {principals!r} name someone twice")
    key_type, rest = _split_word(rest)
    if not key_type:
        raise _LineError("missing key type and key")
    if key_type not in _KNOWN_KEY_TYPES:
        raise _LineError(f"unknown key type {key_type!r}")
    if key_type != ED25519:
        raise _Unsupported(f"{key_type} keys are not supported; only {ED25519}")
    key_text, comment = _split_word(rest)
    if not key_text:
        raise _LineError("missing base64 key")
    try:
        blob = base64.b64decode(key_text, validate=True)
        ed25519_public_key(blob)
    except (binascii.Error, ValueError) as exc:
        raise _LineError(f"malformed {ED25519} key: {exc}") from None
    return Person(
        name=names[0],
        aliases=tuple(names[1:]),
        groups=_parse_groups(comment),
        fingerprint=fingerprint(blob),
        namespaces=_parse_namespaces(options.get("namespaces")),
        valid_after=_parse_time(options.get("valid-after"), "valid-after"),
        valid_before=_parse_time(options.get("valid-before"), "valid-before"),
        public_key=blob,
        line=number,
    )


def _split_word(text: str) -> tuple[str, str]:
    parts = text.split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1] if len(parts) > 1 else ""


def _check_name(name: str) -> None:
    if any(ch in name for ch in "*?!"):
        raise _LineError(f"principal {name!r}: patterns are not supported, write the name")
    if not _NAME.fullmatch(name):
        raise _LineError(f"principal {name!r} is not a valid name")


def _split_options(text: str) -> tuple[str, str]:
    quoted = False
    for index, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch.isspace() and not quoted:
            return text[:index], text[index:].lstrip()
    if quoted:
        raise _LineError("options: missing closing quote")
    return text, ""


def _parse_options(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in _split_commas(text):
        name, eq, value = item.partition("=")
        name = name.lower()
        if name == "cert-authority":
            raise _Unsupported(
                "cert-authority is not supported: oneoff does not accept certificates, list "
                "each person's own key"
            )
        if name not in {"namespaces", "valid-after", "valid-before"}:
            raise _LineError(f"unknown option {name!r}")
        if not eq or len(value) < 2 or value[0] != '"' or value[-1] != '"':
            raise _LineError(f'option {name} needs a quoted value, e.g. {name}="..."')
        if name in options:
            raise _LineError(f"option {name} given twice")
        options[name] = value[1:-1]
    return options


def _split_commas(text: str) -> list[str]:
    items, current, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    if any(not item for item in items):
        raise _LineError("options: empty option")
    return items


def _parse_namespaces(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    patterns = tuple(value.split(","))
    if not all(patterns):
        raise _LineError('namespaces="" must list at least one namespace')
    return patterns


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    match = _TIMESTAMP.fullmatch(value)
    if not match:
        raise _LineError(
            f"{option}={value!r}: use YYYYMMDD[HHMM[SS]], with Z for UTC (as ssh-keygen does)"
        )
    utc = value.endswith("Z")
    digits = value.removesuffix("Z").ljust(14, "0")
    try:
        when = datetime.strptime(digits, "%Y%m%d%H%M%S")
        # Without Z ssh-keygen (and so git) reads the time in the local zone: so do we.
        return when.replace(tzinfo=UTC) if utc else when.astimezone()
    except ValueError:
        raise _LineError(f"{option}={value!r} is not a real date and time") from None


def _parse_groups(comment: str) -> frozenset[str]:
    found = [word for word in comment.split() if word.startswith("groups=")]
    if not found:
        return frozenset()
    if len(found) > 1:
        raise _LineError("groups= appears more than once in the comment")
    names = found[0].removeprefix("groups=").split(",")
    for name in names:
        if not _GROUP.fullmatch(name):
            raise _LineError(f"group {name!r} is not a valid group name")
    return frozenset(names)
