"""Priors over latent sequences: ``N(0, I)`` and a learned autoregressive prior.

A VAE trains against ``p(z) = N(0, I)``; samples drawn from it decode to noise
when the latent is a sequence of per-frame vectors (every frame independent,
nothing says which frame follows which). The learned prior, trained afterwards
on the frozen encoder's posteriors (as RAVE does), models what the latent
sequences of real speech look like:

    p(z) = prod_t p(z_t | z_<t, c)

one latent frame at a time, each a mixture of ``K`` diagonal Gaussians whose
weights, means and scales a GRU computes from the frames before (and from the
speaker or label ``c`` of a conditioned model). Because it is trained by maximum
likelihood on samples of ``q(z | x)`` over the training data, it lowers exactly
the ``-E_q[log p(z)]`` part of the KL term, so the ELBO and IWAE bound against
it are honest bounds and higher than against ``N(0, I)`` (``evaluate --prior
learned``).

``whiten``: the mixture lives in the PCA basis of the training posteriors
(``u = W (z - m)``, ``W`` fixed at training start), where the channels of a frame
are uncorrelated, so diagonal components fit far better; the density of ``z`` is
that of ``u`` plus ``log |det W|`` (exact).

Both priors have the same interface: ``sample(shape, temperature, generator,
cond)`` and ``log_density(z, mask, cond) -> (B,)``. Latents are ``(B, D, T)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)

__all__ = ["PriorConfig", "StandardNormal", "LatentPrior", "mixture_log_prob"]


class StandardNormal:
    """The prior ``p(z) = N(0, I)``. A learned prior provides the same methods."""

    learned = False

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def sample(self, shape: tuple[int, ...], temperature: float = 1.0,
               generator: torch.Generator | None = None, cond: torch.Tensor | None = None,
               progress: bool = False) -> torch.Tensor:
        """``shape`` draws of ``N(0, temperature^2)`` on :attr:`device` (``cond`` is ignored)."""
        return temperature * torch.randn(shape, generator=generator, device=self.device)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Element-wise ``log N(z; 0, 1)`` in nats (sum it over the latent axes for the item's log-density)."""
        return -0.5 * (z.square() + LOG_2PI)

    def log_density(self, z: torch.Tensor, mask: torch.Tensor | None = None,
                    cond: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(z)`` per item ``(B,)``; ``mask`` ``(B, 1, T)`` (1 = valid latent frame) or None."""
        lp = self.log_prob(z)
        if mask is not None:
            lp = lp * mask
        return lp.flatten(1).sum(1)


@dataclass
class PriorConfig:
    latent_dim: int = 64
    hidden: int = 512  # GRU width
    layers: int = 2  # GRU layers
    components: int = 8  # mixture components per latent frame (1: one diagonal Gaussian)
    whiten: bool = True  # model the latent in the PCA basis of the training posteriors
    n_conditions: int = 0  # speakers or labels of a conditioned model (0: unconditioned)
    min_log_scale: float = -7.0  # floor of each component's log standard deviation

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        from audiovae.config import MAX_WIDTH, check_float, check_int

        check_int("latent_dim", self.latent_dim, 1, MAX_WIDTH)
        check_int("hidden", self.hidden, 1, 8192)
        check_int("layers", self.layers, 1, 8)
        check_int("components", self.components, 1, 256)
        check_int("n_conditions", self.n_conditions, 0, 100_000)
        check_float("min_log_scale", self.min_log_scale, -20.0, 0.0)
        if self.components * self.latent_dim > 1 << 20:
            from audiovae.config import field_error

            raise field_error("components", self.components, f"at most {(1 << 20) // self.latent_dim} for "
                              f"latent_dim={self.latent_dim}")


def mixture_log_prob(u: torch.Tensor, logits: torch.Tensor, means: torch.Tensor,
                     log_scales: torch.Tensor) -> torch.Tensor:
    """``log sum_k pi_k N(u; mean_k, diag(exp(log_scale_k))^2)``.

    ``u`` ``(..., D)``; ``logits`` ``(..., K)`` (unnormalised); ``means``, ``log_scales`` ``(..., K, D)``.
    Returns ``(...)`` in nats.
    """
    d = (u.unsqueeze(-2) - means) * torch.exp(-log_scales)
    comp = -0.5 * d.square().sum(-1) - log_scales.sum(-1) - 0.5 * u.shape[-1] * LOG_2PI  # (..., K)
    return torch.logsumexp(F.log_softmax(logits, -1) + comp, -1)


class LatentPrior(nn.Module):
    """Autoregressive mixture-of-Gaussians prior over latent sequences ``(B, D, T)`` (see the module doc)."""

    learned = True

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = c = config
        d, k = c.latent_dim, c.components
        # whitening u = W (z - m): buffers, fitted once from the training posteriors (fit_whitening)
        self.register_buffer("shift", torch.zeros(d))
        self.register_buffer("whitener", torch.eye(d))
        self.start = nn.Parameter(torch.zeros(d))  # the "previous frame" of the first frame
        self.inp = nn.Linear(d, c.hidden)
        self.cond_embed = nn.Embedding(c.n_conditions, c.hidden) if c.n_conditions else None
        self.rnn = nn.GRU(c.hidden, c.hidden, num_layers=c.layers, batch_first=True)
        self.out = nn.Linear(c.hidden, k + 2 * k * d)

    # --- whitening --------------------------------------------------------------------------------
    @torch.no_grad()
    def fit_whitening(self, z: torch.Tensor, eps: float = 1e-4) -> None:
        """Fit ``m`` and ``W`` (PCA whitening) from latent frames ``z`` ``(N, D)`` (float64 inside)."""
        if not self.config.whiten:
            return
        z = z.double()
        m = z.mean(0)
        cov = torch.cov((z - m).T).reshape(z.shape[1], z.shape[1])
        evals, evecs = torch.linalg.eigh(cov)
        w = evecs.T / torch.sqrt(evals.clamp_min(0) + eps)[:, None]
        self.shift.copy_(m.to(self.shift))
        self.whitener.copy_(w.to(self.whitener))

    def _logdet(self) -> torch.Tensor:
        return torch.linalg.slogdet(self.whitener.double())[1].to(self.whitener.dtype)

    def _to_u(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, D, T)`` latents -> ``(B, T, D)`` whitened frames."""
        return (z.transpose(1, 2) - self.shift) @ self.whitener.T

    def _from_u(self, u: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` whitened frames -> ``(B, D, T)`` latents."""
        return (u @ torch.linalg.inv(self.whitener.double()).T.to(u.dtype) + self.shift).transpose(1, 2)

    # --- the network ----------------------------------------------------------------------------
    def _inputs(self, u_prev: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        h = self.inp(u_prev)
        if self.cond_embed is not None:
            if cond is None:
                raise ValueError("this prior is conditioned (speaker or label): pass cond")
            h = h + self.cond_embed(cond.to(h.device)).unsqueeze(1)
        return h

    def _params(self, h: torch.Tensor):
        k, d = self.config.components, self.config.latent_dim
        o = self.out(h)
        logits = o[..., :k]
        means = o[..., k:k + k * d].unflatten(-1, (k, d))
        log_scales = o[..., k + k * d:].unflatten(-1, (k, d)).clamp(min=self.config.min_log_scale, max=5.0)
        return logits, means, log_scales

    def frame_log_probs(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(z_t | z_<t, c)`` for every frame: ``(B, T)`` in nats (teacher forcing, one GRU pass)."""
        u = self._to_u(z)
        prev = torch.cat([self.start.expand(u.shape[0], 1, -1), u[:, :-1]], 1)
        h, _ = self.rnn(self._inputs(prev, cond))
        logits, means, log_scales = self._params(h)
        return mixture_log_prob(u, logits, means, log_scales) + self._logdet()

    def log_density(self, z: torch.Tensor, mask: torch.Tensor | None = None,
                    cond: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(z)`` per item ``(B,)``; ``mask`` ``(B, 1, T)`` (1 = valid latent frame) or None.

        Causal: the frames after an item's end never influence its valid frames."""
        lp = self.frame_log_probs(z, cond)
        if mask is not None:
            lp = lp * mask[:, 0]
        return lp.sum(1)

    @torch.no_grad()
    def sample(self, shape: tuple[int, ...], temperature: float = 1.0,
               generator: torch.Generator | None = None, cond: torch.Tensor | None = None,
               progress: bool = False) -> torch.Tensor:
        """``shape = (B, D, T)`` latents drawn one frame at a time.

        ``temperature`` T: the component weights are ``softmax(logits / T)`` and each
        component's standard deviation is multiplied by T (T = 1: the prior itself;
        lower: more typical, less varied). A ``generator`` makes the draw reproducible.
        """
        b, d, t = shape
        if d != self.config.latent_dim:
            raise ValueError(f"this prior models {self.config.latent_dim} latent channels, asked for {d}")
        dev = self.start.device
        temperature = max(float(temperature), 1e-4)
        u_prev = self.start.expand(b, 1, -1)
        state = None
        out = torch.empty(b, t, d, device=dev)
        for i in range(t):
            h, state = self.rnn(self._inputs(u_prev, cond), state)
            logits, means, log_scales = self._params(h[:, 0])
            probs = torch.softmax(logits / temperature, -1)
            k = torch.multinomial(probs, 1, generator=generator)[:, 0]
            mean = means[torch.arange(b, device=dev), k]
            scale = torch.exp(log_scales[torch.arange(b, device=dev), k]) * temperature
            eps = torch.randn(mean.shape, generator=generator, device=dev)
            u = mean + scale * eps
            out[:, i] = u
            u_prev = u.unsqueeze(1)
        return self._from_u(out)
