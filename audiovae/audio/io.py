"""Audio file I/O (soundfile, or ffmpeg for what soundfile cannot read), resampling (soxr) and validation.

Every problem with an input becomes an :class:`~audiovae.errors.InvalidAudioError`
whose message names the file and says what is wrong with it.

Formats libsndfile does not read (:data:`FFMPEG_EXTENSIONS`: G.722, AAC/M4A, WMA,
AMR, ...) are decoded by the ``ffmpeg`` program (a subprocess, to 32-bit float at
the file's own rate, then resampled with soxr like every other input). Without
ffmpeg on ``PATH`` such a file raises an error naming it and the missing tool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from audiovae.errors import InvalidAudioError
from audiovae.utils import atomic_path

SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3", ".opus")
# read through ffmpeg: libsndfile has no decoder for these
FFMPEG_EXTENSIONS = (".g722", ".m4a", ".aac", ".mp4", ".wma", ".amr", ".webm", ".mka", ".ac3", ".3gp")
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS
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
        return sf.info(_fs(path))
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        raise InvalidAudioError(f"not a readable audio file ({_short(exc)})", path) from None


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    min_samples: int = 2,
    allow_silent: bool = False,
    segment: tuple[float, float] | None = None,
    *,
    return_source_rate: bool = False,
    note: bool = True,
) -> tuple[np.ndarray, int] | tuple[np.ndarray, int, int]:
    """Read an audio file as a mono float32 waveform ``(N,)``.

    Multi-channel audio is averaged to mono; with ``sample_rate`` the signal is
    resampled to it (soxr HQ). ``segment=(start, duration)`` in seconds reads only
    that part of the file (a lhotse cut into a longer recording); a segment that
    ends more than 10 ms past the end of the file is refused. Returns ``(wave, sample_rate)``, or with
    ``return_source_rate`` ``(wave, sample_rate, the file's own rate)``. A file
    resampled *up* is counted (``note=False``: not here, the caller counts it, as a
    DataLoader's parent process does for its workers) so the command can say so
    once: :func:`take_upsampled`. Raises :class:`InvalidAudioError` for a missing,
    unreadable, empty, too short, silent or NaN-filled file, or an absurd sample rate.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidAudioError("no such file", path)
    if path.is_dir():
        raise InvalidAudioError("is a directory, not an audio file", path)
    if path.stat().st_size == 0:
        raise InvalidAudioError("empty file (0 bytes)", path)
    if path.suffix.lower() in FFMPEG_EXTENSIONS:
        data, sr = _ffmpeg_decode(path)
        if segment is not None:
            data = data[slice(*_segment_frames(segment, sr, len(data), path))]
    else:
        try:
            if segment is None:
                data, sr = sf.read(_fs(path), dtype="float32", always_2d=True)
            else:
                with sf.SoundFile(_fs(path)) as fh:
                    start, stop = _segment_frames(segment, fh.samplerate, fh.frames, path)
                    fh.seek(start)
                    data, sr = fh.read(stop - start, dtype="float32", always_2d=True), fh.samplerate
        except InvalidAudioError:
            raise
        except Exception as exc:
            raise InvalidAudioError(f"not a readable audio file ({_short(exc)})", path) from None
    if not (MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE):
        raise InvalidAudioError(f"absurd sample rate {sr} Hz (expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE})", path)
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    wave = validate_waveform(wave, sr, path, min_samples=min_samples, allow_silent=allow_silent)
    source_sr = sr
    if sample_rate is not None and sr != sample_rate:
        wave = resample(wave, sr, sample_rate).astype(np.float32)
        sr = sample_rate
        if note:
            note_resampled(source_sr, sr)
    return (wave, sr, source_sr) if return_source_rate else (wave, sr)


# files resampled up, (their rate, the rate they were read at) -> count, since the last take_upsampled()
_UPSAMPLED: dict[tuple[int, int], int] = {}
_UPSAMPLED_LOCK = threading.Lock()


def note_resampled(source_sr: int, target_sr: int, count: int = 1) -> None:
    """Count ``count`` file(s) read at ``source_sr`` and resampled to ``target_sr`` (only *up* counts: their band
    above ``source_sr / 2`` is empty, which a user who did not ask for it should hear of once)."""
    if target_sr > source_sr:
        with _UPSAMPLED_LOCK:
            key = (int(source_sr), int(target_sr))
            _UPSAMPLED[key] = _UPSAMPLED.get(key, 0) + count


def take_upsampled() -> dict[tuple[int, int], int]:
    """The files resampled up since the last call, ``{(source rate, target rate): count}``, and forget them."""
    with _UPSAMPLED_LOCK:
        out = dict(_UPSAMPLED)
        _UPSAMPLED.clear()
    return out


def upsampling_notice(counts: dict[tuple[int, int], int], keep_hint: bool = True) -> list[str]:
    """One line per source rate for :func:`take_upsampled`'s counts, e.g. "3 files were resampled up from 16000 Hz
    to 22050 Hz (nothing above 8000 Hz in them); to keep their rate: --set sample_rate=16000".

    ``keep_hint=False`` (a command whose rate is a trained model's): the line says the model's rate instead."""
    lines = []
    for (src, dst), n in sorted(counts.items()):
        what = "1 file was" if n == 1 else f"{n} files were"
        line = f"{what} resampled up from {src} Hz to {dst} Hz (nothing above {src // 2} Hz in {'it' if n == 1 else 'them'})"
        if keep_hint:
            line += f"; to keep {'its' if n == 1 else 'their'} rate: --set sample_rate={src}"
        else:
            line += (f"; the model works at {dst} Hz (a model for {src} Hz audio is trained on features extracted "
                     f"with --set sample_rate={src})")
        lines.append(line)
    return lines


def _segment_frames(segment: tuple[float, float], sr: int, frames: int, path: Path) -> tuple[int, int]:
    """``(start, stop)`` sample indices of ``segment=(start_s, duration_s)`` in a file of ``frames`` samples."""
    start_s, dur_s = segment
    start, stop = round(start_s * sr), round((start_s + dur_s) * sr)
    if start_s < 0 or dur_s <= 0 or stop - frames > 0.01 * sr:
        raise InvalidAudioError(f"segment {start_s:g} s + {dur_s:g} s does not lie inside the file "
                                f"({frames / sr:g} s)", path)
    return start, min(stop, frames)


def _need_tool(tool: str, path: Path) -> str:
    exe = shutil.which(tool)
    if exe is None:
        raise InvalidAudioError(f"reading {path.suffix} files needs {tool}, which is not installed or not on PATH "
                                f"(Debian/Ubuntu: apt-get install ffmpeg)", path)
    return exe


def _ffmpeg_decode(path: Path) -> tuple[np.ndarray, int]:
    """``(data (N, 1) float32, sample_rate)``: the file decoded by ffmpeg and down-mixed to mono at its own rate."""
    exe = _need_tool("ffmpeg", path)
    cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "info", "-i", _ffmpeg_file(path), "-map", "0:a:0",
           "-ac", "1", "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL)
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        last = [ln.strip() for ln in err.splitlines() if ln.strip()]
        raise InvalidAudioError(f"ffmpeg cannot decode it ({last[-1][:200] if last else 'exit status %d' % proc.returncode})",
                                path)
    # the output stream's rate is the input's (no -ar given); ffmpeg prints it as "..., 16000 Hz, mono, ..."
    rates = re.findall(r"Stream #\d+:\d+.*?: Audio: .*?(\d+) Hz", err)
    if not rates:
        raise InvalidAudioError("ffmpeg decoded it but reported no sample rate", path)
    data = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    return data[:, None], int(rates[-1])


def audio_duration(path: str | os.PathLike) -> tuple[float, int]:
    """``(seconds, sample_rate)`` of an audio file, from its header (nothing is decoded when avoidable).

    soundfile formats: libsndfile's header. Raw G.722 (``.g722``, as ffmpeg reads it):
    always 16 kHz at 64 kbit/s, so the size gives the length exactly. Other ffmpeg
    formats: ``ffprobe``. Raises :class:`InvalidAudioError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidAudioError("no such file", path)
    size = path.stat().st_size
    if size == 0:
        raise InvalidAudioError("empty file (0 bytes)", path)
    ext = path.suffix.lower()
    if ext == ".g722":
        return size * 8 / 64000, 16000
    if ext not in FFMPEG_EXTENSIONS:
        info = audio_info(path)
        if info.frames <= 0 or not (MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE):
            raise InvalidAudioError(f"no audio in it ({info.frames} frames at {info.samplerate} Hz)", path)
        return info.frames / info.samplerate, int(info.samplerate)
    exe = _need_tool("ffprobe", path)
    proc = subprocess.run([exe, "-v", "error", "-select_streams", "a:0", "-show_entries",
                           "stream=sample_rate,duration:format=duration", "-of", "json", _ffmpeg_file(path)],
                          capture_output=True, stdin=subprocess.DEVNULL)
    try:
        info = json.loads(proc.stdout or b"{}")
        stream = info["streams"][0]
        dur = stream.get("duration") or info.get("format", {}).get("duration")
        return float(dur), int(stream["sample_rate"])
    except (ValueError, KeyError, IndexError, TypeError):
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InvalidAudioError(f"ffprobe finds no audio stream ({msg[-1][:200] if msg else 'no output'})", path) from None


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
        sf.write(_fs(tmp), wave, int(sample_rate), format=fmt, subtype=subtype)
    return path


def find_audio_files(root: str | os.PathLike, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[Path]:
    """Audio files under ``root`` (recursively), sorted; ``root`` may be a single file."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InvalidAudioError("no such file or directory", root)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)


def _fs(path: Path) -> bytes:
    """The path as the bytes the OS knows it by: libsndfile opens any name, UTF-8 or not (``caf\\xe9.wav``)."""
    return os.fsencode(path)


def _ffmpeg_file(path: Path) -> str:
    """``path`` for ffmpeg/ffprobe as a plain file: ``file:`` keeps a name like ``pipe:0.m4a`` from being a protocol."""
    return "file:" + os.fspath(path)


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    # libsndfile messages repeat the path; keep the reason
    if "Error opening" in msg and ":" in msg:
        msg = msg.rsplit(":", 1)[-1].strip()
    return msg[:200]
