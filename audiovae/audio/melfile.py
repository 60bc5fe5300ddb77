"""The ``.mel.npz`` file: one utterance's log-mel with the configuration that made it.

Plain NumPy arrays, read with ``allow_pickle=False``: ``logmel`` ``(n_mels, T)``
float32, ``config`` (the MelConfig as JSON text), ``num_samples`` and
``source`` (the audio file it came from).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from audiovae.audio.config import MelConfig
from audiovae.errors import AudioVAEError, InvalidFeatureError
from audiovae.utils import atomic_write_bytes

SUFFIX = ".mel.npz"


def save_mel(path: str | os.PathLike, logmel: np.ndarray, cfg: MelConfig, num_samples: int, source: str = "") -> Path:
    """Write a ``.mel.npz`` atomically."""
    buf = io.BytesIO()
    np.savez(
        buf,
        logmel=np.asarray(logmel, np.float32),
        config=np.array(json.dumps(cfg.to_dict())),
        num_samples=np.array(int(num_samples), np.int64),
        source=np.array(str(source)),
    )
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def load_mel(path: str | os.PathLike, config: MelConfig | None = None) -> tuple[np.ndarray, MelConfig, int | None]:
    """Read a log-mel file; return ``(logmel (n_mels, T), config, num_samples or None)``.

    A ``.mel.npz`` carries its own configuration. A bare ``.npy`` array needs
    ``config``. Wrong shapes and NaN/inf values raise :class:`InvalidFeatureError`
    naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidFeatureError("no such file", path)
    num_samples = None
    try:
        if path.suffix == ".npy":
            if config is None:
                raise InvalidFeatureError("a bare .npy log-mel needs --config (the MelConfig YAML that made it)", path)
            logmel = np.load(path, allow_pickle=False)
            cfg = config
        else:
            with np.load(path, allow_pickle=False) as data:
                missing = {"logmel", "config"} - set(data.files)
                if missing:
                    raise InvalidFeatureError(f"not an audiovae log-mel file (missing {', '.join(sorted(missing))})", path)
                logmel = data["logmel"]
                cfg = MelConfig.from_dict(json.loads(str(data["config"])), str(path))
                if "num_samples" in data.files:
                    num_samples = int(data["num_samples"])
    except AudioVAEError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, json.JSONDecodeError, KeyError) as exc:
        raise InvalidFeatureError(f"cannot read log-mel file ({exc.__class__.__name__}: {str(exc)[:120]})", path) from None
    if logmel.ndim != 2 or logmel.shape[0] != cfg.n_mels:
        raise InvalidFeatureError(f"expected a log-mel of shape ({cfg.n_mels}, T), got {logmel.shape}", path)
    if logmel.shape[1] < 1:
        raise InvalidFeatureError("log-mel has no frames", path)
    if not np.issubdtype(logmel.dtype, np.floating):
        raise InvalidFeatureError(f"expected floating-point values, got {logmel.dtype}", path)
    if not np.isfinite(logmel).all():
        raise InvalidFeatureError("log-mel contains NaN or infinite values", path)
    return logmel.astype(np.float32), cfg, num_samples
