"""Training configuration: one dataclass, saved with every run, overridable with key=value."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    model: str = "conv"  # a registered model: dense, conv, mnist, cifar
    model_config: dict = field(default_factory=dict)  # fields of the model's config dataclass
    batch_size: int = 32  # per process
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"  # constant | cosine (to 10% of lr at max_steps)
    lr_warmup_steps: int = 100
    max_steps: int = 2000
    max_epochs: int = 10000
    max_minutes: float = 0.0  # stop after this much wall time (0 = off); a time limit is not replayable on resume
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    beta: float = 1.0  # KL weight after warm-up
    kl_warmup: str = "linear"  # none | linear | cyclical
    kl_warmup_steps: int = 500  # linear: steps to reach beta; cyclical: steps per cycle
    kl_cycle_ramp: float = 0.5  # cyclical: fraction of each cycle spent ramping up (Fu et al. 2019)
    free_bits: float = 0.0  # nats per latent variable (0 = off)
    seed: int = 0
    amp: bool = False  # mixed precision (autocast)
    amp_dtype: str = "auto"  # auto (bfloat16 where supported, else float16) | bfloat16 | float16 (with a GradScaler)
    num_workers: int = 0  # DataLoader workers
    threads: int = 0  # CPU threads of the training process; 0 = auto (audiovae/threads.py)
    segment_frames: int = 128  # conv: training crop length in frames
    context: int = 0  # dense: frames of context on each side
    val_every: int = 0  # validate every N steps; 0 = at the end of each epoch
    val_batches: int = 50  # at most this many validation batches
    checkpoint_every: int = 200  # steps between resumable checkpoints
    early_stop_patience: int = 0  # validations without improvement before stopping; 0 = off
    device: str = "auto"  # auto | cpu | cuda
    log_every: int = 0  # metrics.csv row every N steps (the mean over them); 0 = auto: 1 on the CPU, 50 on a GPU
    compile: bool = False  # torch.compile the model (a GPU's step is bound by kernel launches; resume stays exact)


def default_train_config(model: str = "conv", **fields) -> TrainConfig:
    """TrainConfig for ``model``: the generic defaults above, then the model's registered training
    defaults (e.g. the conv VAE's batch size, crop length and lr), then ``fields``."""
    from audiovae.config import from_dict, to_dict
    from audiovae.models.registry import train_defaults

    return from_dict(TrainConfig, {**to_dict(TrainConfig()), "model": model, **train_defaults(model), **fields})
