"""Feature-extraction throughput: `audiovae extract` on a folder corpus vs a plain librosa loop, same run.

Hours of audio featurised per hour of wall time. The corpus is espeak-ng speech in
several voices written as 22050 Hz wav files. The peer is the loop most people write
first: ``librosa.load`` + ``librosa.feature.melspectrogram`` (same n_fft, window, hop,
256 bins) + log, one file after another in one process. ``audiovae extract`` runs
with DataLoader workers and writes the whole cache (parts, feats.f32, index, stats).

    python benchmarks/bench_extract.py [--files 48] [--seconds 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from common import speech_clips, table  # noqa: E402


def librosa_loop(files: list[Path], sr: int = 22050) -> float:
    import librosa

    t0 = time.perf_counter()
    for f in files:
        y, _ = librosa.load(f, sr=sr)
        m = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, win_length=1024, hop_length=256, n_mels=256,
                                           power=1.0)
        np.log(np.maximum(m, 1e-5))
    return time.perf_counter() - t0


def audiovae_extract(src: Path, out: Path, workers: int) -> float:
    from audiovae.data.features import extract

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    extract(src, out, workers=workers, progress=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "corpus"
        src.mkdir()
        clips = speech_clips(min(args.files, 16), args.seconds)
        files = []
        for i in range(args.files):
            p = src / f"spk{i % 4}" / f"utt{i:04d}.wav"
            p.parent.mkdir(exist_ok=True)
            sf.write(p, clips[i % len(clips)] * (0.5 + 0.5 * ((i * 7) % 11) / 10), 22050, subtype="PCM_16")
            files.append(p)
        hours = args.files * args.seconds / 3600
        # warm both once on a few files (imports, numba JIT, librosa's filterbank cache), then time
        librosa_loop(files[:2])
        audiovae_extract(src / "spk0", Path(d) / "warm", 0)
        rows = []
        t_lib = librosa_loop(files)
        rows.append(("librosa.load + melspectrogram loop", f"{t_lib:.1f}", f"{hours * 3600 / t_lib:.0f}", "1.00"))
        for w in sorted({0, args.workers}):
            t = audiovae_extract(src, Path(d) / "feats", w)
            rows.append((f"audiovae extract, {w} workers", f"{t:.1f}", f"{hours * 3600 / t:.0f}", f"{t_lib / t:.2f}"))
    print(f"{args.files} files x {args.seconds:g} s = {hours * 60:.1f} min of 22050 Hz speech; "
          f"{os.cpu_count()} CPU cores, torch threads 2")
    print(table(rows, ("method", "seconds", "hours of audio / hour", "speed-up vs librosa")))


if __name__ == "__main__":
    main()
