"""Missing-data imputation with a trained VAE: pseudo-Gibbs and Metropolis-within-Gibbs.

Both are Markov chains over the missing part ``x_mis`` given the observed part
``x_obs``, which is written back unchanged at every iteration:

- **pseudo-Gibbs** (Rezende et al. 2014): ``z ~ q(z | x_obs, x_mis)``, then
  ``x_mis ~ p(x_mis | z)``. Simple, but ``q`` is only an approximation of the
  true posterior, so the chain does not target ``p(x_mis | x_obs)``.
- **Metropolis-within-Gibbs** (Mattei & Frellsen 2018, "Leveraging the exact
  likelihood of deep latent variable models"): ``q(z | x_obs, x_mis)`` becomes
  an independent Metropolis-Hastings *proposal* for ``z``; ``z'`` is accepted
  with probability ``min(1, w(z') / w(z))``, ``w(z) = p(x_obs, x_mis | z) p(z) /
  q(z | x_obs, x_mis)``, so the chain's stationary distribution is the model's
  exact conditional ``p(x_mis, z | x_obs)``.

For a sequence model (the conv VAE) the latent is a sequence ``(B, d, T')``.
One joint proposal for all of it is almost never accepted (the log-weights'
spread grows with length), so the latent frames are updated in blocks of
``block`` frames, one Metropolis-Hastings step per block with the other blocks
held (a valid Metropolis-within-Gibbs scan): the ratio is the *whole*
sequence's ``p(x | z)`` with the proposed block swapped in, times the block's
prior over its posterior density. Blocks whose decoder output cannot reach a
missing frame (``reach`` frames away) are not updated: they keep the posterior
mean of the first iteration (they condition, they do not need imputing). When the
decoder is local (convolutions and per-frame norms: :func:`decoder_radius`), a
block's proposal is decoded on a window of the latent around it and the ratio is
taken over the output frames it reaches: the same chain, at a cost per iteration
that grows with the sequence's length rather than with its square.

The estimate returned is the average over the kept iterations of the decoder
mean ``E[x_mis | z_t]`` (a Rao-Blackwellised estimate of the conditional
mean, which minimises the expected squared error); observed entries are
``x_obs`` bit for bit. With one latent block (images, frames), Metropolis-
within-Gibbs also averages over the accept step: each iteration adds
``a E[x | z'] + (1 - a) E[x | z]`` with ``a`` the acceptance probability of the
proposal ``z'`` (same expectation as the accepted state's, less variance when
few proposals are accepted).

The chain's own state ``x_mis`` is a *sample* of ``p(x_mis | z)`` by default
(``state="sample"``: binary pixels for Bernoulli images, what the encoder was
trained on), or the decoder mean (``state="mean"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

METHODS = ("mwg", "pseudo_gibbs", "oneshot")
DEFAULT_METHOD = "mwg"
# the better chain as measured by benchmarks/bench_repair.py (docs/repair.md): on speech gaps
# Metropolis-within-Gibbs, on Fashion-MNIST centre squares pseudo-Gibbs (lower BCE and MSE at 60 iterations)
DEFAULTS = {"images": "pseudo_gibbs", "audio": "mwg"}


@dataclass
class Imputation:
    """Result of :func:`impute`: ``x`` (same shape as the input; observed entries exactly the input's),
    ``acceptance`` (mean Metropolis-Hastings acceptance rate; ``None`` for the other methods)."""

    x: torch.Tensor
    acceptance: float | None
    iterations: int
    method: str


def _std(logvar: torch.Tensor) -> torch.Tensor:
    return torch.exp(0.5 * logvar)


def _log_normal(z: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(z; mu, std^2) without the constant (it cancels in every ratio)."""
    return -0.5 * ((z - mu) / std).square() - torch.log(std)


def _log_prior(z: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(z; 0, 1) without the constant."""
    return -0.5 * z.square()


def _loglik(model, z: torch.Tensor, x: torch.Tensor, size: int | None) -> tuple[torch.Tensor, object]:
    dec = model.decode(z, size)
    return dec.log_prob(x).flatten(1).sum(1), dec


def latent_blocks(model, observed: torch.Tensor, block: int, reach: int) -> list[tuple[slice, torch.Tensor]]:
    """Blocks of latent frames for a sequence model: ``[(slice, active (B,))]``.

    A block is active for an item when a missing frame lies within ``reach``
    data frames of the frames the block covers (``downsample`` data frames per
    latent frame)."""
    ds = int(getattr(model.config, "downsample", 1))
    t = observed.shape[-1]
    missing_t = (~observed).flatten(1, -2).any(1)  # (B, T): a frame with any missing entry
    tz = model.latent_size(t)
    out = []
    for s in range(0, tz, block):
        e = min(tz, s + block)
        lo, hi = max(0, s * ds - reach), min(t, e * ds + reach)
        out.append((slice(s, e), missing_t[:, lo:hi].any(1)))
    return out


def decoder_radius(model) -> int | None:
    """Latent frames each side that one output frame of a sequence model's decoder depends on, or ``None``.

    Read from the decoder's layers: 1-D convolutions (their reach at their own frame rate),
    transposed convolutions (which raise the rate), per-frame normalisations and activations,
    residual blocks. Anything else (a norm over the whole sequence, an unknown layer) gives
    ``None``: the decoder is then not known to be local, and :func:`impute` decodes whole sequences.
    """
    import math

    from torch import nn

    decoder = getattr(model, "decoder", None)
    if not getattr(model, "is_sequence", False) or decoder is None:
        return None
    local = (nn.SiLU, nn.ReLU, nn.GELU, nn.Tanh, nn.Identity, nn.LeakyReLU, nn.ELU)

    def walk(m, rate: float) -> tuple[float, float] | None:
        """(radius in latent frames, rate after) of module ``m`` entered at ``rate`` frames per latent frame."""
        if isinstance(m, nn.Sequential):
            total = 0.0
            for c in m:
                r = walk(c, rate)
                if r is None:
                    return None
                total, rate = total + r[0], r[1]
            return total, rate
        if type(m).__name__ == "ResBlock" and isinstance(getattr(m, "net", None), nn.Sequential):
            r = walk(m.net, rate)  # x + net(x)
            return None if r is None or r[1] != rate else r
        if type(m).__name__ == "ChannelNorm" or isinstance(m, local):
            return 0.0, rate  # per frame
        if isinstance(m, nn.Conv1d) and m.stride[0] == 1 and isinstance(m.padding, tuple):
            k, d, p = m.kernel_size[0], m.dilation[0], m.padding[0]
            return max(p, d * (k - 1) - p) / rate, rate
        if isinstance(m, nn.ConvTranspose1d) and m.dilation[0] == 1:
            k, s = m.kernel_size[0], m.stride[0]
            return (k + s) / (s * rate) + 1.0 / rate, rate * s
        return None

    r = walk(decoder, 1.0)
    return None if r is None else int(math.ceil(r[0])) + 1


def _counted(n: int, progress):
    """``range(n)``, calling ``progress(1)`` as each iteration ends (also one left by ``continue``)."""
    for i in range(n):
        yield i
        if progress is not None:
            progress(1)


@torch.no_grad()
def impute(
    model,
    x: torch.Tensor,
    observed: torch.Tensor,
    method: str = DEFAULT_METHOD,
    iters: int = 100,
    burn_in: int | None = None,
    state: str = "sample",
    block: int = 2,
    reach: int = 16,
    windowed: bool = True,
    progress=None,
    prior=None,
    cond: torch.Tensor | None = None,
    prior_proposals: bool = True,
) -> Imputation:
    """Fill the missing entries of ``x`` with a trained VAE.

    ``x``: a batch in the model's input space (images ``(B, C, H, W)``, frames
    ``(B, D)``, sequences ``(B, n_mels, T)``) whose missing entries hold the
    chain's starting values (e.g. a mean fill). ``observed``: bool, same shape,
    True where ``x`` is known. ``method``: ``mwg`` (Metropolis-within-Gibbs,
    the default), ``pseudo_gibbs`` or ``oneshot`` (one decode of the posterior
    mean of the starting point: the baseline). ``iters``: chain iterations;
    ``burn_in``: iterations left out of the average (default ``iters // 4``).
    ``state``: ``sample`` or ``mean`` (what the chain feeds back; see the module
    docstring). ``block``/``reach``: latent blocking for sequence models.
    ``windowed``: with a sequence model whose decoder is local (:func:`decoder_radius`),
    each block's proposal is decoded on a window of the latent around the block and its
    Metropolis-Hastings ratio taken over the output frames the block reaches, so an
    iteration costs what the gaps need rather than (blocks x the whole sequence); the
    chain is the same (same random draws; ratios equal up to float rounding).
    ``progress``: called with 1 after each iteration (e.g. a tqdm bar's ``update``).
    ``prior``: a learned prior over latent sequences (:class:`~audiovae.models.prior.LatentPrior`; ``cond``
    its condition indices) for Metropolis-within-Gibbs on a sequence model: the chain then targets the
    model's conditional under that prior, and a block's ratio carries the change of the *whole* sequence's
    prior density (the block's own frames and, through the autoregression, every frame after it), so the
    proposals that fit their left and right context are the ones kept; with ``prior_proposals`` every other
    scan also draws each block's proposal from the prior given the frames before it (the gap is then filled
    with what the prior expects after its left context, kept when the right context agrees). None: ``N(0, I)``.
    Uses the global torch RNG (seed it for reproducible results). Runs on ``x``'s device.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose {', '.join(METHODS)}")
    if state not in ("sample", "mean"):
        raise ValueError(f"state must be 'sample' or 'mean', got {state!r}")
    if observed.shape != x.shape:
        raise ValueError(f"observed mask {tuple(observed.shape)} does not match the data {tuple(x.shape)}")
    observed = observed.to(torch.bool)
    x_obs = x
    size = model._size(x)
    mu, logvar = model.encoder_params(x)
    if method == "oneshot" or iters < 1:
        mean = model.decode(mu, size).mean
        return Imputation(torch.where(observed, x_obs, mean), None, 1, "oneshot")
    burn_in = iters // 4 if burn_in is None else min(burn_in, iters - 1)
    seq = mu.dim() == 3
    blocks = latent_blocks(model, observed, block, reach) if (seq and method == "mwg") else None
    learned = prior is not None and getattr(prior, "learned", False) and blocks is not None
    z = mu + _std(logvar) * torch.randn_like(mu)
    if blocks is not None:  # inactive blocks are held at the posterior mean
        for sl, active in blocks:
            keep = ~active.view(-1, 1, 1)
            z[..., sl] = torch.where(keep, mu[..., sl], z[..., sl])
    ll, dec = _loglik(model, z, x, size)
    x_cur = x
    total = torch.zeros_like(x)
    kept = 0
    # acceptance counts stay on the device (no host sync per block and iteration); which blocks hold a
    # missing value never changes, so it is read once
    accepted = torch.zeros((), dtype=torch.float64, device=x.device)
    proposed = torch.zeros_like(accepted)
    if blocks:
        holds_gap = torch.stack([active.any() for _, active in blocks]).tolist()  # one read for all blocks
        blocks = [b for b, keep in zip(blocks, holds_gap) if keep]
    radius = decoder_radius(model) if (blocks and windowed) else None
    ds, tz = int(getattr(model.config, "downsample", 1)), z.shape[-1]
    lp_cur = prior.frame_log_probs(z, cond).detach() if learned else None  # (B, T') log p(z_t | z_<t)

    def propose(zb_, mb, sb, sl, from_prior: bool):
        """A proposal for the block and the rest of its log Metropolis-Hastings ratio (all but the likelihood),
        with the proposal's per-frame prior log-densities (to keep when accepted; None under N(0, I)).

        From the encoder: ``z'_b ~ q(z_b | x)``; the ratio carries ``p(z') / p(z)`` (N(0, I) per element, or
        the learned prior's whole sequence) times ``q(z_b) / q(z'_b)``. From the learned prior:
        ``z'_b ~ p(z_b | z_<b)``, whose own density cancels, leaving the frames after the block:
        ``p(z_>b | z'_b, z_<b) / p(z_>b | z_b, z_<b)``."""
        s, e = sl.start, sl.stop
        if from_prior:
            zpb = prior.sample(tuple(zb_.shape), 1.0, None, cond=cond, frame_noise=1.0, prefix=z[..., :s])
        else:
            zpb = mb + sb * torch.randn_like(mb)
        if not learned:
            r = (_log_prior(zpb) - _log_prior(zb_) + _log_normal(zb_, mb, sb) - _log_normal(zpb, mb, sb))
            return zpb, r.flatten(1).sum(1), None
        zp_full = z.clone()
        zp_full[..., sl] = zpb
        lp = prior.frame_log_probs(zp_full, cond).detach()
        if from_prior:
            return zpb, (lp[:, e:] - lp_cur[:, e:]).sum(1), lp
        q = (_log_normal(zb_, mb, sb) - _log_normal(zpb, mb, sb)).flatten(1).sum(1)
        return zpb, (lp - lp_cur).sum(1) + q, lp

    for it in _counted(iters, progress):
        # with a learned prior, every other scan proposes each block from the prior given the frames before it
        # (a second valid Metropolis-Hastings kernel: the chain still targets the same conditional)
        from_prior = learned and prior_proposals and it % 2 == 1
        if it > 0:
            mu, logvar = model.encoder_params(x_cur)
        std = _std(logvar)
        if method == "pseudo_gibbs":
            z = mu + std * torch.randn_like(mu)
            _, dec = _loglik(model, z, x_cur, size)
        elif blocks is None:
            ll = dec.log_prob(x_cur).flatten(1).sum(1)  # x_mis changed since the last decode
            zp = mu + std * torch.randn_like(mu)
            llp, decp = _loglik(model, zp, x_cur, size)
            log_r = (llp - ll + (_log_prior(zp) - _log_prior(z)
                                 + _log_normal(z, mu, std) - _log_normal(zp, mu, std)).flatten(1).sum(1))
            acc = torch.log(torch.rand_like(log_r)) < log_r
            if it >= burn_in:
                # Rao-Blackwellised over the accept step: E[mean | z, z'] = a mean(z') + (1 - a) mean(z)
                a = torch.exp(log_r.clamp(max=0.0)).view(-1, *[1] * (x.dim() - 1))
                total += a * decp.mean + (1 - a) * dec.mean
                kept += 1
            z = torch.where(acc.view(-1, *[1] * (z.dim() - 1)), zp, z)
            params = torch.where(acc.view(-1, *[1] * (decp.params.dim() - 1)), decp.params, dec.params)
            dec = type(dec)(dec.likelihood, params)
            accepted += acc.sum()
            proposed += acc.numel()
            x_cur = torch.where(observed, x_obs, dec.sample() if state == "sample" else dec.mean)
            continue
        elif radius is not None:
            params = dec.params.clone()
            lik = dec.likelihood
            for sl, active in blocks:
                s, e = sl.start, sl.stop
                # the output frames the block reaches, and the latent window that computes them exactly
                oa, ob = max(0, (s - radius) * ds), min(size, (e + radius) * ds)
                za, zb = max(0, s - 2 * radius), min(tz, e + 2 * radius)
                zb_, mb, sb = z[..., sl], mu[..., sl], std[..., sl]
                zpb, rest, lp_new = propose(zb_, mb, sb, sl, from_prior)
                zw = z[..., za:zb].clone()
                zw[..., s - za:e - za] = zpb
                pw = model.decode(zw).params[..., oa - za * ds:ob - za * ds]
                xw = x_cur[..., oa:ob]
                llp_w = lik.log_prob(xw, pw).flatten(1).sum(1)
                ll_w = lik.log_prob(xw, params[..., oa:ob]).flatten(1).sum(1)
                log_r = llp_w - ll_w + rest
                acc = (torch.log(torch.rand_like(log_r)) < log_r) & active
                z[..., sl] = torch.where(acc.view(-1, 1, 1), zpb, zb_)
                if lp_new is not None:
                    lp_cur = torch.where(acc.view(-1, 1), lp_new, lp_cur)
                params[..., oa:ob] = torch.where(acc.view(-1, 1, 1), pw, params[..., oa:ob])
                accepted += acc.sum()
                proposed += active.sum()
            dec = type(dec)(lik, params)
        else:
            ll = dec.log_prob(x_cur).flatten(1).sum(1)
            for sl, active in blocks:
                zb, mb, sb = z[..., sl], mu[..., sl], std[..., sl]
                zpb, rest, lp_new = propose(zb, mb, sb, sl, from_prior)
                zp = z.clone()
                zp[..., sl] = zpb
                llp, decp = _loglik(model, zp, x_cur, size)
                log_r = llp - ll + rest
                acc = (torch.log(torch.rand_like(log_r)) < log_r) & active
                z = torch.where(acc.view(-1, 1, 1), zp, z)
                if lp_new is not None:
                    lp_cur = torch.where(acc.view(-1, 1), lp_new, lp_cur)
                ll = torch.where(acc, llp, ll)
                dec = type(dec)(dec.likelihood, torch.where(acc.view(-1, 1, 1), decp.params, dec.params))
                accepted += acc.sum()
                proposed += active.sum()
        new = dec.sample() if state == "sample" else dec.mean
        x_cur = torch.where(observed, x_obs, new)
        if it >= burn_in:
            total += dec.mean
            kept += 1
    est = torch.where(observed, x_obs, total / kept)
    acceptance = float(accepted / proposed.clamp_min(1)) if method == "mwg" else None
    return Imputation(est, acceptance, iters, method)

