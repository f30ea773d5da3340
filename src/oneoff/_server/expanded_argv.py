"""Does an argv element a client sends match a Procfile template's ``$VAR`` expansion?

A Procfile ``release:`` line (the task ``release``) holds ``$VAR``, ``${VAR}``,
``${VAR:-default}`` and ``${VAR-default}``, filled from the environment's config on the
client that makes the plan. The server does not hold the config's values, but the plan
document does hold each one's keyed fingerprint (``oneoff._plan.fingerprint``, keyed with
the server's own fingerprint key). So an element is accepted only if it splits into the
template's literal text and, for each reference, either a value whose fingerprint is the
document's for that variable, or the reference's default where POSIX sh would use it
(``:-``: unset or empty; ``-``: unset). Threat: a requester or runner that rewrites the
release line's arguments (``migrate`` into ``flush --noinput``) and hashes and signs that
document itself; approvers would then be asked to approve, and a runner could be granted,
a command the manifest does not declare.

A variable the document does not fingerprint (set from the operator's terminal or by oneoff
for the run) can only stand for its default: its value cannot be checked, so it is refused
rather than trusted. The search is bounded: at most ``MAX_HASHED`` bytes fingerprinted per
element (adjacent references over a long value would try ever more splits); an element that
needs more is refused too: fail closed, never slow.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["MAX_HASHED", "expansion_matches"]

MAX_HASHED = 8 << 20


@dataclass(frozen=True)
class _Ref:
    name: str
    operator: str | None  # ":-", "-" or None
    default: str


class _TooCostly(Exception):
    pass


def _pieces(template: str) -> list[str | _Ref]:
    from oneoff._procfile import _VAR

    pieces: list[str | _Ref] = []
    at = 0
    for match in _VAR.finditer(template):
        pieces.append(template[at : match.start()])
        name = match.group(1) or match.group(4)
        pieces.append(_Ref(name, match.group(2), match.group(3) or ""))
        at = match.end()
    pieces.append(template[at:])
    return [p for p in pieces if p != ""]


def expansion_matches(
    template: str, value: str, fingerprints: Mapping[str, object], key: bytes
) -> bool:
    """True if ``value`` is ``template`` with each reference filled as described above."""
    from oneoff._plan import fingerprint

    pieces = _pieces(template)
    hashed = 0
    failed: set[tuple[int, int]] = set()

    def is_value(ref: _Ref, text: str) -> bool:
        nonlocal hashed
        expected = fingerprints.get(ref.name)
        if not isinstance(expected, str):
            return False
        hashed += len(text) + len(ref.name)
        if hashed > MAX_HASHED:
            raise _TooCostly
        return hmac.compare_digest(fingerprint(key, ref.name, text), expected)

    def fills(ref: _Ref, text: str) -> bool:
        known = isinstance(fingerprints.get(ref.name), str)
        if ref.operator is not None and text == ref.default:
            if not known:
                return True  # unset: sh uses the default either way
            if ref.operator == ":-" and is_value(ref, ""):
                return True  # set but empty
        if ref.operator == ":-" and text == "":
            return False  # an empty value would have been replaced by the default
        return is_value(ref, text)

    def match(i: int, at: int) -> bool:
        if i == len(pieces):
            return at == len(value)
        if (i, at) in failed:
            return False
        piece = pieces[i]
        if isinstance(piece, str):
            ok = value.startswith(piece, at) and match(i + 1, at + len(piece))
        else:
            ok = False
            following = pieces[i + 1] if i + 1 < len(pieces) else None
            if following is None:
                ends: range | list[int] = [len(value)]
            elif isinstance(following, str):
                ends = _occurrences(value, following, at)
            else:
                ends = range(at, len(value) + 1)
            for end in ends:
                if fills(piece, value[at:end]) and match(i + 1, end):
                    ok = True
                    break
        if not ok:
            failed.add((i, at))
        return ok

    try:
        return match(0, 0)
    except _TooCostly:
        return False


def _occurrences(value: str, literal: str, start: int) -> list[int]:
    found = []
    at = value.find(literal, start)
    while at != -1:
        found.append(at)
        at = value.find(literal, at + 1)
    return found
