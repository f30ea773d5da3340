"""Typed task parameters: their declaration, validation and rendering into argv."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from oneoff._record import dataclass, field
from oneoff._text import unsafe_chars
from oneoff.errors import ManifestError, ParamError

if TYPE_CHECKING:
    from oneoff._pattern import Pattern

__all__ = ["PARAM_TYPES", "ParamSpec", "parse_param_spec", "validate_param"]

#: The shortest secret value the redactor accepts (``oneoff._redact.MIN_LENGTH`` is this).
SECRET_MIN_LENGTH: Final = 6
ParamType = Literal["string", "int", "bool", "choice", "date", "path", "secret"]
PARAM_TYPES: tuple[str, ...] = ("string", "int", "bool", "choice", "date", "path", "secret")

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")

# Without an explicit pattern a string may not carry shell syntax. oneoff never uses a
# shell, but the task might hand the value to one; refusing is cheaper than an incident.
_SHELL_META = re.compile(r"[;&|$`<>()\\'\"*?!{}\[\]~#]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter of a task."""

    name: str
    type: ParamType
    description: str = ""
    required: bool = True
    default: str | None = None
    pattern: str | None = None
    max_length: int = 256
    min_length: int = 0
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    must_exist: bool = False
    deliver: Literal["env", "stdin"] = "env"
    env: str | None = None  # the variable a secret is delivered as, if not ONEOFF_PARAM_*
    _regex: Pattern | None = field(default=None, compare=False, repr=False)

    @property
    def secret(self) -> bool:
        return self.type == "secret"

    @property
    def env_var(self) -> str:
        """The variable a secret param is delivered in (never argv)."""
        if self.env is not None:
            return self.env
        return "ONEOFF_PARAM_" + self.name.upper().replace("-", "_")


_KNOWN_KEYS = {
    "type", "description", "required", "default", "pattern", "max_length", "min_length",
    "min", "max", "choices", "must_exist", "deliver", "env",
}  # fmt: skip


def parse_param_spec(task: str, name: str, raw: Any, where: str) -> ParamSpec:
    """Build a ``ParamSpec`` from its TOML table, refusing anything ambiguous."""
    ctx = f"{where}: task {task!r} param {name!r}"
    if not NAME_RE.match(name):
        raise ManifestError(f"{ctx}: name must match {NAME_RE.pattern}")
    if not isinstance(raw, dict):
        raise ManifestError(f'{ctx}: must be a table like {{ type = "string" }}')
    from oneoff._keys import check_keys

    check_keys(raw, _KNOWN_KEYS, ctx)
    ptype = raw.get("type", "string")
    if ptype not in PARAM_TYPES:
        raise ManifestError(f"{ctx}: type must be one of {', '.join(PARAM_TYPES)}")

    def _int(key: str) -> int | None:
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ManifestError(f"{ctx}: {key} must be an integer")
        return value

    default = raw.get("default")
    if default is not None:
        if ptype == "secret":
            raise ManifestError(f"{ctx}: a secret param cannot have a default")
        if isinstance(default, bool):
            default = "true" if default else "false"
        elif isinstance(default, int | str | _dt.date):
            default = str(default)
        else:
            raise ManifestError(f"{ctx}: default must be a string, integer, boolean or date")
    pattern = raw.get("pattern")
    regex = None
    if pattern is not None:
        if not isinstance(pattern, str):
            raise ManifestError(f"{ctx}: pattern must be a string")
        from oneoff._pattern import compile_pattern

        # Matched whole (a pattern that matches a prefix is a classic hole) and in time
        # linear in the value, whatever the pattern (oneoff._pattern).
        regex = compile_pattern(pattern, ctx)
    choices = raw.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise ManifestError(f"{ctx}: choices must be a list of strings")
    if ptype == "choice" and not choices:
        raise ManifestError(f"{ctx}: a choice param needs choices = [...]")
    for choice in choices:
        _plain_text(choice, "a choice", ctx)
    deliver = raw.get("deliver", "env")
    if deliver not in ("env", "stdin"):
        raise ManifestError(f'{ctx}: deliver must be "env" or "stdin"')
    if deliver != "env" and ptype != "secret":
        raise ManifestError(f"{ctx}: only secret params have a delivery; others go in argv")
    env_name = _delivered_as(raw.get("env"), ptype, deliver, ctx)
    required = raw.get("required", default is None)
    if not isinstance(required, bool):
        raise ManifestError(f"{ctx}: required must be true or false")
    max_length = _int("max_length")
    min_length = _int("min_length")
    if ptype == "secret" and min_length is not None and min_length < SECRET_MIN_LENGTH:
        # A shorter value would pass here and then be refused by the redactor at run time.
        raise ManifestError(
            f"{ctx}: a secret param's min_length must be at least {SECRET_MIN_LENGTH} (the "
            f"shortest secret oneoff can redact), not {min_length}"
        )
    spec = ParamSpec(
        name=name,
        type=ptype,
        description=_plain_text(str(raw.get("description", "")), "description", ctx),
        required=required,
        default=default,
        pattern=pattern,
        max_length=max_length if max_length is not None else (4096 if ptype == "secret" else 256),
        min_length=min_length if min_length is not None else (8 if ptype == "secret" else 0),
        minimum=_int("min"),
        maximum=_int("max"),
        choices=tuple(choices),
        must_exist=bool(raw.get("must_exist", False)),
        deliver=deliver,
        env=env_name,
        _regex=regex,
    )
    if spec.default is not None:
        try:
            validate_param(spec, spec.default, app_root=None)
        except ParamError as exc:
            raise ManifestError(f"{ctx}: default is invalid: {exc.message}") from None
    return spec


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _delivered_as(value: Any, ptype: str, deliver: str, ctx: str) -> str | None:
    """``env = "DJANGO_SUPERUSER_PASSWORD"``: deliver a secret as the variable the program
    reads. Collisions with config are checked when a plan is built (config is only known
    then); variables that load code or that oneoff owns are refused here."""
    if value is None:
        return None
    if ptype != "secret" or deliver != "env":
        raise ManifestError(f"{ctx}: only a secret param delivered in the environment has env")
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise ManifestError(f"{ctx}: env must be a variable name like DJANGO_SUPERUSER_PASSWORD")
    from oneoff._environ import PROCESS_DEFAULTS, is_dangerous

    if value.startswith("ONEOFF_") or value in {"PATH", "HOME"} | dict(PROCESS_DEFAULTS).keys():
        raise ManifestError(f"{ctx}: env {value} is set by oneoff itself")
    if is_dangerous(value):
        raise ManifestError(f"{ctx}: env {value} would make the process load code from elsewhere")
    return value


def _plain_text(text: str, what: str, ctx: str) -> str:
    """``text`` when it is one line of plain text (approvers read it), else ManifestError."""
    from oneoff._text import text_problem

    problem = text_problem(text, what, max_length=1000)
    if problem is not None:
        raise ManifestError(f"{ctx}: {problem}")
    return text


def validate_param(spec: ParamSpec, value: str, *, app_root: Path | None) -> str:
    """Check ``value`` against ``spec`` and return its normalised string form.

    Raises ``ParamError`` with a one-line message naming the param; the message never
    echoes a secret value.
    """
    label = f"param {spec.name!r}"
    shown = "" if spec.secret else f" (got {value!r})"
    if "\x00" in value:
        raise ParamError(f"{label} contains a NUL byte")
    if spec.type != "secret" and (_CONTROL.search(value) or unsafe_chars(value)):
        # Approvers read the value on their terminals and in the console (oneoff._text):
        # C1 controls and bidi overrides could show them another value than the real one.
        raise ParamError(f"{label} contains a newline or control (format, bidi) character{shown}")
    if len(value) > spec.max_length:
        raise ParamError(f"{label} is longer than {spec.max_length} characters")
    if len(value) < spec.min_length:
        raise ParamError(f"{label} is shorter than {spec.min_length} characters")
    if spec.type == "string":
        if spec._regex is not None:
            if not spec._regex.fullmatch(value):
                raise ParamError(f"{label} does not match pattern {spec.pattern!r}{shown}")
        elif _SHELL_META.search(value):
            raise ParamError(
                f"{label} contains shell metacharacters{shown}",
                hint="declare a pattern for this param if such characters are legitimate",
            )
        return value
    if spec.type == "int":
        if not re.fullmatch(r"[+-]?[0-9]{1,18}", value):
            raise ParamError(f"{label} must be an integer{shown}")
        number = int(value)
        if spec.minimum is not None and number < spec.minimum:
            raise ParamError(f"{label} must be >= {spec.minimum}{shown}")
        if spec.maximum is not None and number > spec.maximum:
            raise ParamError(f"{label} must be <= {spec.maximum}{shown}")
        return str(number)
    if spec.type == "bool":
        lowered = value.lower()
        if lowered in _TRUE:
            return "true"
        if lowered in _FALSE:
            return "false"
        raise ParamError(f"{label} must be true or false{shown}")
    if spec.type == "choice":
        if value not in spec.choices:
            raise ParamError(f"{label} must be one of {', '.join(spec.choices)}{shown}")
        return value
    if spec.type == "date":
        try:
            if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
                raise ValueError
            return _dt.date.fromisoformat(value).isoformat()
        except ValueError:
            raise ParamError(f"{label} must be a date YYYY-MM-DD{shown}") from None
    if spec.type == "path":
        return _validate_path(spec, value, app_root, label, shown)
    # secret: any text of the declared length and, if declared, pattern (never echoed).
    if spec._regex is not None and not spec._regex.fullmatch(value):
        raise ParamError(f"{label} does not match pattern {spec.pattern!r}")
    return value


def _validate_path(
    spec: ParamSpec, value: str, app_root: Path | None, label: str, shown: str
) -> str:
    if value.startswith("-"):
        raise ParamError(f"{label} must not start with '-'{shown}")
    candidate = Path(value)
    if candidate.is_absolute():
        raise ParamError(f"{label} must be relative to the app root{shown}")
    if app_root is None:
        if ".." in candidate.parts:
            raise ParamError(f"{label} must stay inside the app{shown}")
        return candidate.as_posix()
    root = app_root.resolve()
    # resolve() follows symlinks, so a link pointing outside the app is caught too.
    resolved = (root / candidate).resolve()
    if resolved != root and root not in resolved.parents:
        raise ParamError(f"{label} must stay inside the app{shown}")
    if spec.must_exist and not resolved.exists():
        raise ParamError(f"{label} does not exist{shown}")
    return resolved.relative_to(root).as_posix() or "."


def resolve_params(
    specs: Mapping[str, ParamSpec], given: Mapping[str, str], *, task: str, app_root: Path
) -> dict[str, str]:
    """Validate every given value, fill defaults, and refuse unknown or missing params."""
    unknown = sorted(set(given) - set(specs))
    if unknown:
        known = ", ".join(sorted(specs)) or "none"
        raise ParamError(f"task {task!r} has no param {unknown[0]!r} (params: {known})")
    values: dict[str, str] = {}
    for name, spec in specs.items():
        if name in given:
            values[name] = validate_param(spec, given[name], app_root=app_root)
        elif spec.default is not None:
            values[name] = validate_param(spec, spec.default, app_root=app_root)
        elif spec.required:
            raise ParamError(f"task {task!r} needs param {name!r} (--param {name}=VALUE)")
    return values
