"""Signal tasks behind `audiovae mel`, `vocode` and `resynth`."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterable

import torch
from tqdm import tqdm

from audiovae.audio.config import MelConfig
from audiovae.audio.frontend import MelFrontend
from audiovae.audio.io import find_audio_files, load_audio, save_audio
from audiovae.audio.melfile import SUFFIX, load_mel, save_mel
from audiovae.audio.metrics import resynthesis_metrics
from audiovae.audio.vocoder import CHUNK_FRAMES, GriffinLimVocoder
from audiovae.errors import AudioVAEError


def _expand(inputs: Iterable[Path], pattern_suffixes: tuple[str, ...] | None) -> list[Path]:
    out: list[Path] = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            if pattern_suffixes is None:
                out.extend(find_audio_files(p))
            else:
                out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.name.endswith(pattern_suffixes)))
        else:
            out.append(p)
    return out


def _stem(path: Path) -> str:
    name = path.name
    for suf in (SUFFIX, ".npy"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return path.stem


def mel_files(
    inputs: Iterable[Path], out_dir: Path, cfg: MelConfig, strict: bool = False, progress: bool = False
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Write ``out_dir/<stem>.mel.npz`` for each audio input; return (written, [(bad path, problem)])."""
    files = _expand(inputs, None)
    fe = MelFrontend(cfg)
    ok, bad = [], []
    for path in tqdm(files, desc="log-mel", unit="file", disable=not progress or len(files) < 2):
        try:
            wave, _ = load_audio(path, cfg.sample_rate, min_samples=cfg.hop_length)
            with torch.no_grad():
                logmel = fe(torch.from_numpy(wave)[None])[0].numpy()
            ok.append(save_mel(Path(out_dir) / f"{_stem(path)}{SUFFIX}", logmel, cfg, len(wave), str(path)))
        except AudioVAEError as exc:
            if strict:
                raise
            bad.append((exc.path or str(path), exc.problem))
    return ok, bad


def vocode_files(
    mels: Iterable[Path],
    out_dir: Path,
    n_iter: int | None = None,
    init: str = "pghi",
    momentum: float = 0.99,
    config: MelConfig | None = None,
    strict: bool = False,
    progress: bool = False,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Write ``out_dir/<stem>.wav`` for each log-mel file, with the configuration stored in it.

    Files with the same configuration are vocoded ``batch_size`` at a time (similar
    lengths together, padded, each item inverted exactly as it would be alone), on
    ``device``. Returns (written, [(bad path, problem)]).
    """
    files = _expand(mels, (SUFFIX, ".npy"))
    ok, bad = [], []
    groups: dict[MelConfig, list[tuple[Path, torch.Tensor, int | None]]] = {}
    for path in files:
        try:
            logmel, cfg, num_samples = load_mel(path, config)
        except AudioVAEError as exc:
            if strict:
                raise
            bad.append((exc.path or str(path), exc.problem))
            continue
        groups.setdefault(cfg, []).append((path, torch.from_numpy(logmel), num_samples))
    device = torch.device(device)
    # counted in frames, so that one long file (inverted in chunks) moves the bar too
    total = sum(lm.shape[-1] for g in groups.values() for _, lm, _ in g)
    with tqdm(total=total, desc="vocode", unit="frame", unit_scale=True,
              disable=not progress or (len(files) < 2 and total <= CHUNK_FRAMES)) as bar:
        for cfg, items in groups.items():
            voc = GriffinLimVocoder(cfg, n_iter, momentum, init).to(device)
            voc.progress = bar.update
            items.sort(key=lambda it: it[1].shape[-1])
            for i in range(0, len(items), max(1, batch_size)):
                part = items[i : i + max(1, batch_size)]
                for (path, _, _), wave in zip(part, _vocode_batch(voc, part, device)):
                    ok.append(save_audio(Path(out_dir) / f"{_stem(path)}.wav", wave, cfg.sample_rate))
    return ok, bad


def _vocode_batch(voc: GriffinLimVocoder, part: list, device: torch.device) -> list:
    """Waveforms (numpy) for a list of (path, logmel (M, T), num_samples or None), as one padded batch."""
    cfg = voc.config
    frames = [lm.shape[-1] for _, lm, _ in part]
    n = [ns if ns is not None else (t - 1) * cfg.hop_length for (_, _, ns), t in zip(part, frames)]
    batch = torch.full((len(part), cfg.n_mels, max(frames)), math.log(cfg.log_floor))
    for j, (_, lm, _) in enumerate(part):
        batch[j, :, : lm.shape[-1]] = lm
    with torch.no_grad():
        wave = voc(batch.to(device), lengths=torch.tensor(frames, device=device),
                   num_samples=torch.tensor(n, device=device)).cpu()
    return [wave[j, : n[j]].numpy() for j in range(len(part))]


def resynthesize(input: Path, output: Path, cfg: MelConfig, n_iter: int | None = None, init: str = "pghi") -> dict:
    """wav -> log-mel -> wav; write ``output`` and return metrics of the pair."""
    wave, sr = load_audio(input, cfg.sample_rate, min_samples=cfg.hop_length)
    x = torch.from_numpy(wave)[None]
    with torch.no_grad():
        logmel = MelFrontend(cfg)(x)
        t0 = time.perf_counter()
        y = GriffinLimVocoder(cfg, n_iter=n_iter, init=init)(logmel, num_samples=[x.shape[-1]])
        dt = time.perf_counter() - t0
    save_audio(output, y[0].numpy(), sr)
    return {
        "metrics": resynthesis_metrics(x[0], y[0], sr),
        "seconds": x.shape[-1] / sr,
        "vocoder_seconds": dt,
    }


