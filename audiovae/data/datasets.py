"""Datasets over a feature cache and over images.

Every dataset is indexed by ``(index, seed)`` pairs: any randomness in an item
(a random crop, a dynamic binarisation) comes from its seed, which the sampler
derives from ``(run seed, epoch, position)``. So an item is the same whichever
DataLoader worker makes it, and a resumed run sees exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from audiovae.data.features import FeatureCache
from audiovae.errors import DataError


class FrameDataset(Dataset):
    """Normalised log-mel frames ``(n_mels * (2 * context + 1),)`` of one split (edges replicated)."""

    def __init__(self, cache: FeatureCache, split: str, context: int = 0):
        self.cache, self.context = cache, context
        recs = cache.utterances(split)
        if not recs:
            raise DataError(f"no utterances in the {split!r} split", cache.path)
        starts = np.concatenate([np.arange(r["frames"]) + r["offset"] for r in recs])
        lo = np.concatenate([np.full(r["frames"], r["offset"]) for r in recs])
        hi = np.concatenate([np.full(r["frames"], r["offset"] + r["frames"] - 1) for r in recs])
        self.frame, self.lo, self.hi = starts, lo, hi
        self.mean = cache.mean.astype(np.float32)
        self.std = cache.std.astype(np.float32)

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, key) -> torch.Tensor:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys) -> torch.Tensor:
        idx = np.array([k[0] if isinstance(k, (tuple, list)) else k for k in keys])
        offs = np.arange(-self.context, self.context + 1)
        rows = np.clip(self.frame[idx, None] + offs[None, :], self.lo[idx, None], self.hi[idx, None])
        x = (np.asarray(self.cache.feats[rows.reshape(-1)]) - self.mean) / self.std  # (B * W, n_mels)
        x = x.reshape(len(idx), len(offs), -1).transpose(0, 2, 1)  # (B, n_mels, W)
        return torch.from_numpy(np.ascontiguousarray(x.reshape(len(idx), -1)))


class SequenceDataset(Dataset):
    """Normalised log-mel sequences ``(n_mels, L)`` of one split, with their valid lengths.

    ``segment=None`` gives whole utterances; ``segment=L`` gives crops of ``L``
    frames at positions drawn from the item's seed (shorter utterances are
    padded and report their true length). An utterance of ``n`` frames counts
    as ``max(1, n // L)`` items, so an epoch covers about every frame once.
    """

    def __init__(self, cache: FeatureCache, split: str, segment: int | None = None):
        self.cache, self.segment = cache, segment
        self.recs = cache.utterances(split)
        if not self.recs:
            raise DataError(f"no utterances in the {split!r} split", cache.path)
        if segment is None:
            self.items = list(range(len(self.recs)))
        else:
            self.items = [i for i, r in enumerate(self.recs) for _ in range(max(1, r["frames"] // segment))]
        self.mean = cache.mean.astype(np.float32)[:, None]
        self.std = cache.std.astype(np.float32)[:, None]

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
        x = np.asarray(self.cache.feats[rec["offset"] + start : rec["offset"] + start + length]).T
        x = (x - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), length


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
