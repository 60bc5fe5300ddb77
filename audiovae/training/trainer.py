"""The trainer: AdamW, KL warm-up, free bits, validation, checkpoints, exact resume, DDP.

Determinism is by construction: the batches come from :class:`SeededBatchSampler`
(order and per-item randomness from ``(seed, epoch, position)``), and the
reparameterisation noise of step ``s`` from a generator seeded with
``(seed, s)``. So a run resumed from its last checkpoint replays exactly what an
uninterrupted run does, whatever the number of DataLoader workers, and two
processes under DDP see together exactly the global batch one process would.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from audiovae.config import from_dict, load_yaml, save_yaml, to_dict
from audiovae.data.datasets import SeededBatchSampler
from audiovae.errors import CheckpointError, ConfigError, TrainingError
from audiovae.models.registry import build_model, make_config
from audiovae.training.checkpoint import load_trainer_state, save_model_dir, save_trainer_state
from audiovae.training.config import TrainConfig, default_train_config
from audiovae.training.data import TrainData, load_train_data
from audiovae.training.schedules import kl_weight, learning_rate
from audiovae.utils import atomic_write_text

TRAIN_COLUMNS = ["step", "epoch", "loss", "elbo", "elbo_per_dim", "recon", "kl", "beta", "lr", "grad_norm",
                 "data_s", "step_s", "items_per_s"]
VAL_COLUMNS = ["step", "epoch", "val_elbo", "val_elbo_per_dim", "val_recon", "val_kl", "active_units"]


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def _device(cfg: TrainConfig, rank: int) -> torch.device:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", rank))
    return torch.device("cuda", local % max(1, torch.cuda.device_count()))


def resolve_config(cfg: TrainConfig, data: TrainData) -> TrainConfig:
    """Fill the model config with its defaults and with what the data fixes (n_mels, image size)."""
    fields = dict(cfg.model_config)
    for k, v in data.model_fields.items():
        if k in fields and fields[k] != v:
            raise ConfigError(f"model_config.{k}={fields[k]} does not fit the data ({k}={v})")
        fields[k] = v
    model_cfg = make_config(cfg.model, fields)
    return from_dict(TrainConfig, {**to_dict(cfg), "model_config": to_dict(model_cfg)})


class _CSV:
    """Append-only CSV log that survives resume: rows past the resumed step are dropped first."""

    def __init__(self, path: Path, columns: list[str], keep_until_step: int | None):
        self.path, self.columns = path, columns
        if keep_until_step is not None and path.exists():
            with open(path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= keep_until_step]
            lines = [",".join(columns)] + [",".join(r.get(c, "") for c in columns) for r in rows]
            atomic_write_text(path, "\n".join(lines) + "\n")
        elif not path.exists() or keep_until_step is None:
            atomic_write_text(path, ",".join(columns) + "\n")
        self.fh = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.fh, columns, extrasaction="ignore")

    def write(self, row: dict) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _noise(seed: int, step: int, rank: int, world: int) -> Callable:
    """Noise of step ``step`` for this rank's slice of the global batch."""

    def make(shape: torch.Size) -> torch.Tensor:
        g = torch.Generator().manual_seed((seed * 7_368_787 + step * 1_000_003 + 17) % (2**63))
        full = torch.randn((shape[0] * world, *shape[1:]), generator=g)
        return full[rank * shape[0] : (rank + 1) * shape[0]]

    return make


@torch.no_grad()
def validate(model, loader, device, seed: int, max_batches: int) -> dict:
    """Mean ELBO per item and per dimension, recon, KL and active units over the validation batches."""
    model.eval()
    tot = {"elbo": 0.0, "recon": 0.0, "kl": 0.0, "dims": 0.0, "n": 0}
    mus = []
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        batch = batch.to(device)
        out = model.elbo(batch.x, lengths=batch.lengths, eps=_noise(seed + 99991, i, 0, 1))
        tot["elbo"] += float(out.elbo.sum())
        tot["recon"] += float(out.recon.sum())
        tot["kl"] += float(out.kl.sum())
        tot["dims"] += float(out.n_dims.sum())
        tot["n"] += out.elbo.shape[0]
        mu = out.mu if out.mu.dim() == 2 else out.mu.transpose(1, 2).reshape(-1, out.mu.shape[1])
        mus.append(mu.float().cpu())
    model.train()
    n = max(1, tot["n"])
    return {
        "val_elbo": tot["elbo"] / n,
        "val_elbo_per_dim": tot["elbo"] / max(1.0, tot["dims"]),
        "val_recon": tot["recon"] / n,
        "val_kl": tot["kl"] / n,
        "active_units": active_units(torch.cat(mus)) if mus else 0,
    }


def active_units(mu: torch.Tensor, threshold: float = 1e-2) -> int:
    """Latent units whose posterior mean varies across data: ``Var_x(E_q[z_u]) > threshold`` (Burda et al.)."""
    if mu.shape[0] < 2:
        return 0
    return int((mu.var(dim=0) > threshold).sum())


def train(
    data_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
) -> dict:
    """Train ``cfg.model`` on ``data_path``; write the run into ``out_dir``; return a summary.

    ``out_dir`` becomes a model directory (the latest weights), with ``best/``
    (best validation ELBO), ``metrics.csv``, ``validation.csv``, ``train.yaml``
    and ``trainer_state.pt``. With ``resume=True`` the run continues from
    ``trainer_state.pt`` with the saved configuration (``max_steps`` may raise
    the step limit) and ends exactly as an uninterrupted run would.
    """
    out = Path(out_dir)
    rank, world = _dist_info()
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and (cfg is None or cfg.device != "cpu") else "gloo"
        dist.init_process_group(backend=backend)
    state = None
    if resume:
        if not (out / "train.yaml").exists():
            raise CheckpointError("nothing to resume (no train.yaml)", out)
        cfg = from_dict(TrainConfig, load_yaml(out / "train.yaml"), str(out / "train.yaml"))
        state = load_trainer_state(out / "trainer_state.pt")
    else:
        cfg = cfg or default_train_config()
        if (out / "trainer_state.pt").exists():
            raise CheckpointError("already holds a training run; use --resume to continue it, or another folder", out)
    if max_steps is not None:
        cfg = from_dict(TrainConfig, {**to_dict(cfg), "max_steps": max_steps})
    data = load_train_data(data_path, cfg.model, cfg.context, cfg.segment_frames)
    cfg = resolve_config(cfg, data)
    device = _device(cfg, rank)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.model_config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, epoch, batch_in_epoch = 0, 0, 0
    best, bad_vals = -math.inf, 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, epoch, batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        best, bad_vals = float(state["best_val"]), int(state["bad_validations"])
    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    is_main = rank == 0
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(out / "train.yaml", to_dict(cfg))
    train_log = _CSV(out / "metrics.csv", TRAIN_COLUMNS, step if resume else None) if is_main else None
    val_log = _CSV(out / "validation.csv", VAL_COLUMNS, step if resume else None) if is_main else None
    tb = _tensorboard(out) if is_main else None
    val_loader = DataLoader(data.val, batch_sampler=SeededBatchSampler(len(data.val), cfg.batch_size, cfg.seed, 0,
                                                                       shuffle=False, drop_last=False),
                            collate_fn=data.collate, num_workers=0)
    amp = torch.autocast(device.type, dtype=torch.bfloat16 if device.type == "cpu" else torch.float16) if cfg.amp else nullcontext()
    extra = {"train": to_dict(cfg), "data": str(data_path)}

    def checkpoint() -> None:
        if not is_main:
            return
        save_trainer_state(out / "trainer_state.pt", {
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(),
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "best_val": best, "bad_validations": bad_vals,
        })
        save_model_dir(out, model, cfg.model, cfg.model_config, data.normalizer, data.mel, {**extra, "step": step})

    def run_validation() -> bool:
        """Validate, keep the best model; return True when early stopping says stop."""
        nonlocal best, bad_vals
        stop = torch.zeros(1)
        if is_main:
            v = validate(model, val_loader, device, cfg.seed, cfg.val_batches)
            val_log.write({"step": step, "epoch": epoch, **v})
            if tb:
                for k, val in v.items():
                    tb.add_scalar(f"val/{k}", val, step)
            if v["val_elbo"] > best:
                best, bad_vals = v["val_elbo"], 0
                save_model_dir(out / "best", model, cfg.model, cfg.model_config, data.normalizer, data.mel,
                               {**extra, "step": step, "val": v})
            else:
                bad_vals += 1
            if cfg.early_stop_patience and bad_vals >= cfg.early_stop_patience:
                stop[0] = 1
            bar.set_postfix_str(f"val elbo {v['val_elbo']:.1f} au {v['active_units']}", refresh=False)
        if world > 1:
            dist.broadcast(stop, 0)
        return bool(stop[0])

    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {cfg.model}", unit="step",
               disable=not (progress and is_main), dynamic_ncols=True)
    model.train()
    if step == 0:
        run_validation()  # the untrained model's figures: the baseline every curve starts from
    stopped_early = False
    lr_horizon = cfg.max_steps  # steps the lr schedule spans (a time limit may shorten it)
    t_start = t_last = time.perf_counter()
    while step < cfg.max_steps and epoch < cfg.max_epochs and not stopped_early:
        sampler = SeededBatchSampler(len(data.train), cfg.batch_size, cfg.seed, epoch, batch_in_epoch, rank, world)
        if sampler.num_batches() == 0:
            raise ConfigError(f"batch_size {cfg.batch_size} x {world} process(es) is larger than the training set "
                              f"({len(data.train)} items)")
        loader = DataLoader(data.train, batch_sampler=sampler, collate_fn=data.collate, num_workers=cfg.num_workers,
                            persistent_workers=False)
        t_wait = time.perf_counter()
        for batch in loader:
            t_data = time.perf_counter() - t_wait
            batch = batch.to(device)
            beta = kl_weight(step, cfg.beta, cfg.kl_warmup, cfg.kl_warmup_steps, cfg.kl_cycle_ramp)
            lr = learning_rate(step, cfg.lr, cfg.lr_schedule, cfg.lr_warmup_steps, lr_horizon)
            for group in opt.param_groups:
                group["lr"] = lr
            with amp:
                res = ddp(batch.x, beta, cfg.free_bits, batch.lengths, _noise(cfg.seed, step, rank, world))
            loss = res.loss.float()
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at step {step + 1}; stopped before the update, the last "
                                    f"checkpoint in {out} is intact (try a lower lr or grad_clip)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            if not torch.isfinite(gnorm):
                raise TrainingError(f"gradient became {float(gnorm)} at step {step + 1}; stopped before the update, "
                                    f"the last checkpoint in {out} is intact")
            opt.step()
            step += 1
            batch_in_epoch += 1
            now = time.perf_counter()
            if is_main:
                n_items = res.elbo.shape[0] * world
                row = {"step": step, "epoch": epoch, "loss": loss.item(), "elbo": float(res.elbo.detach().mean()),
                       "elbo_per_dim": float(res.elbo.detach().sum() / res.n_dims.sum()), "recon": float(res.recon.detach().mean()),
                       "kl": float(res.kl.detach().mean()), "beta": beta, "lr": lr, "grad_norm": float(gnorm),
                       "data_s": t_data, "step_s": now - t_last - t_data, "items_per_s": n_items / max(1e-9, now - t_last)}
                train_log.write(row)
                if tb:
                    for k in ("loss", "elbo", "kl", "beta", "lr"):
                        tb.add_scalar(f"train/{k}", row[k], step)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.1f}", kl=f"{row['kl']:.1f}", refresh=False)
            t_last = now
            if cfg.max_minutes:
                # rank 0's clock decides, so every rank stops after the same step and uses the same lr
                clock = torch.tensor([(now - t_start) / (60 * cfg.max_minutes) if is_main else 0.0])
                if world > 1:
                    dist.broadcast(clock, 0)
                if clock[0] >= 1:
                    cfg = from_dict(TrainConfig, {**to_dict(cfg), "max_steps": step})
                elif clock[0] > 0:
                    # the lr schedule spans whichever limit comes first: the steps, or the steps the time allows
                    lr_horizon = min(cfg.max_steps, max(step + 1, int(step / float(clock[0]))))
            if cfg.val_every and step % cfg.val_every == 0:
                stopped_early = run_validation()
            if step % cfg.checkpoint_every == 0 or step >= cfg.max_steps or stopped_early:
                checkpoint()
            if step >= cfg.max_steps or stopped_early:
                break
            t_wait = time.perf_counter()
        else:
            # the epoch ran to its end
            epoch += 1
            batch_in_epoch = 0
            if not cfg.val_every:
                stopped_early = run_validation()
            if stopped_early:
                checkpoint()
    bar.close()
    checkpoint()
    summary = {"step": step, "epoch": epoch, "best_val_elbo": best, "stopped_early": stopped_early, "out_dir": str(out)}
    if is_main:
        train_log.close()
        val_log.close()
        if tb:
            tb.close()
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    if world > 1:
        dist.barrier()
    return summary


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        return None
    return SummaryWriter(str(out / "tb"))


