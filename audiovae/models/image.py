"""Image VAEs on the same core: 28x28x1 (MNIST-style, Bernoulli) and 32x32x3 (CIFAR-style, discretised logistic)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from audiovae.models.base import BaseVAE
from audiovae.models.likelihoods import make_likelihood
from audiovae.models.registry import register


def _validate_image_config(config, name: str) -> None:
    """Every field of an image VAE's config in its range, then the model's size."""
    from audiovae.config import MAX_WIDTH, check_choice, check_int, field_error
    from audiovae.models.registry import check_model_size

    check_int("image_channels", config.image_channels, 1, 64)
    s = config.image_size
    if isinstance(s, bool) or not isinstance(s, int) or not (4 <= s <= 1024 and s % 4 == 0):
        raise field_error("image_size", s, "a multiple of 4 in 4..1024")
    check_int("channels", config.channels, 1, MAX_WIDTH)
    check_int("latent_dim", config.latent_dim, 1, MAX_WIDTH)
    check_int("hidden", config.hidden, 1, MAX_WIDTH)
    check_choice("likelihood", config.likelihood, ("gaussian", "gaussian_fixed", "bernoulli", "logistic"))
    check_model_size(name, config)


@dataclass
class MNISTVAEConfig:
    image_channels: int = 1
    image_size: int = 28
    channels: int = 32
    latent_dim: int = 32
    hidden: int = 192
    likelihood: str = "bernoulli"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _validate_image_config(self, "mnist")


@dataclass
class CIFARVAEConfig:
    image_channels: int = 3
    image_size: int = 32
    channels: int = 32
    latent_dim: int = 64
    hidden: int = 512
    likelihood: str = "logistic"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _validate_image_config(self, "cifar")


class ImageVAE(BaseVAE):
    """Conv encoder (two stride-2 convs) -> MLP -> latent; the mirror image to decode."""

    def __init__(self, config):
        super().__init__(config, make_likelihood(config.likelihood, config.image_channels))
        c, s = config.channels, config.image_size
        if s % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {s}")
        self.feat = s // 4
        act = nn.SiLU
        self.encoder = nn.Sequential(
            nn.Conv2d(config.image_channels, c, 3, padding=1), act(),
            nn.Conv2d(c, c, 4, stride=2, padding=1), act(),
            nn.Conv2d(c, 2 * c, 3, padding=1), act(),
            nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1), act(),
            nn.Flatten(),
            nn.Linear(2 * c * self.feat**2, config.hidden), act(),
            nn.Linear(config.hidden, 2 * config.latent_dim),
        )
        out_c = self.likelihood.out_channels(config.image_channels)
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden), act(),
            nn.Linear(config.hidden, 2 * c * self.feat**2), act(),
            nn.Unflatten(1, (2 * c, self.feat, self.feat)),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), act(),
            nn.Conv2d(c, c, 3, padding=1), act(),
            nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), act(),
            nn.Conv2d(c, out_c, 3, padding=1),
        )

    def encoder_params(self, x: torch.Tensor):
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decoder_params(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        return self.decoder(z)

    def prior_shape(self, n: int, size: int | None = None) -> tuple[int, ...]:
        return (n, self.latent_dim)


@register("mnist", MNISTVAEConfig, kind="image", data=("mnist",))
class MNISTVAE(ImageVAE):
    """28x28 grey images, binarised, Bernoulli likelihood."""


@register("cifar", CIFARVAEConfig, kind="image", data=("cifar",))
class CIFARVAE(ImageVAE):
    """32x32 colour images in [-1, 1], discretised logistic likelihood."""
