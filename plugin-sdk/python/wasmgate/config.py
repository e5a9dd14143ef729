"""Typed plugin config: the JSON the gateway passes to `init`, read into the plugin's `Config`
dataclass, refused with a message naming the field when it does not fit."""

import dataclasses
import json
import typing


class ConfigError(Exception):
    """The config does not fit; the gateway refuses to start with this message."""


_PLAIN = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", dict: "a table", list: "a list"}


def _fits(value, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _read(value, kind, where: str):
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
        return _read(value, kind, where)
    if dataclasses.is_dataclass(kind):
        return parse(value, kind, where)
    plain = origin or kind
    if plain in _PLAIN:
        if not _fits(value, plain):
            raise ConfigError(f"invalid config: `{where}` must be {_PLAIN[plain]}, not {json.dumps(value)}")
        if plain is dict and len(args) == 2:
            return {k: _read(v, args[1], f"{where}.{k}") for k, v in value.items()}
        if plain is list and len(args) == 1:
            return [_read(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return float(value) if plain is float else value
    return value


def parse(value, kind, where: str = ""):
    """Reads a JSON value (already decoded) into the dataclass `kind`: unknown fields, missing
    required fields and values of the wrong type are refused, naming the field."""
    if not isinstance(value, dict):
        raise ConfigError(f"invalid config: `{where or 'config'}` must be a table, not {json.dumps(value)}")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    prefix = f"{where}." if where else ""
    unknown = [key for key in value if key not in fields]
    if unknown:
        expected = ", ".join(f"`{name}`" for name in fields) or "none"
        raise ConfigError(f"invalid config: unknown field `{prefix}{unknown[0]}`, expected one of {expected}")
    hints = typing.get_type_hints(kind)
    read = {}
    for name, spec in fields.items():
        path = prefix + name
        if name in value:
            read[name] = _read(value[name], hints.get(name, typing.Any), path)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"invalid config: missing field `{path}`")
    return kind(**read)


def load(text: str, kind):
    """The gateway's config JSON as `kind`: a dataclass, or None for the decoded JSON itself."""
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"invalid config: not JSON: {error}") from None
    return value if kind is None else parse(value, kind)
