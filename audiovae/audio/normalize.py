"""Per-bin normalisation of log-mel features (mean/std over a training set)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from audiovae.errors import InvalidFeatureError


class RunningStats:
    """Per-bin mean and standard deviation accumulated over ``(n_bins, T)`` arrays, in float64."""

    def __init__(self, n_bins: int):
        self.n_bins = n_bins
        self.count = 0
        self.sum = np.zeros(n_bins, np.float64)
        self.sumsq = np.zeros(n_bins, np.float64)

    def update(self, feats: np.ndarray) -> None:
        feats = np.asarray(feats, np.float64)
        if feats.ndim != 2 or feats.shape[0] != self.n_bins:
            raise InvalidFeatureError(f"expected features of shape ({self.n_bins}, T), got {feats.shape}")
        self.count += feats.shape[1]
        self.sum += feats.sum(axis=1)
        self.sumsq += np.square(feats).sum(axis=1)

    def merge(self, other: "RunningStats") -> None:
        self.count += other.count
        self.sum += other.sum
        self.sumsq += other.sumsq

    def finalize(self, min_std: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        if self.count == 0:
            raise InvalidFeatureError("no frames to compute statistics from")
        mean = self.sum / self.count
        var = np.maximum(self.sumsq / self.count - mean**2, 0.0)
        return mean, np.maximum(np.sqrt(var), min_std)


class Normalizer(nn.Module):
    """``(x - mean) / std`` per mel bin, for features ``(B, n_mels, T)`` or ``(B, n_mels)``.

    ``mean`` and ``std`` are buffers (saved in the model's state dict), so a
    checkpoint alone can undo the normalisation of what the model generates.
    """

    def __init__(self, mean: torch.Tensor | np.ndarray, std: torch.Tensor | np.ndarray):
        super().__init__()
        # tensors straight to host float32 (a checkpoint loaded onto a GPU hands over CUDA tensors, which
        # numpy cannot read); arrays through numpy
        mean, std = (v.detach().to("cpu", torch.float32) if isinstance(v, torch.Tensor)
                     else torch.as_tensor(np.asarray(v), dtype=torch.float32) for v in (mean, std))
        if mean.shape != std.shape or mean.dim() != 1:
            raise InvalidFeatureError(f"mean and std must be 1-D of equal length, got {tuple(mean.shape)}, {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise InvalidFeatureError("normalisation statistics must be finite with std > 0")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @classmethod
    def identity(cls, n_bins: int) -> "Normalizer":
        return cls(torch.zeros(n_bins), torch.ones(n_bins))

    def _shape(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # (B, n_mels, T) sequences broadcast over time; (B, n_mels) frames over the batch
        return v.to(x.dtype)[:, None] if x.dim() == 3 else v.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._shape(x, self.mean)) / self._shape(x, self.std)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._shape(x, self.std) + self._shape(x, self.mean)
