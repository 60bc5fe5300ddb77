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
from audiovae.audio.io import SOUNDFILE_EXTENSIONS, find_audio_files, load_audio, save_audio
from audiovae.audio.melfile import SUFFIX, check_finite, load_mel, save_mel
from audiovae.audio.metrics import resynthesis_metrics
from audiovae.audio.vocoder import CHUNK_FRAMES, GriffinLimVocoder
from audiovae.errors import AudioVAEError, OutputError
from audiovae.utils import InputFiles, check_output_dir, check_output_file


WRITABLE_AUDIO = tuple(dict.fromkeys((".wav", *SOUNDFILE_EXTENSIONS)))  # an output's suffix picks its format
LIST_SUFFIXES = (".txt", ".lst", ".list", ".scp")  # a list file: one path per line (as `audiovae extract` reads)


def _expand(inputs: Iterable[Path], pattern_suffixes: tuple[str, ...] | None) -> list[tuple[Path, Path]]:
    """``[(file, its path relative to the argument that named it)]``: a folder's files keep their sub-folders;
    a list file's (``.txt``: one path per line, relative to the list's folder) land by their names."""
    from audiovae.data.features import list_inputs

    out: list[tuple[Path, Path]] = []
    for p in inputs:
        p = Path(p)
        if p.is_file() and p.suffix in LIST_SUFFIXES:
            out.extend((q, Path(q.name)) for q in list_inputs(p)[0])
        elif p.is_dir():
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


def many_inputs(inputs: Iterable[Path]) -> bool:
    """Whether ``inputs`` make a folder of outputs: several of them, or a folder or a list file among them."""
    inputs = [Path(p) for p in inputs]
    return len(inputs) != 1 or inputs[0].is_dir() or (inputs[0].is_file() and inputs[0].suffix in LIST_SUFFIXES)


def plan_io(inputs: Iterable[Path], output: Path, suffixes: tuple[str, ...], overwrite: bool = False,
            pattern_suffixes: tuple[str, ...] | None = None) -> list[tuple[Path, Path]]:
    """``[(input, output)]`` for a command's ``-o/--output``, the same rule for every command that takes inputs.

    One input file: ``output`` is the output file (its name ends in one of
    ``suffixes``; an existing folder is refused). Several inputs, a folder or a
    list file: ``output`` is a folder, each output mirrors its input's relative
    path with ``suffixes[0]`` (:func:`plan_outputs`; an existing file is refused).
    """
    inputs = [Path(p) for p in inputs]
    output = Path(output)
    missing = not os.path.lexists(inputs[0]) and not output.name.lower().endswith(suffixes) if inputs else False
    if many_inputs(inputs) or missing:  # a missing input (a mistyped folder?) is reported as a bad input, not here
        return plan_outputs(_expand(inputs, pattern_suffixes), output, suffixes[0], overwrite)
    src = inputs[0]
    example = f"{_stem(src)}{suffixes[0]}"
    if output.is_dir():
        raise OutputError(f"is a folder; one input makes one output file: give its name (e.g. {output / example}), "
                          "or several inputs, a folder or a list file for a folder of outputs", output)
    if not output.name.lower().endswith(suffixes):
        raise OutputError(f"one input makes one output file, and its name must end in {' or '.join(suffixes)} "
                          f"(e.g. {output / example} for a file in a folder {output.name})", output)
    check_output_file(output, [src], overwrite)
    return [(src, output)]


def mel_files(
    inputs: Iterable[Path], output: Path, cfg: MelConfig, strict: bool = False, progress: bool = False,
    overwrite: bool = False,
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Write the log-mel of each audio input; return (written, [(bad path, problem)]).

    ``output`` as for every command's ``-o`` (:func:`plan_io`): the ``.mel.npz`` file for one input
    file; for several inputs, a folder or a list file, the folder where each output mirrors its
    input's relative path. Outputs are checked before any work starts.
    """
    plan = plan_io(inputs, Path(output), (SUFFIX,), overwrite)
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
    output: Path,
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
    """Write the waveform of each log-mel file (``output`` as in :func:`mel_files`), with the configuration stored in it.

    Outputs are named and checked as for :func:`mel_files`. Files with the same
    configuration are vocoded ``batch_size`` at a time (similar lengths together,
    padded, each item inverted exactly as it would be alone), on ``device``; a
    batch that fails is redone one file at a time, so one bad file is skipped and
    listed, not the end of the rest. Returns (written, [(bad path, problem)]).
    """
    plan = plan_io(mels, Path(output), WRITABLE_AUDIO, overwrite, pattern_suffixes=(SUFFIX, ".npy"))
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
    # counted in frames, so that one long file (inverted in chunks) moves the bar too
    total = sum(lm.shape[-1] for g in groups.values() for _, lm, _, _ in g)
    with tqdm(total=total, desc="vocode", unit="frame", unit_scale=True,
              disable=not progress or (len(plan) < 2 and total <= CHUNK_FRAMES)) as bar:
        for cfg, items in groups.items():
            voc = GriffinLimVocoder(cfg, n_iter, momentum, init).to(device)
            voc.progress = bar.update
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
        wave = voc(batch.to(device), lengths=torch.tensor(frames, device=device),
                   num_samples=torch.tensor(n, device=device)).cpu()
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


