"""`audiovae evaluate`: bounds, KL, active units, size and speed of a trained model.

Feature models are evaluated on the model's own terms: the data is normalised
with the statistics saved in the model directory (never those of the cache at
hand), and the bounds are densities of the *log-mel features*, not of the
normalised ones: ``log p(logmel) = log p(x_norm) - sum_dims log sigma``. So two
models trained on different caches of the same audio give comparable nats.
"""

from __future__ import annotations

import math
import os
import time

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from audiovae.api import LoadedVAE, load
from audiovae.data.datasets import SeededBatchSampler
from audiovae.data.source import DataSource, open_data
from audiovae.errors import ConfigError
from audiovae.training.checkpoint import LoadedModel, pick_device, resolve_model_dir
from audiovae.training.metrics import active_units, flatten_latents, log_jacobian

LN2 = math.log(2.0)

__all__ = ["evaluate", "format_table", "resolve_model_dir", "model_dataset", "item_kind"]


def model_dataset(loaded: LoadedVAE, src: DataSource, split: str):
    """``(dataset, collate)`` of ``split`` for a loaded model: its own normaliser, context, whole utterances."""
    src.check_model(loaded.name)
    if src.is_features and loaded.mel is not None and src.mel.n_mels != loaded.mel.n_mels:
        raise ConfigError(f"the model expects {loaded.mel.n_mels} mel bins, the data has {src.mel.n_mels}", src.path)
    if src.kind == "features" and loaded.mel is not None and src.mel != loaded.mel:
        raise ConfigError("the feature cache was made with a different MelConfig than the model", src.path)
    ctx = int(loaded.config["model_config"].get("context", 0))
    model = loaded.model
    return src.dataset(split, loaded.name, loaded.normalizer, context=ctx, segment=None,
                       condition=getattr(model, "condition", "none"), condition_names=getattr(model, "condition_names", ()))


@torch.no_grad()
def evaluate(
    run_dir: str | os.PathLike | LoadedVAE | LoadedModel,
    data: str | os.PathLike | DataSource,
    k: int = 64,
    split: str | None = None,
    batch_size: int = 64,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
    checkpoint: str = "best",
    device: str = "auto",
    prior: str | None = "standard",
) -> dict:
    """ELBO, IWAE bound (``k`` samples), KL, reconstruction term, active units, parameters, throughput.

    ``checkpoint``: ``best`` (the run's ``best/``) or ``last``. ``split``: ``val``
    for features, ``test`` for image folders by default. ``device``: ``auto``,
    ``cpu`` or ``cuda``.

    All bounds are nats per item (``item``: a whole ``utterance`` for sequence models, a ``frame`` for frame
    models, an ``image``; mel models also get ``*_per_frame``, nats per log-mel frame, and
    ``frames_per_item``), estimated from the same ``k`` posterior
    samples per item: ``elbo`` is the mean of the log importance weights,
    ``iwae`` their log-mean-exp; ``recon`` is the mean log-likelihood over those
    samples and ``kl`` the closed-form KL (``elbo ~= recon - kl`` up to
    Monte-Carlo error). ``iwae_stderr`` is the standard error of the mean over
    items. Feature models: densities of log-mel features (see the module
    docstring); ``log_jacobian`` is the per-item shift that was added.

    ``prior``: ``"standard"`` (``N(0, I)``, what the VAE was trained against), ``"learned"`` (the run's learned
    prior: every bound is then against it, and ``kl`` is its Monte-Carlo estimate ``E_q[log q(z|x) -
    log p(z)]`` from the same ``k`` samples), or None: the prior the model was loaded with (``audiovae.load``'s
    ``prior=``).
    Images also get ``bits_per_dim`` (from the IWAE bound) and ``elbo_bits_per_dim``.
    """
    if isinstance(run_dir, (LoadedVAE, LoadedModel)):  # already loaded (the CLI loads once to say which checkpoint)
        loaded, dev = run_dir, next(run_dir.model.parameters()).device
    else:
        dev = pick_device(device)
        loaded = load(run_dir, checkpoint, dev)
    model = loaded.model
    p = loaded._prior_for(prior) if hasattr(loaded, "_prior_for") else None
    learned = bool(getattr(p, "learned", False))
    src = data if isinstance(data, DataSource) else open_data(data)
    split = split or ("val" if src.is_features else "test")
    ds, collate = model_dataset(loaded, src, split)
    seq = model.is_sequence
    bs = 1 if seq else batch_size  # whole utterances, one at a time: no padding effects
    n = len(ds) if limit is None else min(limit, len(ds))
    sampler = SeededBatchSampler(n, bs, seed, 0, shuffle=False, drop_last=False)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate)
    torch.manual_seed(seed)
    sums = {"elbo": 0.0, "recon": 0.0, "kl": 0.0, "iwae": 0.0, "iwae_sq": 0.0, "dims": 0.0, "frames": 0.0, "jac": 0.0}
    count = 0
    mus = []
    t_elbo = 0.0
    for batch in tqdm(loader, desc=f"evaluate (k={k})", unit="batch", disable=not progress):
        batch = batch.to(dev)
        t0 = time.perf_counter()
        out = model.elbo(batch.x, lengths=batch.lengths, cond=batch.cond)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t_elbo += time.perf_counter() - t0
        # ELBO and IWAE from the same k samples
        cond = getattr(batch, "cond", None)
        log_px, logw = model.log_weights(batch.x, k=k, lengths=batch.lengths,
                                         chunk=max(1, min(k, 4096 // max(1, batch.x.shape[0]))),
                                         prior=p if learned else None, cond=cond)
        jac = log_jacobian(loaded.normalizer, out.n_dims.double())  # (B,) or 0.0
        iw = (torch.logsumexp(logw.double(), 0) - math.log(k)) + jac
        count += batch.x.shape[0]
        sums["elbo"] += float((logw.double().mean(0) + jac).sum())
        sums["recon"] += float((log_px.double().mean(0) + jac).sum())
        sums["jac"] += float(torch.as_tensor(jac).sum()) if torch.is_tensor(jac) else 0.0
        # against N(0, I) the KL has a closed form; against a learned prior, its Monte-Carlo estimate from the
        # same k samples: mean_i [log q(z_i|x) - log p(z_i)] = mean_i log p(x|z_i) - mean_i log w_i
        sums["kl"] += float((log_px.double().mean(0) - logw.double().mean(0)).sum()) if learned else float(out.kl.sum())
        sums["iwae"] += float(iw.sum())
        sums["iwae_sq"] += float(iw.square().sum())
        sums["dims"] += float(out.n_dims.sum())
        if seq:
            sums["frames"] += float(batch.x.shape[-1])
        mus.append(flatten_latents(out.mu).cpu())
    mean_iw = sums["iwae"] / count
    var_iw = max(0.0, sums["iwae_sq"] / count - mean_iw**2)
    dims_per_item = sums["dims"] / count
    res = {
        "model": loaded.name,
        "model_dir": str(loaded.path),
        "step": loaded.config.get("step"),  # which checkpoint: the report re-evaluates when it shows another
        "weights_sha256": loaded.config.get("weights_sha256"),
        "item": item_kind(loaded),
        "device": str(dev),
        "split": split,
        "items": count,
        "k": k,
        "prior": "learned" if learned else "standard",
        "kl_estimate": f"Monte Carlo, k={k}" if learned else "closed form",
        "elbo": sums["elbo"] / count,
        "iwae": mean_iw,
        "iwae_stderr": math.sqrt(var_iw / (count - 1)) if count > 1 else None,
        "recon": sums["recon"] / count,
        "kl": sums["kl"] / count,
        "elbo_per_dim": sums["elbo"] / sums["dims"],
        "iwae_per_dim": sums["iwae"] / sums["dims"],
        "active_units": active_units(torch.cat(mus)),
        "latent_dim": model.latent_dim,
        "params": model.num_params(),
    }
    if loaded.mel is not None:  # per log-mel frame (n_mels dimensions): comparable across item lengths
        n_mels = loaded.mel.n_mels
        res["frames_per_item"] = dims_per_item / n_mels
        res["elbo_per_frame"] = res["elbo_per_dim"] * n_mels
        res["iwae_per_frame"] = res["iwae_per_dim"] * n_mels
    if loaded.normalizer is not None:
        res["log_jacobian"] = sums["jac"] / count
    spf = src.seconds_per_frame
    if seq and spf:
        res["throughput_audio_s_per_s"] = sums["frames"] * spf / max(t_elbo, 1e-9)
    elif spf:
        res["throughput_frames_per_s"] = count / max(t_elbo, 1e-9)
    else:
        res["throughput_items_per_s"] = count / max(t_elbo, 1e-9)
    if not src.is_features:
        res["bits_per_dim"] = -mean_iw / (dims_per_item * LN2)
        res["elbo_bits_per_dim"] = -res["elbo"] / (dims_per_item * LN2)
        res["nll"] = -mean_iw
    return res


def item_kind(loaded: LoadedModel) -> str:
    """What one evaluated item of this model is: ``utterance`` (sequence models, whole utterances),
    ``frame`` (frame models) or ``image``."""
    if loaded.mel is None:
        return "image"
    return "utterance" if loaded.model.is_sequence else "frame"


def format_table(res: dict) -> str:
    """The evaluation as a two-column table for the terminal."""
    item = res.get("item", "item")
    labels = [
        ("elbo", f"ELBO (nats/{item})"), ("iwae", f"IWAE bound, k={res['k']} (nats/{item})"),
        ("iwae_stderr", "  standard error"), ("elbo_per_frame", "ELBO (nats/frame)"),
        ("iwae_per_frame", "IWAE bound (nats/frame)"),
        ("recon", "reconstruction log-lik"), ("kl", "KL(q||p)"), ("elbo_per_dim", "ELBO (nats/dim)"),
        ("nll", f"NLL (IWAE, nats/{item})"), ("bits_per_dim", "bits/dim (IWAE)"), ("active_units", "active units"),
        ("latent_dim", "latent channels"), ("params", "parameters"), ("throughput_audio_s_per_s", "audio s / s (ELBO pass)"),
        ("throughput_frames_per_s", "frames / s (ELBO pass)"), ("throughput_items_per_s", "items / s (ELBO pass)"),
        ("items", f"{res['split']} {item}s"), ("frames_per_item", f"  frames per {item} (mean)"),
    ]
    lines = []
    for key, label in labels:
        if res.get(key) is not None:
            v = res[key]
            lines.append(f"  {label:<36} {v:,.4f}" if isinstance(v, float) else f"  {label:<36} {v:,}")
    units = "  (densities of log-mel features)" if "log_jacobian" in res else ""
    prior = "  prior: learned (bounds and KL against it)" if res.get("prior") == "learned" else ""
    return f"{res['model']} model at {res['model_dir']}{units}{prior}\n" + "\n".join(lines)
