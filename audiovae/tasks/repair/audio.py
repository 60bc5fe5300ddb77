"""Repair (inpainting) of gaps in audio with a trained mel VAE (``dense``/``conv`` models).

:func:`repair_audio` takes a waveform with gaps (``[(start_s, end_s)]``), marks every log-mel frame whose
analysis window touches a gap as missing, fills those frames in the model's normalised log-mel, vocodes,
and splices the result into the input: outside each gap widened by one window (``win_length`` samples, an
equal-power crossfade) the output samples *are* the input samples. The error is the log-mel squared error
over the missing frames (natural-log mel, not normalised: ``logmel_mse``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from audiovae.errors import ConfigError, DataError, InvalidAudioError
from audiovae.models.registry import model_info
from audiovae.tasks.impute import DEFAULTS, METHODS, impute
from audiovae.tasks.repair.common import looks_like_image_data, write_results

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
    With a learned prior loaded (``mm.loaded.prior``), Metropolis-within-Gibbs targets the model's
    conditional under it. Returns ``(filled features, acceptance)``; observed frames are returned unchanged. ``progress``: a bar
    (tqdm, on stderr) over the chain iterations of every crop."""
    from tqdm import tqdm

    start = interp_fill(feats, missing, "linear")
    obs_t = torch.from_numpy(~missing).to(feats.device)
    model = mm.model
    # the run's learned prior when it is loaded (audiovae train-prior): the chain then fills each gap with
    # latent frames that fit their context under it, not with independent N(0, I) frames
    prior = mm.loaded.prior if mm.loaded.has_learned_prior else None
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
                r = impute(model, crop, observed, method, iters, block=block, state=state, progress=bar.update,
                           prior=prior)
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
    if looks_like_image_data(Path(path)):
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
    prior: str = "auto",
) -> dict:
    """Repair the gaps (or random packet loss, ``drop``) of one audio file with the mel VAE in ``run``.

    Writes ``out`` (same length and sample rate as the model's, observed audio
    kept sample for sample outside the gaps and a one-window crossfade), a
    picture of the damaged / repaired / original log-mels (``picture``, default
    ``out`` with ``.png``), and the JSON (``json_path``, and
    ``run/results/repair_audio.json`` when ``run`` is a run folder).
    ``logmel_mse_vs_input`` compares the filled frames with the input's own
    frames there: meaningful when the input was intact (a test), not when its
    gap holds junk. ``progress``: a bar (stderr) over the chain's iterations. ``prior``: ``auto`` (the run's
    learned prior when it has one), ``learned`` or ``standard`` (see :func:`audiovae.load`).
    """
    from audiovae.audio.io import load_audio, save_audio
    from audiovae.tasks.generate import MelModel
    from audiovae.tasks.plots import plot_mels

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose {', '.join(METHODS)}")
    audio = Path(audio)
    refuse_image_data(audio, run)
    mm = MelModel.load(run, vocoder_iters=vocoder_iters, checkpoint=checkpoint, device=device, prior=prior)
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
        "acceptance": r["acceptance"], "prior": "learned" if mm.loaded.has_learned_prior else "standard",
        "logmel_mse_vs_input": float(np.mean((r["repaired_logmel"][:, miss] - orig[:, miss]) ** 2)),
        "files": {"wav": str(out.resolve()), "picture": str(pic.resolve())},
    }
    write_results(res, json_path, run, "repair_audio")
    return res


