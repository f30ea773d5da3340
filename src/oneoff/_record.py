"""A small stand-in for ``dataclasses`` on the CLI's hot path (frozen records, defaults).

Why: on Python 3.11, importing ``dataclasses`` pulls in ``inspect``, ``ast``, ``dis`` and
``tokenize`` (~10 ms), and each ``@dataclass`` then compiles its generated methods with
``exec`` (~0.5 ms a class). ``oneoff run`` loads some thirty record classes, which cost more
than the whole rest of its own work. These records build their methods from closures
instead; ``typing.dataclass_transform`` tells type checkers they behave like dataclasses.

Supported: ``frozen``, ``slots`` (accepted, no ``__slots__`` are made), field defaults,
``field(default=..., default_factory=..., compare=..., repr=...)``, ``__post_init__``,
inheritance, ``replace()``, ``asdict()`` (shallow) and ``fields()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

__all__ = ["FrozenInstanceError", "asdict", "dataclass", "field", "fields", "replace"]

T = TypeVar("T")
_MISSING: Any = object()


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a frozen record."""


class Field:
    __slots__ = ("compare", "default", "default_factory", "name", "repr")

    def __init__(
        self,
        default: Any = _MISSING,
        default_factory: Any = _MISSING,
        compare: bool = True,
        repr: bool = True,
    ) -> None:
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.compare = compare
        self.repr = repr


def field(
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] = _MISSING,
    compare: bool = True,
    repr: bool = True,
) -> Any:
    return Field(default, default_factory, compare, repr)


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _collect(cls: type) -> tuple[Field, ...]:
    found: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for f in getattr(base, "__record_fields__", ()):
            found[f.name] = f
    # The class's own annotations only (not inherited ones): those come from the bases.
    own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 - strings, never evaluated
    for name, annotation in own.items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, _MISSING)
        spec = value if isinstance(value, Field) else Field(default=value)
        spec.name = name
        if isinstance(value, Field):
            # Like dataclasses: the class attribute becomes the plain default (or goes).
            if spec.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, spec.default)
        found[name] = spec
    return tuple(found.values())


def _make_init(specs: tuple[Field, ...], frozen: bool, post_init: bool) -> Callable[..., None]:
    names = [f.name for f in specs]
    by_name = {f.name: f for f in specs}
    setter = object.__setattr__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes {len(names)} positional arguments")
        values = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in by_name or key in values:
                raise TypeError(f"{type(self).__name__}() got an unexpected or repeated {key!r}")
            values[key] = value
        for name in names:
            if name in values:
                value = values[name]
            else:
                spec = by_name[name]
                if spec.default is not _MISSING:
                    value = spec.default
                elif spec.default_factory is not _MISSING:
                    value = spec.default_factory()
                else:
                    raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
            setter(self, name, value)
        if post_init:
            self.__post_init__()

    return __init__


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _decorate(cls: type[T], frozen: bool, eq: bool) -> type[T]:
    specs = _collect(cls)
    setattr(cls, "__record_fields__", specs)  # noqa: B010
    setattr(cls, "__init__", _make_init(specs, frozen, hasattr(cls, "__post_init__")))  # noqa: B010
    compared = tuple(f.name for f in specs if f.compare)
    shown = tuple(f.name for f in specs if f.repr)

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
        return f"{type(self).__qualname__}({inner})"

    setattr(cls, "__repr__", __repr__)  # noqa: B010
    if eq:

        def __eq__(self: Any, other: object) -> bool:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in compared)

        setattr(cls, "__eq__", __eq__)  # noqa: B010
        if frozen:

            def __hash__(self: Any) -> int:
                return hash(tuple(getattr(self, n) for n in compared))

            setattr(cls, "__hash__", __hash__)  # noqa: B010
        else:
            setattr(cls, "__hash__", None)  # noqa: B010
    if frozen:
        setattr(cls, "__setattr__", _frozen_setattr)  # noqa: B010
        setattr(cls, "__delattr__", _frozen_delattr)  # noqa: B010
    return cls


@overload
def dataclass(cls: type[T], /) -> type[T]: ...


@overload
def dataclass(
    *, frozen: bool = False, slots: bool = False, eq: bool = True
) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(field_specifiers=(field, Field))
def dataclass(
    cls: type[T] | None = None, /, *, frozen: bool = False, slots: bool = False, eq: bool = True
) -> Any:
    """Decorate a class like ``dataclasses.dataclass`` (the subset documented above)."""
    if cls is not None:
        return _decorate(cls, frozen, eq)
    return lambda klass: _decorate(klass, frozen, eq)


def fields(obj: Any) -> tuple[Field, ...]:
    specs: tuple[Field, ...] = obj.__record_fields__
    return specs


def replace(obj: T, /, **changes: Any) -> T:
    values = {f.name: getattr(obj, f.name) for f in fields(obj)}
    values.update(changes)
    return type(obj)(**values)


def asdict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}
