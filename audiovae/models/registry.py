"""Models by name: ``build_model("conv", {"latent_dim": 16})``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from audiovae.config import from_dict
from audiovae.errors import ConfigError

_MODELS: dict[str, tuple[type, type]] = {}
_TRAIN_DEFAULTS: dict[str, dict] = {}
_INFO: dict[str, "ModelInfo"] = {}


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model is: ``kind`` ``"mel"`` or ``"image"``; ``sequence``: a model of whole
    sequences (True) or of single frames (False); ``data``: the kinds of data it trains on (as
    :func:`audiovae.data.source.open_data` names them)."""

    kind: str
    sequence: bool
    data: tuple[str, ...]


def register(name: str, config_cls: type, train_defaults: dict | None = None, *, kind: str = "mel",
             sequence: bool = False, data: tuple[str, ...] | None = None) -> Callable[[type], type]:
    """Class decorator: register a model class and its config dataclass under ``name``.

    ``train_defaults``: TrainConfig fields this model trains best with (batch size,
    crop length, lr...), used in place of TrainConfig's generic defaults unless set.
    ``kind``, ``sequence``, ``data``: see :class:`ModelInfo` (``data`` defaults to
    ``("features",)`` for a mel sequence model, ``("features", "frames")`` for a mel frame model).
    """
    if kind not in ("mel", "image"):
        raise ValueError(f"kind must be 'mel' or 'image', got {kind!r}")
    if data is None:
        if kind != "mel":
            raise ValueError(f"an image model registers the data it trains on (data=...), {name!r} does not")
        data = ("features",) if sequence else ("features", "frames")

    def deco(cls: type) -> type:
        _MODELS[name] = (cls, config_cls)
        _TRAIN_DEFAULTS[name] = dict(train_defaults or {})
        _INFO[name] = ModelInfo(kind, bool(sequence), tuple(data))
        cls.name = name
        cls.is_sequence = bool(sequence)
        return cls

    return deco


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of registered model ``name`` (a clear error for an unknown name)."""
    config_class(name)
    return _INFO[name]


def models_of(kind: str) -> tuple[str, ...]:
    """The registered models of ``kind`` (``"mel"`` or ``"image"``), sorted."""
    _load_builtin()
    return tuple(n for n in sorted(_MODELS) if _INFO[n].kind == kind)


def train_defaults(name: str) -> dict:
    """The TrainConfig fields registered model ``name`` overrides by default (a copy)."""
    config_class(name)  # a clear error for an unknown name
    return dict(_TRAIN_DEFAULTS.get(name, {}))


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


def parameter_count(name: str, config) -> int:
    """Parameters of registered model ``name`` built from ``config``, counted on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        model = _MODELS[name][0](config)
    return sum(p.numel() for p in model.parameters())


def check_model_size(name: str, config) -> None:
    """Refuse a config whose model would have more than ``MAX_PARAMETERS`` parameters, before it is built."""
    from audiovae.config import MAX_PARAMETERS, field_error

    if name not in _MODELS:  # a config made while its model's module is still being imported
        return
    n = parameter_count(name, config)
    if n > MAX_PARAMETERS:
        raise field_error("", None, f"a model of at most {MAX_PARAMETERS:,} parameters; the {name} model of this "
                                    f"configuration has {n:,} (fewer or narrower layers)")


def _load_builtin() -> None:
    from audiovae.models import conv, dense, image  # noqa: F401
