"""The trainer: AdamW, KL warm-up, free bits, validation, checkpoints, exact resume, DDP.

Determinism is by construction: the batches come from :class:`SeededBatchSampler`
(order and per-item randomness from ``(seed, epoch, position)``), and the
reparameterisation noise of step ``s`` from a generator seeded with
``(seed, s)``. So a run resumed from its last checkpoint replays exactly what an
uninterrupted run does, whatever the number of DataLoader workers, and two
processes under DDP see together exactly the global batch one process would
(free bits included: the per-unit KL is reduced over ranks before the clamp).

However a run ends (``max_steps``, ``max_minutes``, early stopping, Ctrl-C or
SIGTERM), it validates at its last step and writes a checkpoint, so ``best/``
is never older than the last validation.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from audiovae import threads as cpu_threads
from audiovae.audio.normalize import Normalizer
from audiovae.config import from_dict, load_yaml, nested_error, save_yaml, to_dict
from audiovae.data.datasets import SeededBatchSampler
from audiovae.data.source import DataSource, open_data
from audiovae.errors import CheckpointError, ConfigError, TrainingError
from audiovae.folders import output_folder
from audiovae.models.registry import build_model, make_config
from audiovae.training.checkpoint import load_model_dir, load_trainer_state, save_model_dir, save_trainer_state
from audiovae.training.config import TrainConfig, default_train_config
from audiovae.training.logging import TensorBoardLogger
from audiovae.training.schedules import kl_weight, learning_rate
from audiovae.utils import atomic_write_text, flatten_dict, local_rank, pick_device, world_size
from audiovae.utils import rank as dist_rank

TRAIN_COLUMNS = ["step", "epoch", "loss", "elbo", "elbo_per_dim", "recon", "kl", "beta", "lr", "grad_norm",
                 "data_s", "step_s", "items_per_s"]
VAL_COLUMNS = ["step", "epoch", "val_elbo", "val_elbo_per_dim", "val_recon", "val_kl", "active_units"]
# settings that may differ when a run is resumed: how long it goes on and how it runs. (A run moved to another
# device is not bit-exact from there on: CPU and CUDA generators draw different noise from the same seed.)
RESUMABLE_CHANGES = ("max_steps", "max_minutes", "max_epochs", "early_stop_patience", "device", "num_workers",
                     "log_every", "threads")


def _dist_info() -> tuple[int, int]:
    return dist_rank(), world_size()


def _device(cfg: TrainConfig, rank: int) -> torch.device:
    # one process per GPU: LOCAL_RANK (else RANK) picks it (cfg.device was checked by TrainConfig)
    return pick_device(cfg.device, local_rank=local_rank())


def amp_setup(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, "torch.amp.GradScaler | None"]:
    """Autocast dtype and gradient scaler for ``cfg.amp``.

    bfloat16 where the device supports it (CPU, recent GPUs): same exponent range
    as float32, so no scaler. float16 (``amp_dtype=float16``, or a GPU without
    bfloat16) underflows small gradients, so it comes with a :class:`torch.amp.GradScaler`.
    """
    if not cfg.amp:
        return None, None
    want = cfg.amp_dtype
    if want == "auto":
        bf16_ok = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False))
        want = "bfloat16" if bf16_ok else "float16"
    if want == "bfloat16":
        return torch.bfloat16, None
    if want == "float16":
        return torch.float16, torch.amp.GradScaler(device.type)
    raise ConfigError(f"amp_dtype must be auto, bfloat16 or float16, got {cfg.amp_dtype!r}")


def resolve_config(cfg: TrainConfig, data: DataSource) -> TrainConfig:
    """Fill the model config with its defaults and with what the data fixes (n_mels, image size)."""
    fields = dict(cfg.model_config)
    for k, v in data.model_fields(cfg.model, cfg.context).items():
        if k in fields and fields[k] != v:
            raise ConfigError(f"model_config.{k}={fields[k]} does not fit the data ({k}={v})")
        fields[k] = v
    try:
        model_cfg = make_config(cfg.model, fields)
    except ConfigError as exc:  # a model config that only the data's n_mels or image size makes too big
        raise ConfigError(nested_error(exc, "model_config").problem, exc.path or data.path) from None
    return from_dict(TrainConfig, {**to_dict(cfg), "model_config": to_dict(model_cfg)})


def check_resume_config(saved: TrainConfig, given: dict, source: str | os.PathLike) -> TrainConfig:
    """The saved configuration with ``given`` (explicitly set fields, dotted keys) applied.

    A field that differs from the saved run is refused, naming it and both
    values, unless it only says how long the run goes on (``RESUMABLE_CHANGES``).
    """
    flat_saved = flatten_dict(to_dict(saved))
    data = to_dict(saved)
    for key, value in given.items():
        if key not in flat_saved and not key.startswith("model_config."):
            raise ConfigError(f"unknown configuration key {key!r}")
        if key in RESUMABLE_CHANGES:
            data[key] = value
            continue
        if flat_saved.get(key) != value:
            raise ConfigError(f"cannot resume with {key}={value!r}: the run was started with {key}="
                              f"{flat_saved.get(key)!r} (resume with the same settings, or start a new run)", source)
    return from_dict(TrainConfig, data, str(source))


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
    """Noise of step ``step`` for this rank's slice of the global batch, drawn on the device that asks
    (a CUDA generator on a GPU: no host-side draw and copy per step; the CPU's numbers on the CPU)."""

    def make(shape: torch.Size, device: torch.device | str = "cpu") -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed((seed * 7_368_787 + step * 1_000_003 + 17) % (2**63))
        full = torch.randn((shape[0] * world, *shape[1:]), generator=g, device=device)
        return full[rank * shape[0] : (rank + 1) * shape[0]]

    return make


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t)
    return t


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
        out = model.elbo(batch.x, lengths=batch.lengths, eps=_noise(seed + 99991, i, 0, 1))
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


@contextmanager
def _graceful_stop() -> Iterator[dict]:
    """The first Ctrl-C / SIGTERM asks the loop to stop after the current step (validate, checkpoint);
    a second Ctrl-C interrupts at once."""
    flag = {"stop": False}
    if not _in_main_thread():  # signal handlers can only be set from the main thread
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class Trainer:
    """One training run. :func:`train` builds it and calls :meth:`fit`; read top to bottom."""

    def __init__(self, data: DataSource, data_path: str | os.PathLike, out: Path, cfg: TrainConfig,
                 state: dict | None, normalizer: Normalizer | None, progress: bool):
        self.rank, self.world = _dist_info()
        self.is_main = self.rank == 0
        self.data, self.out, self.cfg, self.normalizer = data, out, cfg, normalizer
        self.device = _device(cfg, self.rank)
        # host-side control messages (stop flags, the clock) go over gloo: NCCL takes only CUDA tensors, and
        # moving them to the GPU would add a sync per step
        self.host_group = dist.new_group(backend="gloo") if self.world > 1 else None
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, cfg.model_config).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.amp_dtype, self.scaler = amp_setup(cfg, self.device)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best, self.bad_vals, self.last_val_step = -math.inf, 0, -1
        self.lr_horizon = cfg.max_steps  # steps the cosine schedule spans (a time limit may shorten it)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.step, self.epoch = int(state["step"]), int(state["epoch"])
            self.batch_in_epoch = int(state["batch_in_epoch"])
            self.best, self.bad_vals = float(state["best_val"]), int(state["bad_validations"])
            self.last_val_step = int(state.get("last_val_step", -1))
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict({k: (v.item() if torch.is_tensor(v) else v) for k, v in state["scaler"].items()})
        self.ddp = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            # the encoder and decoder stacks, compiled in place: fewer, fused kernels, and nn.Module.compile
            # keeps the parameter names, so checkpoints are those of an eager run. The ELBO's noise (a new
            # closure each step, which would make torch.compile recompile every step) and KL stay eager.
            for part in (self.model.encoder, self.model.decoder):
                part.compile()
        # metrics stay on the device between log steps: no host sync per step on a GPU
        self.log_every = cfg.log_every or (1 if self.device.type == "cpu" else 50)
        # CPU threads: threads=N, or (0) the CPUs this process may use, shared by the local torchrun processes,
        # and 1 or all of them, whichever is faster, re-checked on the steps themselves (audiovae/threads.py)
        n_threads, adaptive = cpu_threads.apply(cfg.threads, share=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
                                                adaptive_probe=False)
        self.adaptive_threads = (cpu_threads.AdaptiveThreads(n_threads) if adaptive and self.device.type == "cpu"
                                 else None)
        self.window = _LogWindow(self.device, log_jacobian(normalizer, 1.0), self.world, check_grad=self.scaler is None)
        self.train_set, self.collate = data.dataset("train", cfg.model, normalizer, context=cfg.context,
                                                    segment=cfg.segment_frames, train=True)
        val_set, val_collate = data.dataset("val", cfg.model, normalizer, context=cfg.context, segment=cfg.segment_frames)
        self.val_loader = DataLoader(val_set, collate_fn=val_collate, num_workers=0, batch_sampler=SeededBatchSampler(
            len(val_set), cfg.batch_size, cfg.seed, 0, shuffle=False, drop_last=False))
        # absolute: the run names the same data from any working directory (report reads it back)
        self.extra = {"train": to_dict(cfg), "data": os.path.abspath(data_path)}
        resumed = state is not None
        if self.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_yaml(out / "train.yaml", to_dict(cfg))
            self.train_log = _CSV(out / "metrics.csv", TRAIN_COLUMNS, self.step if resumed else None)
            self.val_log = _CSV(out / "validation.csv", VAL_COLUMNS, self.step if resumed else None)
            self.tb = TensorBoardLogger.open(out / "tb", data, normalizer, cfg.context, self.step if resumed else None)
        self.bar = _Progress(cfg, self.step, f"train {cfg.model}", progress and self.is_main)

    # --- checkpoints and validation -------------------------------------------------------------
    def checkpoint(self) -> None:
        if not self.is_main:
            return
        state = {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "best_val": self.best, "bad_validations": self.bad_vals, "last_val_step": self.last_val_step,
        }
        if self.scaler is not None:
            state["scaler"] = {k: (torch.tensor(v) if isinstance(v, (int, float)) else v)
                               for k, v in self.scaler.state_dict().items()}
        save_trainer_state(self.out / "trainer_state.pt", state)
        self._save_model(self.out, {"step": self.step})

    def _save_model(self, where: Path, extra: dict) -> None:
        save_model_dir(where, self.model, self.cfg.model, self.cfg.model_config, self.normalizer, self.data.mel,
                       {**self.extra, **extra})

    def validate(self) -> bool:
        """Validate, keep the best model; return True when early stopping says stop."""
        self.last_val_step = self.step
        stop = torch.zeros(1)
        if self.is_main:
            v = validate(self.model, self.val_loader, self.device, self.cfg.seed, self.cfg.val_batches, self.normalizer)
            self.val_log.write({"step": self.step, "epoch": self.epoch, **v})
            if self.tb:
                self.tb.scalars("val", v, self.step)
                self.tb.validation_media(self.model, self.step)
            if v["val_elbo"] > self.best:
                self.best, self.bad_vals = v["val_elbo"], 0
                self._save_model(self.out / "best", {"step": self.step, "val": v})
            else:
                self.bad_vals += 1
            if self.cfg.early_stop_patience and self.bad_vals >= self.cfg.early_stop_patience:
                stop[0] = 1
            self.bar.note(f"val elbo {v['val_elbo']:.1f} au {v['active_units']}")
        if self.world > 1:
            dist.broadcast(stop, 0, group=self.host_group)
        return bool(stop[0])

    # --- one optimiser step -------------------------------------------------------------------
    def train_step(self, batch) -> dict:
        cfg = self.cfg
        batch = batch.to(self.device)
        beta = kl_weight(self.step, cfg.beta, cfg.kl_warmup, cfg.kl_warmup_steps, cfg.kl_cycle_ramp)
        lr = learning_rate(self.step, cfg.lr, cfg.lr_schedule, cfg.lr_warmup_steps, self.lr_horizon)
        for group in self.opt.param_groups:
            group["lr"] = lr
        amp = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        with amp:
            res = self.ddp(batch.x, beta, cfg.free_bits, batch.lengths, _noise(cfg.seed, self.step, self.rank, self.world),
                           reduce=_all_reduce_sum if self.world > 1 else None)
        loss = res.loss.float()
        # one process, logging every step: stop before the update. Otherwise non-finite values are found at the
        # next log step without a sync now, and under DDP every rank learns of them there, so all stop together
        checked = self.log_every == 1 and self.world == 1
        if checked and not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {self.step + 1}; stopped before the update, the last "
                                f"checkpoint in {self.out} is intact (try a lower lr or grad_clip)")
        self.opt.zero_grad(set_to_none=True)
        clip = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        if self.scaler is not None:
            # float16: scaled backward; an inf/NaN gradient skips this update and lowers the scale
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            if checked and not torch.isfinite(gnorm):
                raise TrainingError(f"gradient became {float(gnorm)} at step {self.step + 1}; stopped before the "
                                    f"update, the last checkpoint in {self.out} is intact")
            self.opt.step()
        return {"res": res, "loss": loss, "gnorm": gnorm, "beta": beta, "lr": lr}

    def log_step(self, s: dict, t_begin: float, t_data: float) -> None:
        """Add the step to the log window; every ``log_every`` steps (and before a checkpoint, validation or
        the end) :meth:`flush_log` writes the window's means: the only host sync of the loop."""
        self.window.add(self.step, s, t_begin, t_data)
        if self.step % self.log_every == 0:
            self.flush_log()

    def flush_log(self) -> None:
        if self.window.steps == 0:
            return
        row, bad_step = self.window.take()
        if bad_step >= 0:  # found late (log_every > 1): the weights are spoilt, the last checkpoint is not
            raise TrainingError(f"loss or gradient became non-finite at step {bad_step} (found at step {self.step}, "
                                f"log_every={self.log_every}); the last checkpoint in {self.out} is intact (try a "
                                "lower lr or grad_clip)")
        if not self.is_main:
            return
        row.update(step=self.step, epoch=self.epoch)
        self.train_log.write(row)
        if self.tb:
            self.tb.scalars("train", {k: row[k] for k in ("loss", "elbo", "kl", "beta", "lr")}, self.step)
        self.bar.update(self.step, f"loss {row['loss']:.1f} kl {row['kl']:.1f}")

    def _should_stop(self, flag: dict, t_start: float) -> bool:
        """Ctrl-C/SIGTERM or the time limit. Rank 0's clock decides, so every rank stops after the same step
        and uses the same learning rate: with a time limit, the cosine schedule spans whichever limit comes
        first, the steps or the steps the time allows at the pace so far."""
        used = (time.perf_counter() - t_start) / (60 * self.cfg.max_minutes) if self.cfg.max_minutes else 0.0
        msg = torch.tensor([1.0 if flag["stop"] else 0.0, used], dtype=torch.float64) if self.is_main else torch.zeros(
            2, dtype=torch.float64)
        if self.world > 1:
            dist.broadcast(msg, 0, group=self.host_group)
        stop, used = bool(msg[0]), float(msg[1])
        if 0 < used < 1:
            self.lr_horizon = min(self.cfg.max_steps, max(self.step + 1, int(self.step / used)))
        return stop or used >= 1

    # --- the loop -------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg
        self.model.train()
        if self.step == 0:
            self.validate()  # the untrained model's figures: the baseline every curve starts from
        stopped_early = interrupted = False
        t_start = time.perf_counter()
        with _graceful_stop() as flag:
            while self.step < cfg.max_steps and self.epoch < cfg.max_epochs and not (stopped_early or interrupted):
                sampler = SeededBatchSampler(len(self.train_set), cfg.batch_size, cfg.seed, self.epoch,
                                             self.batch_in_epoch, self.rank, self.world)
                if sampler.num_batches() == 0:
                    raise ConfigError(f"batch_size {cfg.batch_size} x {self.world} process(es) is larger than the "
                                      f"training set ({len(self.train_set)} items)")
                loader = DataLoader(self.train_set, batch_sampler=sampler, collate_fn=self.collate,
                                    num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
                                    worker_init_fn=cpu_threads.worker_init_fn if cfg.num_workers else None)
                t_wait = time.perf_counter()
                for batch in loader:
                    t_data = time.perf_counter() - t_wait
                    s = self.train_step(batch)
                    self.step += 1
                    self.batch_in_epoch += 1
                    self.log_step(s, t_wait, t_data)
                    if self.adaptive_threads is not None:
                        self.adaptive_threads.tick()
                    interrupted = self._should_stop(flag, t_start)
                    if cfg.val_every and self.step % cfg.val_every == 0:
                        self.flush_log()
                        stopped_early = self.validate()
                    if self.step % cfg.checkpoint_every == 0:
                        self.flush_log()  # rows up to a checkpoint are the same whether or not the run is resumed
                        self.checkpoint()
                    if self.step >= cfg.max_steps or stopped_early or interrupted:
                        break
                    t_wait = time.perf_counter()
                else:  # the epoch ran to its end
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if not cfg.val_every:
                        self.flush_log()
                        stopped_early = self.validate()
            self.flush_log()
            if self.last_val_step != self.step:
                self.validate()  # whatever ended the run, best/ reflects its last weights too
            self.checkpoint()
        self.bar.close()
        by_time = interrupted and not flag["stop"]
        summary = {"step": self.step, "epoch": self.epoch, "best_val_elbo": self.best, "stopped_early": stopped_early,
                   "interrupted": interrupted and flag["stop"], "time_limit": by_time, "out_dir": os.path.abspath(self.out)}
        if self.is_main:
            self.train_log.close()
            self.val_log.close()
            if self.tb:
                self.tb.close()
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2))
        if self.world > 1:
            dist.barrier(group=self.host_group)
        return summary


class _LogWindow:
    """Sums of the logged quantities over the steps since the last metrics.csv row, kept on the device.

    Nothing here reads a value back from the device until :meth:`take`, whose ``.tolist()`` is the
    loop's one host sync; so the wall time from the window's first step to that sync is the true time of
    its steps on a GPU too (host-side step times there only measure kernel launches)."""

    KEYS = ("loss", "elbo", "elbo_sum", "n_dims", "recon", "kl", "grad_norm", "finite_grads")

    def __init__(self, device: torch.device, jac_per_dim: float, world: int = 1, check_grad: bool = True):
        # check_grad=False with a GradScaler: an inf gradient there only skips the update and lowers the scale
        self.device, self.jac_per_dim, self.world, self.check_grad = device, float(jac_per_dim), world, check_grad
        self.sums = torch.zeros(len(self.KEYS), dtype=torch.float64, device=device)
        self.bad = torch.full((), -1, dtype=torch.int64, device=device)  # first step with a non-finite loss/gradient
        self.steps, self.items, self.t_data, self.t0, self.last = 0, 0, 0.0, 0.0, {}

    def add(self, step: int, s: dict, t_begin: float, t_data: float) -> None:
        if self.steps == 0:
            self.t0 = t_begin
        res = s["res"]
        elbo = res.elbo.detach().double()
        dims = res.n_dims.double()
        jac = self.jac_per_dim * dims  # densities of log-mel features, not of normalised ones
        gnorm = s["gnorm"].detach().double()
        finite_g = torch.isfinite(gnorm)
        # a step skipped by the GradScaler (inf gradient) does not make the window's mean gradient norm inf
        vals = torch.stack([s["loss"].detach().double(), (elbo + jac).mean(), (elbo + jac).sum(), dims.sum(),
                            (res.recon.detach().double() + jac).mean(), res.kl.detach().double().mean(),
                            torch.where(finite_g, gnorm, 0.0), finite_g.double()])
        self.sums += vals
        finite = torch.isfinite(vals[0]) & (finite_g if self.check_grad else True)
        self.bad = torch.where((self.bad < 0) & ~finite, torch.full_like(self.bad, step), self.bad)
        self.steps += 1
        self.items += elbo.shape[0] * self.world
        self.t_data += t_data
        self.last = {"beta": s["beta"], "lr": s["lr"]}

    def take(self) -> tuple[dict, int]:
        """The window's row (means per step) and the first bad step on any rank (-1 if none); starts a new
        window. Under DDP every rank learns of a bad step on any rank, so all stop together."""
        bad = self.bad
        if self.world > 1:
            big = torch.iinfo(torch.int64).max
            bad = torch.where(bad < 0, torch.full_like(bad, big), bad)
            dist.all_reduce(bad, op=dist.ReduceOp.MIN)
            bad = torch.where(bad == big, torch.full_like(bad, -1), bad)
        sums, bad = self.sums.tolist(), int(bad)
        wall = time.perf_counter() - self.t0
        v = dict(zip(self.KEYS, sums))
        n = self.steps
        row = {"loss": v["loss"] / n, "elbo": v["elbo"] / n, "elbo_per_dim": v["elbo_sum"] / max(1.0, v["n_dims"]),
               "recon": v["recon"] / n, "kl": v["kl"] / n,
               "grad_norm": v["grad_norm"] / v["finite_grads"] if v["finite_grads"] else math.inf, **self.last,
               "data_s": self.t_data / n, "step_s": (wall - self.t_data) / n, "items_per_s": self.items / max(1e-9, wall)}
        self.sums.zero_()
        self.bad.fill_(-1)
        self.steps, self.items, self.t_data = 0, 0, 0.0
        return row, bad


class _Progress:
    """A progress bar over whichever limit binds: steps, or the time limit when it comes first."""

    def __init__(self, cfg: TrainConfig, step: int, desc: str, enabled: bool):
        self.cfg, self.start_step, self.desc = cfg, step, desc
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=cfg.max_steps, initial=step, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True)
        self.extra = ""

    def update(self, step: int, text: str) -> None:
        if self.cfg.max_minutes and step > self.start_step:
            elapsed = time.perf_counter() - self.t0
            per_step = elapsed / (step - self.start_step)
            fits = step + max(0.0, 60 * self.cfg.max_minutes - elapsed) / per_step
            if fits < self.cfg.max_steps:  # the clock binds: count towards the steps that fit in time
                self.bar.total = max(step, int(fits))
                self.bar.set_description_str(f"{self.desc} ({self.cfg.max_minutes:g} min limit)", refresh=False)
            else:
                self.bar.total = self.cfg.max_steps
                self.bar.set_description_str(self.desc, refresh=False)
        self.bar.n = step
        self.bar.set_postfix_str(f"{text} {self.extra}".strip(), refresh=False)
        self.bar.refresh() if self.bar.n == self.bar.total else self.bar.update(0)

    def note(self, text: str) -> None:
        self.extra = text
        self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        self.bar.close()


def train(
    data_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
    given: dict | None = None,
) -> dict:
    """Train ``cfg.model`` on ``data_path``; write the run into ``out_dir``; return a summary.

    ``out_dir`` becomes a model directory (the latest weights), with ``best/``
    (best validation ELBO), ``metrics.csv``, ``validation.csv``, ``train.yaml``
    and ``trainer_state.pt``.

    ``resume=True`` continues from ``trainer_state.pt`` with the saved
    configuration. ``given`` (dotted keys -> values, what the user set
    explicitly) must agree with it, except for how long the run goes on
    (``max_steps``, ``max_minutes``...). A resumed run that keeps its
    ``max_steps`` ends bit for bit as the uninterrupted run would. Raising
    ``max_steps`` on resume continues training, but it is not the run that
    would have been trained with the larger ``max_steps`` from the start: the
    cosine learning-rate schedule is a function of ``max_steps``, so the steps
    after the change follow the new schedule while the earlier ones followed
    the old. The data must be the same: a feature cache whose configuration or
    statistics differ from the run's is refused.
    """
    out = Path(out_dir)
    rank, world = _dist_info()
    # rank 0 writes the run folder and holds its lock (refusing a cache, a model directory... and a second run)
    with output_folder(out, "run", clean=("", "best")) if rank == 0 else nullcontext():
        return _train(data_path, out, cfg, resume, progress, max_steps, given, rank, world)


def _train(data_path: str | os.PathLike, out: Path, cfg: TrainConfig | None, resume: bool, progress: bool,
           max_steps: int | None, given: dict | None, rank: int, world: int) -> dict:
    state = None
    if cfg is not None and not resume:
        cfg.validate()  # again: a TrainConfig's fields may have been changed since it was made
    if resume:
        if not (out / "train.yaml").exists():
            raise CheckpointError("nothing to resume (no train.yaml)", out)
        saved = from_dict(TrainConfig, load_yaml(out / "train.yaml"), str(out / "train.yaml"))
        cfg = check_resume_config(saved, dict(given or {}), out / "train.yaml")
        state = load_trainer_state(out / "trainer_state.pt")
    else:
        cfg = cfg or default_train_config()
        if (out / "trainer_state.pt").exists():
            raise CheckpointError("already holds a training run; use --resume to continue it, or another folder", out)
    if max_steps is not None:
        cfg = from_dict(TrainConfig, {**to_dict(cfg), "max_steps": max_steps})
    cpu_threads.resolve(cfg.threads)  # a bad setting fails before anything is written
    if world > 1 and not dist.is_initialized():
        nccl = torch.cuda.is_available() and cfg.device != "cpu"
        if nccl:
            torch.cuda.set_device(_device(cfg, rank))  # NCCL, pinning threads and barriers use the current device
        dist.init_process_group(backend="nccl" if nccl else "gloo")
    data = open_data(data_path)
    cfg = resolve_config(cfg, data)
    normalizer = data.stats
    if resume:
        normalizer = _check_resume_data(out, data)
    before = torch.get_num_threads()
    try:
        return Trainer(data, data_path, out, cfg, state, normalizer, progress).fit()
    finally:  # the thread policy may have changed it for the run (audiovae/threads.py)
        torch.set_num_threads(before)


def _check_resume_data(out: Path, data: DataSource) -> Normalizer | None:
    """The run's saved normaliser; refuses data whose feature configuration or statistics differ."""
    loaded = load_model_dir(out)
    if data.mel is not None and loaded.mel is not None and data.mel != loaded.mel:
        raise ConfigError("this data was made with another feature configuration than the run being resumed", data.path)
    if loaded.normalizer is None:
        return None
    if data.stats is not None and not (torch.equal(loaded.normalizer.mean, data.stats.mean)
                                       and torch.equal(loaded.normalizer.std, data.stats.std)):
        raise ConfigError(f"the normalisation statistics of this data differ from those of the run in {out} (another "
                          "cache, or a re-extracted one); resume on the data the run started on", data.path)
    return loaded.normalizer
