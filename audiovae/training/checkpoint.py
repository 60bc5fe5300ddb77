"""Model directories: ``config.yaml`` + ``model.safetensors`` (+ ``trainer_state.pt`` while training).

- Weights are safetensors: loading them runs no code.
- ``config.yaml`` records the SHA-256 of the weights it belongs to; a weights
  file that does not match (tampered with, or copied from another run) is refused.
- ``trainer_state.pt`` holds plain tensors and numbers only (the model and
  optimiser state, step, epoch, position in the epoch, best validation figure)
  and is read with ``torch.load(weights_only=True)``, which refuses pickled objects.
- Every file is written to a temporary name and renamed. The trainer state is
  written first and is self-contained, so a run killed at any moment resumes
  from a consistent state.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from audiovae.audio.config import MelConfig
from audiovae.audio.normalize import Normalizer
from audiovae.config import load_yaml, save_yaml
from audiovae.errors import CheckpointError

FORMAT = "audiovae-model/1"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model_dir(
    out: str | os.PathLike,
    model: torch.nn.Module,
    model_name: str,
    model_config: dict,
    normalizer: Normalizer | None,
    mel: MelConfig | None,
    extra: dict | None = None,
) -> Path:
    """Write ``config.yaml`` and ``model.safetensors`` into ``out`` atomically (weights first)."""
    from safetensors.torch import save_file

    from audiovae.utils import atomic_path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if normalizer is not None:
        tensors["normalizer.mean"] = normalizer.mean.detach().cpu().contiguous()
        tensors["normalizer.std"] = normalizer.std.detach().cpu().contiguous()
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        digest = sha256_file(tmp)
    cfg = {
        "format": FORMAT,
        "model": model_name,
        "model_config": model_config,
        "mel": None if mel is None else mel.to_dict(),
        "normalized": normalizer is not None,
        "weights_sha256": digest,
        **(extra or {}),
    }
    save_yaml(out / "config.yaml", cfg)
    return out


@dataclass
class LoadedModel:
    model: Any
    name: str
    config: dict
    mel: MelConfig | None
    normalizer: Normalizer | None
    path: Path


def read_model_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    cfg_path = path / "config.yaml"
    if not path.is_dir():
        raise CheckpointError("not a model directory (no such folder)", path)
    if not cfg_path.is_file():
        raise CheckpointError("not a model directory (no config.yaml)", path)
    cfg = load_yaml(cfg_path, CheckpointError)
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"config.yaml is not an audiovae model configuration (format {FORMAT!r} expected)", cfg_path)
    return cfg


def load_model_dir(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Load a model directory; refuses foreign or tampered files with :class:`CheckpointError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from audiovae.models.registry import build_model

    path = Path(path)
    cfg = read_model_config(path)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError("missing model.safetensors", path)
    if sha256_file(weights) != cfg.get("weights_sha256"):
        raise CheckpointError(
            "model.safetensors does not match the checksum in config.yaml (modified, or from another run); refusing to load",
            weights,
        )
    try:
        tensors = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"not a valid safetensors file ({exc})", weights) from None
    try:
        model = build_model(cfg["model"], cfg.get("model_config") or {})
    except Exception as exc:
        raise CheckpointError(f"cannot build model {cfg.get('model')!r} from config.yaml ({exc})", path) from None
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not fit the model in config.yaml ({str(exc).splitlines()[0]})", weights) from None
    model.eval()
    normalizer = None
    if cfg.get("normalized"):
        if "normalizer.mean" not in tensors:
            raise CheckpointError("normalisation statistics missing from model.safetensors", weights)
        normalizer = Normalizer(tensors["normalizer.mean"], tensors["normalizer.std"])
    mel = MelConfig.from_dict(cfg["mel"], str(path / "config.yaml")) if cfg.get("mel") else None
    return LoadedModel(model, cfg["model"], cfg, mel, normalizer, path)


def save_trainer_state(path: str | os.PathLike, state: dict) -> None:
    from audiovae.utils import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_trainer_state(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no trainer_state.pt to resume from", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for foreign objects, RuntimeError/EOFError for junk
        raise CheckpointError(
            f"refusing trainer_state.pt: not a plain tensor checkpoint ({exc.__class__.__name__}: {str(exc).splitlines()[0][:160]})",
            path,
        ) from None

