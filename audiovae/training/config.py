"""Training configuration: one dataclass, saved with every run, overridable with key=value."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

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
    condition: str = "none"  # none | speaker | label: a decoder conditioned on each utterance's speaker (label)

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
        check_choice("condition", self.condition, ("none", "speaker", "label"))
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


def resolve_train_config(config_file: str | os.PathLike | None = None, model: str | None = None,
                         overrides: Iterable[str] = (), given: dict | None = None) -> tuple[TrainConfig, dict]:
    """The TrainConfig a command line asks for, and the fields it sets explicitly (dotted keys -> values).

    What ``audiovae train`` does, in one call, so that ``audiovae.training.train()`` trains exactly
    what the command line would: ``audiovae train DATA -o RUN --config F --model M --set k=v --seed S`` is
    ``cfg, given = resolve_train_config(F, M, ["k=v"], {"seed": S}); train(DATA, RUN, cfg)``, and with
    ``--resume`` it is ``train(DATA, RUN, resume=True, given=given)``. Layers, later ones winning:

    1. the generic defaults and the model's registered training defaults (the model: ``model``, else a
       ``model=`` override, else the YAML's, else ``conv``);
    2. the YAML file ``config_file``;
    3. ``overrides`` (``"KEY=VALUE"``, dotted keys for model fields: ``"model_config.latent_dim=16"``),
       then ``given`` (fields set by their own options, e.g. ``{"seed": 7, "device": "cpu"}``).

    Model fields nobody set stay out of ``model_config``, so the data can still fix them (n_mels of a
    frame array, an image size): the trainer fills them in when it opens the data.
    """
    from audiovae.config import apply_overrides, from_dict, load_yaml, to_dict
    from audiovae.models.registry import make_config
    from audiovae.utils import flatten_dict

    config = os.fspath(config_file) if config_file is not None else None
    overrides = (*overrides, *(f"{k}={v}" for k, v in (given or {}).items()))
    base = load_yaml(config) if config else {}
    model_over = [o for o in overrides if o.startswith("model=")]
    if model:
        model_over.append(f"model={model}")
    name = apply_overrides(from_dict(TrainConfig, {"model": base.get("model", TrainConfig.model)}, config), model_over).model
    # the model's registered training defaults, then the YAML, then KEY=VALUE
    cfg = from_dict(TrainConfig, {**to_dict(default_train_config(name)), **base}, config)
    cfg = apply_overrides(cfg, model_over)
    # fill in the chosen model's defaults so model_config.KEY overrides have somewhere to land
    cfg = from_dict(TrainConfig, {**to_dict(cfg), "model_config": to_dict(make_config(cfg.model, cfg.model_config))})
    cfg = apply_overrides(cfg, [o for o in overrides if not o.startswith("model=")])
    flat = flatten_dict(to_dict(cfg))
    keys = set()
    if config:
        keys |= set(flatten_dict(base))
    if model or model_over:
        keys.add("model")
    keys |= {o.split("=", 1)[0].strip() for o in overrides}
    # model fields the user did not set stay open, so the data can fix them (n_mels of a frame array...)
    chosen = {k: v for k, v in cfg.model_config.items() if f"model_config.{k}" in keys}
    cfg = from_dict(TrainConfig, {**to_dict(cfg), "model_config": chosen})
    return cfg, {k: flat[k] for k in keys if k in flat}


def condition_model_fields(cfg: TrainConfig, data, fields: dict) -> dict:
    """``condition`` and ``condition_names`` of the model config: the training setting ``condition`` and the
    sorted distinct values of that key in the train split of ``data`` (a :class:`~audiovae.data.source.DataSource`);
    ``fields``: the model-config fields so far (a resumed run's must agree)."""
    from audiovae.models.registry import model_info

    key = cfg.condition
    if fields.get("condition", key) != key:
        raise ConfigError(f"model_config.condition={fields['condition']} disagrees with condition={key}; set "
                          "only condition=")
    if model_info(cfg.model).kind != "mel":
        raise ConfigError(f"condition={key}: only mel models (conv, dense) can be conditioned; {cfg.model!r} is an "
                          "image model", data.path)
    names = data.condition_names(key)
    if fields.get("condition_names") and list(fields["condition_names"]) != names:
        raise ConfigError(f"model_config.condition_names={fields['condition_names']} does not fit the data "
                          f"({key}s: {', '.join(names)})", data.path)
    return {"condition": key, "condition_names": names}
