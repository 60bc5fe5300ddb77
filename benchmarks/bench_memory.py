"""Peak memory of `audiovae mel` and `audiovae vocode` against the input's length.

Each measurement is one fresh Python process that runs the command (the CLI's own
code, in-process) on one long file and reports its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``). ``baseline`` is the same process
importing everything and running the command on a 10-s file, so the column
``above 10 s`` is what the length costs; ``wave+logmel`` is the size of the
float32 waveform and its log-mel, what any implementation holds. The input is synthetic speech-like audio
(a gliding harmonic voice with syllable-rate bursts and a little noise), written
block by block, so the parent never holds it. One thread, and few Griffin-Lim
iterations (memory does not depend on them):

    python benchmarks/bench_memory.py [--minutes 1 5 15 30] [--iters 2]

Front end and vocoder work on long inputs in chunks (``FRAME_CHUNK`` frames,
``CHUNK_FRAMES`` with overlap), so beyond a chunk the peak grows only by the
input and the output themselves (a 30-min waveform is 160 MB in float32, its
256-bin log-mel 160 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from common import table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SR = 22050

CHILD = r"""
import json, resource, sys, time
from audiovae.cli import cli
t0 = time.perf_counter()
try:
    cli.main(sys.argv[1:], standalone_mode=False)
except SystemExit as e:
    if e.code:
        raise
print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.perf_counter() - t0}))
"""


def write_speechlike(path: Path, seconds: float, seed: int = 0, block_s: float = 10.0) -> None:
    """A mono 16-bit wav of ``seconds`` of speech-like sound, written ``block_s`` seconds at a time."""
    rng = np.random.default_rng(seed)
    phase = 0.0
    with sf.SoundFile(str(path), "w", SR, 1, subtype="PCM_16") as f:
        done = 0
        total = int(seconds * SR)
        while done < total:
            n = min(int(block_s * SR), total - done)
            t = (done + np.arange(n)) / SR
            f0 = 120 + 40 * np.sin(2 * np.pi * 0.3 * t) + 15 * np.sin(2 * np.pi * 2.1 * t)
            ph = phase + 2 * np.pi * np.cumsum(f0) / SR
            phase = float(ph[-1])
            voice = sum(np.sin(k * ph) / k for k in range(1, 30))
            env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
            x = 0.08 * env * voice + 0.01 * rng.standard_normal(n)
            f.write(x.astype(np.float32))
            done += n


def run(args: list[str], env: dict, cwd: Path) -> dict:
    # cwd: not this checkout, whose audiovae/ `python -c` would import ahead of PYTHONPATH
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 15, 30])
    ap.add_argument("--iters", type=int, default=2, help="Griffin-Lim iterations of vocode (memory does not depend on them)")
    ap.add_argument("--pythonpath", default=str(ROOT), help="the audiovae tree to measure (e.g. an older checkout)")
    ns = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=ns.pythonpath, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        base = {}
        for label, minutes in [("10 s (baseline)", 10 / 60), *[(f"{m:g} min", m) for m in ns.minutes]]:
            wav = d / "in" / "long.wav"
            wav.parent.mkdir(exist_ok=True)
            write_speechlike(wav, minutes * 60)
            t0 = time.perf_counter()
            mel = run(["mel", str(wav), "-o", str(d / "mels")], env, d)
            voc = run(["vocode", str(d / "mels" / "long.mel.npz"), "-o", str(d / "out"), "--iters", str(ns.iters)], env, d)
            if not base:
                base = {"mel": mel["maxrss_kb"], "vocode": voc["maxrss_kb"]}
            mb = lambda kb: f"{kb / 1024:.0f}"  # noqa: E731
            n = int(minutes * 60 * SR)
            io_kb = (n * 4 + 256 * (1 + n // 256) * 4) / 1024  # the float32 waveform and its 256-bin log-mel
            rows.append((label, mb(io_kb), mb(mel["maxrss_kb"]), mb(mel["maxrss_kb"] - base["mel"]),
                         f"{mel['seconds']:.1f}", mb(voc["maxrss_kb"]), mb(voc["maxrss_kb"] - base["vocode"]),
                         f"{voc['seconds']:.1f}"))
            print(f"  {label}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            for p in (d / "mels", d / "out"):
                for q in p.glob("*"):
                    q.unlink()
    print(f"peak RSS (MB) of one process per command; vocode with --iters {ns.iters}; tree {ns.pythonpath}")
    print(table(rows, ("input", "wave+logmel", "mel peak", "above 10 s", "mel s", "vocode peak", "above 10 s",
                       "vocode s")))


if __name__ == "__main__":
    main()
