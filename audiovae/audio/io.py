"""Audio file I/O (soundfile), resampling (soxr through librosa) and validation.

Every problem with an input becomes an :class:`~audiovae.errors.InvalidAudioError`
whose message names the file and says what is wrong with it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from audiovae.errors import InvalidAudioError
from audiovae.utils import atomic_path

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3", ".opus")
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384000


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample ``wave`` (``(N,)`` or ``(C, N)``) with soxr's high-quality filter."""
    if orig_sr == target_sr:
        return wave
    import librosa

    return librosa.resample(wave, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq", axis=-1)


def validate_waveform(
    wave: np.ndarray,
    sample_rate: int,
    source: str | os.PathLike | None = None,
    min_samples: int = 2,
    allow_silent: bool = False,
) -> np.ndarray:
    """Check a mono waveform ``(N,)``; return it as contiguous float32 or raise :class:`InvalidAudioError`."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise InvalidAudioError(f"expected a mono waveform of shape (N,), got shape {wave.shape}", source)
    if not (MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE):
        raise InvalidAudioError(
            f"absurd sample rate {sample_rate} Hz (expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE})", source
        )
    if wave.size == 0:
        raise InvalidAudioError("empty audio (0 samples)", source)
    if wave.size < min_samples:
        raise InvalidAudioError(f"too short: {wave.size} sample(s), need at least {min_samples}", source)
    if not np.isfinite(wave).all():
        bad = int((~np.isfinite(wave)).sum())
        raise InvalidAudioError(f"contains {bad} NaN or infinite sample(s)", source)
    if not allow_silent and not np.any(wave):
        raise InvalidAudioError("silent (every sample is zero)", source)
    return np.ascontiguousarray(wave, dtype=np.float32)


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """soundfile's header information, with our error on failure."""
    path = Path(path)
    if not path.exists():
        raise InvalidAudioError("no such file", path)
    try:
        return sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        raise InvalidAudioError(f"not a readable audio file ({_short(exc)})", path) from None


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    min_samples: int = 2,
    allow_silent: bool = False,
) -> tuple[np.ndarray, int]:
    """Read an audio file as a mono float32 waveform ``(N,)``.

    Multi-channel audio is averaged to mono; with ``sample_rate`` the signal is
    resampled to it (soxr HQ). Returns ``(wave, sample_rate)``. Raises
    :class:`InvalidAudioError` for a missing, unreadable, empty, too short,
    silent or NaN-filled file, or an absurd sample rate.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidAudioError("no such file", path)
    if path.is_dir():
        raise InvalidAudioError("is a directory, not an audio file", path)
    if path.stat().st_size == 0:
        raise InvalidAudioError("empty file (0 bytes)", path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise InvalidAudioError(f"not a readable audio file ({_short(exc)})", path) from None
    if not (MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE):
        raise InvalidAudioError(f"absurd sample rate {sr} Hz (expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE})", path)
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    wave = validate_waveform(wave, sr, path, min_samples=min_samples, allow_silent=allow_silent)
    if sample_rate is not None and sr != sample_rate:
        wave = resample(wave, sr, sample_rate).astype(np.float32)
        sr = sample_rate
    return wave, sr


def save_audio(path: str | os.PathLike, wave: np.ndarray, sample_rate: int, subtype: str | None = None) -> Path:
    """Write ``wave`` ``(N,)`` (or ``(N, C)``) atomically; the format follows the extension.

    Float input is clipped to [-1, 1] for integer formats (16-bit PCM for .wav by default).
    """
    path = Path(path)
    wave = np.asarray(wave, dtype=np.float32)
    fmt = path.suffix.lstrip(".").upper() or "WAV"
    if fmt == "OGA":
        fmt = "OGG"
    if fmt not in sf.available_formats():
        raise InvalidAudioError(f"cannot write audio format {path.suffix!r}", path)
    if subtype is None and fmt in ("WAV", "FLAC", "AIFF"):
        subtype = "PCM_16"
    if subtype and subtype.startswith("PCM"):
        wave = np.clip(wave, -1.0, 1.0)
    with atomic_path(path, suffix=path.suffix) as tmp:
        sf.write(str(tmp), wave, int(sample_rate), format=fmt, subtype=subtype)
    return path


def find_audio_files(root: str | os.PathLike, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[Path]:
    """Audio files under ``root`` (recursively), sorted; ``root`` may be a single file."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InvalidAudioError("no such file or directory", root)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    # libsndfile messages repeat the path; keep the reason
    if "Error opening" in msg and ":" in msg:
        msg = msg.rsplit(":", 1)[-1].strip()
    return msg[:200]
