"""The VAE core: closed-form KL vs Monte Carlo, IWAE vs ELBO, gradients, likelihoods, shapes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from audiovae.errors import ConfigError
from audiovae.models import available, build_model, gaussian_kl
from audiovae.models.base import BaseVAE
from audiovae.models.likelihoods import (BernoulliLikelihood, DiscretizedLogisticLikelihood, GaussianLikelihood,
                                         make_likelihood)


def test_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6) * 0.7
    closed = gaussian_kl(mu, logvar).sum(1)
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = q.sample((200_000,))
    log_ratio = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)  # (S, 4)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(z.shape[0])
    assert torch.all((mc - closed).abs() < 4 * se + 1e-3), (mc, closed, se)
    # and against torch's own closed form
    torch.testing.assert_close(closed, torch.distributions.kl_divergence(q, Normal(0.0, 1.0)).sum(1))


@pytest.fixture(scope="module")
def dense_and_data():
    torch.manual_seed(1)
    model = build_model("dense", {"n_mels": 16, "hidden": [32], "latent_dim": 4})
    x = torch.randn(48, 16)
    return model, x


def test_iwae_at_least_elbo_and_rising_with_k(dense_and_data):
    model, x = dense_and_data
    torch.manual_seed(2)
    elbo = torch.stack([model.elbo(x).elbo.detach() for _ in range(200)]).mean(0)  # E[ELBO] per item
    iw = {k: model.iwae_bound(x, k=k).mean() for k in (1, 10, 100, 1000)}
    assert abs(float(iw[1]) - float(elbo.mean())) < 0.5  # IWAE_1 is the ELBO (in expectation)
    assert float(iw[10]) > float(elbo.mean())
    assert float(iw[1]) < float(iw[10]) < float(iw[100]) < float(iw[1000])


def test_reparameterised_gradient_reaches_encoder(dense_and_data):
    model, x = dense_and_data
    model.zero_grad()
    out = model.elbo(x)
    out.recon.mean().backward()  # the reconstruction term alone: gradient must flow through z
    enc_grad = sum(float(p.grad.abs().sum()) for p in model.encoder.parameters())
    assert enc_grad > 0
    # no gradient would reach the encoder if z were sampled without reparameterisation
    model.zero_grad()
    mu, logvar = model.encoder_params(x)
    z = Normal(mu, torch.exp(0.5 * logvar)).sample()
    model.decode(z).log_prob(x).sum().backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.encoder.parameters())


def test_likelihoods_against_torch():
    torch.manual_seed(3)
    x, m = torch.randn(5, 7, 3), torch.randn(5, 7, 3)
    g = GaussianLikelihood(7, learn_scale=True)
    with torch.no_grad():
        g.log_scale.copy_(torch.linspace(-1, 1, 7))
    ref = Normal(m, torch.exp(torch.linspace(-1, 1, 7)).view(1, 7, 1)).log_prob(x)
    torch.testing.assert_close(g.log_prob(x, m), ref)
    xb, logits = torch.bernoulli(torch.rand(5, 1, 4, 4)), torch.randn(5, 1, 4, 4)
    torch.testing.assert_close(BernoulliLikelihood().log_prob(xb, logits), Bernoulli(logits=logits).log_prob(xb))


def test_discretized_logistic_is_normalised():
    torch.manual_seed(4)
    lik = DiscretizedLogisticLikelihood()
    params = torch.cat([torch.randn(1, 3, 2, 2) * 2, torch.randn(1, 3, 2, 2) * 2 - 3], dim=1)  # means, log-scales
    levels = torch.arange(256, dtype=torch.float32) / 255 * 2 - 1
    x = levels.view(256, 1, 1, 1).expand(256, 3, 2, 2)
    lp = lik.log_prob(x, params.expand(256, 6, 2, 2))
    total = torch.logsumexp(lp, dim=0).exp()
    torch.testing.assert_close(total, torch.ones_like(total), atol=2e-3, rtol=0)


@pytest.mark.parametrize("ds", [1, 2, 4])
@pytest.mark.parametrize("t", [1, 2, 7, 33, 101])
def test_conv_vae_any_length(t, ds):
    model = build_model("conv", {"n_mels": 256, "channels": 32, "latent_dim": 8, "downsample": ds})
    x = torch.randn(2, 256, t)
    mu, _ = model.encoder_params(x)
    assert mu.shape == (2, 8, -(-t // ds))
    assert model.reconstruct(x).shape == x.shape
    out = model.elbo(x)
    assert torch.isfinite(out.elbo).all() and out.n_dims[0] == 256 * t


def test_conv_vae_lengths_mask_padding():
    model = build_model("conv", {"n_mels": 256, "channels": 32, "latent_dim": 8, "downsample": 4})
    x = torch.randn(2, 256, 40)
    lengths = torch.tensor([40, 17])
    out = model.elbo(x, lengths=lengths, eps=torch.zeros(2, 8, 10))
    assert out.n_dims.tolist() == [256 * 40, 256 * 17]
    # the padded item's KL counts only its ceil(17 / 4) = 5 latent frames
    mu, logvar = model.encoder_params(x)
    torch.testing.assert_close(out.kl[1], gaussian_kl(mu[1, :, :5], logvar[1, :, :5]).sum())


def test_registry_and_params():
    assert {"dense", "conv", "mnist", "cifar"} <= set(available())
    for name in available():
        m = build_model(name)
        assert m.num_params() == sum(p.numel() for p in m.parameters()) > 0
    assert build_model("mnist").num_params() < 1_720_000  # a tenth of pythae's 17.2 M benchmark VAE
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("transformer")
    with pytest.raises(ConfigError, match="unknown"):
        build_model("dense", {"latent": 3})


def test_image_models_shapes():
    for name, x in (("mnist", torch.bernoulli(torch.rand(3, 1, 28, 28))), ("cifar", torch.rand(3, 3, 32, 32) * 2 - 1)):
        m = build_model(name)
        assert m.reconstruct(x).shape == x.shape
        assert m.sample(2).shape == (2, *x.shape[1:])
        assert torch.isfinite(m.elbo(x).elbo).all()


class _LinearGaussianVAE(BaseVAE):
    """p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I): log p(x) = log N(x; b, W W^T + s^2 I) in closed form.
    The encoder is a deliberately imperfect diagonal Gaussian, so the ELBO is strictly below log p(x)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, s: float):
        from types import SimpleNamespace

        super().__init__(SimpleNamespace(latent_dim=w.shape[1]), make_likelihood("gaussian_fixed", w.shape[0], scale=s))
        self.w, self.b = w, b
        self.enc = torch.linalg.pinv(w) * 0.7  # a shrunk pseudo-inverse: near, not at, the true posterior mean

    def encoder_params(self, x):
        mu = x @ self.enc.T
        return mu, torch.full_like(mu, math.log(0.3))

    def decoder_params(self, z, size=None):
        return z @ self.w.T + self.b

    def prior_shape(self, n, size=None):
        return (n, self.latent_dim)


def test_bounds_against_a_closed_form_marginal_likelihood():
    g = torch.Generator().manual_seed(0)
    d, dz, s = 5, 2, 0.5
    w = torch.randn(d, dz, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    model = _LinearGaussianVAE(w, b, s).double()
    x = (torch.randn(8, dz, generator=g, dtype=torch.float64) @ w.T + b + s * torch.randn(8, d, generator=g, dtype=torch.float64))
    log_px = torch.distributions.MultivariateNormal(b, w @ w.T + s**2 * torch.eye(d, dtype=torch.float64)).log_prob(x)
    torch.manual_seed(1)
    n_rep = 200
    elbo = torch.stack([model.elbo(x).elbo for _ in range(n_rep)])  # (n_rep, B)
    iw = {k: torch.stack([model.iwae_bound(x, k=k, chunk=10000) for _ in range(n_rep if k < 1000 else 20)])
          for k in (10, 100, 10000)}
    def mean_se(v):
        return v.mean(0), v.std(0) / math.sqrt(v.shape[0])
    e, e_se = mean_se(elbo)
    # every bound is below log p(x) (within Monte-Carlo error), and the ELBO clearly so for this encoder
    assert (e < log_px - 0.05).all(), (e - log_px)
    for k, v in iw.items():
        m, se = mean_se(v)
        assert (m <= log_px + 3 * se + 1e-9).all(), (k, m - log_px)
    m10, _ = mean_se(iw[10])
    m100, _ = mean_se(iw[100])
    assert (e < m10).all() and (m10 < m100).all()
    # and IWAE_k reaches log p(x) as k grows: within a few standard errors at k = 10,000
    m, se = mean_se(iw[10000])
    assert ((m - log_px).abs() < 3 * se + 1e-3).all(), (m - log_px, se)


def test_conv_vae_frames_do_not_see_far_away_frames():
    """Per-frame LayerNorm keeps the conv VAE local: appending latent frames leaves decoded frames far
    from the join unchanged (GroupNorm(1, c) pools statistics over the whole segment and changes them all)."""
    torch.manual_seed(0)
    z = torch.randn(1, 8, 20)
    longer = torch.cat([z, 5 * torch.randn(1, 8, 30)], dim=-1)
    local = build_model("conv", {"channels": 32, "latent_dim": 8, "downsample": 4})
    torch.testing.assert_close(local.decode(z).mean[..., :40], local.decode(longer).mean[..., :40])
    x = torch.randn(1, 256, 80)
    x_longer = torch.cat([x, 3 * torch.randn(1, 256, 120)], dim=-1)
    torch.testing.assert_close(local.encoder_params(x)[0][..., :10], local.encoder_params(x_longer)[0][..., :10])
    pooled = build_model("conv", {"channels": 32, "latent_dim": 8, "norm": "group", "downsample": 4})
    assert not torch.allclose(pooled.decode(z).mean[..., :40], pooled.decode(longer).mean[..., :40], atol=1e-4)


def test_normalizer_takes_tensors_numpy_cannot_read():
    """A checkpoint loaded onto a GPU hands the normaliser CUDA tensors, which numpy cannot read; tensors
    must not go through numpy. (A tensor that requires grad is refused by numpy the same way.)"""
    from audiovae.audio.normalize import Normalizer

    mean = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    std = torch.tensor([1.0, 2.0, 0.5], requires_grad=True)
    norm = Normalizer(mean, std)
    assert norm.mean.dtype == norm.std.dtype == torch.float32 and not norm.mean.requires_grad
    x = torch.ones(1, 3, 4)
    torch.testing.assert_close(norm(x), ((1 - mean.detach()) / std.detach()).float()[None, :, None].expand(1, 3, 4))


def _frame_local(model: BaseVAE) -> BaseVAE:
    """Zero every convolution tap that reaches outside a block of ``downsample`` frames (for a stride-s
    convolution with padding p, taps p .. p+s-1 map frames [j s, j s + s) <-> latent frame j), so each
    latent frame sees only its own frames and an item's bound cannot depend on what pads it in a batch."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) and m.kernel_size[0] > 1:
                keep = torch.zeros(m.kernel_size[0], dtype=torch.bool)
                keep[m.padding[0] : m.padding[0] + m.stride[0]] = True
                m.weight[..., ~keep] = 0.0
    return model


def _noise_like_alone(shape, dtype=None, device=None, **_):
    """A stand-in for ``torch.randn`` in :meth:`BaseVAE.log_weights`: noise ``(k, B, ...)`` that depends on the
    sample, channel and frame but not on the item, so item i of a batch draws what it draws alone."""
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    phase = sum(g * w for g, w in zip(grids, (1.7, 0.0, 0.9, 0.37)))
    return (1.5 * torch.sin(phase + 0.5)).to(dtype=dtype or torch.float32, device=device)


@pytest.mark.parametrize("ds", [1, 4])
def test_padded_batch_bounds_equal_each_item_alone(monkeypatch, ds):
    """Per item, the ELBO (its reconstruction and KL terms), the log weights and the IWAE bound of a padded batch
    with ``lengths`` equal those of the item computed alone: padded frames count in no term. The conv VAE is
    made frame-local and each item is padded with its last frame (as the encoder pads it alone), so the two
    agree exactly; with the same noise (the ELBO's ``eps``; a position-only ``torch.randn`` for the weights)."""
    torch.manual_seed(0)
    model = _frame_local(build_model("conv", {"n_mels": 16, "channels": 16, "latent_dim": 4, "downsample": ds,
                                              "kernel": 1})).double()
    lengths = [40, 17, 29]
    items = [torch.randn(1, 16, n, dtype=torch.float64) for n in lengths]
    x = torch.cat([torch.cat([v, v[..., -1:].expand(1, 16, 40 - v.shape[-1])], -1) for v in items])
    lens = torch.tensor(lengths)
    eps = torch.randn(3, 4, 40 // ds, dtype=torch.float64)
    out = model.elbo(x, lengths=lens, eps=eps)
    monkeypatch.setattr(torch, "randn", _noise_like_alone)
    px, lw = model.log_weights(x, k=5, lengths=lens, chunk=3)
    iw = model.iwae_bound(x, k=5, lengths=lens, chunk=3)
    for i, v in enumerate(items):
        zl = -(-lengths[i] // ds)
        alone = model.elbo(v, eps=eps[i : i + 1, :, :zl])
        for name in ("elbo", "recon", "kl", "n_dims"):
            torch.testing.assert_close(getattr(out, name)[i], getattr(alone, name)[0], msg=f"{name} of item {i}")
        px1, lw1 = model.log_weights(v, k=5, chunk=3)
        torch.testing.assert_close(px[:, i], px1[:, 0], msg=f"log p(x|z) of item {i}")
        torch.testing.assert_close(lw[:, i], lw1[:, 0], msg=f"log weights of item {i}")
        torch.testing.assert_close(iw[i], model.iwae_bound(v, k=5, chunk=3)[0], msg=f"IWAE of item {i}")
    assert not torch.allclose(lw[:, 1], lw[:, 0])  # the noise and the items differ: the comparison is not empty


def test_dense_batch_bounds_equal_each_item_alone(monkeypatch):
    """The dense model's log weights and IWAE bound per item do not depend on the other items of the batch."""
    torch.manual_seed(0)
    model = build_model("dense", {"n_mels": 16, "hidden": [32], "latent_dim": 4}).double()
    x = torch.randn(3, 16, dtype=torch.float64)
    monkeypatch.setattr(torch, "randn", _noise_like_alone)
    px, lw = model.log_weights(x, k=5, chunk=3)
    for i in range(3):
        px1, lw1 = model.log_weights(x[i : i + 1], k=5, chunk=3)
        torch.testing.assert_close(px[:, i], px1[:, 0])
        torch.testing.assert_close(lw[:, i], lw1[:, 0])
