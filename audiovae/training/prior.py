"""`audiovae train-prior`: a learned prior over a trained VAE's latent sequences.

The VAE is frozen. Its encoder turns every utterance of the training split into
a posterior ``q(z | x)`` (means and log-variances, once, at the start); each step
then draws fresh samples ``z ~ q(z | x)`` on random crops and maximises the
prior's log-density of them, which is the ``E_q[log p(z)]`` part of the ELBO
(:mod:`audiovae.models.prior`). Validation is the same figure on the validation
split's whole utterances with fixed noise; the best validation is what
``prior.safetensors`` holds and what sampling, repair and ``evaluate --prior
learned`` use.

The folder (``RUN/prior`` by default)::

    prior.safetensors   the best weights; the configuration, the VAE weights it belongs to and the
                        step are in its header (one file: written with one atomic rename)
    last.safetensors    the latest weights (same format)
    prior_state.pt      optimiser, step, best figure (plain tensors, read with weights_only=True)
    prior.yaml          the configuration, for people (loading never reads it)
    metrics.csv         step, nll (nats per latent frame), lr, seconds; validation rows carry val_nll
    summary.json        how the run ended

Like ``train``: a time limit (``max_minutes``), Ctrl-C/SIGTERM stop after the
current step with a validation and a checkpoint, ``--resume`` continues bit for
bit (the crops and noise of step ``s`` come from a generator seeded with
``(seed, s)``), and a resumed run refuses a changed setting other than
``max_steps``/``max_minutes``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from audiovae import threads as cpu_threads
from audiovae.config import check_choice, check_float, check_int, from_dict, to_dict
from audiovae.errors import CheckpointError, ConfigError, TrainingError
from audiovae.models.prior import LatentPrior, PriorConfig

PRIOR_FILE, LAST_FILE, STATE_FILE, YAML_FILE = "prior.safetensors", "last.safetensors", "prior_state.pt", "prior.yaml"
FORMAT = "audiovae-prior/1"
METRIC_COLUMNS = ["step", "nll", "val_nll", "lr", "seconds"]
RESUMABLE = ("max_steps", "max_minutes")


@dataclass
class PriorTrainConfig:
    # the prior (audiovae.models.prior.PriorConfig)
    kind: str = "codebook"  # codebook | mixture
    hidden: int = 256
    layers: int = 1
    components: int = 512
    whiten: bool = True
    # training
    batch_size: int = 16
    crop: int = 128  # latent frames per training crop
    lr: float = 2e-3
    lr_warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_steps: int = 50_000
    max_minutes: float = 0.0  # 0 = no time limit
    val_every: int = 500
    checkpoint_every: int = 500
    val_items: int = 200  # validation utterances (fixed noise), at most
    seed: int = 0
    threads: int = 0  # 0 = the thread policy of audiovae/threads.py
    checkpoint: str = "best"  # the VAE weights the prior is trained on: best or last

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_int("hidden", self.hidden, 1, 8192)
        check_int("layers", self.layers, 1, 8)
        check_int("components", self.components, 1, 4096)
        check_choice("kind", self.kind, ("codebook", "mixture"))
        check_int("batch_size", self.batch_size, 1, 65536)
        check_int("crop", self.crop, 2, 1 << 20)
        check_float("lr", self.lr, 0.0, 10.0, lo_open=True)
        check_int("lr_warmup_steps", self.lr_warmup_steps, 0)
        check_float("weight_decay", self.weight_decay, 0.0, 10.0)
        check_float("grad_clip", self.grad_clip, 0.0)
        check_int("max_steps", self.max_steps, 1)
        check_float("max_minutes", self.max_minutes, 0.0)
        check_int("val_every", self.val_every, 1)
        check_int("checkpoint_every", self.checkpoint_every, 1)
        check_int("val_items", self.val_items, 1)
        check_int("seed", self.seed, 0)
        check_int("threads", self.threads, 0, 4096)
        check_choice("checkpoint", self.checkpoint, ("best", "last"))

    def prior_config(self, latent_dim: int, n_conditions: int) -> PriorConfig:
        return PriorConfig(latent_dim=latent_dim, kind=self.kind, hidden=self.hidden, layers=self.layers, components=self.components,
                           whiten=self.whiten, n_conditions=n_conditions)


# --- posteriors of a split ---------------------------------------------------------------------------
@dataclass
class Posteriors:
    """Per utterance: posterior means and log-variances ``(D, T')`` and the condition index (or -1)."""

    mu: list[torch.Tensor]
    logvar: list[torch.Tensor]
    cond: torch.Tensor  # (N,) long; -1 = none

    def __len__(self) -> int:
        return len(self.mu)


def utterance_conditions(vae, src, split: str) -> torch.Tensor:
    """Each utterance's condition index in the VAE's own list (-1 for an unconditioned VAE)."""
    recs = src.utterances(split)
    info = getattr(vae, "conditions", None)
    if not info:
        return torch.full((len(recs),), -1, dtype=torch.long)
    return torch.from_numpy(src.condition_indices(recs, info["key"], info["names"]))


@torch.no_grad()
def encode_split(vae, src, split: str, limit: int | None = None, progress: bool = False) -> Posteriors:
    """The frozen encoder's posterior of every utterance of ``split`` (whole utterances, one at a time)."""
    from audiovae.tasks.evaluate import model_dataset

    ds, collate = model_dataset(vae, src, split)
    n = len(ds) if limit is None else min(limit, len(ds))
    conds = utterance_conditions(vae, src, split)[:n]
    mus, lvs = [], []
    for i in tqdm(range(n), desc=f"encode {split}", unit="utt", disable=not progress, dynamic_ncols=True):
        batch = collate([ds[(i, 0)]])
        mu, lv = vae.model.encoder_params(batch.x.to(vae.device))
        mus.append(mu[0].float().cpu())
        lvs.append(lv[0].float().cpu())
    return Posteriors(mus, lvs, conds)


def draw_batch(post: Posteriors, batch_size: int, crop: int, gen: torch.Generator):
    """Random crops of ``crop`` latent frames (whole utterances when shorter), utterances drawn in proportion
    to their length, with fresh posterior noise: ``(z (B, D, crop), mask (B, 1, crop), cond (B,))``."""
    lens = torch.tensor([m.shape[-1] for m in post.mu], dtype=torch.float64)
    idx = torch.multinomial(lens, batch_size, replacement=True, generator=gen)
    d = post.mu[0].shape[0]
    z = torch.zeros(batch_size, d, crop)
    mask = torch.zeros(batch_size, 1, crop)
    for b, i in enumerate(idx.tolist()):
        mu, lv = post.mu[i], post.logvar[i]
        t = mu.shape[-1]
        start = int(torch.randint(0, max(1, t - crop + 1), (1,), generator=gen))
        n = min(crop, t)
        eps = torch.randn((d, n), generator=gen)
        z[b, :, :n] = mu[:, start:start + n] + torch.exp(0.5 * lv[:, start:start + n]) * eps
        mask[b, :, :n] = 1
    return z, mask, post.cond[idx]


@torch.no_grad()
def validation_nll(prior: LatentPrior, post: Posteriors, seed: int) -> float:
    """Mean ``-log p(z)`` per latent frame over the split's utterances, ``z ~ q`` with noise fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed + 7919)
    total, frames = 0.0, 0
    was = prior.training
    prior.eval()
    for mu, lv, c in zip(post.mu, post.logvar, post.cond.tolist()):
        z = (mu + torch.exp(0.5 * lv) * torch.randn(mu.shape, generator=gen)).unsqueeze(0)
        cond = None if c < 0 else torch.tensor([c])
        total -= float(prior.log_density(z, cond=cond).sum())
        frames += mu.shape[-1]
    prior.train(was)
    return total / max(frames, 1)


# --- files ---------------------------------------------------------------------------------------------
def save_prior_file(path: Path, prior: LatentPrior, meta: dict) -> None:
    """Weights + configuration (safetensors header metadata) in one file, written with one atomic rename."""
    from safetensors.torch import save_file

    from audiovae.utils import atomic_path

    tensors = {k: v.detach().cpu().contiguous() for k, v in prior.state_dict().items()}
    header = {"format": FORMAT, "meta": json.dumps({**meta, "config": to_dict(prior.config)})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def read_prior_meta(path: Path) -> dict:
    """The metadata of a prior file (nothing allocated but its header; no code run)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except FileNotFoundError:
        raise CheckpointError("no learned prior here (train one with `audiovae train-prior RUN`)", path) from None
    except Exception as exc:  # a truncated or foreign file
        raise CheckpointError(f"not a readable prior file ({exc})", path) from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"not an audiovae prior (format {header.get('format')!r})", path)
    try:
        meta = json.loads(header["meta"])
    except (KeyError, ValueError):
        raise CheckpointError("the prior's header is damaged", path) from None
    meta["_shapes"] = shapes
    return meta


def load_prior_file(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[LatentPrior, dict]:
    """A prior file -> (the prior in eval mode on ``device``, its metadata). The configuration is range-checked
    and the weights' shapes compared with the model it describes before anything is allocated."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_prior_meta(path)
    try:
        cfg = from_dict(PriorConfig, meta.get("config"), str(path))
    except ConfigError as exc:
        raise CheckpointError(f"bad prior configuration: {exc}", path) from None
    with torch.device("meta"):
        shell = LatentPrior(cfg)
    want = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    if want != meta["_shapes"]:
        raise CheckpointError("the prior's weights do not match its configuration", path)
    prior = LatentPrior(cfg)
    prior.load_state_dict(load_file(str(path)))
    return prior.to(device).eval(), meta


# --- the run ------------------------------------------------------------------------------------------
def _lr(step: int, cfg: PriorTrainConfig, horizon: int) -> float:
    if step < cfg.lr_warmup_steps:
        return cfg.lr * (step + 1) / cfg.lr_warmup_steps
    frac = min(1.0, (step - cfg.lr_warmup_steps) / max(1, horizon - cfg.lr_warmup_steps))
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def train_prior(run: str | os.PathLike, data: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                cfg: PriorTrainConfig | None = None, resume: bool = False, given: dict | None = None,
                progress: bool = True, device: str = "cpu") -> dict:
    """Train a learned prior for the VAE of ``run`` on ``data`` (default: the data the run was trained on).

    Writes ``out`` (default ``run/prior``); returns a summary. ``given``: the settings
    the user set explicitly (checked against the saved ones on ``resume``).
    """
    from audiovae.api import load
    from audiovae.folders import output_folder
    from audiovae.tasks.results import run_root

    from audiovae.errors import OutputFolderError
    from audiovae.folders import LOCK_NAME, folder_kind

    run = Path(run)
    out = Path(out) if out is not None else run_root(run) / "prior"
    # its file names (metrics.csv, summary.json...) are common ones: never write them among a user's own files
    if out.is_dir() and folder_kind(out) is None and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise OutputFolderError("holds files that are not a learned prior's; give a new or empty folder", out)
    with output_folder(out, "prior"):
        return _train_prior(run, data, out, cfg, resume, given, progress, device, load)


def _train_prior(run, data, out: Path, cfg, resume, given, progress, device, load) -> dict:
    from audiovae.config import load_yaml, save_yaml
    from audiovae.data.source import open_data
    from audiovae.training.checkpoint import load_trainer_state, save_trainer_state
    from audiovae.training.logging import _CSV
    from audiovae.training.runtime import _graceful_stop, check_resume_config
    from audiovae.utils import atomic_write_text, pick_device

    state = None
    if resume:
        if not (out / STATE_FILE).exists():
            raise CheckpointError(f"nothing to resume (no {STATE_FILE})", out)
        saved = from_dict(PriorTrainConfig, load_yaml(out / YAML_FILE).get("train"), str(out / YAML_FILE))
        cfg = check_resume_config(saved, dict(given or {}), out / YAML_FILE, resumable=RESUMABLE)
        state = load_trainer_state(out / STATE_FILE)
    else:
        cfg = cfg or PriorTrainConfig()
        cfg.validate()
        if (out / STATE_FILE).exists():
            raise CheckpointError("already holds a prior; use --resume to continue it, or another folder", out)
    cpu_threads.resolve(cfg.threads)
    dev = pick_device(device)
    vae = load(run, cfg.checkpoint, dev, prior="standard")
    if not vae.sequence or vae.kind != "mel":
        raise ConfigError(f"a learned prior models latent sequences: the {vae.name!r} model has none (train a conv "
                          "model)", run)
    data = data if data is not None else vae.config.get("data")
    if not data:
        raise ConfigError("the run does not record its data; give DATA", run)
    src = open_data(data)
    n_cond = len(vae.conditions["names"]) if getattr(vae, "conditions", None) else 0
    vae_sha = vae.config.get("weights_sha256")
    n_threads, adaptive = cpu_threads.apply(cfg.threads, adaptive_probe=False)
    adapt = cpu_threads.AdaptiveThreads(n_threads) if adaptive and dev.type == "cpu" else None

    train_post = encode_split(vae, src, "train", progress=progress)
    val_post = encode_split(vae, src, "val", limit=cfg.val_items, progress=progress)
    if not len(train_post) or not len(val_post):
        raise ConfigError("the data needs utterances in its train and val splits", src.path)

    torch.manual_seed(cfg.seed)
    prior = LatentPrior(cfg.prior_config(vae.model.latent_dim, n_cond))
    opt = torch.optim.AdamW(prior.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, best = 0, math.inf
    if state is not None:
        if state.get("vae_weights_sha256") != vae_sha:
            raise CheckpointError("the VAE's weights changed since this prior was started; train a new prior", out)
        prior.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, best = int(state["step"]), float(state["best_val"])
    else:  # codebook (k-means) or whitening from (up to) 200k training frames, fixed by the seed
        gen = torch.Generator().manual_seed(cfg.seed)
        mus = torch.cat(train_post.mu, 1).T
        zs = mus + torch.exp(0.5 * torch.cat(train_post.logvar, 1).T) * torch.randn(mus.shape, generator=gen)
        if zs.shape[0] > 200_000:
            keep = torch.randperm(zs.shape[0], generator=gen)[:200_000]
            mus, zs = mus[keep], zs[keep]
        if prior.codebook:
            if mus.shape[0] < cfg.components:
                raise ConfigError(f"{mus.shape[0]} latent frames in the train split are too few for a codebook of "
                                  f"{cfg.components} (set components= lower)", src.path)
            prior.fit_codebook(mus, zs, cfg.seed)
        prior.fit_whitening(zs)
    prior.to(dev).train()
    meta = {"vae_weights_sha256": vae_sha, "vae_checkpoint": cfg.checkpoint, "vae_model": vae.name,
            "conditions": getattr(vae, "conditions", None), "data": os.path.abspath(str(data))}
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(out / YAML_FILE, {"train": to_dict(cfg), "prior": to_dict(prior.config), **meta})
    log = _CSV(out / "metrics.csv", METRIC_COLUMNS, step if state is not None else None)

    def checkpoint() -> None:
        st = {"model": {k: v.detach().cpu().clone() for k, v in prior.state_dict().items()},
              "optimizer": opt.state_dict(), "step": step, "best_val": best, "vae_weights_sha256": vae_sha}
        save_trainer_state(out / STATE_FILE, st)
        save_prior_file(out / LAST_FILE, prior, {**meta, "step": step})

    def validate() -> float:
        nonlocal best
        v = validation_nll(prior, val_post, cfg.seed)
        log.write({"step": step, "val_nll": v})
        if v < best:
            best = v
            save_prior_file(out / PRIOR_FILE, prior, {**meta, "step": step, "val_nll": v})
        return v

    horizon = cfg.max_steps
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train-prior", unit="step", disable=not progress,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    last_val = -1
    if step == 0:
        v0 = validate()
        bar.set_postfix_str(f"val nll {v0:.2f}")
        last_val = 0
    interrupted = by_time = False
    with _graceful_stop() as flag:
        while step < cfg.max_steps:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            z, mask, cond = draw_batch(train_post, cfg.batch_size, cfg.crop, gen)
            z, mask = z.to(dev), mask.to(dev)
            cond = cond.to(dev) if n_cond else None
            lr = _lr(step, cfg, horizon)
            for g in opt.param_groups:
                g["lr"] = lr
            t_step = time.perf_counter()
            lp = prior.frame_log_probs(z, cond)
            loss = -(lp * mask[:, 0]).sum() / mask.sum()
            if not torch.isfinite(loss):
                raise TrainingError(f"the prior's loss became {loss.item()} at step {step + 1}; the last checkpoint "
                                    f"in {out} is intact (try a lower lr)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(prior.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            log.write({"step": step, "nll": float(loss.detach()), "lr": lr, "seconds": time.perf_counter() - t_step})
            bar.update(1)
            bar.set_postfix_str(f"nll {float(loss.detach()):.2f}/frame best val {best:.2f}", refresh=False)
            if adapt is not None:
                adapt.tick()
            used = (time.perf_counter() - t0) / (60 * cfg.max_minutes) if cfg.max_minutes else 0.0
            if 0 < used < 1:  # the cosine schedule spans whichever limit comes first
                horizon = min(cfg.max_steps, max(step + 1, int(step / used)))
            by_time = used >= 1
            interrupted = flag["stop"]
            if step % cfg.val_every == 0:
                validate()
                last_val = step
            if step % cfg.checkpoint_every == 0:
                checkpoint()
            if by_time or interrupted:
                break
        if last_val != step:
            validate()
        checkpoint()
    bar.close()
    log.close()
    summary = {"step": step, "best_val_nll_per_frame": best, "interrupted": interrupted, "time_limit": by_time,
               "out_dir": os.path.abspath(out)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def prior_train_fields() -> list[str]:
    return [f.name for f in fields(PriorTrainConfig)]
