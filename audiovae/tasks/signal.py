"""Signal tasks behind `audiovae mel`, `vocode` and `resynth`."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Iterable

import torch
from tqdm import tqdm

from audiovae.audio.config import MelConfig
from audiovae.audio.frontend import MelFrontend
from audiovae.audio.io import find_audio_files, load_audio, save_audio
from audiovae.audio.melfile import SUFFIX, check_finite, load_mel, save_mel
from audiovae.audio.metrics import resynthesis_metrics
from audiovae.audio.vocoder import GriffinLimVocoder
from audiovae.errors import AudioVAEError, OutputError
from audiovae.utils import InputFiles, check_output_dir, check_output_file


def _expand(inputs: Iterable[Path], pattern_suffixes: tuple[str, ...] | None) -> list[tuple[Path, Path]]:
    """``[(file, its path relative to the argument that named it)]``: a folder's files keep their sub-folders."""
    out: list[tuple[Path, Path]] = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            if pattern_suffixes is None:
                found = find_audio_files(p)
            else:
                found = sorted(q for q in p.rglob("*") if q.is_file() and q.name.endswith(pattern_suffixes))
            out.extend((q, q.relative_to(p)) for q in found)
        else:
            out.append((p, Path(p.name)))
    return out


def _stem(path: Path) -> str:
    name = path.name
    for suf in (SUFFIX, ".npy"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return path.stem


def plan_outputs(
    files: list[tuple[Path, Path]], out_dir: Path, suffix: str, overwrite: bool = False
) -> list[tuple[Path, Path]]:
    """``[(input, output)]``: each input's output mirrors its relative path under ``out_dir``, with ``suffix``.

    Checked before any work starts, so a refused batch writes nothing: two inputs
    that would land on one output are refused naming both; an output that is one
    of the inputs always, an existing file unless ``overwrite``
    (:class:`~audiovae.errors.OutputError`).
    """
    out_dir = check_output_dir(out_dir)
    plan, seen = [], {}
    for src, rel in files:
        dst = out_dir / rel.parent / f"{_stem(rel)}{suffix}"
        key = os.path.normcase(os.path.abspath(dst))
        if key in seen and os.path.realpath(seen[key]) == os.path.realpath(src):
            continue  # the same file named twice on the command line: done once
        if key in seen:
            raise OutputError(f"{seen[key]} and {src} would both be written to this file; give them different "
                              "names (or run them separately)", dst)
        seen[key] = src
        plan.append((src, dst))
    inputs = InputFiles(src for src, _ in files)
    for _, dst in plan:
        check_output_file(dst, inputs, overwrite)
    return plan


def mel_files(
    inputs: Iterable[Path], out_dir: Path, cfg: MelConfig, strict: bool = False, progress: bool = False,
    overwrite: bool = False,
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Write ``out_dir/<relative path>.mel.npz`` for each audio input; return (written, [(bad path, problem)]).

    A file named on the command line lands as ``out_dir/<stem>.mel.npz``; the files
    of a folder keep their sub-folders. Outputs are checked first (:func:`plan_outputs`).
    """
    plan = plan_outputs(_expand(inputs, None), Path(out_dir), SUFFIX, overwrite)
    fe = MelFrontend(cfg)
    ok, bad = [], []
    for path, dst in tqdm(plan, desc="log-mel", unit="file", disable=not progress or len(plan) < 2):
        try:
            wave, _ = load_audio(path, cfg.sample_rate, min_samples=cfg.hop_length)
            with torch.no_grad():
                logmel = fe(torch.from_numpy(wave)[None])[0].numpy()
            check_finite(logmel, path)
            ok.append(save_mel(dst, logmel, cfg, len(wave), str(path)))
        except OutputError:
            raise  # the output cannot be written: not a bad input, and the next one would fail too
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
    overwrite: bool = False,
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Write ``out_dir/<relative path>.wav`` for each log-mel file, with the configuration stored in it.

    Outputs are named and checked as for :func:`mel_files`. Files with the same
    configuration are vocoded ``batch_size`` at a time (similar lengths together,
    padded, each item inverted exactly as it would be alone), on ``device``; a
    batch that fails is redone one file at a time, so one bad file is skipped and
    listed, not the end of the rest. Returns (written, [(bad path, problem)]).
    """
    plan = plan_outputs(_expand(mels, (SUFFIX, ".npy")), Path(out_dir), ".wav", overwrite)
    ok, bad = [], []
    groups: dict[MelConfig, list[tuple[Path, torch.Tensor, int | None, Path]]] = {}
    for path, dst in plan:
        try:
            logmel, cfg, num_samples = load_mel(path, config)
        except AudioVAEError as exc:
            if strict:
                raise
            bad.append((exc.path or str(path), exc.problem))
            continue
        groups.setdefault(cfg, []).append((path, torch.from_numpy(logmel), num_samples, dst))
    device = torch.device(device)
    with tqdm(total=sum(len(g) for g in groups.values()), desc="vocode", unit="file",
              disable=not progress or len(plan) < 2) as bar:
        for cfg, items in groups.items():
            voc = GriffinLimVocoder(cfg, n_iter, momentum, init).to(device)
            items.sort(key=lambda it: it[1].shape[-1])
            for i in range(0, len(items), max(1, batch_size)):
                part = items[i : i + max(1, batch_size)]
                try:
                    done = list(zip(part, _vocode_batch(voc, [it[:3] for it in part], device)))
                except _VOCODE_ERRORS as exc:
                    done = []
                    for it in part:  # redo the batch's files one at a time: only the bad one(s) are lost
                        try:
                            if len(part) == 1:
                                raise exc
                            done.append((it, _vocode_batch(voc, [it[:3]], device)[0]))
                        except _VOCODE_ERRORS as one:
                            if strict:
                                raise
                            bad.append(_vocode_problem(it[0], one))
                for (_, _, _, dst), wave in done:
                    ok.append(save_audio(dst, wave, cfg.sample_rate))
                bar.update(len(part))
    return ok, bad


# what one file can make the vocoder raise (a bad log-mel, a batch too large for memory)
_VOCODE_ERRORS = (AudioVAEError, MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))


def _vocode_problem(path: Path, exc: BaseException) -> tuple[str, str]:
    problem = exc.problem if isinstance(exc, AudioVAEError) else "out of memory"
    return str(path), f"cannot vocode it ({problem})"


def _vocode_batch(voc: GriffinLimVocoder, part: list, device: torch.device) -> list:
    """Waveforms (numpy) for a list of (path, logmel (M, T), num_samples or None), as one padded batch."""
    cfg = voc.config
    frames = [lm.shape[-1] for _, lm, _ in part]
    n = [ns if ns is not None else (t - 1) * cfg.hop_length for (_, _, ns), t in zip(part, frames)]
    batch = torch.full((len(part), cfg.n_mels, max(frames)), math.log(cfg.log_floor))
    for j, (_, lm, _) in enumerate(part):
        batch[j, :, : lm.shape[-1]] = lm
    with torch.no_grad():
        wave = voc(batch.to(device), num_samples=torch.tensor(n, device=device)).cpu()
    return [wave[j, : n[j]].numpy() for j in range(len(part))]


def resynthesize(input: Path, output: Path, cfg: MelConfig, n_iter: int | None = None, init: str = "pghi",
                 overwrite: bool = False) -> dict:
    """wav -> log-mel -> wav; write ``output`` and return metrics of the pair.

    ``output`` is never ``input``; an existing file is replaced only with ``overwrite``.
    The metrics cover the input's own band: a file resampled up (16 kHz read at
    22.05 kHz) is scored over 0..8 kHz, not over the empty band above (``source_rate``
    and ``metrics["band_max_hz"]`` in the result say so).
    """
    check_output_file(output, [input], overwrite)
    wave, sr, source_sr = load_audio(input, cfg.sample_rate, min_samples=cfg.hop_length, return_source_rate=True)
    x = torch.from_numpy(wave)[None]
    with torch.no_grad():
        logmel = MelFrontend(cfg)(x)
        t0 = time.perf_counter()
        y = GriffinLimVocoder(cfg, n_iter=n_iter, init=init)(logmel, num_samples=[x.shape[-1]])
        dt = time.perf_counter() - t0
    save_audio(output, y[0].numpy(), sr)
    return {
        "metrics": resynthesis_metrics(x[0], y[0], sr, max_hz=min(source_sr, sr) / 2),
        "source_rate": source_sr,
        "seconds": x.shape[-1] / sr,
        "vocoder_seconds": dt,
    }


