"""Trainer, KL/learning-rate schedules and checkpoints."""

from audiovae.training.config import TrainConfig, resolve_train_config
from audiovae.training.trainer import train

__all__ = ["TrainConfig", "resolve_train_config", "train"]
