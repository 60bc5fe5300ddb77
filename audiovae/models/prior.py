"""Priors over latent sequences: ``N(0, I)`` and learned autoregressive priors.

A VAE trains against ``p(z) = N(0, I)``; samples drawn from it decode to noise
when the latent is a sequence of per-frame vectors (every frame independent,
nothing says which frame follows which). A learned prior, trained afterwards on
the frozen encoder's posteriors (as RAVE does), models what the latent
sequences of real speech look like, one latent frame at a time:

    p(z) = prod_t p(z_t | z_<t, c)

with ``c`` the speaker or label of a conditioned model. Two kinds (``kind``):

- ``codebook`` (the default): each frame is a mixture of ``K`` diagonal
  Gaussians with *fixed-per-prior* means and scales (a codebook: the means start
  as k-means centroids of the training posteriors' means and are then trained
  with everything else), and a GRU gives the mixture weights from the codes of
  the frames before: the code of a frame is its most likely component,
  ``a(z_t) = argmax_k N(z_t; m_k, s_k)``, a function of ``z_t``, so the product is a
  proper density of ``z``. Sampling draws a code from the weights and a frame from
  that code's Gaussian; every frame drawn is one the decoder knows well (at
  ``K = 1024`` the codebook's means alone decode the held-out utterances within
  0.06 DNSMOS of their reconstructions), which is why its samples sound like
  speech where those of ``mixture`` sound like noise (README, "Generation").
- ``mixture``: a mixture-density network: the GRU reads the previous frame itself
  and outputs ``K`` context-dependent means and scales per frame, in the PCA
  basis of the training posteriors (``whiten``; ``u = W (z - m)``, the density of
  ``z`` is that of ``u`` plus ``log |det W|``, exact). Better likelihoods per
  parameter, noisier samples: the alternative it was measured against.

Both are trained by maximum likelihood on samples of ``q(z | x)`` over the
training data, which lowers exactly the ``-E_q[log p(z)]`` part of the KL term, so
the ELBO and IWAE bound against them are honest bounds, higher than against
``N(0, I)`` (``evaluate --prior learned``).

Every prior has the same interface: ``sample(shape, temperature, generator,
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
               progress: bool = False, frame_noise: float | None = None,
               prefix: torch.Tensor | None = None) -> torch.Tensor:
        """``shape`` draws of ``N(0, temperature^2)`` on :attr:`device` (``cond``, ``frame_noise``, ``prefix``:
        ignored; every frame is independent)."""
        return temperature * torch.randn(shape, generator=generator, device=self.device)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Element-wise ``log N(z; 0, 1)`` in nats (sum it over the latent axes for the item's log-density)."""
        return -0.5 * (z.square() + LOG_2PI)

    def frame_log_probs(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(z_t)`` of every frame of ``(B, D, T)``: ``(B, T)``."""
        return self.log_prob(z).sum(1)

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
    kind: str = "codebook"  # codebook | mixture (see the module docstring)
    hidden: int = 256  # GRU width
    layers: int = 1  # GRU layers
    components: int = 512  # mixture components per latent frame (codebook size; 1: one diagonal Gaussian)
    whiten: bool = True  # mixture: model the latent in the PCA basis of the training posteriors
    n_conditions: int = 0  # speakers or labels of a conditioned model (0: unconditioned)
    min_log_scale: float = -7.0  # floor of each component's log standard deviation

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        from audiovae.config import MAX_WIDTH, check_float, check_int

        from audiovae.config import check_choice

        check_int("latent_dim", self.latent_dim, 1, MAX_WIDTH)
        check_choice("kind", self.kind, ("codebook", "mixture"))
        check_int("hidden", self.hidden, 1, 8192)
        check_int("layers", self.layers, 1, 8)
        check_int("components", self.components, 1, 4096)
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
        self.codebook = c.kind == "codebook"
        # whitening u = W (z - m): buffers, fitted once from the training posteriors (fit_whitening)
        self.register_buffer("shift", torch.zeros(d))
        self.register_buffer("whitener", torch.eye(d))
        self.cond_embed = nn.Embedding(c.n_conditions, c.hidden) if c.n_conditions else None
        self.rnn = nn.GRU(c.hidden, c.hidden, num_layers=c.layers, batch_first=True)
        if self.codebook:
            self.means = nn.Parameter(torch.randn(k, d) * 0.5)  # k-means centroids once fitted (fit_codebook)
            self.log_scales = nn.Parameter(torch.zeros(k, d))
            self.embed = nn.Embedding(k + 1, c.hidden)  # the previous frame's code; k = "no frame yet"
            self.out = nn.Linear(c.hidden, k)
        else:
            self.start = nn.Parameter(torch.zeros(d))  # the "previous frame" of the first frame
            self.inp = nn.Linear(d, c.hidden)
            self.out = nn.Linear(c.hidden, k + 2 * k * d)

    # --- whitening --------------------------------------------------------------------------------
    @torch.no_grad()
    def fit_whitening(self, z: torch.Tensor, eps: float = 1e-4) -> None:
        """Fit ``m`` and ``W`` (PCA whitening) from latent frames ``z`` ``(N, D)`` (float64 inside)."""
        if not self.config.whiten or self.codebook:
            return
        z = z.double()
        m = z.mean(0)
        cov = torch.cov((z - m).T).reshape(z.shape[1], z.shape[1])
        evals, evecs = torch.linalg.eigh(cov)
        w = evecs.T / torch.sqrt(evals.clamp_min(0) + eps)[:, None]
        self.shift.copy_(m.to(self.shift))
        self.whitener.copy_(w.to(self.whitener))

    @torch.no_grad()
    def fit_codebook(self, means: torch.Tensor, samples: torch.Tensor, seed: int = 0) -> None:
        """Codebook prior: centroids by k-means on posterior means ``(N, D)``, each code's scales from the
        spread of the posterior samples ``(N, D)`` (of the same frames) it holds."""
        if not self.codebook:
            return
        from sklearn.cluster import MiniBatchKMeans

        k = self.config.components
        if means.shape[0] < k:
            raise ValueError(f"{means.shape[0]} latent frames are too few for a codebook of {k}")
        km = MiniBatchKMeans(k, batch_size=4096, n_init=1, random_state=seed, max_iter=50).fit(means.numpy())
        c = torch.from_numpy(km.cluster_centers_).to(self.means)
        lab = torch.from_numpy(km.labels_).long()
        var = torch.zeros(k, samples.shape[1], dtype=torch.float64).index_add_(
            0, lab, (samples.double() - c.double()[lab]).square())
        n = torch.bincount(lab, minlength=k).clamp_min(1).double()[:, None]
        overall = (samples.double() - c.double()[lab]).square().mean(0)
        var = (var + overall) / (n + 1)  # one pseudo-frame of the overall spread: no code starts at zero scale
        self.means.copy_(c)
        self.log_scales.copy_(0.5 * torch.log(var).to(self.log_scales).clamp_min(self.config.min_log_scale))

    def _component_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        """Codebook: ``log N(z_t; m_k, s_k)`` for every frame and code: ``(B, T, K)`` from ``(B, T, D)`` frames."""
        ls = self.log_scales.clamp(min=self.config.min_log_scale, max=5.0)
        inv = torch.exp(-ls)  # (K, D)
        # sum_d ((z_d - m_kd) / s_kd)^2 = sum_d z^2/s^2 - 2 z m/s^2 + m^2/s^2, as matrix products
        q = (z.square() @ inv.square().T) - 2 * (z @ (self.means * inv.square()).T) + (self.means * inv).square().sum(1)
        return -0.5 * q - ls.sum(1) - 0.5 * z.shape[-1] * LOG_2PI

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Codebook: the code of each frame of ``(B, D, T)`` latents, its most likely component: ``(B, T)``."""
        with torch.no_grad():
            return self._component_log_probs(z.transpose(1, 2)).argmax(-1)

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
        """GRU inputs ``(B, T, H)`` from the previous frames (codebook: their codes ``(B, T)``)."""
        h = self.embed(u_prev) if self.codebook else self.inp(u_prev)
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
        if self.codebook:
            zt = z.transpose(1, 2)
            comp = self._component_log_probs(zt)  # (B, T, K)
            codes = comp.detach().argmax(-1)
            prev = torch.cat([torch.full_like(codes[:, :1], self.config.components), codes[:, :-1]], 1)
            h, _ = self.rnn(self._inputs(prev, cond))
            return torch.logsumexp(F.log_softmax(self.out(h), -1) + comp, -1)
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
               progress: bool = False, frame_noise: float | None = None,
               prefix: torch.Tensor | None = None) -> torch.Tensor:
        """``shape = (B, D, T)`` latents drawn one frame at a time.

        Each frame: a component ``k`` drawn with weights ``softmax(logits / temperature)``
        (T = 1: the prior's own weights; lower: more typical, less varied), then
        ``mean_k + frame_noise * scale_k * eps``. ``frame_noise`` (default 0: the
        component's mean, for a codebook prior a frame the decoder knows well; 1: an exact
        draw from the prior at T = 1). Most of each component's scale is the encoder's own
        posterior noise, which the decoder was trained to ignore, so drawing it adds noise
        to the sound (README, "Generation": DNSMOS 2.35 with the means, 1.55 with the noise).
        ``cond``: ``(B,)`` condition indices of a conditioned prior. A ``generator`` makes the draw
        reproducible. ``progress``: a bar over the frames (stderr). ``prefix``: ``(B, D, S)`` latent frames
        that come before: the ``T`` frames drawn continue them, from ``p(z_S.. | prefix)`` (repair's proposals).
        """
        from tqdm import tqdm

        fn = 0.0 if frame_noise is None else float(frame_noise)
        b, d, t = shape
        if d != self.config.latent_dim:
            raise ValueError(f"this prior models {self.config.latent_dim} latent channels, asked for {d}")
        dev = self.out.weight.device
        temperature = max(float(temperature), 1e-4)
        state = None
        out = torch.empty(b, t, d, device=dev)
        if self.codebook:
            prev = torch.full((b, 1), self.config.components, dtype=torch.long, device=dev)
            if prefix is not None and prefix.shape[-1] > 0:
                codes = self.codes(prefix)
                _, state = self.rnn(self._inputs(torch.cat([prev, codes[:, :-1]], 1), cond))
                prev = codes[:, -1:]
            scales = torch.exp(self.log_scales.clamp(min=self.config.min_log_scale, max=5.0))
            for i in tqdm(range(t), desc="sample frames", unit="frame", disable=not progress, leave=False):
                h, state = self.rnn(self._inputs(prev, cond), state)
                probs = torch.softmax(self.out(h[:, 0]) / temperature, -1)
                k = torch.multinomial(probs, 1, generator=generator)[:, 0]
                out[:, i] = self.means[k]
                if fn > 0:
                    out[:, i] += fn * scales[k] * torch.randn((b, d), generator=generator, device=dev)
                prev = k.unsqueeze(1)
            return out.transpose(1, 2).contiguous()
        u_prev = self.start.expand(b, 1, -1)
        if prefix is not None and prefix.shape[-1] > 0:
            up = self._to_u(prefix)
            _, state = self.rnn(self._inputs(torch.cat([u_prev, up[:, :-1]], 1), cond))
            u_prev = up[:, -1:]
        for i in range(t):
            h, state = self.rnn(self._inputs(u_prev, cond), state)
            logits, means, log_scales = self._params(h[:, 0])
            probs = torch.softmax(logits / temperature, -1)
            k = torch.multinomial(probs, 1, generator=generator)[:, 0]
            mean = means[torch.arange(b, device=dev), k]
            u = mean
            if fn > 0:
                scale = torch.exp(log_scales[torch.arange(b, device=dev), k]) * fn
                u = mean + scale * torch.randn(mean.shape, generator=generator, device=dev)
            out[:, i] = u
            u_prev = u.unsqueeze(1)
        return self._from_u(out)
