"""Pictures for the applications: image grids, latent scatter, KL per latent channel (PNG, atomic)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from audiovae.tasks.plots import _plt, _save
from audiovae.utils import atomic_path


def to_unit(images: np.ndarray, signed: bool) -> np.ndarray:
    """Model-space images ``(N, C, H, W)`` -> [0, 1] (``signed``: from [-1, 1])."""
    x = np.asarray(images, np.float32)
    return np.clip((x + 1) / 2 if signed else x, 0, 1)


def image_grid(path: str | os.PathLike, images: np.ndarray, ncol: int, scale: int = 3, pad: int = 2,
               background: float = 1.0) -> Path:
    """Tile ``(N, C, H, W)`` images in [0, 1] into a grid PNG (``ncol`` per row, ``pad`` pixels of ``background``
    grey between and around them, each pixel ``scale`` x ``scale``), atomic."""
    from PIL import Image

    x = np.asarray(images, np.float32)
    n, c, h, w = x.shape
    nrow = -(-n // ncol)
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), background, np.float32)
    for i in range(n):
        r, q = divmod(i, ncol)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = \
            x[i].transpose(1, 2, 0)
    img = (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8)
    img = img[..., 0] if c == 1 else img
    pil = Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        pil.save(tmp, format="PNG")
    return path


def plot_kl_units(path: str | os.PathLike, kl: np.ndarray, threshold: float | None = None) -> Path:
    """Bar chart of the KL (nats per item) of each latent channel, sorted; active channels stand out."""
    plt = _plt()
    order = np.argsort(kl)[::-1]
    fig, ax = plt.subplots(figsize=(7, 2.8), layout="constrained")
    ax.bar(np.arange(len(kl)), kl[order], color="tab:blue")
    ax.set_xticks(np.arange(len(kl)), [str(i) for i in order], fontsize=6 if len(kl) > 32 else 8)
    ax.set_xlabel("latent channel (sorted)")
    ax.set_ylabel("KL (nats / latent frame)")
    ax.set_title("KL per latent channel (posterior vs prior)")
    if threshold is not None:
        ax.axhline(threshold, color="grey", ls="--", lw=1)
    return _save(fig, path)


def plot_latent_scatter(path: str | os.PathLike, mu: np.ndarray, labels: np.ndarray | None, title: str,
                        names: dict | None = None) -> Path:
    """The first two principal components of latent means, coloured by label when there are labels."""
    plt = _plt()
    x = mu - mu.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    p = x @ vt[:2].T if vt.shape[0] >= 2 else np.c_[x[:, :1], np.zeros(len(x))]
    fig, ax = plt.subplots(figsize=(5.5, 4.2), layout="constrained")
    if labels is None:
        ax.scatter(p[:, 0], p[:, 1], s=6, alpha=0.6)
    else:
        for i, lab in enumerate(np.unique(labels)):
            m = labels == lab
            name = (names or {}).get(lab, lab)
            ax.scatter(p[m, 0], p[m, 1], s=6, alpha=0.6, label=str(name), color=plt.cm.tab10(i % 10))
        ax.legend(fontsize=7, markerscale=2, loc="best", ncol=2)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
