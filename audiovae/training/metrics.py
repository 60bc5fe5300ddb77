"""Validation metrics: the ELBO per item and per dimension of log-mel features, KL, active units.

The trainer validates with :func:`validate` at every ``val_every`` steps; ``tasks/evaluate.py`` uses
the same helpers (:func:`log_jacobian`, :func:`flatten_latents`, :func:`active_units`) on whole
utterances, so the two report the same quantities.
"""

from __future__ import annotations

import torch

from audiovae.audio.normalize import Normalizer
from audiovae.training.runtime import noise


def log_jacobian(normalizer: Normalizer | None, n_dims: torch.Tensor | float) -> torch.Tensor | float:
    """``log |d x_norm / d x|`` of ``n_dims`` feature values, to turn densities of normalised
    features into densities of log-mel features: ``log p(logmel) = log p(x_norm) - sum log sigma``.

    Every frame holds all ``n_mels`` bins, so the sum over an item's dimensions is
    ``n_dims * mean(log sigma)``. Zero when there is no normaliser (images).
    """
    if normalizer is None:
        return 0.0
    return -n_dims * float(normalizer.std.double().log().mean())


@torch.no_grad()
def validate(model, loader, device, seed: int, max_batches: int, normalizer: Normalizer | None = None) -> dict:
    """Mean ELBO per item and per dimension, recon, KL and active units over the validation batches.

    Feature models report densities of log-mel features (the normaliser's Jacobian added).
    """
    model.eval()
    tot = {"elbo": 0.0, "recon": 0.0, "kl": 0.0, "dims": 0.0, "n": 0}
    mus = []
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        batch = batch.to(device)
        out = model.elbo(batch.x, lengths=batch.lengths, eps=noise(seed + 99991, i, 0, 1), cond=batch.cond)
        jac = float(log_jacobian(normalizer, out.n_dims.double().sum()))
        tot["elbo"] += float(out.elbo.double().sum()) + jac
        tot["recon"] += float(out.recon.double().sum()) + jac
        tot["kl"] += float(out.kl.sum())
        tot["dims"] += float(out.n_dims.sum())
        tot["n"] += out.elbo.shape[0]
        mus.append(flatten_latents(out.mu).float().cpu())
    model.train()
    n = max(1, tot["n"])
    return {
        "val_elbo": tot["elbo"] / n,
        "val_elbo_per_dim": tot["elbo"] / max(1.0, tot["dims"]),
        "val_recon": tot["recon"] / n,
        "val_kl": tot["kl"] / n,
        "active_units": active_units(torch.cat(mus)) if mus else 0,
    }


def flatten_latents(mu: torch.Tensor) -> torch.Tensor:
    """Posterior means ``(B, d)`` or ``(B, d, T')`` -> rows ``(N, d)`` (one per item or latent frame)."""
    return mu if mu.dim() == 2 else mu.transpose(1, 2).reshape(-1, mu.shape[1])


def active_units(mu: torch.Tensor, threshold: float = 1e-2) -> int:
    """Latent units whose posterior mean varies across data: ``Var_x(E_q[z_u]) > threshold`` (Burda et al.)."""
    if mu.shape[0] < 2:
        return 0
    return int((mu.var(dim=0) > threshold).sum())

