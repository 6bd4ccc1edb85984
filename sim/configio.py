"""Typed, frozen configuration built from plain dicts (YAML), validated at load.

`build(cls, data, path)` turns a dict into the frozen dataclass `cls`, checking
every key against the dataclass fields and every value against its annotation.
Errors are `ConfigError`s that name the field path (``serving.scheduler.policy``),
the offending value and what is allowed. Range checks that types cannot express
live in each dataclass's ``validate()`` and use `require`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin


class ConfigError(ValueError):
    """A scenario, catalog or profile value is not allowed. The message names the field."""


def require(ok: bool, path: str, value: Any, allowed: str) -> None:
    """Raise a ConfigError for `path` unless `ok`. `allowed` says what would be accepted."""
    if not ok:
        raise ConfigError(f"{path}: got {value!r}; {allowed}")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {sorted(f.name for f in dataclasses.fields(tp))}"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        require(value in get_args(tp), path, value, f"allowed: {_type_name(tp)}")
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None:
            require(type(None) in options, path, value, f"expected {_type_name(tp)}")
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _convert(opt, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{path}: got {value!r}; expected {_type_name(tp)}")
    if origin is tuple:
        require(isinstance(value, (list, tuple)), path, value, f"expected {_type_name(tp)}")
        (item_tp, *_rest) = get_args(tp)
        return tuple(_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        require(isinstance(value, dict), path, value, f"expected {_type_name(tp)}")
        key_tp, val_tp = get_args(tp)
        return {_convert(key_tp, k, f"{path}.{k}"): _convert(val_tp, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if tp is bool:
        require(isinstance(value, bool), path, value, "expected true or false")
        return value
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True
        require(ok, path, value, "expected an integer")
        return value
    if tp is float:
        require(isinstance(value, (int, float)) and not isinstance(value, bool), path, value, "expected a number")
        return float(value)
    if tp is str:
        require(isinstance(value, str), path, value, "expected a string")
        return value
    raise TypeError(f"configio cannot convert annotation {tp!r} at {path}")


def build(cls: type, data: Any, path: str) -> Any:
    """Build frozen dataclass `cls` from mapping `data`; `path` prefixes error messages."""
    if isinstance(data, cls):
        return data
    require(isinstance(data, dict), path or "<root>", data, f"expected {_type_name(cls)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key; allowed keys here: {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{sub}: missing; expected {_type_name(hints[name])}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def to_dict(obj: Any) -> Any:
    """Inverse of `build`: a plain dict/list tree (for writing the edited scenario back)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
