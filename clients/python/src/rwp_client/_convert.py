"""Conversion of the values users give the client's dataclasses: to enum
members, numbers and strings (refused by name when they do not fit), to and
from the wire, and the descriptor that converts a dataclass field as it is
set."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from ._errors import DataLoss, InvalidArgument

_In = TypeVar("_In")
_Out = TypeVar("_Out")
_NO_DEFAULT: Any = object()


class _Converted(Generic[_In, _Out]):
    """A dataclass field that converts what it is given (``_In``: say, a
    member or a job-file name) to what it stores (``_Out``: the member) when
    it is set, so ``JobSpec(method="sgd").method is Method.SGD``.

    mypy types the generated ``__init__``'s parameter with ``__set__``'s value
    and the attribute with ``__get__``'s result. The value lives in the
    instance's ``__dict__`` under the field's name (a data descriptor takes
    precedence over it), so equality, hashing, ``repr``, pickling and
    :func:`dataclasses.replace` see the stored value. One cost: mypy takes
    every such field for one with a default, so a missing ``method`` is
    reported by the constructor (``TypeError``), not by mypy.
    """

    def __init__(self, convert: Callable[[str, object], _Out], *, default: _Out = _NO_DEFAULT) -> None:
        self._convert = convert
        self._default = default
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, instance: object, owner: type | None = None) -> _Out:
        if instance is None:
            # How dataclasses read the field's default; none: a required field.
            if self._default is _NO_DEFAULT:
                raise AttributeError(self._name)
            return self._default
        value: _Out = instance.__dict__[self._name]
        return value

    def __set__(self, instance: object, value: _In) -> None:
        instance.__dict__[self._name] = self._convert(self._name, value)


_E = TypeVar("_E", bound=enum.Enum)


def _invert(table: Mapping[_E, int]) -> dict[int, _E]:
    return {wire: value for value, wire in table.items()}


def _from_wire(name: str, value: int, table: Mapping[int, _E]) -> _E:
    try:
        return table[value]
    except KeyError:
        raise DataLoss(f"the server sent an unknown {name} ({value}): is rwp-client older than the server?") from None


def _enum(name: str, value: object, cls: type[_E]) -> _E:
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        try:
            return cls(value)
        except ValueError:
            pass
    expected = ", ".join(repr(m.value) for m in cls)
    raise InvalidArgument(f"{name} = {value!r}: must be a {cls.__name__} or one of {expected}")


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} = {value!r}: must be an integer")
    return value


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{name} = {value!r}: must be a number")
    return float(value)


def _boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} = {value!r}: must be true or false")
    return value


def _assign(message: Any, name: str, value: object) -> None:
    """Sets a scalar field, turning protobuf's range errors into ones that name
    the spec's field (``epochs = -1: ...``)."""
    try:
        setattr(message, name, value)
    except (ValueError, TypeError) as e:
        raise InvalidArgument(f"{name} = {value!r}: {e}") from None


def _no_unknown_keys(name: str, table: Mapping[str, object], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise InvalidArgument(f"{name}: unknown key {unknown[0]!r} (expected {', '.join(sorted(allowed))})")


def _string(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} = {value!r}: must be a string")
    return value
