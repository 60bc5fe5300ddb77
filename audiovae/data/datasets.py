"""Datasets over a feature cache and over images.

Every dataset is indexed by ``(index, seed)`` pairs: any randomness in an item
(a random crop, a dynamic binarisation) comes from its seed, which the sampler
derives from ``(run seed, epoch, position)``. So an item is the same whichever
DataLoader worker makes it, and a resumed run sees exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from audiovae.errors import DataError


@dataclass
class Batch:
    """A collated batch: data ``x``, for padded sequences the valid ``lengths (B,)``, and for a run conditioned
    on speaker (label) each item's index into the model's ``condition_names``, ``cond (B,)``."""

    x: torch.Tensor
    lengths: torch.Tensor | None = None
    cond: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        lengths = None if self.lengths is None else self.lengths.to(device, non_blocking=True)
        cond = None if self.cond is None else self.cond.to(device, non_blocking=True)
        return Batch(self.x.to(device, non_blocking=True), lengths, cond)

    def pin_memory(self) -> "Batch":
        """Page-locked copies, so that :meth:`to` a GPU does not block. A DataLoader with ``pin_memory=True``
        calls this; without it a dataclass comes back unpinned and every copy is synchronous."""
        return Batch(self.x.pin_memory(), None if self.lengths is None else self.lengths.pin_memory(),
                     None if self.cond is None else self.cond.pin_memory())


def collate_tensors(items) -> Batch:
    """Items that are already equal-shaped tensors (or a batch from ``__getitems__``, which is ``(x, cond)``
    for a conditioned frame dataset)."""
    if isinstance(items, tuple):
        return Batch(items[0], None, items[1])
    return Batch(items if isinstance(items, torch.Tensor) else torch.stack(items))


def collate_sequences(items: list[tuple]) -> Batch:
    """``(n_mels, L_i)`` sequences -> a :class:`Batch` of ``(B, n_mels, max L)`` (edge-padded) with lengths
    (and the items' condition indices, when the items are ``(x, length, cond)``)."""
    cond = torch.tensor([it[2] for it in items], dtype=torch.long) if items and len(items[0]) > 2 else None
    return Batch(*pad_collate([it[:2] for it in items]), cond)


def context_rows(pos: np.ndarray, lo: np.ndarray, hi: np.ndarray, context: int) -> np.ndarray:
    """Row indices ``(B, 2 * context + 1)`` of the frames around ``pos``, edges replicated within ``[lo, hi]``."""
    offs = np.arange(-context, context + 1)
    return np.clip(pos[:, None] + offs[None, :], lo[:, None], hi[:, None])


def _window_layout(rows: np.ndarray | torch.Tensor, b: int, w: int):
    """``(B * W, n_mels)`` frames -> ``(B, n_mels * W)`` dense-model input: bin-major, then time."""
    x = rows.reshape(b, w, -1)
    x = x.transpose(0, 2, 1) if isinstance(x, np.ndarray) else x.transpose(1, 2)
    return x.reshape(b, -1)


def frames_with_context(logmel: torch.Tensor, context: int) -> torch.Tensor:
    """One utterance ``(n_mels, T)`` -> dense-model inputs ``(T, n_mels * (2 * context + 1))``."""
    t = logmel.shape[-1]
    pos = np.arange(t)
    rows = context_rows(pos, np.zeros(t, np.int64), np.full(t, t - 1), context)
    x = logmel.T[torch.from_numpy(rows.reshape(-1))]
    return _window_layout(x, t, 2 * context + 1)


def centre_frames(y: torch.Tensor, n_mels: int, context: int) -> torch.Tensor:
    """Dense-model outputs ``(T, n_mels * (2 * context + 1))`` -> the centre frames ``(1, n_mels, T)``."""
    return y.reshape(y.shape[0], n_mels, 2 * context + 1)[:, :, context].T[None]


class FrameDataset(Dataset):
    """Normalised log-mel frames ``(n_mels * (2 * context + 1),)`` of some utterances (edges replicated).

    ``frames``: ``(N, n_mels)`` (a memory map is fine); ``recs``: the utterances'
    records (``offset``, ``frames``); ``mean``/``std``: the per-bin statistics to
    normalise with.
    """

    def __init__(self, frames: np.ndarray, recs: list[dict], mean: np.ndarray, std: np.ndarray, context: int = 0,
                 source: object = None, cond: np.ndarray | None = None):
        if not recs:
            raise DataError("no utterances in this split", source)
        self.feats, self.context = frames, context
        # each frame's condition index (its utterance's speaker or label), when conditioned
        self.cond = None if cond is None else np.concatenate([np.full(r["frames"], c) for r, c in zip(recs, cond)])
        self.frame = np.concatenate([np.arange(r["frames"]) + r["offset"] for r in recs])
        self.lo = np.concatenate([np.full(r["frames"], r["offset"]) for r in recs])
        self.hi = np.concatenate([np.full(r["frames"], r["offset"] + r["frames"] - 1) for r in recs])
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, key) -> torch.Tensor:
        out = self.__getitems__([key])
        return (out[0][0], out[1][0]) if isinstance(out, tuple) else out[0]

    def __getitems__(self, keys) -> torch.Tensor:
        idx = np.array([k[0] if isinstance(k, (tuple, list)) else k for k in keys])
        rows = context_rows(self.frame[idx], self.lo[idx], self.hi[idx], self.context)
        x = (np.asarray(self.feats[rows.reshape(-1)]) - self.mean) / self.std  # (B * W, n_mels)
        x = torch.from_numpy(np.ascontiguousarray(_window_layout(x, len(idx), rows.shape[1]), dtype=np.float32))
        if self.cond is not None:
            return x, torch.from_numpy(self.cond[idx].astype(np.int64))
        return x


class SequenceDataset(Dataset):
    """Normalised log-mel sequences ``(n_mels, L)`` of some utterances, with their valid lengths.

    ``segment=None`` gives whole utterances; ``segment=L`` gives crops of ``L``
    frames at positions drawn from the item's seed (shorter utterances are
    padded and report their true length). An utterance of ``n`` frames counts
    as ``max(1, n // L)`` items, so an epoch covers about every frame once.
    """

    def __init__(self, frames: np.ndarray, recs: list[dict], mean: np.ndarray, std: np.ndarray,
                 segment: int | None = None, source: object = None, cond: np.ndarray | None = None):
        if not recs:
            raise DataError("no utterances in this split", source)
        self.feats, self.recs, self.segment = frames, recs, segment
        self.cond = cond  # per utterance: its index into the model's condition names (a conditioned run)
        if segment is None:
            self.items = list(range(len(recs)))
        else:
            self.items = [i for i, r in enumerate(recs) for _ in range(max(1, r["frames"] // segment))]
        self.mean = np.asarray(mean, np.float32)[:, None]
        self.std = np.asarray(std, np.float32)[:, None]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        i, seed = key if isinstance(key, (tuple, list)) else (key, 0)
        rec = self.recs[self.items[i]]
        n = rec["frames"]
        start, length = 0, n
        if self.segment is not None:
            length = min(n, self.segment)
            if n > self.segment:
                start = int(np.random.default_rng(seed).integers(0, n - self.segment + 1))
        x = np.asarray(self.feats[rec["offset"] + start : rec["offset"] + start + length]).T
        x = (x - self.mean) / self.std
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.cond is not None:
            return x, length, int(self.cond[self.items[i]])
        return x, length


def pad_collate(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(n_mels, L_i)`` sequences into ``(B, n_mels, max L)`` (edge-padded) and ``lengths (B,)``."""
    lengths = torch.tensor([n for _, n in items])
    t = int(lengths.max())
    out = torch.stack([torch.nn.functional.pad(x[None], (0, t - x.shape[-1]), mode="replicate")[0] if x.shape[-1] < t
                       else x for x, _ in items])
    return out, lengths


class ImageDataset(Dataset):
    """Images ``(C, H, W)`` as floats. ``binarize``: ``"dynamic"`` (a fresh Bernoulli draw from the
    item's seed), ``"fixed"`` (one draw with a fixed seed, for test sets, as the literature does)
    or ``None`` (grey levels in [0, 1], or [-1, 1] with ``signed=True`` for colour images)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, binarize: str | None = None,
                 signed: bool = False, fixed_seed: int = 1234):
        if images.ndim == 3:
            images = images[:, None]
        self.images = images
        self.labels = labels
        self.binarize, self.signed = binarize, signed
        if binarize == "fixed":
            g = np.random.default_rng(fixed_seed)
            self.fixed = (g.random(images.shape, dtype=np.float32) < images / np.float32(255)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key) -> torch.Tensor:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys) -> torch.Tensor:
        idx = np.array([k[0] if isinstance(k, (tuple, list)) else k for k in keys])
        if self.binarize == "fixed":
            return torch.from_numpy(self.fixed[idx])
        x = self.images[idx].astype(np.float32) / np.float32(255)
        if self.binarize == "dynamic":
            # one Bernoulli draw per item from the item's own seed
            seeds = [int(k[1]) if isinstance(k, (tuple, list)) else int(k) for k in keys]
            u = np.stack([np.random.default_rng(sd).random(x.shape[1:], dtype=np.float32) for sd in seeds])
            x = (u < x).astype(np.float32)
        elif self.signed:
            x = x * 2 - 1
        return torch.from_numpy(x)


class SeededBatchSampler(Sampler):
    """Batches of ``(index, seed)`` for one epoch, starting at batch ``start``.

    The order is a permutation drawn from ``(seed, epoch)``; every item's seed
    from ``(seed, epoch, position)``. With ``world > 1`` each global batch of
    ``batch_size * world`` items is split into ``world`` contiguous slices and
    this rank gets its own (so all ranks together see exactly the batches a
    single process with ``batch_size * world`` would). The last, incomplete
    batch is dropped when training.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, start: int = 0, rank: int = 0, world: int = 1,
                 shuffle: bool = True, drop_last: bool = True):
        self.n, self.bs, self.seed, self.epoch, self.start = n, batch_size, seed, epoch, start
        self.rank, self.world, self.shuffle, self.drop_last = rank, world, shuffle, drop_last

    def num_batches(self) -> int:
        g = self.bs * self.world
        return self.n // g if self.drop_last else -(-self.n // g)

    def __len__(self) -> int:
        return max(0, self.num_batches() - self.start)

    def __iter__(self):
        if self.shuffle:
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)).tolist()
        else:
            perm = list(range(self.n))
        g = self.bs * self.world
        base = (self.seed * 1000003 + self.epoch) * 10_000_019
        for b in range(self.start, self.num_batches()):
            glob = perm[b * g : (b + 1) * g]
            mine = glob[self.rank * self.bs : (self.rank + 1) * self.bs]
            pos0 = b * g + self.rank * self.bs
            yield [(i, (base + pos0 + j) % (2**63)) for j, i in enumerate(mine)]
