"""Stateless signal-processing functions: STFT pair, mel filterbank, log-mel.

Shapes follow torchaudio: waveforms are ``(B, N)``, spectrograms ``(B, F, T)``
with ``F = n_fft // 2 + 1`` and mel spectrograms ``(B, n_mels, T)``. Every
function works on any device and on float32 or float64.

The STFT here frames the signal with ``win_length`` samples centred on
``t * hop_length`` (zero padding at the edges, as librosa does) and takes an
``n_fft``-point real FFT of each windowed frame. Its magnitudes equal those of
``torch.stft(..., center=True, pad_mode="constant")`` and ``librosa.stft``; its
phase is referenced to the start of the window rather than the start of the
``n_fft`` frame. :func:`istft` is its exact least-squares inverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from audiovae.audio.config import MelConfig


def num_frames(lengths: torch.Tensor | int, hop_length: int) -> torch.Tensor | int:
    """Frames of centred STFT for signals of ``lengths`` samples: ``1 + n // hop``."""
    return 1 + lengths // hop_length


@lru_cache(maxsize=32)
def _mel_basis_np(sample_rate, n_fft, n_mels, fmin, fmax, htk, norm) -> np.ndarray:
    import librosa

    return librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm, dtype=np.float64
    )


def mel_filterbank(cfg: MelConfig, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The ``(n_mels, n_freqs)`` mel filterbank of ``cfg``, built by librosa."""
    fb = _mel_basis_np(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.f_max, cfg.htk, cfg.norm)
    return torch.as_tensor(fb, dtype=dtype, device=device)


@dataclass(frozen=True)
class Block:
    """A dense block ``fb[r0:r1, c0:c1]`` of a sparse banded matrix."""

    r0: int
    r1: int
    c0: int
    c1: int


def banded_blocks(fb: torch.Tensor, rows_per_block: int = 16) -> list[Block]:
    """Cover the non-zeros of a banded ``(R, C)`` matrix with dense row blocks.

    A 256-band mel filterbank is 99% zeros: each FFT bin lies under at most two
    triangles. Multiplying block by block does ~15x fewer operations than the
    dense product, which is the main cost of the front end after the FFT.
    """
    nz = (fb != 0).cpu()
    blocks = []
    for r0 in range(0, fb.shape[0], rows_per_block):
        r1 = min(r0 + rows_per_block, fb.shape[0])
        cols = torch.nonzero(nz[r0:r1].any(0)).flatten()
        if len(cols) == 0:
            continue
        blocks.append(Block(r0, r1, int(cols[0]), int(cols[-1]) + 1))
    return blocks


def banded_matmul(fb: torch.Tensor, blocks: list[Block], x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``fb @ x`` (or ``fb.T @ x``) for ``x`` of shape ``(..., C, T)`` using :func:`banded_blocks`."""
    if transpose:
        out = x.new_zeros(*x.shape[:-2], fb.shape[1], x.shape[-1])
        for b in blocks:
            out[..., b.c0 : b.c1, :] += fb[b.r0 : b.r1, b.c0 : b.c1].T @ x[..., b.r0 : b.r1, :]
        return out
    out = x.new_zeros(*x.shape[:-2], fb.shape[0], x.shape[-1])
    for b in blocks:
        out[..., b.r0 : b.r1, :] = fb[b.r0 : b.r1, b.c0 : b.c1] @ x[..., b.c0 : b.c1, :]
    return out


def frame(wave: torch.Tensor, win_length: int, hop_length: int, n_frames: int | None = None) -> torch.Tensor:
    """Centred frames ``(B, T, win_length)`` of ``wave`` ``(B, N)``, zero padded at both ends."""
    n = wave.shape[-1]
    t = n_frames if n_frames is not None else 1 + n // hop_length
    left = win_length // 2
    right = max(0, (t - 1) * hop_length + win_length - left - n)
    return F.pad(wave, (left, right)).unfold(-1, win_length, hop_length)[..., :t, :]


def segment(wave: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """``wave[..., lo:hi]`` of ``wave`` ``(..., N)`` with zeros where ``lo < 0`` or ``hi > N`` (``hi - lo`` samples)."""
    n = wave.shape[-1]
    a, b = min(max(lo, 0), n), max(min(hi, n), 0)
    if a >= b:  # nothing of the signal in the range
        return wave.new_zeros(*wave.shape[:-1], hi - lo)
    return F.pad(wave[..., a:b], (a - lo, hi - b))


def frame_range(wave: torch.Tensor, win_length: int, hop_length: int, f0: int, f1: int) -> torch.Tensor:
    """Frames ``f0 .. f1 - 1`` of :func:`frame` ``(B, f1 - f0, win_length)``, padding only the samples they need."""
    left = win_length // 2
    lo = f0 * hop_length - left
    return segment(wave, lo, (f1 - 1) * hop_length - left + win_length).unfold(-1, win_length, hop_length)


# Frames per pass of the front end over a long signal: the STFT of a pass (its frames and spectrum,
# about 16 * n_fft bytes a frame in float32: 32 MiB each at n_fft=2048) is all it holds besides the
# input and the output. 4,096 frames are 47 s at 22,050 Hz and hop 256; shorter signals take one pass.
FRAME_CHUNK = 4096


def stft_frames(
    wave: torch.Tensor, window: torch.Tensor, n_fft: int, hop_length: int, buf: torch.Tensor | None = None
) -> torch.Tensor:
    """Complex STFT in frame-major layout ``(B, T, F)`` (the layout the FFT produces).

    ``buf`` is an optional zeroed ``(B, T, n_fft)`` work buffer: the windowed frames
    are written into its first ``win_length`` columns, the rest stays zero, and
    the FFT runs on it in place of an implicit pad (Griffin-Lim reuses it).
    """
    win = window.shape[-1]
    frames = frame(wave, win, hop_length)
    if buf is None:
        return torch.fft.rfft(frames * window, n=n_fft)
    torch.mul(frames, window, out=buf[..., :win])
    return torch.fft.rfft(buf)


def overlap_add(frames: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Overlap-add ``(B, T, W)`` frames with hop ``hop_length`` -> ``(B, (T - 1) * hop + W)``."""
    b, t, win = frames.shape
    if win % hop_length == 0:
        # W = r * hop: r shifted adds of (B, T, hop) blocks, much faster than fold on CPU
        r = win // hop_length
        blocks = frames.reshape(b, t, r, hop_length)
        out = frames.new_zeros(b, t + r - 1, hop_length)
        for j in range(r):
            out[:, j : j + t] += blocks[:, :, j]
        return out.reshape(b, -1)
    total = (t - 1) * hop_length + win
    return F.fold(frames.transpose(1, 2), output_size=(1, total), kernel_size=(1, win), stride=(1, hop_length)).reshape(
        b, total
    )


def istft_frames(
    spec: torch.Tensor,
    window: torch.Tensor,
    n_fft: int,
    hop_length: int,
    length: int,
    envelope: torch.Tensor | None = None,
) -> torch.Tensor:
    """Least-squares inverse of :func:`stft_frames`: ``(B, T, F)`` complex -> ``(B, length)``."""
    win = window.shape[-1]
    lead = spec.shape[:-2]
    t = spec.shape[-2]
    frames = torch.fft.irfft(spec.reshape(-1, t, spec.shape[-1]), n=n_fft)[..., :win] * window
    y = overlap_add(frames, hop_length).reshape(*lead, -1)
    left = win // 2
    y = y[..., left : left + length]
    if y.shape[-1] < length:
        y = F.pad(y, (0, length - y.shape[-1]))
    if envelope is None:
        envelope = window_envelope(window, hop_length, t, length)
    return y / envelope


def stft(wave: torch.Tensor, window: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Complex STFT ``(B, F, T)`` of ``wave`` ``(B, N)``; ``window`` has ``win_length`` samples."""
    return stft_frames(wave, window, n_fft, hop_length).transpose(-1, -2)


def window_envelope(
    window: torch.Tensor, hop_length: int, n_frames: int, length: int, frame_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum of squared shifted windows over the output samples, clamped away from 0.

    Returns ``(length,)``, or ``(B, length)`` when ``frame_mask`` ``(B, n_frames)``
    says which frames exist for each item (a padded batch: an item's envelope
    must not count the frames it would not have alone).
    """
    win = window.shape[-1]
    sq = (window * window).reshape(1, 1, win).expand(1, n_frames, win)
    if frame_mask is not None:
        sq = sq * frame_mask.to(window.dtype)[..., None]
    env = overlap_add(sq, hop_length)
    env = env.reshape(-1) if frame_mask is None else env
    left = win // 2
    env = env[..., left : left + length]
    if env.shape[-1] < length:
        env = F.pad(env, (0, length - env.shape[-1]))
    return env.clamp_min(torch.finfo(env.dtype).tiny ** 0.5)


def istft(
    spec: torch.Tensor,
    window: torch.Tensor,
    n_fft: int,
    hop_length: int,
    length: int,
    envelope: torch.Tensor | None = None,
) -> torch.Tensor:
    """Least-squares inverse of :func:`stft`: ``(B, F, T)`` complex -> ``(B, length)``."""
    return istft_frames(spec.transpose(-1, -2), window, n_fft, hop_length, length, envelope)


def magnitude(spec: torch.Tensor) -> torch.Tensor:
    """``|spec|`` computed as ``hypot(re, im)`` (about twice as fast as complex ``abs`` on CPU)."""
    return torch.hypot(spec.real, spec.imag)


def melspectrogram(
    wave: torch.Tensor,
    cfg: MelConfig,
    lengths: torch.Tensor | None = None,
    window: torch.Tensor | None = None,
    fb: torch.Tensor | None = None,
    blocks: list[Block] | None = None,
    chunk: int = 1,
    csr=None,
    dense: bool | None = None,
    frame_chunk: int | None = FRAME_CHUNK,
) -> torch.Tensor:
    """Mel spectrogram ``(B, n_mels, T)`` of ``wave`` ``(B, N)`` (linear, not log).

    Equal to ``librosa.feature.melspectrogram(y, sr, n_fft, hop_length,
    win_length, power=cfg.power, center=True, pad_mode="constant")``.

    With ``lengths`` ``(B,)``, samples past each item's length are ignored and
    item ``b`` gets exactly the ``1 + lengths[b] // hop`` frames it would get
    alone; later frames are zero. The batch is processed ``chunk`` items at a
    time so the spectrogram of a chunk stays in cache. ``csr`` (a
    :class:`~audiovae.audio._cpu_kernels.MelCSR`) switches a CPU run to the
    fused magnitude-and-mel kernel. ``dense`` (default: on any device but the CPU)
    takes ``torch.stft`` and one dense filterbank product over the whole batch,
    what torchaudio's ``MelSpectrogram`` does: on a GPU a few large kernels beat the
    banded product's many small ones. A signal of more than ``frame_chunk`` frames is
    analysed ``frame_chunk`` frames at a time (the STFT is frame-local: the same
    result, in bounded work memory); ``None``: in one pass.
    """
    if wave.dim() == 1:
        return melspectrogram(wave[None], cfg, None if lengths is None else lengths.reshape(1), window, fb, blocks, chunk,
                              csr, dense, frame_chunk)[0]
    if wave.dim() != 2:
        raise ValueError(f"expected a waveform of shape (B, N), got {tuple(wave.shape)}")
    dtype, device = wave.dtype, wave.device
    if window is None:
        window = torch.hann_window(cfg.win_length, periodic=True, dtype=dtype, device=device)
    if fb is None:
        fb = mel_filterbank(cfg, dtype, device)
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=device)
        mask = torch.arange(wave.shape[-1], device=device)[None, :] < lengths[:, None]
        wave = wave * mask
    if dense is None:
        dense = device.type != "cpu"
    if blocks is None and not dense:
        blocks = banded_blocks(fb)  # the filterbank's layout: host-side set-up, only for the banded product
    n_frames = 1 + wave.shape[-1] // cfg.hop_length
    fc = n_frames if frame_chunk is None or frame_chunk >= n_frames else max(1, int(frame_chunk))
    if dense:
        # torch.stft centres a zero-padded window in each n_fft frame: same magnitudes as stft_frames
        pieces = []
        for f0 in range(0, n_frames, fc):
            f1 = min(n_frames, f0 + fc)
            if fc == n_frames:
                spec = torch.stft(wave, cfg.n_fft, cfg.hop_length, window.shape[-1], window, center=True,
                                  pad_mode="constant", return_complex=True)
            else:  # frames f0..f1-1 from their own samples (n_fft / 2 of context each side), uncentred
                lo = f0 * cfg.hop_length - cfg.n_fft // 2
                seg = segment(wave, lo, lo + (f1 - f0 - 1) * cfg.hop_length + cfg.n_fft)
                spec = torch.stft(seg, cfg.n_fft, cfg.hop_length, window.shape[-1], window, center=False,
                                  return_complex=True)
            mag = torch.view_as_real(spec).square().sum(-1) if cfg.power == 2.0 else spec.abs()
            pieces.append(torch.matmul(fb, mag))
        mel = pieces[0] if len(pieces) == 1 else torch.cat(pieces, -1)
        if lengths is not None:
            fmask = torch.arange(mel.shape[-1], device=device)[None, :] < num_frames(lengths, cfg.hop_length)[:, None]
            mel = mel * fmask[:, None, :]
        return mel
    fused = device.type == "cpu" and csr is not None
    if device.type != "cpu":
        chunk = wave.shape[0]
    chunk = max(1, chunk)
    win = window.shape[-1]
    buf = torch.zeros(min(chunk, wave.shape[0]), fc, cfg.n_fft, dtype=dtype, device=device)
    outs = []
    for i in range(0, wave.shape[0], chunk):
        part = wave[i : i + chunk]
        pieces = []
        # a long signal in passes of `fc` frames (FRAME_CHUNK): each frame is computed from its own samples,
        # so the result is the one-pass result; the work memory is one pass's, not the whole STFT's
        for f0 in range(0, n_frames, fc):
            f1 = min(n_frames, f0 + fc)
            frames = frame(part, win, cfg.hop_length) if fc == n_frames else frame_range(part, win, cfg.hop_length,
                                                                                        f0, f1)
            b = buf[: part.shape[0], : f1 - f0]
            torch.mul(frames, window, out=b[..., :win])
            if fused:
                # |X| (or |X|^2) and the mel product in one pass over the spectrum
                from audiovae.audio import _cpu_kernels as K

                pieces.append(K.magnitude_mel(torch.fft.rfft(b), csr, cfg.power))
                continue
            mag = magnitude(torch.fft.rfft(b))  # (b, T, F)
            if cfg.power == 2.0:
                mag = mag.square()
            pieces.append(banded_matmul(fb, blocks, mag.transpose(-1, -2)))
        outs.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, -1))
    mel = torch.cat(outs, 0)
    if lengths is not None:
        frames = num_frames(lengths, cfg.hop_length)
        fmask = torch.arange(mel.shape[-1], device=device)[None, :] < frames[:, None]
        mel = mel * fmask[:, None, :]
    return mel


def log_compress(mel: torch.Tensor, floor: float) -> torch.Tensor:
    """``log(clamp(mel, floor))`` (natural log), as HiFi-GAN does."""
    return torch.log(torch.clamp(mel, min=floor))
