"""Dense VAE: one 256-bin normalised log-mel frame (with optional context) at a time."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from audiovae.models.base import BaseVAE
from audiovae.models.likelihoods import make_likelihood
from audiovae.models.registry import register


@dataclass
class DenseVAEConfig:
    n_mels: int = 256
    context: int = 0  # frames of context on each side: input is n_mels * (2 * context + 1)
    hidden: list[int] = field(default_factory=lambda: [512, 256])
    latent_dim: int = 32
    likelihood: str = "gaussian"  # gaussian (learned per-bin scale) or gaussian_fixed


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.SiLU()]
    return nn.Sequential(*layers)


@register("dense", DenseVAEConfig)
class DenseVAE(BaseVAE):
    """MLP encoder/decoder over frames ``(B, n_mels * (2 * context + 1))``; latent ``(B, latent_dim)``."""

    def __init__(self, config: DenseVAEConfig):
        dim = config.n_mels * (2 * config.context + 1)
        super().__init__(config, make_likelihood(config.likelihood, dim))
        self.input_dim = dim
        self.encoder = _mlp([dim, *config.hidden])
        self.to_stats = nn.Linear(config.hidden[-1], 2 * config.latent_dim)
        self.decoder = _mlp([config.latent_dim, *reversed(config.hidden)])
        self.to_out = nn.Linear(config.hidden[0], dim)

    def encoder_params(self, x: torch.Tensor):
        mu, logvar = self.to_stats(self.encoder(x.flatten(1))).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decoder_params(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        return self.to_out(self.decoder(z))

    def prior_shape(self, n: int, size: int | None = None) -> tuple[int, ...]:
        return (n, self.latent_dim)
