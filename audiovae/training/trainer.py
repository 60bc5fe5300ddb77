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

This file is the loop, to be read top to bottom: :func:`train` (the run folder and
its lock), :func:`_train` (configuration, resume, data), then :class:`Trainer`:
setup, :meth:`~Trainer.fit` (the loop), one optimiser step, validation and
checkpoints, logging. What it measures is in ``metrics.py``, what it writes down in
``logging.py``, how and where it runs (DDP, devices, AMP, noise, signals, the resume
policy) in ``runtime.py``.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from audiovae import threads as cpu_threads
from audiovae.audio.normalize import Normalizer
from audiovae.config import from_dict, load_yaml, nested_error, save_yaml, to_dict
from audiovae.data.datasets import SeededBatchSampler
from audiovae.data.source import DataSource, open_data
from audiovae.errors import CheckpointError, ConfigError, TrainingError
from audiovae.folders import output_folder
from audiovae.models.registry import build_model, make_config
from audiovae.training.checkpoint import load_trainer_state, save_model_dir, save_trainer_state
from audiovae.training.config import TrainConfig, condition_model_fields, default_train_config
# the loop's rooms: what it logs, what it measures, how and where it runs (names kept importable from here)
from audiovae.training.logging import TRAIN_COLUMNS, VAL_COLUMNS, TensorBoardLogger, _CSV, _LogWindow, _Progress  # noqa: F401
from audiovae.training.metrics import active_units, flatten_latents, log_jacobian, validate  # noqa: F401
from audiovae.training.runtime import (RESUMABLE_CHANGES, _all_reduce_sum, _check_resume_data, _device,  # noqa: F401
                                       _dist_info, _graceful_stop, amp_setup, check_resume_config, host_group,
                                       init_distributed)
from audiovae.training.runtime import noise as _noise
from audiovae.training.schedules import kl_weight, learning_rate
from audiovae.utils import atomic_write_text


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

    ``cfg`` as the command line makes it: :func:`audiovae.training.config.resolve_train_config`
    (model defaults, a YAML file, ``KEY=VALUE`` overrides); None: the conv VAE's defaults.

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
    init_distributed(cfg, rank, world)
    data = open_data(data_path)
    cfg = resolve_config(cfg, data)  # the data fixes the model fields the configuration left open
    normalizer = data.stats
    if resume:  # the run's own normaliser, and the same data as the run started on, or a refusal
        normalizer = _check_resume_data(out, data)
    before = torch.get_num_threads()
    try:
        return Trainer(data, data_path, out, cfg, state, normalizer, progress).fit()
    finally:  # the thread policy may have changed it for the run (audiovae/threads.py)
        torch.set_num_threads(before)


def resolve_config(cfg: TrainConfig, data: DataSource) -> TrainConfig:
    """Fill the model config with its defaults and with what the data fixes (n_mels, image size)."""
    fields = dict(cfg.model_config)
    for k, v in data.model_fields(cfg.model, cfg.context).items():
        if k in fields and fields[k] != v:
            raise ConfigError(f"model_config.{k}={fields[k]} does not fit the data ({k}={v})")
        fields[k] = v
    if cfg.condition != "none" or fields.get("condition", "none") != "none":
        fields.update(condition_model_fields(cfg, data, fields))
    try:
        model_cfg = make_config(cfg.model, fields)
    except ConfigError as exc:  # a model config that only the data's n_mels or image size makes too big
        raise ConfigError(nested_error(exc, "model_config").problem, exc.path or data.path) from None
    return from_dict(TrainConfig, {**to_dict(cfg), "model_config": to_dict(model_cfg)})


class Trainer:
    """One training run. :func:`train` builds it and calls :meth:`fit`; read top to bottom."""

    def __init__(self, data: DataSource, data_path: str | os.PathLike, out: Path, cfg: TrainConfig,
                 state: dict | None, normalizer: Normalizer | None, progress: bool):
        # --- setup: where this process runs, the model and optimiser, the state a resumed run left
        self.rank, self.world = _dist_info()
        self.is_main = self.rank == 0
        self.data, self.out, self.cfg, self.normalizer = data, out, cfg, normalizer
        self.device = _device(cfg, self.rank)
        self.host_group = host_group(self.world)  # stop flags and the clock (gloo: no GPU sync per step)
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
        cond = {"condition": self.model.condition, "condition_names": self.model.condition_names}
        self.train_set, self.collate = data.dataset("train", cfg.model, normalizer, context=cfg.context,
                                                    segment=cfg.segment_frames, train=True, **cond)
        val_set, val_collate = data.dataset("val", cfg.model, normalizer, context=cfg.context, segment=cfg.segment_frames,
                                            **cond)
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
                           reduce=_all_reduce_sum if self.world > 1 else None, cond=batch.cond)
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

    # --- logging: the window's means, written every log_every steps -------------------------------
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
