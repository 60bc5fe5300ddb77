"""`audiovae evaluate`: bounds, KL, active units, size and speed of a trained model."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from audiovae.data.datasets import SeededBatchSampler, SequenceDataset
from audiovae.data.features import FeatureCache
from audiovae.errors import ConfigError
from audiovae.training.checkpoint import LoadedModel, load_model_dir
from audiovae.training.data import MODEL_DATA, data_kind, load_train_data, test_images
from audiovae.training.trainer import active_units

LN2 = math.log(2.0)


def resolve_model_dir(path: str | os.PathLike, which: str = "best") -> Path:
    """A run folder's ``best/`` when asked for and present, else the folder itself."""
    path = Path(path)
    if which == "best" and (path / "best" / "config.yaml").exists():
        return path / "best"
    return path


def _eval_dataset(loaded: LoadedModel, data: str | os.PathLike, split: str):
    kind = data_kind(data)
    if kind != MODEL_DATA[loaded.name]:
        raise ConfigError(f"model {loaded.name!r} was trained on {MODEL_DATA[loaded.name]} data, but {data} holds {kind} data")
    if kind == "features":
        cache = FeatureCache(data)
        if cache.mel_config != loaded.mel:
            raise ConfigError("the feature cache was made with a different MelConfig than the model", data)
        if loaded.name == "conv":
            ds = SequenceDataset(cache, split, None)
            return ds, ds.recs, cache.mel_config.hop_length / cache.mel_config.sample_rate
        td = load_train_data(data, "dense", loaded.config["model_config"].get("context", 0))
        return (td.val if split == "val" else td.train), None, cache.mel_config.hop_length / cache.mel_config.sample_rate
    if split == "test":
        return test_images(data)[0], None, None
    td = load_train_data(data, loaded.name)
    return (td.val if split == "val" else td.train), None, None


@torch.no_grad()
def evaluate(
    run_dir: str | os.PathLike,
    data: str | os.PathLike,
    k: int = 64,
    split: str | None = None,
    batch_size: int = 64,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """ELBO, IWAE bound (``k`` samples), KL, reconstruction term, active units, parameters, throughput.

    ``split``: ``val`` for feature caches, ``test`` for image folders by default.
    All bounds are nats per item, estimated from the same ``k`` posterior
    samples per item: ``elbo`` is the mean of the log importance weights,
    ``iwae`` their log-mean-exp, so ``iwae >= elbo`` always; ``recon`` is the
    mean log-likelihood over those samples and ``kl`` the closed-form KL
    (``elbo ~= recon - kl`` up to Monte-Carlo error). ``iwae_stderr`` is the
    standard error of the mean over items.
    Images also get ``bits_per_dim`` (from the IWAE bound) and ``elbo_bits_per_dim``.
    """
    loaded = load_model_dir(resolve_model_dir(run_dir))
    model = loaded.model
    kind = data_kind(data)
    split = split or ("val" if kind == "features" else "test")
    ds, recs, sec_per_frame = _eval_dataset(loaded, data, split)
    from audiovae.data.datasets import pad_collate
    from audiovae.training.data import Batch

    seq = loaded.name == "conv"
    bs = 1 if seq else batch_size  # whole utterances, one at a time: no padding effects
    n = len(ds) if limit is None else min(limit, len(ds))
    sampler = SeededBatchSampler(n, bs, seed, 0, shuffle=False, drop_last=False)
    collate = (lambda items: Batch(*pad_collate(items))) if seq else (lambda x: Batch(x if isinstance(x, torch.Tensor) else torch.stack(x)))
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate)
    torch.manual_seed(seed)
    sums = {"elbo": 0.0, "recon": 0.0, "kl": 0.0, "iwae": 0.0, "iwae_sq": 0.0, "dims": 0.0, "frames": 0.0}
    count = 0
    mus = []
    t_elbo = 0.0
    for batch in tqdm(loader, desc=f"evaluate (k={k})", unit="batch", disable=not progress):
        t0 = time.perf_counter()
        out = model.elbo(batch.x, lengths=batch.lengths)
        t_elbo += time.perf_counter() - t0
        # ELBO and IWAE from the same k samples: mean(log w) <= logmeanexp(log w) holds exactly
        log_px, logw = model.log_weights(batch.x, k=k, lengths=batch.lengths,
                                         chunk=max(1, min(k, 4096 // max(1, batch.x.shape[0]))))
        iw = torch.logsumexp(logw, 0) - math.log(k)
        count += batch.x.shape[0]
        sums["elbo"] += float(logw.mean(0).sum())
        sums["recon"] += float(log_px.mean(0).sum())
        sums["kl"] += float(out.kl.sum())
        sums["iwae"] += float(iw.sum())
        sums["iwae_sq"] += float(iw.double().square().sum())
        sums["dims"] += float(out.n_dims.sum())
        if seq:
            sums["frames"] += float(batch.x.shape[-1])
        mu = out.mu if out.mu.dim() == 2 else out.mu.transpose(1, 2).reshape(-1, out.mu.shape[1])
        mus.append(mu)
    mean_iw = sums["iwae"] / count
    var_iw = max(0.0, sums["iwae_sq"] / count - mean_iw**2)
    dims_per_item = sums["dims"] / count
    res = {
        "model": loaded.name,
        "model_dir": str(loaded.path),
        "split": split,
        "items": count,
        "k": k,
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
    if seq and sec_per_frame:
        res["throughput_audio_s_per_s"] = sums["frames"] * sec_per_frame / max(t_elbo, 1e-9)
    elif sec_per_frame:
        res["throughput_frames_per_s"] = count / max(t_elbo, 1e-9)
    else:
        res["throughput_items_per_s"] = count / max(t_elbo, 1e-9)
    if kind in ("mnist", "cifar"):
        res["bits_per_dim"] = -mean_iw / (dims_per_item * LN2)
        res["elbo_bits_per_dim"] = -res["elbo"] / (dims_per_item * LN2)
        res["nll"] = -mean_iw
    return res


def format_table(res: dict) -> str:
    """The evaluation as a two-column table for the terminal."""
    labels = [
        ("elbo", "ELBO (nats/item)"), ("iwae", f"IWAE bound, k={res['k']} (nats/item)"), ("iwae_stderr", "  standard error"),
        ("recon", "reconstruction log-lik"), ("kl", "KL(q||p)"), ("elbo_per_dim", "ELBO (nats/dim)"),
        ("bits_per_dim", "bits/dim (IWAE)"), ("active_units", "active units"), ("latent_dim", "latent channels"),
        ("params", "parameters"), ("throughput_audio_s_per_s", "audio s / s (ELBO pass)"),
        ("throughput_frames_per_s", "frames / s (ELBO pass)"), ("throughput_items_per_s", "items / s (ELBO pass)"),
        ("items", f"{res['split']} items"),
    ]
    lines = []
    for key, label in labels:
        if res.get(key) is not None:
            v = res[key]
            lines.append(f"  {label:<36} {v:,.4f}" if isinstance(v, float) else f"  {label:<36} {v:,}")
    return f"{res['model']} model at {res['model_dir']}\n" + "\n".join(lines)
