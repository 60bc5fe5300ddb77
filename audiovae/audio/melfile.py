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
from audiovae.npfile import load_npy, load_npz
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


# bounds on what a .mel.npz may ask for: the log-mel itself (an hour at 256 bins and 86 frames/s is 317 MB);
# the other members are a few hundred bytes
MAX_LOGMEL_BYTES = 4 << 30
MAX_FIELD_BYTES = 1 << 20


def load_mel(path: str | os.PathLike, config: MelConfig | None = None) -> tuple[np.ndarray, MelConfig, int | None]:
    """Read a log-mel file; return ``(logmel (n_mels, T), config, num_samples or None)``.

    A ``.mel.npz`` carries its own configuration. A bare ``.npy`` array needs
    ``config``. Wrong shapes and NaN/inf values, and any field a crafted file
    could use to exhaust memory (see :mod:`audiovae.npfile`), raise
    :class:`InvalidFeatureError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidFeatureError("no such file", path)
    num_samples = None
    try:
        if path.suffix == ".npy":
            if config is None:
                raise InvalidFeatureError("a bare .npy log-mel needs --config (the MelConfig YAML that made it)", path)
            logmel = load_npy(path, InvalidFeatureError)
            cfg = config
        else:
            data = load_npz(path, {"logmel": MAX_LOGMEL_BYTES}, InvalidFeatureError, MAX_FIELD_BYTES)
            missing = {"logmel", "config"} - set(data)
            if missing:
                raise InvalidFeatureError(f"not an audiovae log-mel file (missing {', '.join(sorted(missing))})", path)
            logmel = data["logmel"]
            cfg = MelConfig.from_dict(_json_object(data["config"], path), str(path))
            if "num_samples" in data:
                num_samples = _count(data["num_samples"], path)
    except AudioVAEError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, json.JSONDecodeError, KeyError, EOFError,
            RecursionError) as exc:
        raise InvalidFeatureError(f"cannot read log-mel file ({exc.__class__.__name__}: {str(exc)[:120]})", path) from None
    if logmel.ndim != 2 or logmel.shape[0] != cfg.n_mels:
        hint = " (transposed? it should be (n_mels, T))" if logmel.ndim == 2 and logmel.shape[1] == cfg.n_mels else ""
        raise InvalidFeatureError(f"expected a log-mel of shape ({cfg.n_mels}, T), got {logmel.shape}{hint}", path)
    if logmel.shape[1] < 1:
        raise InvalidFeatureError("log-mel has no frames", path)
    if not np.issubdtype(logmel.dtype, np.floating):
        raise InvalidFeatureError(f"expected floating-point values, got {logmel.dtype}", path)
    check_finite(logmel, path)
    if num_samples is not None and cfg.num_frames(num_samples) != logmel.shape[1]:
        t, hop = logmel.shape[1], cfg.hop_length
        raise InvalidFeatureError(f"num_samples {num_samples} does not fit a log-mel of {t} frames (expected "
                                  f"{(t - 1) * hop} to {t * hop - 1} at hop_length {hop})", path)
    return logmel.astype(np.float32), cfg, num_samples


def check_finite(logmel: np.ndarray, path: str | os.PathLike) -> None:
    """Raise :class:`InvalidFeatureError` naming ``path`` when ``logmel`` holds NaN or infinite values.

    Used on what the front end makes too (`audiovae mel`, `audiovae extract`): audio of absurd
    amplitude (1e30) is finite, but its power spectrum is not.
    """
    bad = ~np.isfinite(logmel)
    if bad.any():
        raise InvalidFeatureError(f"log-mel contains NaN or infinite values ({int(bad.sum())} of {bad.size}; audio of "
                                  "absurd amplitude?)", path)


def _json_object(arr: np.ndarray, path: Path) -> dict:
    if arr.ndim != 0 or arr.dtype.kind not in "US":
        raise InvalidFeatureError(f"field config should be one JSON text, got an array of shape {arr.shape} and dtype "
                                  f"{arr.dtype}", path)
    value = json.loads(str(arr))
    if not isinstance(value, dict):
        raise InvalidFeatureError(f"field config should be a JSON object of MelConfig settings, got a "
                                  f"{type(value).__name__}", path)
    return value


def _count(arr: np.ndarray, path: Path) -> int:
    if arr.ndim != 0 or arr.dtype.kind not in "iu":
        raise InvalidFeatureError(f"field num_samples should be one integer, got an array of shape {arr.shape} and "
                                  f"dtype {arr.dtype}", path)
    n = int(arr)
    if n < 1:
        raise InvalidFeatureError(f"field num_samples should be positive, got {n}", path)
    return n
