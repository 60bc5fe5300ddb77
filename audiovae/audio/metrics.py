"""Objective quality metrics for resynthesised or generated audio.

All take batched tensors and return one value per item ``(B,)``.
"""

from __future__ import annotations

import math

import torch

from audiovae.audio import functional as AF


def spectral_convergence(ref_mag: torch.Tensor, est_mag: torch.Tensor) -> torch.Tensor:
    """``||S - S_hat||_F / ||S||_F`` per item for magnitudes ``(B, F, T)`` (lower is better)."""
    ref, est = _match(ref_mag, est_mag)
    return (ref - est).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1).clamp_min(1e-12)


def log_spectral_distance(ref_mag: torch.Tensor, est_mag: torch.Tensor, floor: float = 1e-5,
                          top_db: float | None = None) -> torch.Tensor:
    """Log-spectral distance in dB per item: mean over frames of the RMS over bins of
    ``20 log10(max(S, floor) / max(S_hat, floor))`` for magnitudes ``(B, F, T)``.

    ``top_db``: instead of the absolute ``floor``, floor both spectra ``top_db`` dB below the
    reference's peak (per item), as ``librosa.amplitude_to_db(S, ref=np.max, top_db=80)`` limits a
    spectrogram's range. With the absolute floor (1e-5, -100 dB re full scale), bands the recording
    does not carry (above 8 kHz in a 16 kHz telephone recording) count with whatever faint noise the
    estimate has there; an 80 dB range counts what is within 80 dB of the loudest bin."""
    ref, est = _match(ref_mag, est_mag)
    if top_db is not None:
        peak = ref.flatten(1).max(dim=1).values.clamp_min(1e-30)
        floor = (peak * 10 ** (-top_db / 20)).reshape(-1, *([1] * (ref.dim() - 1)))
        ref, est = torch.maximum(ref, floor), torch.maximum(est, floor)
    else:
        ref, est = ref.clamp_min(floor), est.clamp_min(floor)
    d = 20 * (torch.log10(ref) - torch.log10(est))
    return d.square().mean(dim=1).sqrt().mean(dim=-1)


def mel_cepstrum(
    wave: torch.Tensor,
    sample_rate: int,
    n_mfcc: int = 25,
    n_mels: int = 80,
    n_fft: int = 1024,
    hop: int = 256,
    floor: torch.Tensor | float = 1e-10,
    fmax: float | None = None,
) -> torch.Tensor:
    """Mel-cepstra ``(B, n_mfcc, T)`` of waveforms ``(B, N)`` as used by :func:`mel_cepstral_distortion`:
    power spectrum (Hann window of ``n_fft``), ``n_mels`` Slaney mel bands up to Nyquist (or ``fmax``),
    natural log of the band energies floored at ``floor`` (a number or ``(B,)``), orthonormal DCT-II."""
    from audiovae.audio.config import MelConfig

    cfg = MelConfig(sample_rate=sample_rate, n_fft=n_fft, win_length=n_fft, hop_length=hop, n_mels=n_mels, power=2.0,
                    fmax=fmax)
    mel = AF.melspectrogram(wave.double(), cfg)
    floor = torch.as_tensor(floor, dtype=torch.float64, device=mel.device).reshape(-1, 1, 1)
    logmel = torch.log(torch.maximum(mel, floor))
    k = torch.arange(n_mels, dtype=torch.float64)
    dct = torch.cos(math.pi / n_mels * (k[None, :] + 0.5) * torch.arange(n_mfcc, dtype=torch.float64)[:, None])
    dct[0] *= 1 / math.sqrt(2)
    dct *= math.sqrt(2 / n_mels)
    return torch.einsum("cm,bmt->bct", dct.to(wave.device), logmel)


def mel_cepstral_distortion(
    ref_wave: torch.Tensor, est_wave: torch.Tensor, sample_rate: int, n_mfcc: int = 25, silence_db: float = 60.0,
    fmax: float | None = None,
) -> torch.Tensor:
    """Mel-cepstral distortion in dB per item, for time-aligned waveforms ``(B, N)``.

    Computed exactly as: :func:`mel_cepstrum` of both signals (80 Slaney mel
    bands, 1024-point frames, hop 256, natural-log band energies floored 80 dB
    below the reference's loudest band energy, orthonormal DCT-II); coefficients 1..24 (c0, the frame energy, is left out); per frame
    ``(10 / ln 10) * sqrt(2 * sum_d (c_d - c_hat_d)^2)``; averaged over the
    frames of the reference whose energy is within ``silence_db`` dB of its
    loudest frame. No time warping: the signals must be aligned (resynthesis is). ``fmax``: the mel
    bands span 0..fmax instead of 0..Nyquist (the band a band-limited recording carries).
    """
    ref, est = _match_len(ref_wave, est_wave)
    from audiovae.audio.config import MelConfig

    cfg = MelConfig(sample_rate=sample_rate, n_fft=1024, win_length=1024, hop_length=256, n_mels=80, power=2.0,
                    fmax=fmax)
    peak = AF.melspectrogram(ref.double(), cfg).flatten(1).max(dim=1).values
    floor = peak * 1e-8
    c_ref = mel_cepstrum(ref, sample_rate, n_mfcc, floor=floor, fmax=fmax)
    c_est = mel_cepstrum(est, sample_rate, n_mfcc, floor=floor, fmax=fmax)
    diff = (c_ref[:, 1:] - c_est[:, 1:]).square().sum(dim=1)
    per_frame = (10.0 / math.log(10.0)) * torch.sqrt(2.0 * diff)
    energy = c_ref[:, 0]  # proportional to the mean log band energy
    loud = energy >= energy.max(dim=1, keepdim=True).values - silence_db * math.log(10) / 10 * math.sqrt(80)
    return (per_frame * loud).sum(dim=1) / loud.sum(dim=1).clamp_min(1)


def stoi(ref_wave: torch.Tensor, est_wave: torch.Tensor, sample_rate: int, extended: bool = False) -> torch.Tensor:
    """Short-time objective intelligibility (Taal et al. 2011) per item, via ``pystoi``.

    Raises ``ImportError`` with an install hint when pystoi is missing.
    """
    try:
        from pystoi import stoi as _stoi
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("STOI needs the optional package pystoi: pip install 'audiovae[metrics]'") from None
    ref, est = _match_len(ref_wave, est_wave)
    ref_np = ref.detach().cpu().double().numpy()
    est_np = est.detach().cpu().double().numpy()
    return torch.tensor([_stoi(r, e, sample_rate, extended=extended) for r, e in zip(ref_np, est_np)])


def have_stoi() -> bool:
    try:
        import pystoi  # noqa: F401
    except ImportError:
        return False
    return True


def resynthesis_metrics(ref_wave: torch.Tensor, est_wave: torch.Tensor, sample_rate: int,
                        max_hz: float | None = None) -> dict[str, float]:
    """SC and LSD on the 2048/256 STFT magnitudes, MCD and (if available) STOI, for one pair ``(N,)``.

    Two LSDs: ``log_spectral_distance_db`` with the absolute floor (-100 dB re full scale) and
    ``log_spectral_distance_80db_db`` over the 80 dB below the reference's peak.

    ``max_hz``: score only 0..max_hz (SC and LSD on the STFT bins up to it, MCD's mel bands up to it):
    for a recording resampled up (16 kHz -> 22.05 kHz) the band above its own Nyquist is empty, and
    scoring it measures the vocoder's noise there, not the recording. ``band_max_hz`` in the result
    says which band was scored (0..band_max_hz). (STOI works at 10 kHz, below either.)"""
    ref, est = _match_len(ref_wave.reshape(1, -1).double(), est_wave.reshape(1, -1).double())
    window = torch.hann_window(1024, dtype=torch.float64)
    s_ref = AF.magnitude(AF.stft(ref, window, 2048, 256))
    s_est = AF.magnitude(AF.stft(est, window, 2048, 256))
    nyquist = sample_rate / 2
    top = nyquist if max_hz is None or max_hz >= nyquist else float(max_hz)
    if top < nyquist:  # bins k * sr / 2048 <= top (the magnitudes are (B, F, T))
        keep = int(top * 2048 // sample_rate) + 1
        s_ref, s_est = s_ref[:, :keep], s_est[:, :keep]
    out = {
        "spectral_convergence": float(spectral_convergence(s_ref, s_est)[0]),
        "log_spectral_distance_db": float(log_spectral_distance(s_ref, s_est)[0]),
        "log_spectral_distance_80db_db": float(log_spectral_distance(s_ref, s_est, top_db=80.0)[0]),
        "mel_cepstral_distortion_db": float(mel_cepstral_distortion(ref, est, sample_rate,
                                                                    fmax=None if top >= nyquist else top)[0]),
        "band_max_hz": float(top),
    }
    if have_stoi():
        out["stoi"] = float(stoi(ref, est, sample_rate)[0])
    return out


def _match(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape[:-1] != b.shape[:-1]:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    t = min(a.shape[-1], b.shape[-1])
    return a[..., :t], b[..., :t]


def _match_len(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.dim() == 1:
        a = a[None]
    if b.dim() == 1:
        b = b[None]
    n = min(a.shape[-1], b.shape[-1])
    return a[..., :n], b[..., :n]


__all__ = [
    "spectral_convergence",
    "log_spectral_distance",
    "mel_cepstrum",
    "mel_cepstral_distortion",
    "stoi",
    "have_stoi",
    "resynthesis_metrics",
]
