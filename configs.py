"""Typed configuration values: one checker for every config the suite reads from a user.

Configs are dataclasses. :func:`from_dict` builds one from a mapping (a YAML file, ``--set``
options), naming unknown keys with the valid ones, missing keys, and values of the wrong type,
recursively through nested dataclasses, dicts, lists and tuples. :func:`coerce` checks one value
against a type hint, with the conversions a user's input needs: a YAML ``1e5`` for an integer
field, an integer for a float field, a list for a tuple. Everything raises :class:`ConfigError`,
whose message starts with where the value was (``quick.yaml: rl.eval_evry`` or
``SACConfig.batch_size``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration value of the wrong type, or a key that is unknown or missing."""


def from_dict(cls: type, raw: Any, where: str, path: str = "") -> Any:
    """``cls(**raw)`` with unknown keys, missing keys and wrong types named (recursively);
    ``path`` is the dotted position of ``raw`` under ``where``, for messages."""
    at = f"{where}: {path}" if path else where
    if not isinstance(raw, dict):
        raise ConfigError(f"{at} must be a mapping of fields, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{at}: unknown field(s) {unknown}; valid fields: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name in raw:
            values[name] = coerce(hints[name], raw[name], where, f"{path}.{name}" if path else name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{at}: missing field {name!r}")
    return cls(**values)


def coerce(hint: Any, value: Any, where: str, path: str) -> Any:
    """``value`` checked against the type hint ``hint`` (and converted where a user's input
    needs it; see the module docstring)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    at = f"{where}: {path}" if path else where
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:
            try:
                return coerce(option, value, where, path)
            except ConfigError:
                pass
        return coerce(options[-1], value, where, path)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{at} must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where, path)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{at} must be a mapping, got {value!r}")
        inner = args[1] if args else Any
        # `method: ` with nothing after it in YAML is None: no options.
        return {
            k: coerce(inner, {} if v is None and inner is not Any else v, where, f"{path}.{k}")
            for k, v in value.items()
        }
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{at} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{at} must have {len(args)} entries, got {value!r}")
            return tuple(coerce(a, v, where, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        items = [coerce(inner, v, where, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{at} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)  # YAML and --set read 1e5 as a float
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{at} must be a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{at} must be a number, got {value!r}")
        if not math.isfinite(value):  # no option of the suite means anything at NaN or inf
            raise ConfigError(f"{at} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{at} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported type {hint} in a config schema")  # a schema bug, not a user error
