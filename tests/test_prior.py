"""The learned prior: its density against closed forms, train-prior's crash safety, sampling and evaluation with it."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.distributions as D
from click.testing import CliRunner

import audiovae
from tests.corpora import tiny_conv_run
from audiovae.cli import cli
from audiovae.errors import CheckpointError, ConfigError
from audiovae.models.prior import LatentPrior, PriorConfig, StandardNormal, mixture_log_prob
from audiovae.training import TrainConfig, train
from audiovae.tasks.evaluate import evaluate
from audiovae.training.prior import PriorTrainConfig, load_prior_file, train_prior

TINY = dict(hidden=16, layers=1, components=4, batch_size=4, crop=16, val_every=3, checkpoint_every=3, val_items=2,
            lr_warmup_steps=0)


@pytest.fixture(scope="module")
def conv_run(feats, tmp_path_factory) -> Path:
    return tiny_conv_run(feats, tmp_path_factory.mktemp("priorconv") / "run")


@pytest.fixture(scope="module")
def prior_run(conv_run, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("priorrun") / "run"
    shutil.copytree(conv_run, run)
    train_prior(run, cfg=PriorTrainConfig(**TINY, max_steps=4), progress=False)
    return run


def test_mixture_log_prob_equals_torch_distributions():
    g = torch.Generator().manual_seed(0)
    u, logits = torch.randn(7, 5, generator=g), torch.randn(7, 3, generator=g)
    means, log_scales = torch.randn(7, 3, 5, generator=g), 0.5 * torch.randn(7, 3, 5, generator=g)
    ref = D.MixtureSameFamily(D.Categorical(logits=logits), D.Independent(D.Normal(means, log_scales.exp()), 1))
    torch.testing.assert_close(mixture_log_prob(u, logits, means, log_scales), ref.log_prob(u))


def _ar1(n: int, t: int, a: float, mix: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Stationary Gaussian AR(1) in each of 2 channels, unit marginal variance, then mixed by ``mix``."""
    x = torch.empty(n, 2, t)
    x[..., 0] = torch.randn(n, 2, generator=gen)
    for i in range(1, t):
        x[..., i] = a * x[..., i - 1] + math.sqrt(1 - a * a) * torch.randn(n, 2, generator=gen)
    return torch.einsum("ij,njt->nit", mix, x)


def test_learned_prior_density_of_an_ar1_sequence_meets_its_closed_form():
    """A Gaussian AR(1) latent sequence, its channels mixed by a matrix A, has the closed-form log-density
    log N(x_0; 0, I) + sum_t log N(x_t; a x_{t-1}, (1-a^2) I) - T log|det A|. The prior, fitted on such sequences,
    must come within 0.08 nats/frame of it from above; cross-entropy below the true entropy would be a density
    that does not integrate to 1 (a wrong normaliser or Jacobian)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    a, t = 0.9, 32
    mix = torch.tensor([[2.0, 0.5], [0.3, 0.7]])
    prior = LatentPrior(PriorConfig(latent_dim=2, kind="mixture", hidden=32, layers=1, components=1))
    data = _ar1(1024, t, a, mix, gen)
    prior.fit_whitening(data.transpose(1, 2).reshape(-1, 2))
    opt = torch.optim.Adam(prior.parameters(), lr=2e-2)
    for i in range(120):
        z = data[(i * 64) % 1024:][:64]
        loss = -prior.log_density(z).mean() / t
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = _ar1(2000, t, a, mix, gen)
    x = torch.linalg.solve(mix, z.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)  # back to AR(1)
    true = (D.Normal(0.0, 1.0).log_prob(x[..., 0]).sum(-1)
            + D.Normal(a * x[..., :-1], math.sqrt(1 - a * a)).log_prob(x[..., 1:]).sum((1, 2))
            - t * torch.linalg.slogdet(mix)[1])
    with torch.no_grad():
        model = prior.log_density(z)
    gap = (true - model) / t  # per frame: the KL rate from the truth to the prior, >= 0 in expectation
    stderr = float(gap.std() / math.sqrt(len(gap)))
    assert -3 * stderr < float(gap.mean()) < 0.08, float(gap.mean())


def test_codebook_prior_is_a_normalised_density_of_each_frame_given_the_ones_before():
    """Integrate p(z_t | z_<t) over a fine grid (D = 1): 1 for the first frame and for a later one, whatever
    frames came before; and the density equals a step-by-step reference built from torch.distributions."""
    torch.manual_seed(0)
    prior = LatentPrior(PriorConfig(latent_dim=1, kind="codebook", hidden=8, components=5)).eval()
    prior.fit_codebook(torch.randn(400, 1) * 2, torch.randn(400, 1) * 2)
    grid = torch.linspace(-15, 15, 30001)
    dz = float(grid[1] - grid[0])
    with torch.no_grad():
        first = prior.log_density(grid.view(-1, 1, 1))  # p(z_0) at every grid point
        before = torch.tensor([[0.3, -1.7]])  # two frames before
        seqs = torch.cat([before.view(1, 1, 2).expand(len(grid), 1, 2), grid.view(-1, 1, 1)], 2)
        third = prior.log_density(seqs) - prior.log_density(before.view(1, 1, 2))
    assert float(first.exp().sum()) * dz == pytest.approx(1.0, abs=1e-3)
    assert float(third.exp().sum()) * dz == pytest.approx(1.0, abs=1e-3)
    # reference: the mixture of each step, its weights from the GRU fed with the codes of the frames before
    z = torch.randn(1, 1, 6)
    with torch.no_grad():
        got = prior.log_density(z)
        comps = D.Independent(D.Normal(prior.means, prior.log_scales.exp()), 1)
        prev, state, want = torch.tensor([[5]]), None, 0.0
        for t in range(6):
            h, state = prior.rnn(prior.embed(prev), state)
            mix = D.MixtureSameFamily(D.Categorical(logits=prior.out(h[:, 0])), comps)
            want += float(mix.log_prob(z[:, :, t]))
            prev = comps.log_prob(z[0, :, t].view(1, 1)).argmax().view(1, 1)
    assert float(got) == pytest.approx(want, abs=1e-4)


def test_standard_normal_log_density_is_the_closed_form():
    z = torch.randn(3, 4, 5)
    mask = torch.ones(3, 1, 5)
    mask[1, :, 3:] = 0
    got = StandardNormal().log_density(z, mask)
    want = torch.stack([D.Normal(0.0, 1.0).log_prob(z[i, :, : (3 if i == 1 else 5)]).sum() for i in range(3)])
    torch.testing.assert_close(got, want)


def test_prior_is_causal_and_masks_padding():
    for kind in ("codebook", "mixture"):
        _causal(LatentPrior(PriorConfig(latent_dim=3, kind=kind, hidden=8, layers=1, components=2)).eval())


def _causal(prior):
    z = torch.randn(1, 3, 10)
    z2 = z.clone()
    z2[..., 6:] += 5.0
    lp, lp2 = prior.frame_log_probs(z), prior.frame_log_probs(z2)
    torch.testing.assert_close(lp[:, :6], lp2[:, :6])  # the future never changes the past
    mask = torch.zeros(1, 1, 10)
    mask[..., :6] = 1
    torch.testing.assert_close(prior.log_density(z, mask), prior.log_density(z2, mask))


def test_monte_carlo_kl_and_bounds_against_n01_as_an_object_equal_the_closed_form(conv_run, feats):
    """The learned-prior path of log_weights (log p(z) from the prior object, -log q in full) with N(0, I) as
    the object must give the same log-weights as the closed form; and evaluate's Monte-Carlo KL estimate
    must agree with the closed-form KL within its Monte-Carlo error."""
    vae = audiovae.load(conv_run, device="cpu", prior="standard")
    x = torch.randn(2, vae.mel.n_mels, 40)
    lengths = torch.tensor([40, 29])
    obj = StandardNormal()
    torch.manual_seed(3)
    lp0, lw0 = vae.model.log_weights(x, k=8, lengths=lengths)
    torch.manual_seed(3)
    lp1, lw1 = vae.model.log_weights(x, k=8, lengths=lengths, prior=obj)
    torch.testing.assert_close(lp0, lp1)
    torch.testing.assert_close(lw0, lw1, rtol=1e-5, atol=1e-3)

    class AsLearned(StandardNormal):
        learned = True

    vae.prior = AsLearned()
    mc = evaluate(vae, feats, k=256, prior=None, progress=False)
    closed = evaluate(vae, feats, k=256, prior="standard", progress=False)
    assert mc["prior"] == "learned" and closed["prior"] == "standard"
    assert mc["kl_estimate"].startswith("Monte Carlo")
    assert abs(mc["kl"] - closed["kl"]) < 0.02 * abs(closed["kl"]) + 1.0, (mc["kl"], closed["kl"])
    assert mc["iwae"] == pytest.approx(closed["iwae"], rel=1e-6)  # same samples, same density


def test_train_prior_writes_a_loadable_prior_and_sampling_uses_it(prior_run):
    files = {p.name for p in (prior_run / "prior").iterdir()}
    assert {"prior.safetensors", "last.safetensors", "prior_state.pt", "prior.yaml", "metrics.csv",
            "summary.json"} <= files
    vae = audiovae.load(prior_run, device="cpu")
    assert vae.has_learned_prior and vae.prior_info["step"] >= 1
    assert not audiovae.load(prior_run, device="cpu", prior="standard").has_learned_prior
    a = vae.sample(2, seconds=0.5, seed=5, to="logmel")
    b = vae.sample(2, seconds=0.5, seed=5, to="logmel")
    c = vae.sample(2, seconds=0.5, seed=6, to="logmel")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    s = vae.sample(1, seconds=0.5, seed=5, to="logmel", prior="standard")
    assert not np.allclose(s, a[:1])


def test_sample_cli_is_reproducible_with_a_seed(prior_run, tmp_path):
    r = CliRunner()
    for name in ("a", "b"):
        res = r.invoke(cli, ["sample", str(prior_run), "-o", str(tmp_path / name), "-n", "2", "--seconds", "0.5",
                             "--seed", "3", "--prior", "learned", "--temperature", "0.7", "--vocoder-iters", "2"])
        assert res.exit_code == 0, res.output
        assert "learned prior" in res.output
    for i in range(2):
        np.testing.assert_array_equal(sf.read(tmp_path / "a" / f"sample_{i}.wav")[0],
                                      sf.read(tmp_path / "b" / f"sample_{i}.wav")[0])


def test_sample_learned_without_a_prior_is_a_clear_error(conv_run, tmp_path):
    res = CliRunner().invoke(cli, ["sample", str(conv_run), "-o", str(tmp_path / "s"), "--prior", "learned"])
    assert res.exit_code == 1 and "train-prior" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "s" / "sample_0.wav").exists()


def test_evaluate_cli_with_the_learned_prior(prior_run, feats, tmp_path):
    res = CliRunner().invoke(cli, ["evaluate", str(prior_run), str(feats), "--k", "4", "--prior", "learned",
                                   "--json", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "e.json").read_text())
    assert out["prior"] == "learned" and math.isfinite(out["iwae"]) and math.isfinite(out["kl"])


def test_train_prior_killed_at_any_step_resumes_bit_exact(conv_run, tmp_path):
    """kill -9 mid-run, then --resume: the same weights and metrics as a run never interrupted."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    shutil.copytree(conv_run, whole)
    shutil.copytree(conv_run, killed)
    settings = {**TINY, "checkpoint_every": 1, "val_every": 4, "max_steps": 30, "threads": 1}
    train_prior(whole, cfg=PriorTrainConfig(**settings), progress=False)
    cmd = [sys.executable, "-m", "audiovae", "train-prior", str(killed), "--no-progress",
           *[f"{k}={v}" for k, v in settings.items()]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = killed / "prior" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 8:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    res = CliRunner().invoke(cli, ["train-prior", str(killed), "--resume", "--no-progress"])
    assert res.exit_code == 0, res.output
    for f in ("last.safetensors", "prior.safetensors"):
        a, _ = load_prior_file(whole / "prior" / f)
        b, _ = load_prior_file(killed / "prior" / f)
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    rows = lambda p: [r.split(",")[:3] for r in (p / "prior" / "metrics.csv").read_text().splitlines()]
    assert rows(whole) == rows(killed)


def test_train_prior_refusals(prior_run, conv_run, tmp_path):
    r = CliRunner()
    res = r.invoke(cli, ["train-prior", str(prior_run), "--no-progress", "hidden=16", "max_steps=1"])
    assert res.exit_code == 1 and "--resume" in res.output  # a prior is there already
    res = r.invoke(cli, ["train-prior", str(prior_run), "--resume", "--no-progress", "hidden=32"])
    assert res.exit_code == 1 and "hidden" in res.output and "Traceback" not in res.output
    res = r.invoke(cli, ["train-prior", str(prior_run), "--no-progress", "bogus=1"])
    assert res.exit_code == 1 and "bogus" in res.output
    # a folder of the user's own files is not written into (a prior's metrics.csv would replace theirs)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.csv").write_text("my numbers\n")
    res = r.invoke(cli, ["train-prior", str(prior_run), "-o", str(mine), "--no-progress", "max_steps=1"])
    assert res.exit_code == 1 and "not a learned prior's" in res.output
    assert (mine / "metrics.csv").read_text() == "my numbers\n" and len(list(mine.iterdir())) == 1
    # a prior belongs to the weights it was trained on: another run's prior is refused
    run2 = tmp_path / "run2"
    train(audiovae.load(conv_run, device="cpu").config["data"], run2,
          TrainConfig(model="conv", model_config={"channels": 8, "latent_dim": 4, "downsample": 4, "res_blocks": 1},
                      batch_size=4, max_steps=1, segment_frames=32, lr_warmup_steps=0, val_batches=1, seed=9),
          progress=False)
    shutil.copytree(prior_run / "prior", run2 / "prior")
    with pytest.raises(CheckpointError, match="other VAE weights"):
        audiovae.load(run2, device="cpu", prior="learned")
    with pytest.warns(UserWarning, match="other VAE weights"):
        assert not audiovae.load(run2, device="cpu").has_learned_prior


def test_prior_config_bounds():
    with pytest.raises(ConfigError, match="components"):
        PriorConfig(components=0)
    with pytest.raises(ConfigError, match="hidden"):
        PriorTrainConfig(hidden=10**9)


def test_repair_chain_with_a_prior_object_equals_the_closed_form_chain(conv_run):
    """Metropolis-within-Gibbs with the learned-prior path (the whole sequence's log-density from the prior
    object) and N(0, I) as that object: the same chain, draw for draw, as the closed-form path."""
    from audiovae.tasks.impute import impute

    class AsLearned(StandardNormal):
        learned = True

    vae = audiovae.load(conv_run, device="cpu", prior="standard")
    x = torch.randn(1, vae.mel.n_mels, 48)
    observed = torch.ones_like(x, dtype=torch.bool)
    observed[..., 20:28] = False
    for windowed in (True, False):
        torch.manual_seed(0)
        a = impute(vae.model, x, observed, "mwg", iters=6, block=2, windowed=windowed)
        torch.manual_seed(0)
        b = impute(vae.model, x, observed, "mwg", iters=6, block=2, windowed=windowed, prior=AsLearned(),
                   prior_proposals=False)
        torch.testing.assert_close(a.x, b.x, rtol=1e-4, atol=1e-4)
        assert a.acceptance == pytest.approx(b.acceptance)
        assert torch.equal(b.x[observed], x[observed])


def test_a_prior_continues_a_prefix_as_it_would_have_generated_it():
    """With the most likely component each time and no frame noise (temperature -> 0), drawing the last frames
    after a prefix gives exactly the frames the prior drew after that prefix itself (the GRU state is carried)."""
    for kind in ("codebook", "mixture"):
        prior = LatentPrior(PriorConfig(latent_dim=3, kind=kind, hidden=8, components=4)).eval()
        whole = prior.sample((2, 3, 9), temperature=1e-6)
        rest = prior.sample((2, 3, 4), temperature=1e-6, prefix=whole[..., :5])
        torch.testing.assert_close(rest, whole[..., 5:])


def test_repair_uses_the_learned_prior(prior_run, speech_dir, tmp_path):
    res = CliRunner().invoke(cli, ["repair", str(prior_run), str(speech_dir / "utt00.wav"), "--gap", "0.5:0.65",
                                   "--chain-iters", "3", "--vocoder-iters", "2", "-o", str(tmp_path / "r.wav")])
    assert res.exit_code == 0, res.output
    assert "learned prior" in res.output
    res = CliRunner().invoke(cli, ["repair", str(prior_run), str(speech_dir / "utt00.wav"), "--gap", "0.5:0.65",
                                   "--chain-iters", "3", "--vocoder-iters", "2", "--prior", "standard",
                                   "-o", str(tmp_path / "s.wav")])
    assert res.exit_code == 0 and "standard prior" in res.output
    assert not np.array_equal(sf.read(tmp_path / "r.wav")[0], sf.read(tmp_path / "s.wav")[0])
