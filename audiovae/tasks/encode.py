"""`audiovae encode`: posterior means and log-variances of images, frames or utterances.

One row per item. Images give the posterior mean ``mu`` and ``logvar`` of
their latent vector. Utterances give the posterior of every latent frame
pooled over time: ``mu`` / ``logvar`` are the time-means and ``mu_std`` the
time standard deviation of the posterior means (a conv VAE's latent is a
sequence; a dense VAE's is one vector per frame). :meth:`Encoded.features` is
what a classifier reads: ``mu`` (images) or ``[mu, mu_std]`` (utterances).

Everything is encoded on the model's own terms: features normalised with the
statistics saved in the model directory, images prepared as its evaluation
sees them (:func:`audiovae.tasks.evaluate.model_dataset`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from audiovae.data.datasets import frames_with_context
from audiovae.data.source import DataSource, open_data
from audiovae.errors import ConfigError, DataError
from audiovae.api import LoadedVAE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class Encoded:
    """Encoded items: ``ids (N,)``, ``mu``/``logvar (N, d)``, ``mu_std (N, d)`` for utterances,
    ``labels (N,)`` (or ``None``), ``split (N,)``."""

    ids: np.ndarray
    mu: np.ndarray
    logvar: np.ndarray
    mu_std: np.ndarray | None = None
    labels: np.ndarray | None = None
    split: np.ndarray | None = None

    def features(self) -> np.ndarray:
        """``(N, d)`` latent means (images) or ``(N, 2d)`` time-mean and time-std of them (utterances)."""
        return self.mu if self.mu_std is None else np.concatenate([self.mu, self.mu_std], 1)

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` (atomic) with ``ids``, ``mu``, ``logvar``, ``split`` and, when present, ``mu_std``, ``labels``."""
        from audiovae.utils import atomic_path

        arrays = {"ids": self.ids.astype(str), "mu": self.mu, "logvar": self.logvar, "features": self.features()}
        if self.split is not None:
            arrays["split"] = self.split.astype(str)
        if self.mu_std is not None:
            arrays["mu_std"] = self.mu_std
        if self.labels is not None:
            arrays["labels"] = self.labels
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return Path(path)


def concat(parts: list[Encoded]) -> Encoded:
    """Join encodings of several inputs; labels are kept only when every part has them."""
    if not parts:
        raise DataError("nothing to encode")
    def cat(name: str):
        arrs = [getattr(p, name) for p in parts]
        if any(a is None for a in arrs):
            return None
        if len({a.dtype.kind for a in arrs}) > 1:  # e.g. int classes beside string speakers
            arrs = [a.astype(str) for a in arrs]
        return np.concatenate(arrs)

    return Encoded(cat("ids"), cat("mu"), cat("logvar"), cat("mu_std"), cat("labels"), cat("split"))


@torch.no_grad()
def pool_utterance(loaded: LoadedVAE, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised log-mel ``(1, n_mels, T)`` -> time-pooled ``(mu mean, logvar mean, mu std)``, each ``(d,)``."""
    model = loaded.model
    if model.is_sequence:
        mu, logvar = model.encoder_params(x)
        mu, logvar = mu[0].T, logvar[0].T  # (T', d)
    else:
        ctx = int(loaded.config["model_config"].get("context", 0))
        mu, logvar = model.encoder_params(frames_with_context(x[0], ctx))  # (T, d)
    std = mu.std(0, unbiased=False)
    return mu.mean(0).cpu().numpy(), logvar.mean(0).cpu().numpy(), std.cpu().numpy()


def _device(loaded: LoadedVAE) -> torch.device:
    return next(loaded.model.parameters()).device


@torch.no_grad()
def encode_split(loaded: LoadedVAE, src: DataSource, split: str, batch_size: int = 256, limit: int | None = None,
                 label_key: str | None = None, progress: bool = False) -> Encoded:
    """Encode the items of one split of DATA (images, or the utterances of a feature cache / frame array).

    ``label_key``: for features, the record field to use as label (default
    ``label``, else ``speaker``). ``limit``: only the first N items.
    """
    from audiovae.tasks.evaluate import model_dataset

    dev = _device(loaded)
    if src.is_features:
        model_dataset(loaded, src, split)  # the same checks as evaluate (bins, MelConfig)
        recs = src.utterances(split)[:limit]
        norm = loaded.normalizer.to(dev)
        mus, lvs, sds = [], [], []
        for rec in tqdm(recs, desc=f"encode {split}", unit="utt", disable=not progress):
            x = norm(torch.from_numpy(src.logmel(rec))[None].to(dev))
            m, lv, sd = pool_utterance(loaded, x)
            mus.append(m), lvs.append(lv), sds.append(sd)
        labels = utterance_labels(src, split, label_key)
        return Encoded(np.array([r["id"] for r in recs]), np.stack(mus), np.stack(lvs), np.stack(sds),
                       None if labels is None else labels[: len(recs)], np.full(len(recs), split))
    ds, collate = model_dataset(loaded, src, split)
    n = len(ds) if limit is None else min(limit, len(ds))
    mus, lvs = [], []
    for i in tqdm(range(0, n, batch_size), desc=f"encode {split}", unit="batch", disable=not progress):
        x = collate(ds.__getitems__(list(range(i, min(n, i + batch_size))))).x.to(dev)
        mu, lv = loaded.model.encoder_params(x)
        mus.append(mu.cpu().numpy()), lvs.append(lv.cpu().numpy())
    labels = src.labels(split)
    return Encoded(np.array([f"{split}:{i}" for i in range(n)]), np.concatenate(mus), np.concatenate(lvs), None,
                   None if labels is None else np.asarray(labels[:n]), np.full(n, split))


def utterance_labels(src: DataSource, split: str, key: str | None = None) -> np.ndarray | None:
    """Per-utterance labels of a feature split: the ``key`` field, or ``label`` then ``speaker`` when not given."""
    for k in ([key] if key else ["label", "speaker"]):
        lab = src.labels(split, key=k)
        if lab is not None:
            return lab
    return None


@torch.no_grad()
def encode_audio_files(loaded: LoadedVAE, paths: list[Path]) -> Encoded:
    """Encode audio files with a mel model (its MelConfig and normaliser); one row per file."""
    from audiovae.audio.frontend import MelFrontend
    from audiovae.audio.io import load_audio

    if loaded.mel is None:
        raise ConfigError(f"{loaded.path} is a {loaded.name!r} model: it encodes images, not audio")
    dev = _device(loaded)
    front = MelFrontend(loaded.mel).to(dev)
    norm = loaded.normalizer.to(dev)
    rows = []
    for p in paths:
        wave, _ = load_audio(p, loaded.mel.sample_rate, min_samples=loaded.mel.win_length)
        rows.append(pool_utterance(loaded, norm(front(torch.from_numpy(wave)[None].to(dev)))))
    return Encoded(np.array([str(p) for p in paths]), *(np.stack(c) for c in zip(*rows)),
                   split=np.full(len(paths), "file"))


def read_image(path: str | os.PathLike, loaded: LoadedVAE) -> np.ndarray:
    """An image file as the model's input ``(C, H, W)`` float32: grey in [0, 1] (mnist) or colour in [-1, 1] (cifar)."""
    from PIL import Image, UnidentifiedImageError

    cfg = loaded.config["model_config"]
    c, s = int(cfg.get("image_channels", 1)), int(cfg.get("image_size", 28))
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"not a readable image ({exc.__class__.__name__})", path) from None
    if arr.shape[:2] != (s, s):
        raise DataError(f"the model takes {s}x{s} images, this one is {arr.shape[1]}x{arr.shape[0]}", path)
    arr = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    return arr if loaded.name == "mnist" else arr * 2 - 1


@torch.no_grad()
def encode_image_files(loaded: LoadedVAE, paths: list[Path]) -> Encoded:
    """Encode image files with an image model; one row per file."""
    if loaded.mel is not None:
        raise ConfigError(f"{loaded.path} is a {loaded.name!r} model: it encodes audio, not images")
    x = torch.from_numpy(np.stack([read_image(p, loaded) for p in paths])).to(_device(loaded))
    mu, lv = loaded.model.encoder_params(x)
    return Encoded(np.array([str(p) for p in paths]), mu.cpu().numpy(), lv.cpu().numpy(),
                   split=np.full(len(paths), "file"))


def _audio_files(inp: Path) -> list[Path] | None:
    """The audio files a list file (one path per line) or a plain folder of audio names; None for anything else."""
    from audiovae.audio.io import find_audio_files
    from audiovae.data.features import list_inputs
    from audiovae.tasks.signal import LIST_SUFFIXES

    if inp.is_file() and inp.suffix in LIST_SUFFIXES:
        return list_inputs(inp)[0]
    if inp.is_dir():
        try:
            open_data(inp)
        except DataError:
            found = find_audio_files(inp)
            return found or None
    return None


def encode_inputs(loaded: LoadedVAE, inputs: list[str | os.PathLike], split: str | None = None,
                  limit: int | None = None, label_key: str | None = None, progress: bool = True) -> Encoded:
    """Encode every input: DATA paths (each split, or ``split``), image files and audio files (named, in a folder
    that is no DATA, or in a list file), in order."""
    parts: list[Encoded] = []
    files: list[Path] = []

    def flush():
        if files:
            imgs = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            if imgs and len(imgs) != len(files):
                raise DataError("mix of image and audio files; encode them separately", files[0])
            parts.append(encode_image_files(loaded, files) if imgs else encode_audio_files(loaded, files))
            files.clear()

    for inp in map(Path, inputs):
        listed = _audio_files(inp)
        if listed is not None:  # a list file, or a folder of audio files that is no DATA: its files, as `mel` reads them
            files.extend(listed)
            continue
        if inp.is_dir() or inp.suffix == ".npy":
            flush()
            src = open_data(inp)
            for sp in [split] if split else src.splits():
                parts.append(encode_split(loaded, src, sp, limit=limit, label_key=label_key, progress=progress))
        else:
            if not inp.exists():
                raise DataError("no such file or directory", inp)
            files.append(inp)
    flush()
    return concat(parts)
