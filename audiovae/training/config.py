"""Training configuration: one dataclass, saved with every run, overridable with key=value."""

from __future__ import annotations

from dataclasses import dataclass, field

from audiovae.errors import ConfigError

MAX_CONTEXT = 1000  # dense: frames of context on each side (11.6 s each side at 86 frames/s)
MAX_THREADS = 4096  # CPU threads (0 = auto)
MAX_WORKERS = 256  # DataLoader worker processes
MAX_SEED = 2**32 - 1  # the seed is mixed into 64-bit generator seeds: (seed * 1000003 + epoch) must not overflow


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

    def __post_init__(self) -> None:
        if self.model_config is None:  # `model_config:` with nothing under it in a YAML file
            self.model_config = {}
        self.validate()

    def validate(self) -> None:
        """Refuse a value out of its range with a :class:`ConfigError` naming the field, the value and the range.

        Called at construction, so a YAML file, ``key=value`` overrides and a resumed run's ``train.yaml``
        are all checked before any data is read or any model is built; the model's own fields
        (``model_config``) go through the model config's checks, its size included.
        """
        from audiovae.config import check_choice, check_float, check_int, field_error, nested_error
        from audiovae.models.registry import available, make_config

        check_choice("model", self.model, available())
        if not isinstance(self.model_config, dict):
            raise field_error("model_config", self.model_config, "a mapping of the model's fields (model_config.KEY=VALUE)")
        for name in ("batch_size", "max_steps", "max_epochs", "val_batches", "checkpoint_every"):
            check_int(name, getattr(self, name), 1)
        for name in ("lr_warmup_steps", "kl_warmup_steps", "val_every", "early_stop_patience", "log_every"):
            check_int(name, getattr(self, name), 0)
        check_int("segment_frames", self.segment_frames, 1)
        check_int("context", self.context, 0, MAX_CONTEXT)
        check_int("num_workers", self.num_workers, 0, MAX_WORKERS)
        check_int("threads", self.threads, 0, MAX_THREADS)
        check_int("seed", self.seed, 0, MAX_SEED)
        for name in ("lr", "weight_decay", "max_minutes", "grad_clip", "beta", "free_bits"):
            check_float(name, getattr(self, name), 0.0)
        check_float("kl_cycle_ramp", self.kl_cycle_ramp, 0.0, 1.0)
        check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        check_choice("kl_warmup", self.kl_warmup, ("none", "linear", "cyclical"))
        check_choice("amp_dtype", self.amp_dtype, ("auto", "bfloat16", "float16"))
        for name in ("amp", "compile"):
            check_choice(name, getattr(self, name), (False, True))
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or (isinstance(dev, str) and dev.startswith("cuda:")
                                                    and dev[5:].isdigit())):
            raise field_error("device", dev, "one of auto, cpu, cuda, cuda:N")
        # the data fixes some model fields later (n_mels, image size); the model's defaults stand in for them here
        fields = dict(self.model_config)
        if self.model == "dense":
            fields.setdefault("context", self.context)
        try:
            make_config(self.model, fields)
        except ConfigError as exc:
            raise nested_error(exc, "model_config") from None


def default_train_config(model: str = "conv", **fields) -> TrainConfig:
    """TrainConfig for ``model``: the generic defaults above, then the model's registered training
    defaults (e.g. the conv VAE's batch size, crop length and lr), then ``fields``."""
    from audiovae.config import from_dict, to_dict
    from audiovae.models.registry import train_defaults

    return from_dict(TrainConfig, {**to_dict(TrainConfig()), "model": model, **train_defaults(model), **fields})
