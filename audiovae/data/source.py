"""One door for DATA: :func:`open_data` recognises what a path holds and opens it once.

Every command that takes DATA (train, evaluate, encode, probe, repair, analyze,
report) goes through here; no task works out the kind of a path on its own.

Kinds:

- ``features``: a feature cache from ``audiovae extract`` (``feats.f32`` + ``index.json``);
  splits, speakers and labels come from its index.
- ``frames``: a ``.npy`` array of log-mel frames ``(N, n_mels)`` (the article's ``data.npy``);
  the last 10 % of the rows (by default) are the validation split.
- ``manifest``: a corpus manifest from ``audiovae prepare`` (``manifest.tsv`` or its folder),
  or a lhotse CutSet / RecordingSet (``.jsonl``/``.jsonl.gz``; :mod:`audiovae.data.lhotse`):
  utterances with splits, speakers, labels and text, but no features yet — models
  train on the feature cache ``audiovae extract MANIFEST -o FEATS`` makes from it.
- ``mnist`` / ``cifar``: an image folder (MNIST-format IDX files, CIFAR-10 python batches);
  splits ``train`` / ``val`` (the last ``min(5000, N // 10)`` training images) / ``test``.

A :class:`DataSource` hands out datasets for a model (:meth:`DataSource.dataset`),
normalised with the statistics *given* to it: the data's own training statistics
when training, the model's saved ones when evaluating or generating.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from audiovae.audio.config import MelConfig
from audiovae.audio.normalize import Normalizer, RunningStats
from audiovae.data.corpora import manifest_path, read_manifest
from audiovae.data.datasets import Batch, FrameDataset, ImageDataset, SequenceDataset, collate_sequences, collate_tensors
from audiovae.data.features import FeatureCache, split_of
from audiovae.data.images import ImageSet, detect_image_folder, load_image_folder
from audiovae.data.lhotse import is_lhotse_manifest, read_lhotse
from audiovae.errors import ConfigError, DataError
from audiovae.npfile import load_npy

FEATURE_KINDS = ("features", "frames")


@dataclass
class DataSource:
    """An opened DATA path. Build one with :func:`open_data`.

    ``frames`` is ``(N, n_mels)`` (memory-mapped for caches), ``records`` the
    utterances (``id``, ``offset``, ``frames``, ``split`` and whatever the index
    holds: ``speaker``, ``label``, ``source``...). ``stats`` is the per-bin
    normaliser of the training split (features only).
    """

    path: Path
    kind: str
    mel: MelConfig | None = None
    stats: Normalizer | None = None
    frames: np.ndarray | None = None
    records: list[dict] = field(default_factory=list)
    images: ImageSet | None = None
    val_images: int = 0

    # --- what the data holds ------------------------------------------------------------------
    @property
    def is_features(self) -> bool:
        return self.kind in FEATURE_KINDS

    @property
    def seconds_per_frame(self) -> float | None:
        return None if self.mel is None else self.mel.hop_length / self.mel.sample_rate

    def splits(self) -> list[str]:
        """The splits present, in the order train, val, test."""
        if self.is_features or self.kind == "manifest":
            have = {r["split"] for r in self.records}
            return [s for s in ("train", "val", "test") if s in have]
        return ["train", "val", "test"]

    def _check_split(self, split: str) -> None:
        if split not in self.splits():
            raise DataError(f"no {split!r} split here (splits: {', '.join(self.splits())})", self.path)

    def utterances(self, split: str) -> list[dict]:
        """The records of one split (features, frames and manifests)."""
        if not (self.is_features or self.kind == "manifest"):
            raise DataError(f"{self.kind} data has no utterances", self.path)
        self._check_split(split)
        return [r for r in self.records if r["split"] == split]

    def logmel(self, rec: dict) -> np.ndarray:
        """``(n_mels, T)`` log-mel of one utterance (a copy, not normalised)."""
        return np.array(self.frames[rec["offset"] : rec["offset"] + rec["frames"]].T)

    def _image_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        im = self.images
        n_train = len(im.train_x) - self.val_images
        if split == "train":
            return im.train_x[:n_train], im.train_y[:n_train]
        if split == "val":
            return im.train_x[n_train:], im.train_y[n_train:]
        if split == "test":
            return im.test_x, im.test_y
        raise DataError(f"no {split!r} split here (splits: train, val, test)", self.path)

    def images_of(self, split: str) -> np.ndarray:
        """Raw uint8 images of a split: ``(N, H, W)`` (MNIST-style) or ``(N, 3, H, W)`` (CIFAR)."""
        return self._image_split(split)[0]

    def labels(self, split: str, key: str = "label") -> np.ndarray | None:
        """Labels of a split, one per item of :meth:`dataset` for images and per utterance for features.

        Images: the class. Features: the ``key`` field of each utterance's record
        (``label`` or ``speaker``), as an array of strings; ``None`` when no
        utterance of the split has it.
        """
        if not (self.is_features or self.kind == "manifest"):
            return self._image_split(split)[1]
        recs = self.utterances(split)
        if not any(key in r and r[key] not in (None, "") for r in recs):
            return None
        return np.array([str(r.get(key, "")) for r in recs])

    def condition_names(self, key: str, split: str = "train") -> list[str]:
        """The sorted distinct values of ``key`` (``speaker`` or ``label``) in ``split``: what a model conditioned
        on ``key`` learns. A :class:`ConfigError` when the data has no such key for every utterance."""
        if not self.is_features:
            raise ConfigError(f"condition={key} needs utterances with a {key} (a feature cache made from a manifest "
                              f"that gives one); {self.path} holds {self.kind} data", self.path)
        recs = self.utterances(split)
        missing = [r["id"] for r in recs if r.get(key) in (None, "")]
        if len(missing) == len(recs):
            raise ConfigError(f"condition={key}: the utterances here have no {key} (make the cache with `audiovae "
                              f"extract MANIFEST` from a manifest whose {key} column is filled)",
                              self.path)
        if missing:
            raise ConfigError(f"condition={key}: {len(missing)} utterance(s) of the {split} split have no {key} "
                              f"(first: {missing[0]!r})", self.path)
        return sorted({str(r[key]) for r in recs})

    def condition_indices(self, recs: list[dict], key: str, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """Each record's index into ``names`` by its ``key``; a :class:`DataError` for one the model does not know."""
        where = {n: i for i, n in enumerate(names)}
        out = np.empty(len(recs), np.int64)
        for j, r in enumerate(recs):
            v = r.get(key)
            if v in (None, "") or str(v) not in where:
                raise DataError(f"utterance {r.get('id')!r} has {key} {v!r}, which the model does not know (it knows "
                                f"{', '.join(names)})", self.path)
            out[j] = where[str(v)]
        return out

    # --- datasets for a model -----------------------------------------------------------------
    def check_model(self, model: str) -> None:
        """Raise :class:`ConfigError` when ``model`` does not train on this kind of data."""
        from audiovae.models.registry import model_info

        want = model_info(model).data  # which kind of data the model trains on, declared where it registers
        if self.kind == "manifest":
            raise ConfigError(f"{self.path} is a manifest (audio, no features yet); make a feature cache from it with "
                              f"`audiovae extract {self.path} -o FEATS` and train on FEATS")
        if self.kind not in want:
            raise ConfigError(f"model {model!r} works on {' or '.join(want)} data, but {self.path} holds {self.kind} data")

    def model_fields(self, model: str, context: int = 0) -> dict:
        """Model-config fields that the data fixes (n_mels, image size...)."""
        self.check_model(model)
        if self.is_features:
            return {"n_mels": self.mel.n_mels, **({"context": context} if model == "dense" else {})}
        x = self.images.train_x
        if self.kind == "mnist":
            if x.ndim != 3:
                raise DataError(f"MNIST-style images should be (N, H, W), got {x.shape}", self.path)
            return {"image_channels": 1, "image_size": int(x.shape[-1])}
        return {"image_channels": 3, "image_size": int(x.shape[-1])}

    def dataset(
        self,
        split: str,
        model: str,
        normalizer: Normalizer | None = None,
        *,
        context: int = 0,
        segment: int | None = None,
        train: bool = False,
        condition: str = "none",
        condition_names: list[str] | tuple[str, ...] = (),
    ) -> tuple[Dataset, Callable[[list], Batch]]:
        """A dataset of ``split`` shaped for ``model`` and its collate function.

        ``normalizer``: the statistics to normalise features with (default: this
        data's own). ``context``: frames each side for the dense model.
        ``segment``: crop length for the conv model (``None``: whole utterances).
        ``train``: images are binarised afresh per item (MNIST-style) instead of once.
        ``condition``/``condition_names``: a conditioned model's key (``speaker`` or ``label``) and the names it
        knows; the batches then carry each item's index into them (:attr:`Batch.cond`).
        """
        self.check_model(model)
        if self.is_features:
            norm = normalizer if normalizer is not None else self.stats
            if norm.mean.shape[0] != self.mel.n_mels:
                raise ConfigError(f"normalisation statistics have {norm.mean.shape[0]} bins, the data {self.mel.n_mels}",
                                  self.path)
            mean, std = norm.mean.cpu().numpy(), norm.std.cpu().numpy()
            recs = self.utterances(split)
            cond = self.condition_indices(recs, condition, condition_names) if condition != "none" else None
            if model == "dense":
                return FrameDataset(self.frames, recs, mean, std, context, self.path, cond), collate_tensors
            return SequenceDataset(self.frames, recs, mean, std, segment, self.path, cond), collate_sequences
        x, y = self._image_split(split)
        if len(x) == 0:
            raise DataError(f"the {split!r} split is empty", self.path)
        if self.kind == "mnist":
            return ImageDataset(x, y, binarize="dynamic" if train else "fixed"), collate_tensors
        return ImageDataset(x, y, signed=True), collate_tensors


def open_data(path: str | os.PathLike, val_images: int = 5000, val_fraction: float = 0.1) -> DataSource:
    """Open any DATA path once and return a :class:`DataSource` (see the module docstring).

    Raises :class:`DataError` naming the path when it is none of the known kinds.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or directory", path)
    if path.is_dir() and ((path / "feats.f32").exists() or (path / "index.json").exists()
                          or ((path / "config.yaml").exists() and (path / "parts").is_dir())):
        # a feature cache, perhaps unfinished or torn: FeatureCache says which file is missing or does not fit
        cache = FeatureCache(path)
        return DataSource(path, "features", cache.mel_config, Normalizer(cache.mean, cache.std), cache.feats, cache.index)
    if path.is_file() and path.suffix == ".npy":
        return _open_frames(path, val_fraction)
    if is_lhotse_manifest(path):  # splits as extract makes them: a hash of the id
        records = [{"id": u.id, "source": str(u.path), "split": split_of(u.id, val_fraction), "duration": u.duration,
                    "sample_rate": u.sample_rate, **({"segment": list(u.segment)} if u.segment else {}),
                    **{k: v for k, v in (("speaker", u.speaker), ("text", u.text)) if v}} for u in read_lhotse(path)]
        return DataSource(path, "manifest", records=records)
    if manifest_path(path) is not None:
        man = read_manifest(path)
        records = [{"id": u.id, "source": str(u.path), "split": u.split, "duration": u.duration,
                    "sample_rate": u.sample_rate, **{k: v for k, v in (("speaker", u.speaker), ("label", u.label),
                                                                         ("text", u.text)) if v}}
                   for u in man.utterances]
        return DataSource(path, "manifest", records=records)
    if detect_image_folder(path):
        images = load_image_folder(path)
        return DataSource(path, images.kind, images=images, val_images=min(val_images, len(images.train_x) // 10))
    raise DataError("not a feature cache (run `audiovae extract`), a manifest (`audiovae prepare`, or a lhotse "
                    "CutSet/RecordingSet .jsonl.gz), a frame array "
                    "(.npy, (N, n_mels)) nor an image folder (MNIST IDX / CIFAR-10 batches)", path)


def _open_frames(path: Path, val_fraction: float) -> DataSource:
    """A ``(N, n_mels)`` float array of log-mel frames; the last ``val_fraction`` of rows validate."""
    frames = load_npy(path, DataError, mmap=True)  # header checked against the file: nothing big is allocated
    if frames.ndim != 2 or frames.shape[0] < 2 or frames.shape[1] < 1:
        raise DataError(f"expected log-mel frames of shape (N, n_mels) with N >= 2, got {frames.shape}", path)
    if frames.shape[1] > frames.shape[0]:
        raise DataError(f"has shape {frames.shape}: fewer frames than mel bins. A frame array is (N, n_mels), one row "
                        "per frame; this looks like an (n_mels, T) log-mel: save its transpose (x.T)", path)
    if not np.issubdtype(frames.dtype, np.floating):
        raise DataError(f"expected floating-point frames, got {frames.dtype}", path)
    n, n_mels = frames.shape
    n_val = max(1, int(round(n * val_fraction)))
    # contiguous blocks: neighbouring frames of one utterance stay on one side of the split
    records = [{"id": "train", "offset": 0, "frames": n - n_val, "split": "train"},
               {"id": "val", "offset": n - n_val, "frames": n_val, "split": "val"}]
    # one pass in blocks of ~16 MB: every row is checked for NaN/inf, the training rows give the statistics
    stats = RunningStats(n_mels)
    step = max(1, (16 << 20) // (8 * n_mels))
    for start in range(0, n, step):
        block = np.asarray(frames[start : start + step], np.float64)
        if not np.isfinite(block).all():
            row = start + int(np.argmin(np.isfinite(block).all(axis=1)))
            raise DataError(f"the frames contain NaN or infinite values (first in row {row})", path)
        if start < n - n_val:
            stats.update(block[: n - n_val - start].T)
    mean, std = stats.finalize()
    # the frames carry no configuration: the default one, with their number of bins
    return DataSource(path, "frames", MelConfig(n_mels=n_mels), Normalizer(mean, std), frames, records)
