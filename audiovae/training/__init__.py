"""Trainer, KL/learning-rate schedules and checkpoints."""

from audiovae.training.config import TrainConfig
from audiovae.training.trainer import train

__all__ = ["TrainConfig", "train"]
