"""Typed settings: each section of params.yaml is read through one frozen dataclass.

    @settings
    class Saturation(Settings):
        images: Count                       # a non-negative integer, or null (all)
        alphas: Annotated[int, Range(ge=2)]
        baselines: tuple[Literal["black", "data"], ...]

    Saturation.from_params({"images": 16, "alphas": 11, "baselines": ["black"]}, "saturation")

``from_params`` is the one place a section is checked: an unknown key is an error naming the
closest valid key, every value must have its field's type (a quoted number is an error, not a
number), ranges are checked, and a field without a default must be given. Defaults live in the
dataclass only: a setting the pipeline reads has no second default elsewhere in the code.
Lists become tuples (the objects are immutable); mappings stay dicts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from replication.errors import ConfigError

T = TypeVar("T", bound="Settings")


@dataclasses.dataclass(frozen=True)
class Range:
    """A bound on a number: ``Range(ge=0)``, ``Range(gt=0, le=1)``."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def check(self, value: Any, where: str) -> None:
        bounds = [(self.ge, value >= self.ge if self.ge is not None else True, ">="),
                  (self.gt, value > self.gt if self.gt is not None else True, ">"),
                  (self.le, value <= self.le if self.le is not None else True, "<="),
                  (self.lt, value < self.lt if self.lt is not None else True, "<")]
        failed = [f"{op} {bound:g}" for bound, holds, op in bounds if bound is not None and not holds]
        if failed:
            raise ConfigError(f"{where} is {value!r}; it must be {' and '.join(failed)}")


# The common kinds of number in the pipeline's settings.
Count = Annotated[int | None, Range(ge=0)]  # how many (images, samples): null means all
PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
Probability = Annotated[float, Range(ge=0, le=1)]
NonNegative = Annotated[float, Range(ge=0)]
Positive = Annotated[float, Range(gt=0)]
Seed = Annotated[int, Range(ge=0)]


def settings(cls: type[T]) -> type[T]:
    """Class decorator: a frozen, keyword-only dataclass (the section's schema)."""
    return dataclasses.dataclass(frozen=True, kw_only=True)(cls)


class Settings:
    """Base of every settings section (use with ``@settings``)."""

    @classmethod
    def from_params(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
        """The section at params.yaml path ``where`` (e.g. ``"expected_gradcam.saturation"``)."""
        return _build(cls, {} if data is None else data, where)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    def as_params(self) -> dict[str, Any]:
        """Plain YAML/JSON-able values (tuples as lists), in field order."""
        return _plain(self)


def closest(name: str, valid: list[str]) -> str:
    """``did you mean 'x'?`` for a misspelled key, or the list of valid keys."""
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"did you mean {match[0]!r}? " if match else ""
    return f"{hint}the valid keys are {sorted(valid)}"


def check_keys(data: Mapping[str, Any], valid: list[str], where: str) -> None:
    """Every key of ``data`` must be one of ``valid``."""
    for key in data:
        if key not in valid:
            raise ConfigError(f"params.yaml {_join(where, str(key))}: unknown key; "
                              f"{closest(str(key), valid)}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _build(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"params.yaml {where or 'top level'} must be a mapping of settings, "
                          f"got {_shown(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    check_keys(data, list(fields), where)
    hints = typing.get_type_hints(cls, include_extras=True)
    values = {}
    for name, f in fields.items():
        path = _join(where, name)
        if name in data:
            values[name] = convert(hints[name], data[name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"params.yaml lacks {path}: add it to the base section (the "
                              "papers' value) or to the profile that needs it")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"params.yaml {where}: {err}") from None


def _shown(value: Any) -> str:
    """A value as params.yaml spells it, with its kind."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    kind = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
            list: "a list", dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)
    return f"{value!r} ({kind})"


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        return _describe(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        return f"a list of {_describe(args[0])}"
    if origin in (dict, Mapping):
        return f"a mapping of {_describe(args[1])}"
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and issubclass(hint, Settings):
        return f"a mapping ({hint.__name__})"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            Any: "any value"}.get(hint, getattr(hint, "__name__", str(hint)))


def convert(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` (the field's annotation)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        result = convert(args[0], value, where)
        if result is not None:
            for constraint in args[1:]:
                if isinstance(constraint, Range):
                    constraint.check(result, where)
        return result
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(option, value, where)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"params.yaml {where} is {_shown(value)}; it must be {_describe(hint)}")
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(a is value for a in args)):
            return value
        raise ConfigError(f"params.yaml {where} is {_shown(value)}; it must be {_describe(hint)}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"params.yaml {where} is {_shown(value)}; it must be {_describe(hint)}")
        return tuple(convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"params.yaml {where} is {_shown(value)}; it must be {_describe(hint)}")
        return {convert(args[0], k, where): convert(args[1], v, _join(where, str(k)))
                for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Settings):
        return _build(hint, value, where)
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        # An integer is a number too; it is kept as written so echoed settings stay as typed.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not (
                isinstance(value, float) and math.isnan(value)):
            return value
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported settings annotation {hint!r} at {where}")
    hint_text = " (remove the quotes)" if isinstance(value, str) and hint in (int, float) else ""
    raise ConfigError(f"params.yaml {where} is {_shown(value)}; it must be "
                      f"{_describe(hint)}{hint_text}")


def _plain(value: Any) -> Any:
    if isinstance(value, Settings):
        return {f.name: _plain(getattr(value, f.name))
                for f in dataclasses.fields(value)}  # type: ignore[arg-type]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def schema_keys(cls: type[Settings]) -> dict[str, Any]:
    """Field name -> type hint of a settings class (for walking raw layers)."""
    return typing.get_type_hints(cls, include_extras=True)


def settings_class(hint: Any) -> type[Settings] | None:
    """The settings class a (possibly Optional/Annotated) hint names, else None."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        return settings_class(args[0])
    if origin in (Union, types.UnionType):
        found = [c for c in (settings_class(a) for a in args) if c is not None]
        return found[0] if len(found) == 1 else None
    if isinstance(hint, type) and issubclass(hint, Settings):
        return hint
    return None


def mapping_values(hint: Any) -> Any | None:
    """The value hint of a ``dict[str, V]`` field (possibly Optional/Annotated), else None."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        return mapping_values(args[0])
    if origin in (Union, types.UnionType):
        found = [m for m in (mapping_values(a) for a in args) if m is not None]
        return found[0] if len(found) == 1 else None
    if origin in (dict, Mapping):
        return args[1]
    return None
