"""The small JSON Schema subset request bodies are validated with (and documented by).

One schema both validates a body and appears in ``/openapi.json``, so the two cannot
drift. Supported keywords: ``type`` (object, array, string, integer, boolean, null or a
list of them), ``properties``, ``required``, ``additionalProperties`` (false only),
``items``, ``maxItems``, ``maxLength``, ``pattern`` (full match), ``enum``, ``minimum``,
``maximum``. Anything else in a schema is a programming error, refused at import time.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["SchemaViolation", "check_schema", "validate"]

_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "maxItems",
        "maxLength", "pattern", "enum", "minimum", "maximum", "description",
    }
)  # fmt: skip
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


class SchemaViolation(ValueError):
    """A body that does not match its schema (answered 422)."""


def check_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` itself, after checking it uses only the supported keywords."""
    unknown = set(schema) - _KEYWORDS
    if unknown:
        raise TypeError(f"unsupported schema keywords: {sorted(unknown)}")
    for sub in schema.get("properties", {}).values():
        check_schema(sub)
    if "items" in schema:
        check_schema(schema["items"])
    return schema


def validate(value: Any, schema: dict[str, Any], where: str = "body") -> None:
    """Raise SchemaViolation naming the first place ``value`` breaks ``schema``."""
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, name) for name in names):
            raise SchemaViolation(f"{where} must be {' or '.join(names)}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaViolation(f"{where} must be one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", len(value)):
            raise SchemaViolation(f"{where} is longer than {schema['maxLength']} characters")
        # The server's own constant patterns (one bounded class each: no nested repetition,
        # so no ReDoS); a manifest's param patterns go through RE2 (oneoff._pattern).
        if "pattern" in schema and not re.fullmatch(schema["pattern"], value):
            raise SchemaViolation(f"{where} is not of the expected form")
    if _is(value, "integer") and not schema.get("minimum", value) <= value <= schema.get(
        "maximum", value
    ):
        raise SchemaViolation(f"{where} is out of range")
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            raise SchemaViolation(f"{where} has more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            validate(item, schema.get("items", {}), f"{where}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                raise SchemaViolation(f"{where}.{name} is required")
        for name, item in value.items():
            if name in props:
                validate(item, props[name], f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                raise SchemaViolation(f"{where}.{str(name)[:40]} is not allowed")


def _is(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])
