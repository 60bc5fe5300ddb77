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
    condition: str = "none"  # none | speaker | label: the decoder is told whose voice (which class); set by training
    condition_names: list[str] = field(default_factory=list)  # the speakers (labels) it knows, sorted; cond indexes it

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every field in its range (a :class:`~audiovae.errors.ConfigError` naming it), then the model's size."""
        from audiovae.config import MAX_WIDTH, check_choice, check_int, field_error
        from audiovae.models.registry import check_model_size
        from audiovae.audio.config import MAX_N_MELS
        from audiovae.training.config import MAX_CONTEXT

        check_int("n_mels", self.n_mels, 1, MAX_N_MELS)
        check_int("context", self.context, 0, MAX_CONTEXT)
        if (not isinstance(self.hidden, (list, tuple)) or not 1 <= len(self.hidden) <= MAX_LAYERS
                or any(isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= MAX_WIDTH for h in self.hidden)):
            raise field_error("hidden", self.hidden, f"a list of 1 to {MAX_LAYERS} layer widths in 1..{MAX_WIDTH}")
        check_int("latent_dim", self.latent_dim, 1, MAX_WIDTH)
        check_choice("likelihood", self.likelihood, ("gaussian", "gaussian_fixed", "bernoulli"))
        from audiovae.models.conv import check_condition

        check_condition(self)
        check_model_size("dense", self)


MAX_LAYERS = 64  # hidden layers of the dense VAE's encoder (and of its decoder)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.SiLU()]
    return nn.Sequential(*layers)


@register("dense", DenseVAEConfig, kind="mel", sequence=False)
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
        if self.n_conditions:  # a learned bias of the decoder's first layer per speaker (label)
            self.cond_embed = nn.Embedding(self.n_conditions, config.hidden[-1])
            nn.init.normal_(self.cond_embed.weight, std=0.1)
            self._init_condition_stats()

    def encoder_params(self, x: torch.Tensor):
        mu, logvar = self.to_stats(self.encoder(x.flatten(1))).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decoder_params(self, z: torch.Tensor, size: int | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        if not self.n_conditions:
            return self.to_out(self.decoder(z))
        cond = self.check_cond(cond, z.shape[0], z.device)
        h = self.decoder[0](z) + self.cond_embed(cond).to(z.dtype)  # the first Linear, then its norm and the rest
        for m in self.decoder[1:]:
            h = m(h)
        return self.to_out(h)

    def prior_shape(self, n: int, size: int | None = None) -> tuple[int, ...]:
        return (n, self.latent_dim)
