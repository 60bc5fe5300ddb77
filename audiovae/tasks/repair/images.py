"""Repair (inpainting) of damaged images with a trained image VAE (``mnist``/``cifar`` models).

:func:`make_mask` builds the damage (a PNG mask, or ``centre``, ``random``, ``left``, ``right``,
``scratch``); :func:`repair_images` repairs the first ``n`` test images of an image folder with the VAE
(see :mod:`audiovae.tasks.impute`) and with the baselines (mean image, nearest training neighbour on the
observed pixels, one-shot VAE reconstruction), measures each on the missing pixels only and writes
damaged / repaired / original grids. Images from a Bernoulli model (``mnist``, binarised pixels) get the
mean binary cross-entropy of the filled probability against the binarised truth (``bce``, nats per
missing pixel) and the squared error of that probability (``mse``); colour images (``cifar``) the squared
error in [0, 1] pixel units (``mse``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from audiovae.errors import ConfigError, DataError
from audiovae.models.registry import model_info, models_of
from audiovae.tasks.impute import DEFAULTS, METHODS, impute
from audiovae.tasks.repair.common import tqdm_or_plain, write_results

MASKS = ("centre", "random", "left", "right", "scratch")


# --- masks ---------------------------------------------------------------------------------------

def make_mask(kind: str | os.PathLike, n: int, size: tuple[int, int], fraction: float = 0.5,
              seed: int = 0) -> np.ndarray:
    """Damage masks ``(n, H, W)`` bool, True where a pixel is MISSING.

    ``kind``: ``centre`` (a centred square of half the side), ``random`` (each
    pixel missing with probability ``fraction``, a fresh draw per image),
    ``left`` / ``right`` (that half missing), ``scratch`` (a random straight line
    two pixels wide across each image), or the path of a PNG mask of size H x W
    whose light pixels (> 50 % grey) mark the damage (the same for every image).
    """
    h, w = size
    rng = np.random.default_rng(seed)
    m = np.zeros((n, h, w), bool)
    if kind == "centre":
        sh, sw = h // 2, w // 2
        m[:, (h - sh) // 2:(h - sh) // 2 + sh, (w - sw) // 2:(w - sw) // 2 + sw] = True
    elif kind == "random":
        if not 0 < fraction < 1:
            raise ConfigError(f"the random mask's fraction must be in (0, 1), got {fraction}")
        m = rng.random((n, h, w)) < fraction
    elif kind == "left":
        m[:, :, : w // 2] = True
    elif kind == "right":
        m[:, :, w // 2:] = True
    elif kind == "scratch":
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(n):
            # a line through a random point near the centre at a random angle, 2 px wide
            cy, cx = rng.uniform(h * 0.3, h * 0.7), rng.uniform(w * 0.3, w * 0.7)
            a = rng.uniform(0, math.pi)
            dist = np.abs((yy - cy) * math.cos(a) - (xx - cx) * math.sin(a))
            m[i] = dist < 1.0
    else:
        m[:] = read_png_mask(kind, (h, w))[None]
    return m


def read_png_mask(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """A PNG mask ``(H, W)`` bool (True = missing: pixels lighter than 50 % grey); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"unknown mask {str(path)!r}: not a file; built-in masks are {', '.join(MASKS)}", path)
    import matplotlib.image as mpimg

    try:
        img = np.asarray(mpimg.imread(str(path), format="png"), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise DataError(f"not a readable PNG mask ({str(exc)[:120]})", path) from None
    if img.ndim == 3:
        img = img[..., :3].mean(-1) if img.shape[-1] >= 3 else img[..., 0]
    if img.shape != tuple(size):
        raise DataError(f"mask is {img.shape[0]}x{img.shape[1]} pixels but the images are {size[0]}x{size[1]}", path)
    mask = img > 0.5
    if not mask.any():
        raise DataError("mask marks no pixel as missing (light pixels are the damage)", path)
    return mask


# --- images ---------------------------------------------------------------------------------------

def _image_errors(fill: torch.Tensor, truth: torch.Tensor, missing: torch.Tensor, bernoulli: bool) -> dict:
    """Errors on the missing pixels only: ``mse`` (and ``bce`` for Bernoulli models); means over missing pixels."""
    miss = missing.to(fill.dtype)
    n = float(miss.sum())
    if bernoulli:
        p = fill.clamp(1e-6, 1 - 1e-6)
        bce = -(truth * torch.log(p) + (1 - truth) * torch.log1p(-p))
        return {"bce": float((bce * miss).sum()) / n, "mse": float(((fill - truth).square() * miss).sum()) / n}
    # colour: [-1, 1] model units -> [0, 1] pixel units
    return {"mse": float((((fill - truth) / 2).square() * miss).sum()) / n}


def nearest_neighbour_fill(damaged: torch.Tensor, observed: torch.Tensor, train: torch.Tensor,
                           chunk: int = 4096) -> torch.Tensor:
    """For each image, the training image closest on the observed pixels (squared distance), ``(B, ...)``."""
    b = damaged.shape[0]
    x = (damaged * observed).flatten(1)
    o = observed.flatten(1).to(damaged.dtype)
    best_d = torch.full((b,), float("inf"))
    best_i = torch.zeros(b, dtype=torch.long)
    for s in range(0, len(train), chunk):
        t = train[s:s + chunk].flatten(1).to(damaged.dtype)
        # sum_j o_j (x_j - t_j)^2 = sum o x^2 - 2 (o x) . t + o . t^2
        d = (x.square() * o).sum(1, keepdim=True) - 2 * x @ t.T + o @ t.square().T
        v, i = d.min(1)
        upd = v < best_d
        best_d = torch.where(upd, v, best_d)
        best_i = torch.where(upd, i + s, best_i)
    return train[best_i].to(damaged.dtype).reshape(damaged.shape)


def _load_image_model(run: str | os.PathLike, checkpoint: str, device: str):
    from audiovae.api import load

    loaded = load(run, checkpoint, device)
    if model_info(loaded.name).kind != "image":
        raise ConfigError(f"{loaded.path} is a {loaded.name!r} model; repairing images needs an image model "
                          f"({' or '.join(models_of('image'))})")
    return loaded


@torch.no_grad()
def repair_images(
    run: str | os.PathLike,
    data: str | os.PathLike,
    mask: str | os.PathLike = "centre",
    n: int = 200,
    out_dir: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    method: str = DEFAULTS["images"],
    iters: int = 100,
    fraction: float = 0.5,
    seed: int = 0,
    batch_size: int = 128,
    baselines: bool = True,
    compare_methods: bool = False,
    checkpoint: str = "best",
    device: str = "auto",
    grid: int = 32,
    progress: bool = False,
    state: str = "sample",
) -> dict:
    """Repair the first ``n`` test images of ``data`` damaged by ``mask`` with the image VAE in ``run``.

    Returns (and writes to ``json_path``, and to ``run/results/repair_images.json``
    when ``run`` is a run folder) ``{"errors": {name: {...}}, ...}`` with the
    error on the missing pixels of: ``vae`` (``method``, ``iters`` iterations),
    and with ``baselines``: ``mean_image``, ``nearest_neighbour`` (training split,
    observed pixels), ``vae_oneshot``; with ``compare_methods`` also both chains
    by name (``mwg``, ``pseudo_gibbs``). The chains start from the mean-image
    fill (so ``vae_oneshot`` is their starting point decoded once). ``out_dir``:
    ``damaged.png``, ``repaired.png``, ``original.png`` (first ``grid`` images).
    Bernoulli models: the data are the fixed binarisation of the test set; the
    repaired pixels are probabilities (the average of ``p(x_mis | z_t)`` over
    the chain), shown as grey levels; the chain itself carries binary samples.
    """
    from audiovae.data.source import open_data
    from audiovae.tasks.evaluate import model_dataset

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose {', '.join(METHODS)}")
    loaded = _load_image_model(run, checkpoint, device)
    src = open_data(data)
    if src.is_features:
        raise DataError(f"holds {src.kind} data, not images; the {loaded.name!r} model in {loaded.path} "
                        "repairs images", src.path)
    src.check_model(loaded.name)
    model, dev = loaded.model, next(loaded.model.parameters()).device
    bern = loaded.name == "mnist"
    ds, _ = model_dataset(loaded, src, "test")
    n = min(n, len(ds))
    x = ds.__getitems__(list(range(n)))  # (n, C, H, W)
    h, w = x.shape[-2:]
    miss = torch.from_numpy(make_mask(mask, n, (h, w), fraction, seed))[:, None].expand_as(x)
    observed = ~miss
    train_imgs = src.images_of("train")
    train = torch.from_numpy(train_imgs if train_imgs.ndim == 4 else train_imgs[:, None]).float() / 255
    if not bern:
        train = train * 2 - 1
    mean_img = train.mean(0, keepdim=True)
    start = torch.where(observed, x, mean_img.expand_as(x))
    fills: dict[str, torch.Tensor] = {}
    accept: dict[str, float | None] = {}
    names = [(m, m) for m in ("mwg", "pseudo_gibbs")] if compare_methods else [("vae", method)]
    if baselines:
        names.append(("vae_oneshot", "oneshot"))
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        for name, meth in names:
            torch.manual_seed(seed)
            outs, accs = [], []
            for s in tqdm_or_plain(range(0, n, batch_size), progress, f"repair ({name})"):
                r = impute(model, start[s:s + batch_size].to(dev), observed[s:s + batch_size].to(dev), meth, iters,
                           state=state)
                outs.append(r.x.cpu())
                accs.append(r.acceptance)
            fills[name] = torch.cat(outs)
            accept[name] = None if accs[0] is None else float(np.mean(accs))
    if "vae" not in fills:  # the chosen method, run once under its own name
        fills["vae"] = fills[method] if method in fills else fills["vae_oneshot"]
        accept["vae"] = accept.get(method)
    if baselines:
        fills["mean_image"] = start
        nn = nearest_neighbour_fill(x, observed, train)
        fills["nearest_neighbour"] = torch.where(observed, x, nn)
    errors = {k: _image_errors(v, x, miss, bern) for k, v in fills.items()}
    res = {
        "task": "repair_images", "model": loaded.name, "model_dir": str(loaded.path), "data": str(src.path),
        "split": "test", "images": n, "mask": str(mask), "missing_fraction": float(miss.float().mean()),
        "method": method, "iterations": iters, "state": state, "seed": seed,
        "metric": ("bce: binary cross-entropy (nats per missing pixel) of the filled probability against the "
                   "binarised truth; mse: squared error of that probability" if bern else
                   "mse: squared error per missing sub-pixel, pixel values in [0, 1]"),
        "errors": errors, "acceptance": {k: v for k, v in accept.items() if v is not None},
        "files": {},
    }
    if out_dir is not None:
        from audiovae.tasks.figures import image_grid

        out = Path(out_dir)
        g = min(grid, n)
        to01 = (lambda t: t) if bern else (lambda t: (t + 1) / 2)
        # damage shown in red on the damaged grid
        dmg = to01(x[:g]).repeat(1, 3 // x.shape[1], 1, 1) if x.shape[1] == 1 else to01(x[:g]).clone()
        red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand_as(dmg)
        dmg = torch.where(miss[:g, :1].expand_as(dmg), red, dmg)
        cols = min(8, g)
        for name, imgs in (("damaged", dmg), ("repaired", to01(fills["vae"][:g])), ("original", to01(x[:g]))):
            res["files"][name] = str(image_grid(out / f"{name}.png", imgs.numpy(), cols, pad=1, background=0.5).resolve())
    write_results(res, json_path, run, "repair_images")
    return res


# --- audio ----------------------------------------------------------------------------------------

