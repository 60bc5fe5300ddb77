"""Repair (inpainting) of damaged images and audio with a trained VAE.

- Images (``mnist``/``cifar`` models): :func:`make_mask` builds the damage (a PNG
  mask, or ``centre``, ``random``, ``left``, ``right``, ``scratch``);
  :func:`repair_images` repairs the first ``n`` test images of an image folder
  with the VAE (see :mod:`audiovae.tasks.impute`) and with the baselines
  (mean image, nearest training neighbour on the observed pixels, one-shot VAE
  reconstruction), measures each on the missing pixels only and writes
  damaged / repaired / original grids.
- Audio (``dense``/``conv`` mel models): :func:`repair_audio` takes a waveform
  with gaps (``[(start_s, end_s)]``), marks every log-mel frame whose analysis
  window touches a gap as missing, fills those frames in the model's normalised
  log-mel, vocodes, and splices the result into the input: outside each gap
  widened by one window (``win_length`` samples, an equal-power crossfade) the
  output samples *are* the input samples.

Error measures (missing part only): images from a Bernoulli model (``mnist``,
binarised pixels) get the mean binary cross-entropy of the filled probability
against the binarised truth (``bce``, nats per missing pixel) and the squared
error of that probability (``mse``); colour images (``cifar``) the squared error
in [0, 1] pixel units (``mse``). Audio gets the log-mel squared error over the
missing frames (natural-log mel, not normalised: ``logmel_mse``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from audiovae.errors import ConfigError, DataError, InvalidAudioError
from audiovae.models.registry import model_info, models_of
from audiovae.tasks.impute import DEFAULTS, METHODS, impute

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
            for s in _tqdm(range(0, n, batch_size), progress, f"repair ({name})"):
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
    _write_results(res, json_path, run, "repair_images")
    return res


# --- audio ----------------------------------------------------------------------------------------

def parse_gap(text: str) -> tuple[float, float]:
    """``"1.20:1.45"`` -> ``(1.2, 1.45)`` seconds."""
    try:
        a, b = (float(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"a gap is START:END in seconds (e.g. 1.20:1.45), got {text!r}") from None
    if not (0 <= a < b):
        raise ConfigError(f"a gap needs 0 <= START < END, got {text!r}")
    return a, b


def packet_loss_gaps(seconds: float, drop: float, packet_ms: float = 20.0, seed: int = 0) -> list[tuple[float, float]]:
    """Gaps for packet loss: each ``packet_ms`` packet of a ``seconds`` long signal lost with probability ``drop``."""
    if not 0 < drop < 1:
        raise ConfigError(f"--drop is a fraction in (0, 1), got {drop}")
    p = packet_ms / 1000
    lost = np.random.default_rng(seed).random(math.ceil(seconds / p)) < drop
    return [(i * p, min(seconds, (i + 1) * p)) for i in np.flatnonzero(lost)]


def gap_samples(gaps: list[tuple[float, float]], n: int, sr: int, source: object = None) -> np.ndarray:
    """A ``(N,)`` bool array, True on the samples of the gaps; a gap outside the signal is an error naming ``source``."""
    m = np.zeros(n, bool)
    dur = n / sr
    for a, b in gaps:
        if a >= dur or b > dur + 1e-9:
            raise InvalidAudioError(f"gap {a:.3f}:{b:.3f} s is outside the audio (it lasts {dur:.3f} s)", source)
        m[round(a * sr):round(b * sr)] = True
    if not m.any():
        raise InvalidAudioError("the gaps cover no sample", source)
    return m


def missing_frames(gap: np.ndarray, hop: int, win: int, n_frames: int) -> np.ndarray:
    """``(T,)`` bool: frames whose (centred) analysis window of ``win`` samples touches a gap sample."""
    idx = np.flatnonzero(gap)
    out = np.zeros(n_frames, bool)
    if idx.size:
        centres = np.arange(n_frames) * hop
        # a window [c - win/2, c + win/2) touches a gap sample when the nearest gap sample lies inside it
        pos = np.searchsorted(idx, centres - win // 2)
        ok = pos < idx.size
        out[ok] = idx[np.minimum(pos[ok], idx.size - 1)] < centres[ok] + win // 2
    return out


def splice(original: np.ndarray, generated: np.ndarray, gap: np.ndarray, fade: int) -> np.ndarray:
    """``generated`` inside the gaps, ``original`` outside them widened by ``fade`` samples, with an
    equal-power crossfade over those ``fade`` samples on each side. Same length as ``original``."""
    n = len(original)
    # distance (in samples) from each sample to the nearest gap sample: 0 inside a gap
    idx = np.flatnonzero(gap)
    pos = np.arange(n)
    j = np.clip(np.searchsorted(idx, pos), 0, len(idx) - 1)
    dist = np.minimum(np.abs(idx[j] - pos), np.abs(idx[np.maximum(j - 1, 0)] - pos))
    g = np.clip(1 - dist / max(fade, 1), 0, 1)  # 1 in the gap, falling to 0 at `fade` samples away
    wg = np.sin(0.5 * np.pi * g)
    wo = np.cos(0.5 * np.pi * g)
    out = wo * original + wg * generated[:n]
    out[dist >= fade] = original[dist >= fade]  # bit-exact outside
    return out.astype(original.dtype)


def interp_fill(feats: torch.Tensor, missing: np.ndarray, how: str) -> torch.Tensor:
    """Baseline fills of missing frames of ``(1, n_mels, T)``: ``linear`` (interpolation between the
    observed frames each side), ``repeat`` (the last observed frame before the gap; the next one at the start)."""
    x = feats.clone()
    obs = np.flatnonzero(~missing)
    if obs.size == 0:
        raise InvalidAudioError("every frame is missing: nothing to repair from")
    for t in np.flatnonzero(missing):
        lo, hi = obs[obs < t], obs[obs > t]
        a = int(lo[-1]) if lo.size else None
        b = int(hi[0]) if hi.size else None
        if how == "repeat" or a is None or b is None:
            x[..., t] = feats[..., a if a is not None else b]
        else:
            w = (t - a) / (b - a)
            x[..., t] = (1 - w) * feats[..., a] + w * feats[..., b]
    return x


@torch.no_grad()
def fill_logmel(mm, feats: torch.Tensor, missing: np.ndarray, method: str = DEFAULTS["audio"], iters: int = 100,
                block: int = 2, margin: int = 48, state: str = "sample",
                progress: bool = False) -> tuple[torch.Tensor, float | None]:
    """Fill the missing frames of normalised log-mel ``(1, n_mels, T)`` with the mel VAE of ``mm`` (a
    :class:`~audiovae.tasks.generate.MelModel`); the chain starts from the linear interpolation.
    Sequence models work on crops: each stretch of missing frames with ``margin`` frames each side.
    Returns ``(filled features, acceptance)``; observed frames are returned unchanged. ``progress``: a bar
    (tqdm, on stderr) over the chain iterations of every crop."""
    from tqdm import tqdm

    start = interp_fill(feats, missing, "linear")
    obs_t = torch.from_numpy(~missing).to(feats.device)
    model = mm.model
    if model.is_sequence:
        # each stretch of missing frames is repaired on a crop with `margin` observed frames each side
        # (the model is fully convolutional): the chain's cost follows the damage, not the file's length
        out, accs = start.clone(), []
        spans = missing_spans(missing, margin)
        steps = iters if method != "oneshot" and iters >= 1 else 1
        with tqdm(total=steps * len(spans), desc=f"repair ({method})", unit="it", disable=not progress) as bar:
            for a, b in spans:
                crop = start[..., a:b]
                observed = obs_t[a:b].view(1, 1, -1).expand_as(crop)
                r = impute(model, crop, observed, method, iters, block=block, state=state, progress=bar.update)
                if method == "oneshot" or iters < 1:
                    bar.update(1)
                out[..., a:b] = r.x
                if r.acceptance is not None:
                    accs.append(r.acceptance)
        return out, (float(np.mean(accs)) if accs else None)
    # dense: one chain per missing frame, on its context window (missing neighbours imputed in the window too)
    ctx, n_mels = mm.context, start.shape[1]
    rows = np.flatnonzero(missing)
    win = mm.frames_in(start)[rows]
    obs_w = mm.frames_in(observed_frames(obs_t, n_mels))[rows] > 0.5
    with tqdm(total=iters, desc=f"repair ({method})", unit="it", disable=not progress or method == "oneshot") as bar:
        r = impute(model, win, obs_w, method, iters, state=state, progress=bar.update)
    centre = r.x.reshape(len(rows), n_mels, 2 * ctx + 1)[:, :, ctx]
    out = start.clone()
    out[0, :, torch.from_numpy(rows).to(out.device)] = centre.T
    return out, r.acceptance


def missing_spans(missing: np.ndarray, margin: int) -> list[tuple[int, int]]:
    """Crops ``[(a, b)]`` covering every missing frame with ``margin`` frames each side; overlapping crops merged."""
    t = len(missing)
    spans: list[list[int]] = []
    for i in np.flatnonzero(missing):
        a, b = max(0, i - margin), min(t, i + 1 + margin)
        if spans and a <= spans[-1][1]:
            spans[-1][1] = b
        else:
            spans.append([a, b])
    return [(a, b) for a, b in spans]


def observed_frames(obs_t: torch.Tensor, n_mels: int) -> torch.Tensor:
    """``(T,)`` bool -> ``(1, n_mels, T)`` float 1/0, laid out like features."""
    return obs_t.to(torch.float32).view(1, 1, -1).expand(1, n_mels, -1)


def _check_mel_model(mm) -> None:
    if model_info(mm.loaded.name).kind != "mel":
        raise ConfigError(f"{mm.loaded.path} is a {mm.loaded.name!r} model; repairing audio needs a mel model")


@torch.no_grad()
def repair_wave(mm, wave: np.ndarray, gaps: list[tuple[float, float]], method: str = DEFAULTS["audio"],
                iters: int = 100, fill: str = "vae", source: object = None, state: str = "sample",
                progress: bool = False) -> dict:
    """Repair a waveform ``(N,)`` at the model's sample rate. ``fill``: ``vae`` (``method``), or a baseline:
    ``linear``, ``repeat``, ``silence``, ``vae_oneshot``. Returns the arrays and masks (see :func:`repair_audio`)."""
    cfg = mm.loaded.mel
    gap = gap_samples(gaps, len(wave), cfg.sample_rate, source)
    damaged = np.where(gap, 0.0, wave).astype(np.float32)
    feats = mm.features(damaged)  # (1, n_mels, T)
    missing = missing_frames(gap, cfg.hop_length, cfg.win_length, feats.shape[-1])
    acceptance = None
    if fill == "vae":
        filled, acceptance = fill_logmel(mm, feats, missing, method, iters, state=state, progress=progress)
    elif fill == "vae_oneshot":
        filled, _ = fill_logmel(mm, feats, missing, "oneshot", 1)
    elif fill in ("linear", "repeat"):
        filled = interp_fill(feats, missing, fill)
    elif fill == "silence":
        floor = mm.loaded.normalizer(torch.full_like(feats[..., :1], math.log(cfg.log_floor)))
        filled = torch.where(torch.from_numpy(missing).to(feats.device), floor, feats)
    else:
        raise ConfigError(f"unknown fill {fill!r}")
    voc = mm.to_audio(filled, len(wave))
    out = splice(wave, voc, gap, cfg.win_length)
    inv = mm.loaded.normalizer.inverse
    return {"wave": out, "gap": gap, "missing": missing, "damaged_logmel": inv(feats)[0].cpu().numpy(),
            "repaired_logmel": inv(filled)[0].cpu().numpy(), "acceptance": acceptance}


def refuse_image_data(path: str | os.PathLike, run: str | os.PathLike) -> None:
    """:class:`DataError` when ``path`` is image data (an IDX/CIFAR folder or file), which a mel model cannot repair."""
    if _looks_like_image_data(Path(path)):
        raise DataError("is image data, but repairing it needs an image model; "
                        f"{run} is not one (give audio to a mel model)", path)


def repair_audio(
    run: str | os.PathLike,
    audio: str | os.PathLike,
    out: str | os.PathLike,
    gaps: list[tuple[float, float]] | None = None,
    drop: float | None = None,
    packet_ms: float = 20.0,
    method: str = DEFAULTS["audio"],
    iters: int = 100,
    seed: int = 0,
    json_path: str | os.PathLike | None = None,
    picture: str | os.PathLike | None = None,
    checkpoint: str = "best",
    device: str = "auto",
    vocoder_iters: int | None = None,
    progress: bool = False,
) -> dict:
    """Repair the gaps (or random packet loss, ``drop``) of one audio file with the mel VAE in ``run``.

    Writes ``out`` (same length and sample rate as the model's, observed audio
    kept sample for sample outside the gaps and a one-window crossfade), a
    picture of the damaged / repaired / original log-mels (``picture``, default
    ``out`` with ``.png``), and the JSON (``json_path``, and
    ``run/results/repair_audio.json`` when ``run`` is a run folder).
    ``logmel_mse_vs_input`` compares the filled frames with the input's own
    frames there: meaningful when the input was intact (a test), not when its
    gap holds junk. ``progress``: a bar (stderr) over the chain's iterations.
    """
    from audiovae.audio.io import load_audio, save_audio
    from audiovae.tasks.generate import MelModel
    from audiovae.tasks.plots import plot_mels

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose {', '.join(METHODS)}")
    audio = Path(audio)
    refuse_image_data(audio, run)
    mm = MelModel.load(run, vocoder_iters=vocoder_iters, checkpoint=checkpoint, device=device)
    _check_mel_model(mm)
    cfg = mm.loaded.mel
    wave, sr = load_audio(audio, cfg.sample_rate, min_samples=cfg.win_length)
    if drop is not None:
        gaps = list(gaps or []) + packet_loss_gaps(len(wave) / sr, drop, packet_ms, seed)
    if not gaps:
        raise ConfigError("nothing to repair: give --gap START:END (seconds) or --drop FRACTION")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        r = repair_wave(mm, wave, gaps, method, iters, source=audio, progress=progress)
    out = save_audio(out, r["wave"], sr)
    pic = Path(picture) if picture is not None else out.with_suffix(".png")
    orig = mm.frontend(torch.from_numpy(wave)[None].to(mm.device))[0].cpu().numpy()
    dmg = r["damaged_logmel"].copy()
    dmg[:, r["missing"]] = math.log(cfg.log_floor)
    plot_mels(pic, [dmg, r["repaired_logmel"], orig],
              [f"damaged: {int(r['missing'].sum())} missing frames (blank)", f"repaired ({method}, {iters} iterations)",
               "input"], cfg.frame_rate, suptitle=audio.name)
    miss = r["missing"]
    res = {
        "task": "repair_audio", "model": mm.loaded.name, "model_dir": str(mm.loaded.path), "input": str(audio),
        "sample_rate": sr, "samples": len(wave), "gaps_s": [[float(a), float(b)] for a, b in gaps],
        "gap_samples": int(r["gap"].sum()), "missing_frames": int(miss.sum()), "frames": len(miss),
        "crossfade_samples": cfg.win_length, "method": method, "iterations": iters, "seed": seed,
        "acceptance": r["acceptance"],
        "logmel_mse_vs_input": float(np.mean((r["repaired_logmel"][:, miss] - orig[:, miss]) ** 2)),
        "files": {"wav": str(out.resolve()), "picture": str(pic.resolve())},
    }
    _write_results(res, json_path, run, "repair_audio")
    return res


def _looks_like_image_data(path: Path) -> bool:
    from audiovae.data.images import detect_image_folder

    return path.is_dir() and bool(detect_image_folder(path))


def _write_results(res: dict, json_path, run, name: str) -> None:
    from audiovae.tasks.results import save_result

    run = Path(run)
    # a run folder (the trainer's output, with its best/ model) gets a copy for `audiovae report`
    is_run = run.is_dir() and ((run / "best").is_dir() or (run / "metrics.csv").exists())
    written = save_result(res, json_path, run if is_run else None, name)
    if is_run:
        res.setdefault("files", {})["results"] = str(written[-1].resolve())


def _tqdm(it, progress: bool, desc: str):
    if not progress:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="batch")


def load_run_kind(run: str | os.PathLike, checkpoint: str = "best") -> str:
    """The registered model name of a run (``mnist``, ``conv``...), read from its configuration only."""
    from audiovae.training.checkpoint import read_model_config, resolve_model_dir

    return str(read_model_config(resolve_model_dir(run, checkpoint)).get("model"))
