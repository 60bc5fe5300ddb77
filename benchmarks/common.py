"""Shared helpers for the benchmarks: espeak-ng speech clips and a timer."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

TEXT = (
    "A variational autoencoder learns a latent space of speech. The encoder maps each utterance to a "
    "distribution, the decoder maps samples back to log mel frames, and the vocoder turns frames into sound. "
    "Phase matters as much as magnitude when we want to hear the result."
)
VOICES = ["en", "en-us", "en+f3", "en+m3", "en-gb", "en+f2", "en+m2", "en+f4"]


def speech_clips(n: int = 16, seconds: float = 10.0, sr: int = 22050) -> np.ndarray:
    """``(n, seconds * sr)`` float32 clips of espeak-ng speech in several voices and speeds."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("the benchmarks need espeak-ng (apt-get install espeak-ng)")
    out = np.zeros((n, int(seconds * sr)), np.float32)
    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            p = Path(d) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", VOICES[i % len(VOICES)], "-s", str(140 + 10 * (i % 5)), "-w", str(p), TEXT],
                           check=True, capture_output=True)
            x, file_sr = sf.read(p, dtype="float32")
            assert file_sr == sr
            while len(x) < out.shape[1]:
                x = np.concatenate([x, x])
            out[i] = x[: out.shape[1]]
    return out


def best_time(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Minimum wall time of ``fn()`` over ``repeat`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def table(rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])
