"""Reconstruction likelihoods p(x | z): proper log-densities, so ELBOs are comparable nats.

A likelihood turns the decoder's raw output into a distribution over ``x``.
Each returns element-wise log-probabilities; the VAE sums them per item.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Likelihood(nn.Module):
    """Base class. ``out_channels(c)``: decoder channels needed for data with ``c`` channels."""

    def out_channels(self, channels: int) -> int:
        return channels

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, params: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class GaussianLikelihood(Likelihood):
    """``N(x; mu, sigma^2)`` per element, for normalised log-mel features.

    ``learn_scale=True`` learns one log-sigma per feature channel (mel bin),
    shared over time; otherwise sigma is fixed at ``scale``. The channel axis is
    dim 1 of ``x`` (``(B, C)`` frames or ``(B, C, T)`` sequences).
    """

    def __init__(self, channels: int, learn_scale: bool = True, scale: float = 1.0, min_log_scale: float = -7.0):
        super().__init__()
        self.learn_scale = learn_scale
        self.min_log_scale = min_log_scale
        init = torch.full((channels,), math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_scale", init)

    def _log_scale(self, x: torch.Tensor) -> torch.Tensor:
        ls = self.log_scale.clamp_min(self.min_log_scale)
        return ls.view(1, -1, *([1] * (x.dim() - 2)))

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        ls = self._log_scale(x)
        return -0.5 * ((x - params) * torch.exp(-ls)).square() - ls - 0.5 * math.log(2 * math.pi)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return params + torch.exp(self._log_scale(params)) * torch.randn_like(params)


class BernoulliLikelihood(Likelihood):
    """Bernoulli with logits, for binarised images in {0, 1}."""

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none")

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(params))


class DiscretizedLogisticLikelihood(Likelihood):
    """Discretised logistic over 256 levels (Salimans et al. 2017, one component), for 8-bit images.

    Data ``x`` is scaled to [-1, 1] (``x = 2 * k / 255 - 1``). The decoder gives a
    mean and a log-scale per sub-pixel (2x the channels). The probability of
    level ``k`` is the logistic mass of its bin of width 2/255, with the edge
    bins extended to +-infinity, so the log-probabilities are exact log-masses.
    """

    def __init__(self, min_log_scale: float = -7.0):
        super().__init__()
        self.min_log_scale = min_log_scale

    def out_channels(self, channels: int) -> int:
        return 2 * channels

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_scale = params.chunk(2, dim=1)
        return torch.tanh(mean), log_scale.clamp_min(self.min_log_scale)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        mean, log_scale = self._split(params)
        inv = torch.exp(-log_scale)
        centred = x - mean
        plus = inv * (centred + 1.0 / 255)
        minus = inv * (centred - 1.0 / 255)
        cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
        log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus), for the bottom edge bin
        log_one_minus_cdf_min = -F.softplus(minus)  # log (1 - sigmoid(minus)), for the top edge bin
        mid = inv * centred
        # density approximation where the bin mass underflows (very sharp logistics)
        log_pdf_mid = mid - log_scale - 2 * F.softplus(mid) + math.log(2.0 / 255)
        inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp_min(1e-12)), log_pdf_mid)
        return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, inner))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self._split(params)[0]

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        mean, log_scale = self._split(params)
        u = torch.rand_like(mean).clamp(1e-5, 1 - 1e-5)
        x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        return (torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5) - 1


def make_likelihood(name: str, channels: int, **kwargs) -> Likelihood:
    """Build a likelihood by name: ``gaussian``, ``gaussian_fixed``, ``bernoulli``, ``logistic``."""
    if name == "gaussian":
        return GaussianLikelihood(channels, learn_scale=True, **kwargs)
    if name == "gaussian_fixed":
        return GaussianLikelihood(channels, learn_scale=False, **kwargs)
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "logistic":
        return DiscretizedLogisticLikelihood()
    raise ValueError(f"unknown likelihood {name!r}; choose gaussian, gaussian_fixed, bernoulli or logistic")
