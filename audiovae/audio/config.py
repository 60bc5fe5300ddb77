"""The one feature configuration that travels with every cache and checkpoint."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from audiovae.errors import ConfigError

# The vocoder's defaults, used by every command and task that vocodes (one place to change them).
# Measured per clip on real speech (benchmarks/bench_vocoder_clips.py, docs/vocoder_perf.md; 80 Asterisk
# prompts, from the log-mel): from the heap PGHI (the CPU's initial phase), 40 fast Griffin-Lim iterations
# after a 5-iteration NNLS magnitude reach a lower MCD than torchaudio's 100 iterations (5.63 vs 5.71 dB)
# in under a third of its time; the parallel PGHI (the initial phase on other devices, where iterations
# are cheap) needs 64 to be better on SC, LSD, MCD and STOI alike (MCD 5.53 dB; 5.68 with 48).
# More NNLS iterations change nothing audible.
VOCODER_ITERS = 40
VOCODER_ITERS_PARALLEL_PGHI = 64
NNLS_ITERS = 5


@dataclass(frozen=True)
class MelConfig:
    """Log-mel feature configuration.

    Defaults are for speech at 22050 Hz with **256 mel bins**:

    - ``n_fft=2048`` with a 1024-sample Hann window (46 ms) and a 256-sample hop
      (11.6 ms, 86 frames/s). With ``n_fft=1024`` the 256-band Slaney filterbank
      over 0-11025 Hz has rank 218 (the lowest bands are narrower than one FFT
      bin); zero-padding each 1024-sample frame to 2048 halves the bin spacing to
      10.8 Hz, so every band covers at least two bins and the filterbank has full
      rank 256. Time resolution stays that of the 1024 window.
    - ``fmin=0``, ``fmax=None`` (= sample_rate / 2): the whole band, so the vocoder
      has something to put everywhere.
    - ``power=1.0``: mel of the magnitude (not power) spectrum, then
      ``log(clamp(mel, log_floor))`` with ``log_floor=1e-5``, as HiFi-GAN does.
    - Slaney mel scale with Slaney (area) normalisation, centred frames padded
      with zeros: the same as ``librosa.feature.melspectrogram``'s defaults.
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    win_length: int = 1024
    hop_length: int = 256
    n_mels: int = 256
    fmin: float = 0.0
    fmax: Optional[float] = None
    power: float = 1.0
    log_floor: float = 1e-5
    htk: bool = False
    norm: Optional[str] = "slaney"

    def __post_init__(self) -> None:
        problems = []
        if not (1000 <= self.sample_rate <= 384000):
            problems.append(f"sample_rate {self.sample_rate} is outside 1000..384000 Hz")
        if self.n_fft < 16:
            problems.append(f"n_fft {self.n_fft} is too small")
        if not (0 < self.win_length <= self.n_fft):
            problems.append(f"win_length {self.win_length} must be in 1..n_fft ({self.n_fft})")
        if not (0 < self.hop_length <= self.win_length):
            problems.append(f"hop_length {self.hop_length} must be in 1..win_length ({self.win_length})")
        if self.n_mels < 1:
            problems.append("n_mels must be positive")
        if not (0 <= self.fmin < self.f_max <= self.sample_rate / 2 + 1e-6):
            problems.append(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={self.f_max}")
        if self.power not in (1.0, 2.0):
            problems.append(f"power must be 1.0 (magnitude) or 2.0 (power), got {self.power}")
        if not (0 < self.log_floor < 1) or math.isnan(self.log_floor):
            problems.append(f"log_floor must be in (0, 1), got {self.log_floor}")
        if self.norm not in (None, "slaney"):
            problems.append(f"norm must be 'slaney' or None, got {self.norm!r}")
        if not problems:
            empty = self.empty_mel_bands()
            if empty:
                problems.append(
                    f"{len(empty)} of the {self.n_mels} mel bands contain no FFT bin (the lowest: band {empty[0]}) with "
                    f"n_fft={self.n_fft} at {self.sample_rate} Hz, so their features would always be silent and the "
                    f"vocoder could not invert them; use fewer mels, a larger n_fft (zero padding is enough: "
                    f"win_length can stay) or a higher fmin"
                )
        if problems:
            raise ConfigError("invalid MelConfig: " + "; ".join(problems))

    def empty_mel_bands(self) -> list[int]:
        """Indices of mel bands whose triangle contains no FFT bin (an all-zero filter).

        Band ``i`` of the filterbank (librosa's construction) is non-zero exactly at
        the bins strictly between mel points ``i`` and ``i + 2``; computed here with
        numpy so that building a configuration does not import librosa.
        """
        import numpy as np

        pts = _mel_to_hz(np.linspace(_hz_to_mel(self.fmin, self.htk), _hz_to_mel(self.f_max, self.htk),
                                     self.n_mels + 2), self.htk)
        bins = np.arange(self.n_freqs) * (self.sample_rate / self.n_fft)
        lo = np.searchsorted(bins, pts[:-2], side="right")  # first bin > lower edge
        hi = np.searchsorted(bins, pts[2:], side="left")  # first bin >= upper edge
        return [int(i) for i in np.nonzero(hi <= lo)[0]]

    @property
    def f_max(self) -> float:
        """The upper band edge in Hz (``fmax`` or the Nyquist frequency)."""
        return float(self.fmax) if self.fmax is not None else self.sample_rate / 2

    @property
    def n_freqs(self) -> int:
        """Number of one-sided STFT bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Frames for a signal of ``num_samples`` samples (centred frames)."""
        return 1 + num_samples // self.hop_length

    def replace(self, **changes) -> "MelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str | None = None) -> "MelConfig":
        from audiovae.config import from_dict

        return from_dict(cls, data, source)


def _hz_to_mel(f, htk: bool):
    """librosa's ``hz_to_mel`` (Slaney's auditory-toolbox scale, or HTK's)."""
    import numpy as np

    f = np.asanyarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m, htk: bool):
    """librosa's ``mel_to_hz``."""
    import numpy as np

    m = np.asanyarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), (200.0 / 3) * m)
