"""How a training run runs: processes and devices (DDP), mixed precision, the noise of each step,
Ctrl-C/SIGTERM, and the policy for resuming a run.

Kept apart from the loop in ``trainer.py``, which reads top to bottom; nothing here decides what a
step computes, only where and under which guarantees it runs.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from audiovae.audio.normalize import Normalizer
from audiovae.config import from_dict, to_dict
from audiovae.data.source import DataSource
from audiovae.errors import ConfigError
from audiovae.training.checkpoint import load_model_dir
from audiovae.training.config import TrainConfig
from audiovae.utils import flatten_dict, local_rank, pick_device, world_size
from audiovae.utils import rank as dist_rank

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


def init_distributed(cfg: TrainConfig, rank: int, world: int) -> None:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs); nothing for one process."""
    if world > 1 and not dist.is_initialized():
        nccl = torch.cuda.is_available() and cfg.device != "cpu"
        if nccl:
            torch.cuda.set_device(_device(cfg, rank))  # NCCL, pinning threads and barriers use the current device
        dist.init_process_group(backend="nccl" if nccl else "gloo")


def host_group(world: int):
    """A gloo group for host-side control messages (stop flags, the clock): NCCL takes only CUDA tensors,
    and moving them to the GPU would add a sync per step. None for one process."""
    return dist.new_group(backend="gloo") if world > 1 else None


def noise(seed: int, step: int, rank: int, world: int) -> Callable:
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


def check_resume_config(saved: TrainConfig, given: dict, source: str | os.PathLike,
                        resumable: tuple[str, ...] = RESUMABLE_CHANGES) -> TrainConfig:
    """The saved configuration with ``given`` (explicitly set fields, dotted keys) applied.

    A field that differs from the saved run is refused, naming it and both
    values, unless it only says how long the run goes on (``resumable``, default
    ``RESUMABLE_CHANGES``). ``saved`` may be any configuration dataclass (train-prior's too).
    """
    flat_saved = flatten_dict(to_dict(saved))
    data = to_dict(saved)
    for key, value in given.items():
        if key not in flat_saved and not key.startswith("model_config."):
            raise ConfigError(f"unknown configuration key {key!r}")
        if key in resumable:
            data[key] = value
            continue
        if flat_saved.get(key) != value:
            raise ConfigError(f"cannot resume with {key}={value!r}: the run was started with {key}="
                              f"{flat_saved.get(key)!r} (resume with the same settings, or start a new run)", source)
    return from_dict(type(saved), data, str(source))


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

