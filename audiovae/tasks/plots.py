"""Pictures a person can look at: mel spectrograms side by side, loss curves."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from audiovae.utils import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_mels(path: str | os.PathLike, mels: list[np.ndarray], titles: list[str], frame_rate: float,
              suptitle: str = "") -> Path:
    """Log-mel panels ``(n_mels, T)`` stacked vertically with a shared colour scale; PNG, atomic."""
    plt = _plt()
    vmax = max(float(m.max()) for m in mels)
    vmin = max(min(float(m.min()) for m in mels), vmax - 12.0)  # ~50 dB of range
    fig, axes = plt.subplots(len(mels), 1, figsize=(10, 2.4 * len(mels)), squeeze=False, layout="constrained")
    for ax, m, title in zip(axes[:, 0], mels, titles):
        im = ax.imshow(m, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma",
                       extent=(0, m.shape[1] / frame_rate, 0, m.shape[0]))
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("time (s)")
    fig.colorbar(im, ax=axes[:, 0].tolist(), label="log-mel (nats)", shrink=0.9, pad=0.01)
    if suptitle:
        fig.suptitle(suptitle)
    return _save(fig, path)


def plot_training(path: str | os.PathLike, run_dir: str | os.PathLike, item: str = "item") -> Path:
    """Loss, KL and validation ELBO from a run's metrics.csv / validation.csv (``item``: what one training item
    is, for the axes' units, e.g. "crop of up to 128 frames")."""
    plt = _plt()
    run_dir = Path(run_dir)
    rows = _read_csv(run_dir / "metrics.csv")
    vals = _read_csv(run_dir / "validation.csv")
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    if rows:
        step = np.array([float(r["step"]) for r in rows])
        unit = "nats/item" if item == "item" else f"nats per {item}"
        for key, ax, label in (("loss", axes[0], f"training loss ({unit})"), ("kl", axes[1], f"KL ({unit})")):
            y = np.array([float(r[key]) for r in rows])
            ax.plot(step, y, alpha=0.35, lw=0.8)
            if len(y) > 10:
                k = max(2, len(y) // 30)
                ax.plot(step[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), lw=1.8)
            ax.set_title(label)
            ax.set_xlabel("step")
        beta = np.array([float(r["beta"]) for r in rows])
        ax2 = axes[1].twinx()
        ax2.plot(step, beta, color="grey", ls="--", lw=1)
        ax2.set_ylabel("beta (dashed)")
    if vals:
        axes[2].plot([float(r["step"]) for r in vals], [float(r["val_elbo_per_dim"]) for r in vals], marker="o")
    axes[2].set_title("validation ELBO (nats/dim)")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    return _save(fig, path)


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _save(fig, path) -> Path:
    plt = _plt()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
