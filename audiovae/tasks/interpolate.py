"""`audiovae interpolate`: walk the latent space between two audio files or two images.

Both ends are encoded to their posterior means ``z_a``, ``z_b``; each step
decodes ``(1 - t) z_a + t z_b`` for ``t`` evenly spaced in [0, 1], so the first
and last steps are the posterior-mean reconstructions of A and B.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from audiovae.errors import ConfigError
from audiovae.tasks.encode import IMAGE_SUFFIXES, read_image
from audiovae.api import load


def interpolate_images(run: str | os.PathLike, a: str | os.PathLike, b: str | os.PathLike, out: str | os.PathLike,
                       steps: int = 8, checkpoint: str = "best", device: str = "auto") -> dict:
    """Decode ``steps`` points between two image files; writes OUT (a PNG strip A, steps..., B)."""
    from audiovae.tasks.figures import image_grid, to_unit

    loaded = load(run, checkpoint, device)
    if loaded.mel is not None:
        raise ConfigError(f"{loaded.path} is a {loaded.name!r} model: interpolate audio files with it, not images")
    dev = next(loaded.model.parameters()).device
    x = torch.from_numpy(np.stack([read_image(a, loaded), read_image(b, loaded)])).to(dev)
    with torch.no_grad():
        mu, _ = loaded.model.encoder_params(x)
        ts = torch.linspace(0, 1, steps, device=dev)[:, None]
        y = loaded.model.decode((1 - ts) * mu[:1] + ts * mu[1:]).mean.cpu().numpy()
    signed = loaded.name != "mnist"
    strip = np.concatenate([to_unit(x[:1].cpu().numpy(), signed), to_unit(y, signed), to_unit(x[1:].cpu().numpy(), signed)])
    path = image_grid(out, strip, ncol=len(strip), scale=3)
    return {"output": str(path), "steps": steps, "t": np.linspace(0, 1, steps).tolist(), "kind": "image"}


def interpolate_audio(run: str | os.PathLike, a: str | os.PathLike, b: str | os.PathLike, out: str | os.PathLike,
                      steps: int = 5, gap: float = 0.25, vocoder_iters: int | None = None, checkpoint: str = "best",
                      device: str = "auto", progress: bool = False, speaker: str | None = None,
                      label: str | None = None) -> dict:
    """Decode ``steps`` points between two audio files (cut to the shorter one's length); a conditioned model
    decodes them in the voice of ``speaker`` (or as ``label``), which it needs.

    Writes OUT (the steps one after another, ``gap`` seconds of silence
    between them) and OUT with ``.png`` (their log-mels, one panel per step).
    ``progress``: a bar over the steps (stderr).
    """
    from audiovae.audio.io import load_audio, save_audio
    from audiovae.tasks.generate import MelModel
    from audiovae.tasks.plots import plot_mels

    mm = MelModel.load(run, vocoder_iters=vocoder_iters, checkpoint=checkpoint, device=device)
    wa, sr = load_audio(a, mm.sample_rate, min_samples=mm.loaded.mel.win_length)
    wb, _ = load_audio(b, mm.sample_rate, min_samples=mm.loaded.mel.win_length)
    cond = mm.loaded.condition_index(speaker=speaker, label=label)
    if cond is None and mm.loaded.conditions is not None:
        c = mm.loaded.conditions
        raise ConfigError(f"{mm.loaded.path} is conditioned on {c['key']}: give --{c['key']} (this model knows: "
                          f"{', '.join(c['names'])})")
    parts = mm.interpolate(wa, wb, steps=steps, progress=progress, cond=cond)
    silence = np.zeros(int(gap * sr), np.float32)
    joined = np.concatenate([np.concatenate([y, silence]) for y, _ in parts])[: -len(silence) or None]
    out = Path(out)
    save_audio(out, joined, sr)
    ts = np.linspace(0, 1, steps)
    png = plot_mels(out.with_suffix(".png"), [mm.loaded.normalizer.inverse(f)[0].cpu().numpy() for _, f in parts],
                    [f"t = {t:.2f}" for t in ts], mm.loaded.mel.frame_rate, suptitle=f"{Path(a).name} -> {Path(b).name}")
    return {"output": str(out), "picture": str(png), "steps": steps, "t": ts.tolist(), "kind": "audio",
            "seconds_per_step": len(parts[0][0]) / sr}


def interpolate(run: str | os.PathLike, a: str | os.PathLike, b: str | os.PathLike, out: str | os.PathLike,
                steps: int | None = None, progress: bool = False, **kw) -> dict:
    """Images or audio, by the inputs' file types (``steps`` default: 8 for images, 5 for audio);
    ``progress``: a bar over the audio steps (stderr)."""
    is_img = [Path(p).suffix.lower() in IMAGE_SUFFIXES for p in (a, b)]
    if any(is_img) and not all(is_img):
        raise ConfigError(f"give two images or two audio files, not one of each ({a}, {b})")
    if all(is_img):
        return interpolate_images(run, a, b, out, steps or 8, **kw)
    return interpolate_audio(run, a, b, out, steps or 5, progress=progress, **kw)
