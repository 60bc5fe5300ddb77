"""Plain-dataclass configuration: YAML round trip and ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import math
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
    except ConfigError as exc:
        if exc.path is None and source is not None:  # a value refused by the class's own checks: name the file
            raise _with_path(exc, source) from None
        raise
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
            if value not in (0, 1) or isinstance(value, float):  # 2 or 0.5 is no truth value
                raise ValueError(value)
            return bool(value)
        if tp in (int, float) and isinstance(value, bool):  # `batch_size: true` is a slip, not 1
            raise ValueError(value)
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


# --- range checks: each configuration dataclass validates every field in one function at construction --------

# Generous bounds that no real model reaches, so a typo cannot ask for tens of GiB: the width of any layer
# (hidden units, channels, latent dimensions) and the parameters of a whole model (1e9 float32 weights are
# 4 GB, and AdamW's two moments and the gradients make that 16 GB).
MAX_WIDTH = 16384
MAX_PARAMETERS = 1_000_000_000


def _show(value: Any) -> str:
    text = value if isinstance(value, str) and value.isprintable() and value else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def field_error(name: str, value: Any, allowed: str, source: str | os.PathLike | None = None) -> ConfigError:
    """``name=value: must be allowed`` as a :class:`ConfigError` that remembers the field (see :func:`nested_error`)."""
    exc = ConfigError(f"{name}={_show(value)}: must be {allowed}" if name else f"must be {allowed}", source)
    exc.field = name
    return exc


def nested_error(exc: ConfigError, prefix: str) -> ConfigError:
    """A field error of a nested configuration, renamed ``prefix.field`` (other errors unchanged)."""
    if getattr(exc, "field", None) is None:
        return exc
    out = ConfigError(f"{prefix}.{exc.problem}" if exc.field else f"{prefix}: {exc.problem}", exc.path)
    out.field = f"{prefix}.{exc.field}" if exc.field else prefix
    return out


def _with_path(exc: ConfigError, path: str | os.PathLike) -> ConfigError:
    out = ConfigError(exc.problem, path)
    if hasattr(exc, "field"):
        out.field = exc.field
    return out


def _int_range(lo: int | None, hi: int | None) -> str:
    if hi is None:
        return f"an integer >= {lo}"
    if lo is None:
        return f"an integer <= {hi}"
    return f"an integer in {lo}..{hi}"


def check_int(name: str, value: Any, lo: int | None = 0, hi: int | None = None) -> None:
    """``value`` is an int (not a bool) in ``lo..hi`` (inclusive; ``None``: unbounded)."""
    if (isinstance(value, bool) or not isinstance(value, int) or (lo is not None and value < lo)
            or (hi is not None and value > hi)):
        raise field_error(name, value, _int_range(lo, hi))


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                hi_open: bool = False) -> None:
    """``value`` is a finite number in the range (``lo_open``/``hi_open``: the bound itself excluded)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo:g}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi:g}")
        raise field_error(name, value, "a finite number" + (" " + " and ".join(parts) if parts else ""))


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """``value`` is one of ``choices``."""
    choices = list(choices)
    if not any(value == c and type(value) is type(c) for c in choices):
        raise field_error(name, value, "one of " + ", ".join("null" if c is None else str(c) for c in choices))


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
            nested = [k for k, v in node.items() if isinstance(v, dict) and parts[-1] in v]
            hint = f" (did you mean {'.'.join([*parts[:-1], nested[0], parts[-1]])}?)" if nested else ""
            raise ConfigError(f"unknown configuration key {key!r}{hint}", source)
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
