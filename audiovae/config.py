"""Plain-dataclass configuration: YAML round trip and ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from audiovae.errors import AudioVAEError, ConfigError
from audiovae.utils import atomic_write_text

T = TypeVar("T")


def to_dict(obj: Any) -> dict:
    """A dataclass as a plain dict of YAML-safe values."""
    return dataclasses.asdict(obj)


def from_dict(cls: type[T], data: dict | None, source: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys are an error, not ignored."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}", source)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints.get(key), value, key, source)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {cls.__name__}: {exc}", source) from None


def _coerce(tp: Any, value: Any, key: str, source: str | None) -> Any:
    if tp is None or value is None:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        non_none = [a for a in args if a is not type(None)]
        if isinstance(value, str) and value.lower() in ("none", "null", "~"):
            return None
        return _coerce(non_none[0], value, key, source) if len(non_none) == 1 else value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else None
        out = [_coerce(inner, v, key, source) for v in value]
        return tuple(out) if origin is tuple else out
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value, source)
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"field {key!r} expects {getattr(tp, '__name__', tp)}, got {value!r}", source) from None
    return value


def apply_overrides(obj: T, overrides: Iterable[str], source: str = "command line") -> T:
    """Return a copy of dataclass ``obj`` with ``key=value`` strings applied.

    Nested dataclass fields take dotted keys (``model.latent_dim=16``). Values are
    parsed as YAML scalars and coerced to the field's declared type.
    """
    data = to_dict(obj)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value", source)
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown configuration key {key!r}", source)
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"unknown configuration key {key!r}", source)
        node[parts[-1]] = value
    return from_dict(type(obj), data, source)


def save_yaml(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as YAML atomically."""
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def load_yaml(path: str | os.PathLike, error: type[AudioVAEError] = ConfigError) -> dict:
    """Read a YAML mapping, raising ``error`` (a :class:`ConfigError` by default) naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise error("file not found", path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise error(f"not valid YAML ({exc.__class__.__name__})", path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error("expected a mapping at the top level", path)
    return data
