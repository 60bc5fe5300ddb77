"""Model directories: ``config.yaml`` + ``model.safetensors`` (+ ``trainer_state.pt`` while training).

- Weights are safetensors: loading them runs no code.
- ``config.yaml`` records the SHA-256 of the weights it belongs to; a weights
  file that does not match (tampered with, or copied from another run) is refused.
  It also records ``config_sha256``, over its own model settings and that weights
  checksum, so an edited model configuration is refused too (a model directory
  from before that entry still loads). Before anything is allocated, the weights'
  shapes (from the safetensors header) are compared with the model the
  configuration describes, built on PyTorch's "meta" device (no memory): a crafted
  configuration (``hidden: [25000, 25000]``) cannot make loading allocate gigabytes.
- ``trainer_state.pt`` holds plain tensors and numbers only (the model and
  optimiser state, step, epoch, position in the epoch, best validation figure)
  and is read with ``torch.load(weights_only=True)``, which refuses pickled objects.
- Every file is written to a temporary name and renamed; ``config.yaml`` and
  ``model.safetensors`` as a set (see :func:`save_model_dir`). The trainer state
  is written first and is self-contained, so a run killed at any moment resumes
  from a consistent state, and the folder always loads as a model.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from audiovae.audio.config import MelConfig
from audiovae.audio.normalize import Normalizer
from audiovae.config import load_yaml, save_yaml
from audiovae.errors import CheckpointError
from audiovae.utils import file_digest, pick_device  # noqa: F401  pick_device: imported from here by the tasks

FORMAT = "audiovae-model/1"


PENDING = ".config.pending.yaml"


def save_model_dir(
    out: str | os.PathLike,
    model: torch.nn.Module,
    model_name: str,
    model_config: dict,
    normalizer: Normalizer | None,
    mel: MelConfig | None,
    extra: dict | None = None,
) -> Path:
    """Write ``config.yaml`` and ``model.safetensors`` into ``out`` as one atomic set.

    The two files belong together (the configuration holds the weights'
    SHA-256), and two renames cannot happen at once. So the new configuration
    is first written complete to ``.config.pending.yaml``, then the weights are
    renamed into place, then the configuration. A kill between the two renames
    leaves new weights whose configuration is the pending file, which
    :func:`load_model_dir` recognises by the checksum: at any instant the
    folder loads as either the old model or the new one.
    """
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
        cfg = {
            "format": FORMAT,
            "model": model_name,
            "model_config": model_config,
            "mel": None if mel is None else mel.to_dict(),
            "normalized": normalizer is not None,
            "weights_sha256": file_digest(tmp),
            **(extra or {}),
        }
        cfg["config_sha256"] = config_digest(cfg)
        save_yaml(out / PENDING, cfg)  # phase 1: the new set is complete on disk
    # phase 2 (the weights' rename) happened as the block closed; phase 3:
    os.replace(out / PENDING, out / "config.yaml")
    return out


@dataclass
class LoadedModel:
    model: Any
    name: str
    config: dict
    mel: MelConfig | None
    normalizer: Normalizer | None
    path: Path


def read_model_config(path: str | os.PathLike, weights_sha256: str | None = None) -> dict:
    """A model directory's configuration.

    With ``weights_sha256`` (the checksum of the weights on disk), a save that
    was killed between its two renames is recognised: the pending
    configuration that matches the weights is the right one.
    """
    path = Path(path)
    cfg_path = path / "config.yaml"
    if not path.is_dir():
        raise CheckpointError("not a model directory (no such folder)", path)
    pending = path / PENDING
    if weights_sha256 is not None and pending.is_file():
        try:
            cand = load_yaml(pending, CheckpointError)
        except CheckpointError:
            cand = {}
        if cand.get("format") == FORMAT and cand.get("weights_sha256") == weights_sha256:
            return cand
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
    weights = path / "model.safetensors"
    if not weights.is_file():
        read_model_config(path)  # the clearer error for a folder that is no model directory at all
        raise CheckpointError("missing model.safetensors", path)
    digest = file_digest(weights)
    cfg = read_model_config(path, digest)
    if digest != cfg.get("weights_sha256"):
        raise CheckpointError(
            "model.safetensors does not match the checksum in config.yaml (modified, or from another run); refusing to load",
            weights,
        )
    shapes = _weight_shapes(weights)
    if "config_sha256" in cfg and cfg["config_sha256"] != config_digest(cfg):
        raise CheckpointError("the model settings were changed after the model was saved (they no longer match "
                              "config_sha256); refusing to load", path / "config.yaml")
    _check_shapes(cfg, shapes, path, weights)  # before anything the configuration asks for is allocated
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
    model.to(map_location).eval()
    normalizer = None
    if cfg.get("normalized"):
        if "normalizer.mean" not in tensors:
            raise CheckpointError("normalisation statistics missing from model.safetensors", weights)
        normalizer = Normalizer(tensors["normalizer.mean"], tensors["normalizer.std"])
    mel = MelConfig.from_dict(cfg["mel"], str(path / "config.yaml")) if cfg.get("mel") else None
    return LoadedModel(model, cfg["model"], cfg, mel, normalizer, path)


CONFIG_KEYS = ("format", "model", "model_config", "mel", "normalized", "weights_sha256")


def config_digest(cfg: dict) -> str:
    """SHA-256 of a model configuration's settings (:data:`CONFIG_KEYS`) as canonical JSON.

    The settings go through YAML first, so the digest of what is saved equals that of what loads back.
    """
    import json

    import yaml

    data = yaml.safe_load(yaml.safe_dump({k: cfg.get(k) for k in CONFIG_KEYS}))
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _weight_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of a safetensors file, from its header alone (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"not a valid safetensors file ({exc})", weights) from None


def _check_shapes(cfg: dict, shapes: dict[str, tuple[int, ...]], path: Path, weights: Path) -> None:
    """Raise :class:`CheckpointError` unless the model of ``cfg`` has exactly the weights of ``shapes``.

    The model is built on the "meta" device: its parameters have shapes but no memory.
    """
    from audiovae.models.registry import build_model

    try:
        with torch.device("meta"):
            meta = build_model(cfg["model"], cfg.get("model_config") or {})
    except Exception as exc:
        raise CheckpointError(f"cannot build model {cfg.get('model')!r} from config.yaml ({exc})", path) from None
    want = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    have = {k[len("model."):]: v for k, v in shapes.items() if k.startswith("model.")}
    if want != have:
        diff = sorted(set(want) ^ set(have)) or [k for k in sorted(want) if want[k] != have[k]]
        k = diff[0]
        n_want = sum(math.prod(v) for v in want.values())
        raise CheckpointError(f"weights do not fit the model in config.yaml ({k}: config {want.get(k, 'absent')}, "
                              f"weights {have.get(k, 'absent')}; the config asks for {n_want:,} values, the file "
                              f"holds {sum(math.prod(v) for v in have.values()):,})", weights)


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



def resolve_model_dir(path: str | os.PathLike, which: str = "best") -> Path:
    """The model directory to use from a run folder.

    ``best``: the run's ``best/`` (best validation ELBO; every run validates at
    its last step, so it is never older than the last validation) when present,
    else the folder itself. ``last``: the run folder's own, latest weights.
    A model directory given directly (``run/best``) is used as it is.
    """
    if which not in ("best", "last"):
        raise CheckpointError(f"checkpoint must be best or last, got {which!r}")
    path = Path(path)
    if which == "best" and (path / "best" / "model.safetensors").exists():
        return path / "best"
    return path


def describe(loaded: "LoadedModel") -> str:
    """One line naming the checkpoint in use: path, step and validation ELBO when known."""
    bits = []
    if "step" in loaded.config:
        bits.append(f"step {loaded.config['step']}")
    val = loaded.config.get("val") or {}
    if "val_elbo" in val:
        bits.append(f"validation ELBO {val['val_elbo']:.2f}")
    return f"using {loaded.name} model {loaded.path}" + (f" ({', '.join(bits)})" if bits else "")


