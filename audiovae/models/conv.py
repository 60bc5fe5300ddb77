"""Convolutional VAE: fully convolutional over time, mel bins as channels.

The encoder halves the frame rate ``log2(downsample)`` times; the latent is a
sequence ``(B, latent_dim, ceil(T / downsample))``. Any length encodes and
decodes: the input is padded to a multiple of ``downsample`` and the output is
cut back to ``T``.

Layout (``c`` = ``channels``; rates relative to the mel frame rate)::

    encoder  mel --conv k5--> c  [full_rate_blocks x ResBlock]
             repeat log2(downsample) times: --stride-2 conv--> [res_blocks x ResBlock(dilations 1, 2, 4..)]
             --1x1--> (mu, logvar)                                   at 1/downsample
    decoder  z --conv k3--> c
             repeat log2(downsample) times: [res_blocks x ResBlock(dilations 1, 2, 4..)] --stride-2 transposed conv-->
             [full_rate_blocks x ResBlock] --conv k5--> likelihood parameters   at the full rate

A :class:`ResBlock` is pre-activation: norm, SiLU, dilated conv, norm, SiLU,
1x1 conv, plus the input. ``norm="layer"`` normalises each frame over its
channels, so a frame's output never depends on the length of the sequence or
on padding (GroupNorm(1, c) would mix statistics over the whole segment).
The default keeps the latent at the full frame rate (``downsample=1``: 64
latent channels per 11.6-ms frame, two residual blocks on each side): on real
speech it reconstructs far better than latents at 1/2 or 1/4 of the frame rate
at the same CPU budget, and it is the better density model too (a higher ELBO
and IWAE bound on held-out utterances); see docs/fidelity.md for the measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from audiovae.models.base import BaseVAE
from audiovae.models.likelihoods import make_likelihood
from audiovae.models.registry import register


@dataclass
class ConvVAEConfig:
    n_mels: int = 256
    channels: int = 128
    latent_dim: int = 64
    downsample: int = 1  # latent frame rate = mel frame rate / downsample (a power of 2); 1 = a latent per frame
    kernel: int = 3  # kernel of the residual blocks' dilated convolutions
    res_blocks: int = 2  # residual blocks at each reduced rate (encoder and decoder)
    full_rate_blocks: int = 0  # residual blocks at the full frame rate (the costly ones)
    norm: str = "layer"  # layer (per frame, over channels) | group (GroupNorm(1, c) over the segment) | none
    likelihood: str = "gaussian"
    min_log_scale: float = -7.0  # floor of the Gaussian likelihood's learned log-sigma per mel bin
    condition: str = "none"  # none | speaker | label: the decoder is told whose voice (which class); set by training
    condition_names: list[str] = field(default_factory=list)  # the speakers (labels) it knows, sorted; cond indexes it
    adversary: float = 0.0  # conditioned: weight of the reversed gradient of a speaker classifier on z (0 = off)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every field in its range (a :class:`~audiovae.errors.ConfigError` naming it), then the model's size."""
        from audiovae.audio.config import MAX_N_MELS
        from audiovae.config import MAX_WIDTH, check_choice, check_float, check_int, field_error
        from audiovae.models.registry import check_model_size

        check_int("n_mels", self.n_mels, 1, MAX_N_MELS)
        check_int("channels", self.channels, 1, MAX_WIDTH)
        check_int("latent_dim", self.latent_dim, 1, MAX_WIDTH)
        check_choice("downsample", self.downsample, [2**i for i in range(11)])
        if isinstance(self.kernel, bool) or not isinstance(self.kernel, int) or not (1 <= self.kernel <= 63 and self.kernel % 2):
            raise field_error("kernel", self.kernel, "an odd integer in 1..63 (an even kernel would shift the frames)")
        # block i of a stack has dilation 2**i: the bound keeps its padding (2**i frames per side) small
        check_int("res_blocks", self.res_blocks, 0, MAX_BLOCKS)
        check_int("full_rate_blocks", self.full_rate_blocks, 0, MAX_BLOCKS)
        check_choice("norm", self.norm, ("layer", "group", "none"))
        check_choice("likelihood", self.likelihood, ("gaussian", "gaussian_fixed", "bernoulli", "logistic"))
        check_float("min_log_scale", self.min_log_scale)
        check_condition(self)
        check_float("adversary", self.adversary, 0.0)  # used by conditioned models only
        check_model_size("conv", self)


MAX_BLOCKS = 16  # residual blocks per stack (dilations up to 2**15 frames)
MAX_CONDITIONS = 100_000  # speakers (labels) a conditioned model may know


def check_condition(cfg) -> None:
    """``condition`` and ``condition_names`` of a mel model's config: none with no names, or speaker/label with
    the distinct names the training data gave (training fills them in: ``audiovae train ... condition=speaker``)."""
    from audiovae.config import check_choice, field_error
    from audiovae.models.base import CONDITIONS

    check_choice("condition", cfg.condition, CONDITIONS)
    names = cfg.condition_names
    if (not isinstance(names, (list, tuple)) or len(names) > MAX_CONDITIONS
            or any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names)):
        raise field_error("condition_names", names, f"a list of at most {MAX_CONDITIONS} distinct non-empty names")
    if cfg.condition == "none" and names:
        raise field_error("condition_names", names, "empty for an unconditioned model (condition=none)")
    if cfg.condition != "none" and not names:
        raise field_error("condition", cfg.condition, "set by training from the data: use the training setting "
                          f"condition={cfg.condition} (not model_config.condition), which fills in condition_names")


class CondSequential(nn.Sequential):
    """A decoder stack that takes, for a conditioned model, one bias per site ``(B, sites, C, 1)``: added to
    the output of the first layer and of every residual block, so the condition reaches every depth."""

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        k = 0
        for i, m in enumerate(self):
            x = m(x)
            if bias is not None and (i == 0 or isinstance(m, ResBlock)):
                x = x + bias[:, k]
                k += 1
        return x

    def sites(self) -> int:
        return 1 + sum(isinstance(m, ResBlock) for m in self)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each frame of ``(B, C, T)``."""

    def __init__(self, c: int):
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x.transpose(1, 2)).transpose(1, 2)


def _norm(kind: str, c: int) -> nn.Module:
    if kind == "layer":
        return ChannelNorm(c)
    if kind == "group":
        return nn.GroupNorm(1, c)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose layer, group or none")


class ResBlock(nn.Module):
    def __init__(self, c: int, kernel: int, dilation: int = 1, norm: str = "layer"):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.net = nn.Sequential(
            _norm(norm, c), nn.SiLU(), nn.Conv1d(c, c, kernel, padding=pad, dilation=dilation),
            _norm(norm, c), nn.SiLU(), nn.Conv1d(c, c, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


# What `audiovae train --model conv` uses unless told otherwise: small crops and batches give many
# more optimiser steps per CPU-second, which is what a CPU budget is short of (docs/fidelity.md).
TRAIN_DEFAULTS = {"batch_size": 8, "segment_frames": 64, "lr": 2e-3, "lr_warmup_steps": 50, "kl_warmup_steps": 200,
                  "max_steps": 20000, "val_batches": 20}


@register("conv", ConvVAEConfig, TRAIN_DEFAULTS, kind="mel", sequence=True)
class ConvVAE(BaseVAE):
    """Log-mel ``(B, n_mels, T)`` <-> latent ``(B, latent_dim, ceil(T / downsample))``."""

    def __init__(self, config: ConvVAEConfig):
        lik_kwargs = {"min_log_scale": config.min_log_scale} if config.likelihood.startswith("gaussian") else {}
        super().__init__(config, make_likelihood(config.likelihood, config.n_mels, **lik_kwargs))
        ds = config.downsample
        if ds < 1 or ds & (ds - 1):
            raise ValueError(f"downsample must be a power of 2, got {ds}")
        c, k, nb, norm = config.channels, config.kernel, config.res_blocks, config.norm
        self.n_down = int(math.log2(ds))

        def blocks(n: int) -> list[nn.Module]:
            return [ResBlock(c, k, 2**i, norm) for i in range(n)]

        enc: list[nn.Module] = [nn.Conv1d(config.n_mels, c, 5, padding=2), *blocks(config.full_rate_blocks)]
        for _ in range(self.n_down):
            enc += [nn.SiLU(), nn.Conv1d(c, c, 4, stride=2, padding=1), *blocks(nb)]
        if self.n_down == 0:
            enc += blocks(nb)
        enc += [_norm(norm, c), nn.SiLU(), nn.Conv1d(c, 2 * config.latent_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv1d(config.latent_dim, c, 3, padding=1)]
        for _ in range(self.n_down):
            dec += [*blocks(nb), nn.SiLU(), nn.ConvTranspose1d(c, c, 4, stride=2, padding=1)]
        if self.n_down == 0:
            dec += blocks(nb)
        dec += blocks(config.full_rate_blocks)
        dec += [_norm(norm, c), nn.SiLU(), nn.Conv1d(c, self.likelihood.out_channels(config.n_mels), 5, padding=2)]
        self.decoder = CondSequential(*dec)
        if self.n_conditions:  # a learned vector per speaker (label) and decoder site
            self.cond_embed = nn.Embedding(self.n_conditions, self.decoder.sites() * c)
            nn.init.normal_(self.cond_embed.weight, std=0.1)
            self._init_condition_stats()
            if config.adversary > 0:  # a frame-level speaker classifier on the latent (training only)
                self.adversary = nn.Sequential(nn.Conv1d(config.latent_dim, c, 3, padding=1), nn.SiLU(),
                                               nn.Conv1d(c, c, 3, padding=1), nn.SiLU(), nn.Conv1d(c, self.n_conditions, 1))

    def adversary_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.adversary(z)

    def latent_size(self, size: int | torch.Tensor) -> int | torch.Tensor:
        return -(-size // self.config.downsample)  # ceil, for ints and integer tensors alike

    def encoder_params(self, x: torch.Tensor):
        ds = self.config.downsample
        if ds > 1:  # up to a multiple of ds; always (not `if pad`) and `-t % ds`, so an exported graph pads any length
            x = F.pad(x, (0, -x.shape[-1] % ds), mode="replicate")
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decoder_params(self, z: torch.Tensor, size: int | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        bias = None
        if self.n_conditions:
            cond = self.check_cond(cond, z.shape[0], z.device)
            bias = self.cond_embed(cond).view(z.shape[0], -1, self.config.channels, 1).to(z.dtype)
        out = self.decoder(z, bias) if bias is not None else self.decoder(z)
        return out if size is None else out[..., :size]

    def prior_shape(self, n: int, size: int | None = None) -> tuple[int, ...]:
        return (n, self.latent_dim, self.latent_size(size or 128))
