"""The waveform -> log-mel front end as an ``nn.Module``."""

from __future__ import annotations

import math

import torch
from torch import nn

from audiovae.audio import functional as AF
from audiovae.audio.config import MelConfig


use_cpu_kernels = True  # the fused numba kernel on CPU; tests compare it with the torch path


class MelFrontend(nn.Module):
    """Waveform ``(B, N)`` -> log-mel ``(B, n_mels, T)`` with ``T = 1 + N // hop``.

    Keeps the Hann window and the mel filterbank as buffers, so ``.to(device,
    dtype)`` moves them; works on any device in float32 or float64 (the output
    has the input's dtype). ``forward(wave, lengths)`` with per-item ``lengths``
    ``(B,)`` gives each item of a padded batch exactly what it would get alone;
    frames past an item's end hold ``log(log_floor)`` (silence). Use
    :meth:`frame_lengths` for the number of valid frames. A waveform longer than
    ``frame_chunk`` frames is analysed that many frames at a time, each from its own
    samples: the same log-mel in work memory bounded by one chunk's STFT.

    Example::

        fe = MelFrontend(MelConfig())
        logmel = fe(torch.randn(4, 22050))  # (4, 256, 87)
    """

    def __init__(self, config: MelConfig | None = None, fused: bool = True, frame_chunk: int | None = AF.FRAME_CHUNK):
        super().__init__()
        self.config = config or MelConfig()
        # a longer signal is analysed this many frames at a time (same result, bounded work memory)
        self.frame_chunk = frame_chunk
        # fused=False keeps to torch operations on CPU too (e.g. in forked DataLoader workers, where
        # numba's GNU-OpenMP threading layer refuses to run once the parent process has used it)
        self.fused = fused
        cfg = self.config
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=True, dtype=torch.float64), persistent=False)
        fb = AF.mel_filterbank(cfg, torch.float64)
        self.register_buffer("fb", fb, persistent=False)
        self.blocks = AF.banded_blocks(fb)
        self._csr = None
        self.to(torch.float32)

    @property
    def csr(self):
        """The filterbank by frequency bin, for the fused CPU kernel (built on first use)."""
        if self._csr is None:
            from audiovae.audio._cpu_kernels import MelCSR

            self._csr = MelCSR(self.fb)
        return self._csr

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames per item for waveform ``lengths`` ``(B,)``."""
        return AF.num_frames(lengths, self.config.hop_length)

    def mel(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Linear mel spectrogram ``(B, n_mels, T)`` (before the log)."""
        window = self.window.to(wave.dtype)
        fb = self.fb.to(wave.dtype)
        csr = self.csr if (wave.device.type == "cpu" and use_cpu_kernels and self.fused) else None
        return AF.melspectrogram(wave, self.config, lengths, window, fb, self.blocks, csr=csr, frame_chunk=self.frame_chunk)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if not torch.is_floating_point(wave):
            raise TypeError(f"MelFrontend expects a floating-point waveform, got {wave.dtype}")
        squeeze = wave.dim() == 1
        if squeeze:
            wave = wave[None]
        mel = self.mel(wave, lengths)
        # in place when nothing differentiates through it: a long signal's output is the largest array here
        inplace = not mel.requires_grad
        floor = self.config.log_floor
        logmel = mel.clamp_(min=floor).log_() if inplace else AF.log_compress(mel, floor)
        if lengths is not None:
            frames = self.frame_lengths(torch.as_tensor(lengths, device=wave.device))
            pad = (torch.arange(logmel.shape[-1], device=wave.device)[None, :] >= frames[:, None])[:, None, :]
            logmel = logmel.masked_fill_(pad, math.log(floor)) if inplace else logmel.masked_fill(pad, math.log(floor))
        return logmel[0] if squeeze else logmel
