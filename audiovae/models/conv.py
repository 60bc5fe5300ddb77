"""Convolutional VAE: fully convolutional over time, mel bins as channels.

The encoder halves the frame rate ``log2(downsample)`` times; the latent is a
sequence ``(B, latent_dim, ceil(T / downsample))``. Any length encodes and
decodes: the input is padded to a multiple of ``downsample`` and the output is
cut back to ``T``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from audiovae.models.base import BaseVAE
from audiovae.models.likelihoods import make_likelihood
from audiovae.models.registry import register


@dataclass
class ConvVAEConfig:
    n_mels: int = 256
    channels: int = 256
    latent_dim: int = 32
    downsample: int = 4  # latent frame rate = mel frame rate / downsample (a power of 2)
    kernel: int = 5
    res_blocks: int = 2  # residual blocks at full and at latent rate
    likelihood: str = "gaussian"


class ResBlock(nn.Module):
    def __init__(self, c: int, kernel: int, dilation: int = 1):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.net = nn.Sequential(
            nn.GroupNorm(1, c), nn.SiLU(), nn.Conv1d(c, c, kernel, padding=pad, dilation=dilation),
            nn.GroupNorm(1, c), nn.SiLU(), nn.Conv1d(c, c, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


@register("conv", ConvVAEConfig)
class ConvVAE(BaseVAE):
    """Log-mel ``(B, n_mels, T)`` <-> latent ``(B, latent_dim, ceil(T / downsample))``."""

    is_sequence = True

    def __init__(self, config: ConvVAEConfig):
        super().__init__(config, make_likelihood(config.likelihood, config.n_mels))
        ds = config.downsample
        if ds < 1 or ds & (ds - 1):
            raise ValueError(f"downsample must be a power of 2, got {ds}")
        c, k = config.channels, config.kernel
        self.n_down = int(math.log2(ds))
        enc: list[nn.Module] = [nn.Conv1d(config.n_mels, c, k, padding=k // 2)]
        enc += [ResBlock(c, k, 2**i) for i in range(config.res_blocks)]
        for _ in range(self.n_down):
            enc += [nn.SiLU(), nn.Conv1d(c, c, 4, stride=2, padding=1)]
        enc += [ResBlock(c, 3) for _ in range(config.res_blocks)]
        enc += [nn.SiLU(), nn.Conv1d(c, 2 * config.latent_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv1d(config.latent_dim, c, 3, padding=1)]
        dec += [ResBlock(c, 3) for _ in range(config.res_blocks)]
        for _ in range(self.n_down):
            dec += [nn.SiLU(), nn.ConvTranspose1d(c, c, 4, stride=2, padding=1)]
        dec += [ResBlock(c, k, 2**i) for i in range(config.res_blocks)]
        dec += [nn.SiLU(), nn.Conv1d(c, self.likelihood.out_channels(config.n_mels), k, padding=k // 2)]
        self.decoder = nn.Sequential(*dec)

    def latent_size(self, size: int) -> int:
        return -(-size // self.config.downsample)

    def encoder_params(self, x: torch.Tensor):
        t = x.shape[-1]
        pad = self.latent_size(t) * self.config.downsample - t
        if pad:
            x = F.pad(x, (0, pad), mode="replicate")
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decoder_params(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        out = self.decoder(z)
        return out if size is None else out[..., :size]

    def prior_shape(self, n: int, size: int | None = None) -> tuple[int, ...]:
        return (n, self.latent_dim, self.latent_size(size or 128))
