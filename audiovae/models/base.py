"""The VAE core every model extends: Gaussian posterior, reparameterisation, ELBO, IWAE.

A subclass provides ``encoder_params(x) -> (mu, logvar)`` and
``decoder_params(z, size) -> params`` (raw decoder output that its
:class:`~audiovae.models.likelihoods.Likelihood` turns into ``p(x | z)``).
Everything else - the bounds, sampling, reconstruction, masks for padded
sequences - lives here once.

Conventions: data ``x`` has its channel axis at dim 1 (frames ``(B, D)``,
sequences ``(B, n_mels, T)``, images ``(B, C, H, W)``); the latent ``z`` too
(``(B, d)`` or ``(B, d, T')``). All bounds are in nats per item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.distributions import Normal

from audiovae.errors import ConfigError
from audiovae.models.likelihoods import Likelihood

LOG_2PI = math.log(2 * math.pi)
CONDITIONS = ("none", "speaker", "label")  # what a model may be conditioned on (a key of the data's records)
COND_STATS_MOMENTUM = 0.01  # per-condition running latent statistics: weight of each training batch


@dataclass
class ELBOOutput:
    """One ELBO evaluation. Per-item tensors are ``(B,)``; nats."""

    elbo: torch.Tensor  # recon - kl
    recon: torch.Tensor  # single-sample estimate of E_q[log p(x|z)]
    kl: torch.Tensor  # KL(q(z|x) || p(z)), closed form
    loss: torch.Tensor  # scalar to minimise: mean over items of -(recon - beta * max(kl, free bits))
    kl_per_unit: torch.Tensor  # (latent_dim,) KL per latent channel, mean over items
    n_dims: torch.Tensor  # (B,) data dimensions per item (for per-dim / bits-per-dim figures)
    mu: torch.Tensor
    logvar: torch.Tensor


class Decoded:
    """``p(x | z)``: a likelihood with its parameters."""

    def __init__(self, likelihood: Likelihood, params: torch.Tensor):
        self.likelihood, self.params = likelihood, params

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.likelihood.log_prob(x, self.params)

    @property
    def mean(self) -> torch.Tensor:
        return self.likelihood.mean(self.params)

    def sample(self) -> torch.Tensor:
        return self.likelihood.sample(self.params)


class _ReverseGrad(torch.autograd.Function):
    """Identity forward; the gradient times ``-scale`` backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def reverse_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    return _ReverseGrad.apply(x, scale)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Element-wise ``KL(N(mu, exp(logvar)) || N(0, 1))``."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


class BaseVAE(nn.Module):
    """Base class of every VAE in audiovae (see module docstring)."""

    name: str = "vae"

    def __init__(self, config, likelihood: Likelihood):
        super().__init__()
        self.config = config
        self.likelihood = likelihood

    # --- what a subclass provides ---------------------------------------------------------
    def encoder_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def decoder_params(self, z: torch.Tensor, size: int | None = None,
                       cond: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def latent_size(self, size: int | torch.Tensor) -> int | torch.Tensor:
        """Latent length for an input of length ``size``, an int or an integer tensor (elementwise, on its
        device, with no host sync). Sequence models override it."""
        return size

    def prior_shape(self, n: int, size: int | None = None) -> tuple[int, ...]:  # pragma: no cover
        raise NotImplementedError

    @property
    def latent_dim(self) -> int:
        return int(self.config.latent_dim)

    # --- conditioning (speaker or label) ------------------------------------------------------
    @property
    def condition(self) -> str:
        """What the model is conditioned on: ``"none"``, ``"speaker"`` or ``"label"``."""
        return str(getattr(self.config, "condition", "none") or "none")

    @property
    def condition_names(self) -> list[str]:
        """The values of :attr:`condition` the model knows; ``cond`` indexes this list."""
        return list(getattr(self.config, "condition_names", None) or []) if self.condition != "none" else []

    @property
    def n_conditions(self) -> int:
        """How many speakers (or labels) the decoder knows; 0 for an unconditioned model."""
        return len(self.condition_names)

    def _init_condition_stats(self) -> None:
        """Running per-condition statistics of the posterior means (per latent channel, over latent frames),
        kept while training: :meth:`condition_latent_stats` gives them to voice conversion."""
        n, d = self.n_conditions, self.latent_dim
        self.register_buffer("cond_latent_mean", torch.zeros(n, d))
        self.register_buffer("cond_latent_sq", torch.ones(n, d))
        self.register_buffer("cond_latent_seen", torch.zeros(n))

    def condition_latent_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)``, each ``(n_conditions, latent_dim)``: the running mean and standard deviation of the
        posterior means of each speaker's (label's) latent frames over the last training batches."""
        mean = self.cond_latent_mean
        std = (self.cond_latent_sq - mean.square()).clamp_min(1e-8).sqrt()
        return mean, std

    def check_cond(self, cond: torch.Tensor | None, batch: int, device: torch.device | None = None):
        """``cond`` as a LongTensor ``(batch,)`` of indices into :attr:`condition_names`, or ``None`` for an
        unconditioned model (which ignores any ``cond``). A conditioned model without one: a ConfigError."""
        if self.n_conditions == 0:
            return None
        if cond is None:
            raise ConfigError(f"this model is conditioned on {self.condition} ({', '.join(self.condition_names)}): "
                              f"decoding needs one, e.g. cond=torch.tensor([0]) for {self.condition_names[0]!r}")
        cond = torch.as_tensor(cond, device=device)
        if cond.dim() == 0:
            cond = cond.expand(batch)
        if cond.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool) \
                or tuple(cond.shape) != (batch,):
            raise ConfigError(f"cond must be an integer tensor ({batch},) of {self.condition} indices, got "
                              f"{cond.dtype} {tuple(cond.shape)}")
        if batch and (int(cond.min()) < 0 or int(cond.max()) >= self.n_conditions):
            raise ConfigError(f"cond holds {self.condition} indices outside 0..{self.n_conditions - 1}")
        return cond.long()

    def _adversary_loss(self, z: torch.Tensor, zmask: torch.Tensor | None, cond: torch.Tensor) -> torch.Tensor:
        """Speaker (label) classification of each latent frame, through a gradient reversal: the classifier
        learns to tell the speaker from ``z``, the encoder (its gradient reversed, times ``config.adversary``) to
        leave the speaker out of ``z``, so the decoder must take it from ``cond``. Nats per item (summed over
        valid latent frames), mean over items."""
        logits = self.adversary_logits(reverse_grad(z, float(self.config.adversary)))  # (B, n, T') or (B, n)
        if logits.dim() == 2:
            logits = logits.unsqueeze(-1)
        target = cond[:, None].expand(-1, logits.shape[-1])
        ce = torch.nn.functional.cross_entropy(logits.float(), target, reduction="none")  # (B, T')
        if zmask is not None:
            ce = ce * zmask[:, 0]
        return ce.sum(-1).mean()

    def adversary_logits(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def _update_condition_stats(self, mu: torch.Tensor, zmask: torch.Tensor | None, cond: torch.Tensor,
                                reduce: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        """Fold one training batch into the running per-condition latent statistics (all processes' batches
        together under DDP, through ``reduce``, so the buffers match a single process's)."""
        m = mu.detach().float()
        if m.dim() == 2:
            m = m.unsqueeze(-1)
        w = torch.ones_like(m[:, :1]) if zmask is None else zmask.float()  # (B, 1, T')
        n, d = self.n_conditions, m.shape[1]
        onehot = torch.nn.functional.one_hot(cond, n).float()  # (B, n)
        s1 = onehot.T @ (m * w).sum(-1)  # (n, d)
        s2 = onehot.T @ (m.square() * w).sum(-1)
        cnt = onehot.T @ w.sum(dim=(1, 2))  # (n,)
        if reduce is not None:
            both = reduce(torch.cat([s1.flatten(), s2.flatten(), cnt]))
            s1, s2, cnt = both[: n * d].view(n, d), both[n * d: 2 * n * d].view(n, d), both[2 * n * d:]
        have = cnt > 0
        mean_b = s1 / cnt.clamp_min(1)[:, None]
        sq_b = s2 / cnt.clamp_min(1)[:, None]
        first = (self.cond_latent_seen == 0)[:, None]
        a = torch.where(first, torch.ones_like(mean_b), torch.full_like(mean_b, COND_STATS_MOMENTUM))
        upd = have[:, None]
        self.cond_latent_mean.copy_(torch.where(upd, (1 - a) * self.cond_latent_mean + a * mean_b, self.cond_latent_mean))
        self.cond_latent_sq.copy_(torch.where(upd, (1 - a) * self.cond_latent_sq + a * sq_b, self.cond_latent_sq))
        self.cond_latent_seen.add_(have.float())

    # --- the core ---------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Normal:
        """The posterior ``q(z | x)`` as a diagonal Normal."""
        mu, logvar = self.encoder_params(x)
        return Normal(mu, torch.exp(0.5 * logvar))

    def decode(self, z: torch.Tensor, size: int | None = None, cond: torch.Tensor | None = None) -> Decoded:
        """``p(x | z)`` (``p(x | z, c)`` for a conditioned model: ``cond`` a LongTensor ``(B,)`` of indices into
        :attr:`condition_names`); ``size`` is the output length for sequence models."""
        cond = self.check_cond(cond, z.shape[0], z.device)
        return Decoded(self.likelihood, self.decoder_params(z, size, cond) if cond is not None
                       else self.decoder_params(z, size))

    def _size(self, x: torch.Tensor) -> int | None:
        return x.shape[-1] if x.dim() == 3 and self.is_sequence else None

    is_sequence: bool = False

    def masks(self, x: torch.Tensor, lengths: torch.Tensor | None, z_like: torch.Tensor):
        """Masks for padded sequences: data ``(B, 1, T)`` and latent ``(B, 1, T')``, or ``None``."""
        if lengths is None or not self.is_sequence:
            return None, None
        lengths = lengths.to(x.device)
        t = torch.arange(x.shape[-1], device=x.device)
        dmask = (t[None, :] < lengths[:, None]).unsqueeze(1).to(x.dtype)
        zl = self.latent_size(lengths)  # on the device: no host sync per item
        tz = torch.arange(z_like.shape[-1], device=x.device)
        zmask = (tz[None, :] < zl[:, None]).unsqueeze(1).to(x.dtype)
        return dmask, zmask

    @staticmethod
    def _sum_items(v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is not None:
            v = v * mask
        return v.flatten(1).sum(1)

    def elbo(
        self,
        x: torch.Tensor,
        beta: float = 1.0,
        free_bits: float = 0.0,
        lengths: torch.Tensor | None = None,
        eps: torch.Tensor | None = None,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cond: torch.Tensor | None = None,
    ) -> ELBOOutput:
        """Single-sample ELBO with the reparameterisation trick.

        ``beta`` weighs the KL in ``loss`` (not in ``elbo``, which is always the
        true bound). ``free_bits`` (nats per latent variable, Kingma et al. 2016)
        stops the loss from pushing a latent channel's KL, averaged over the
        batch's items (and latent frames, for sequences), below it. ``cond``: the
        items' speaker (label) indices ``(B,)``, for a conditioned model. ``eps``
        fixes the standard-normal noise: a tensor shaped like ``mu`` or a
        function ``(shape, device)`` returning one. ``reduce`` sums a tensor over the
        processes of a distributed run, so the free-bits clamp sees the global
        batch (2 processes x B items == 1 process x 2B items).
        """
        mu, logvar = self.encoder_params(x)
        if eps is None:
            eps = torch.randn_like(mu)
        elif callable(eps):
            eps = eps(mu.shape, mu.device).to(dtype=mu.dtype)  # a callable (shape, device) -> noise
        z = mu + torch.exp(0.5 * logvar) * eps
        cond = self.check_cond(cond, x.shape[0], x.device)
        dec = self.decode(z, self._size(x), cond)
        dmask, zmask = self.masks(x, lengths, mu)
        if cond is not None and self.training:
            self._update_condition_stats(mu, zmask, cond, reduce)
        recon = self._sum_items(dec.log_prob(x), dmask)
        kl_el = gaussian_kl(mu, logvar)
        if zmask is not None:
            kl_el = kl_el * zmask
        kl = kl_el.flatten(1).sum(1)
        if free_bits > 0:
            kl_term = self._free_bits_kl(kl_el, zmask, free_bits, reduce)
        else:
            kl_term = kl.mean()
        loss = -(recon.mean() - beta * kl_term)
        if cond is not None and self.training and float(getattr(self.config, "adversary", 0.0) or 0.0) > 0:
            loss = loss + self._adversary_loss(z, zmask, cond)
        kl_unit = kl_el.mean(0)
        kl_unit = kl_unit.flatten(1).sum(1) if kl_unit.dim() > 1 else kl_unit
        n_dims = self._sum_items(torch.ones_like(x[:, :1]).expand_as(x), dmask)
        return ELBOOutput(recon - kl, recon, kl, loss, kl_unit, n_dims, mu, logvar)

    @staticmethod
    def _free_bits_kl(kl_el: torch.Tensor, zmask: torch.Tensor | None, free_bits: float, reduce) -> torch.Tensor:
        """``sum_u max(S_u, free_bits * N) / B``: ``S_u`` the KL of channel ``u`` summed over the batch's
        items and valid latent frames, ``N`` the number of those frames, ``B`` the items.

        Which channels are clamped is decided on the global batch (``reduce``);
        the gradient of the others is that of ``S_u / B``, so averaging the
        gradients over processes gives exactly the single-process gradient.
        """
        b = kl_el.shape[0]
        per = kl_el if kl_el.dim() == 3 else kl_el.unsqueeze(-1)  # (B, d, T')
        valid = torch.ones_like(per[:, :1]) if zmask is None else zmask.expand_as(per[:, :1])
        s_u = per.sum(dim=(0, 2))  # (d,)
        n = valid.sum()
        s_glob, n_glob = s_u.detach(), n.detach()
        if reduce is not None:
            both = reduce(torch.cat([s_glob, n_glob.reshape(1)]))
            s_glob, n_glob = both[:-1], both[-1]
        above = s_glob > free_bits * n_glob
        return torch.where(above, s_u, free_bits * n).sum() / b

    def forward(self, x: torch.Tensor, beta: float = 1.0, free_bits: float = 0.0,
                lengths: torch.Tensor | None = None, eps=None, reduce=None, cond=None) -> ELBOOutput:
        """Same as :meth:`elbo` (so DistributedDataParallel sees a forward call)."""
        return self.elbo(x, beta, free_bits, lengths, eps, reduce, cond)

    @torch.no_grad()
    def log_weights(
        self, x: torch.Tensor, k: int = 64, lengths: torch.Tensor | None = None, chunk: int = 64, prior=None,
        cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` posterior samples per item: ``(log p(x|z_i), log w_i)``, each ``(k, B)``, with
        ``log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x)``.

        ``prior``: ``p(z)``, an object with ``log_density(z, mask, cond) -> (B,)`` (a learned prior,
        :mod:`audiovae.models.prior`); None: ``N(0, I)`` in closed form. ``cond``: ``(B,)`` condition
        indices for a conditioned prior."""
        mu, logvar = self.encoder_params(x)
        std = torch.exp(0.5 * logvar)
        dmask, zmask = self.masks(x, lengths, mu)
        size = self._size(x)
        cond = self.check_cond(cond, x.shape[0], x.device)
        pxs, lws = [], []
        done = 0
        while done < k:
            kc = min(chunk, k - done)
            eps = torch.randn((kc, *mu.shape), dtype=mu.dtype, device=mu.device)
            z = mu + std * eps  # (kc, B, ...)
            dec = self.decode(z.reshape(kc * mu.shape[0], *mu.shape[1:]), size,
                              None if cond is None else cond.repeat(kc))
            xr = x.unsqueeze(0).expand(kc, *x.shape).reshape(kc * x.shape[0], *x.shape[1:])
            lp = dec.log_prob(xr).reshape(kc, *x.shape)
            if dmask is not None:
                lp = lp * dmask
            log_px = lp.flatten(2).sum(2)
            if prior is None:
                lw = -0.5 * z.square() + 0.5 * eps.square() + 0.5 * logvar  # log p(z) - log q(z|x)
                if zmask is not None:
                    lw = lw * zmask
                lw = lw.flatten(2).sum(2)
            else:
                neg_log_q = 0.5 * eps.square() + 0.5 * logvar + 0.5 * LOG_2PI  # -log q(z|x), element-wise
                if zmask is not None:
                    neg_log_q = neg_log_q * zmask
                zf = z.reshape(kc * mu.shape[0], *mu.shape[1:])
                zm = None if zmask is None else zmask.repeat(kc, *([1] * (zmask.dim() - 1)))
                cf = None if cond is None else cond.repeat(kc)
                log_p = prior.log_density(zf, zm, cf).reshape(kc, mu.shape[0])
                lw = log_p + neg_log_q.flatten(2).sum(2)
            pxs.append(log_px)
            lws.append(log_px + lw)
            done += kc
        return torch.cat(pxs, 0), torch.cat(lws, 0)

    @torch.no_grad()
    def iwae_bound(
        self, x: torch.Tensor, k: int = 64, lengths: torch.Tensor | None = None, chunk: int = 64,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Importance-weighted bound (Burda et al. 2015) ``(B,)`` in nats:
        ``log (1/k) sum_i p(x, z_i) / q(z_i | x)``, ``z_i ~ q(z | x)``. Equals the
        ELBO's expectation at ``k = 1`` and rises towards ``log p(x)`` with ``k``."""
        _, logw = self.log_weights(x, k, lengths, chunk, cond)
        return torch.logsumexp(logw, 0) - math.log(k)

    @torch.no_grad()
    def sample(self, n: int, size: int | None = None, temperature: float = 1.0, mean: bool = True,
               cond: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` samples: ``z ~ N(0, temperature^2 I)``, then the mean (or a sample) of ``p(x | z)``
        (``p(x | z, c)`` with ``cond`` ``(n,)``, for a conditioned model)."""
        device = next(self.parameters()).device
        z = temperature * torch.randn(self.prior_shape(n, size), device=device)
        dec = self.decode(z, size, cond)
        return dec.mean if mean else dec.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of ``p(x | z = E[q(z | x)])`` (and ``c = cond``): the posterior-mean reconstruction."""
        mu, _ = self.encoder_params(x)
        return self.decode(mu, self._size(x), cond).mean

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
