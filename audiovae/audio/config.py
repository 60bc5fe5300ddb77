"""The one feature configuration that travels with every cache and checkpoint."""

from __future__ import annotations

import dataclasses
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

# Bounds of MelConfig (generous: every configuration in use is far inside them).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384000
MAX_N_FFT = 65536  # 3 s at 22050 Hz, 0.17 s at 384 kHz
MAX_N_MELS = 4096


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
        self.validate()

    def validate(self) -> None:
        """Every field in its range, or a :class:`ConfigError` naming the field, its value and the range.

        The upper bounds keep a typo from asking for tens of GiB (``n_fft=268435456`` would need a
        filterbank and STFT frames of 2**27 bins); every configuration in use is far inside them.
        """
        from audiovae.config import check_float, check_int, field_error

        check_int("sample_rate", self.sample_rate, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)
        check_int("n_fft", self.n_fft, 16, MAX_N_FFT)
        check_int("win_length", self.win_length, 1, self.n_fft)
        check_int("hop_length", self.hop_length, 1, self.win_length)
        check_int("n_mels", self.n_mels, 1, MAX_N_MELS)
        check_float("fmin", self.fmin, 0.0)
        if self.fmax is not None:
            check_float("fmax", self.fmax, 0.0, lo_open=True)
        nyquist = self.sample_rate / 2
        if self.fmax is not None and not (self.fmin < self.fmax <= nyquist + 1e-6):
            raise field_error("fmax", self.fmax, f"above fmin ({self.fmin:g}) and at most sample_rate/2 ({nyquist:g} Hz)")
        if not self.fmin < self.f_max:
            raise field_error("fmin", self.fmin, f"below sample_rate/2 ({nyquist:g} Hz)")
        if self.power not in (1.0, 2.0) or isinstance(self.power, bool):
            raise field_error("power", self.power, "1.0 (magnitude) or 2.0 (power)")
        check_float("log_floor", self.log_floor, 0.0, 1.0, lo_open=True, hi_open=True)
        if not isinstance(self.htk, bool):
            raise field_error("htk", self.htk, "true or false")
        if self.norm not in (None, "slaney"):
            raise field_error("norm", self.norm, "slaney or null")
        empty = self.empty_mel_bands()
        if empty:
            raise ConfigError(
                f"invalid MelConfig: {len(empty)} of the {self.n_mels} mel bands contain no FFT bin (the lowest: band "
                f"{empty[0]}) with n_fft={self.n_fft} at {self.sample_rate} Hz, so their features would always be "
                f"silent and the vocoder could not invert them; use fewer mels, a larger n_fft (zero padding is "
                f"enough: win_length can stay) or a higher fmin"
            )

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
