"""What the trainer trains on: a feature cache or an image folder, recognised by its files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from audiovae.audio.config import MelConfig
from audiovae.audio.normalize import Normalizer
from audiovae.data.datasets import FrameDataset, ImageDataset, SequenceDataset, pad_collate
from audiovae.data.features import FeatureCache
from audiovae.data.images import detect_image_folder, load_image_folder
from audiovae.errors import ConfigError, DataError

MODEL_DATA = {"dense": "features", "conv": "features", "mnist": "mnist", "cifar": "cifar"}


@dataclass
class Batch:
    x: torch.Tensor
    lengths: torch.Tensor | None = None

    def to(self, device) -> "Batch":
        return Batch(self.x.to(device, non_blocking=True), None if self.lengths is None else self.lengths.to(device))


@dataclass
class TrainData:
    kind: str  # features | mnist | cifar
    train: Dataset
    val: Dataset
    collate: Callable
    normalizer: Normalizer | None
    mel: MelConfig | None
    model_fields: dict  # fields the data fixes in the model config (n_mels, image size...)
    seconds_per_frame: float | None  # for "seconds of audio per second"


def data_kind(path: str | Path) -> str:
    path = Path(path)
    if (path / "feats.f32").exists() and (path / "index.json").exists():
        return "features"
    kind = detect_image_folder(path)
    if kind:
        return kind
    raise DataError("not a feature cache (run `audiovae extract`) nor an image folder (MNIST IDX / CIFAR-10 batches)", path)


def _collate_tensor(items) -> Batch:
    return Batch(items if isinstance(items, torch.Tensor) else torch.stack(items))


def _collate_seq(items) -> Batch:
    x, lengths = pad_collate(items)
    return Batch(x, lengths)


def load_train_data(path: str | Path, model: str, context: int = 0, segment_frames: int = 128,
                    val_images: int = 5000) -> TrainData:
    """Datasets for ``model`` from ``path``; raises :class:`ConfigError` when they do not fit."""
    kind = data_kind(path)
    want = MODEL_DATA.get(model)
    if want is None:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODEL_DATA)}")
    if kind != want:
        raise ConfigError(f"model {model!r} trains on {want} data, but {path} holds {kind} data")
    if kind == "features":
        cache = FeatureCache(path)
        mel = cache.mel_config
        norm = Normalizer(cache.mean, cache.std)
        spf = mel.hop_length / mel.sample_rate
        if model == "dense":
            return TrainData(kind, FrameDataset(cache, "train", context), FrameDataset(cache, "val", context),
                             _collate_tensor, norm, mel, {"n_mels": mel.n_mels, "context": context}, spf)
        return TrainData(kind, SequenceDataset(cache, "train", segment_frames), SequenceDataset(cache, "val", segment_frames),
                         _collate_seq, norm, mel, {"n_mels": mel.n_mels}, spf)
    images = load_image_folder(path)
    x = images.train_x
    n_val = min(val_images, len(x) // 10)
    tr, va = x[: len(x) - n_val], x[len(x) - n_val :]
    if kind == "mnist":
        if tr.ndim != 3:
            raise DataError(f"MNIST-style images should be (N, H, W), got {tr.shape}", path)
        fields = {"image_channels": 1, "image_size": int(tr.shape[-1])}
        return TrainData(kind, ImageDataset(tr, binarize="dynamic"), ImageDataset(va, binarize="fixed"),
                         _collate_tensor, None, None, fields, None)
    fields = {"image_channels": 3, "image_size": int(tr.shape[-1])}
    return TrainData(kind, ImageDataset(tr, signed=True), ImageDataset(va, signed=True), _collate_tensor, None, None,
                     fields, None)


def test_images(path: str | Path) -> tuple[Dataset, np.ndarray]:
    """The test split of an image folder (fixed binarisation for MNIST-style) and its labels."""
    images = load_image_folder(path)
    if images.kind == "mnist":
        return ImageDataset(images.test_x, images.test_y, binarize="fixed"), images.test_y
    return ImageDataset(images.test_x, images.test_y, signed=True), images.test_y
