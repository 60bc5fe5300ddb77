"""Models by name: ``build_model("conv", {"latent_dim": 16})``."""

from __future__ import annotations

import dataclasses
from typing import Callable

from audiovae.config import from_dict
from audiovae.errors import ConfigError

_MODELS: dict[str, tuple[type, type]] = {}


def register(name: str, config_cls: type) -> Callable[[type], type]:
    """Class decorator: register a model class and its config dataclass under ``name``."""

    def deco(cls: type) -> type:
        _MODELS[name] = (cls, config_cls)
        cls.name = name
        return cls

    return deco


def available() -> list[str]:
    _load_builtin()
    return sorted(_MODELS)


def config_class(name: str) -> type:
    _load_builtin()
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(_MODELS))}")
    return _MODELS[name][1]


def make_config(name: str, data: dict | None = None):
    return from_dict(config_class(name), data or {})


def build_model(name: str, config=None):
    """Build registered model ``name`` from its config dataclass (or a dict of its fields)."""
    cls_cfg = config_class(name)
    if config is None or isinstance(config, dict):
        config = from_dict(cls_cfg, config or {})
    elif not dataclasses.is_dataclass(config):
        raise ConfigError(f"model config must be a dataclass or dict, got {type(config).__name__}")
    return _MODELS[name][0](config)


def _load_builtin() -> None:
    from audiovae.models import conv, dense, image  # noqa: F401
