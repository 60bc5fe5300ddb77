"""Front end and vocoder against librosa and torchaudio, measured in the same run.

    python benchmarks/bench_signal.py                 # 16 clips x 10 s, as in the README
    python benchmarks/bench_signal.py --clips 4 --seconds 3   # a quick look

Prints times, quality figures and ratios (peer / ours: above 1 means we are faster).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import librosa
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, speech_clips, table  # noqa: E402

from audiovae.audio import functional as AF  # noqa: E402
from audiovae.audio.config import VOCODER_ITERS, MelConfig  # noqa: E402
from audiovae.audio.frontend import MelFrontend  # noqa: E402
from audiovae.audio.metrics import mel_cepstral_distortion, spectral_convergence, stoi  # noqa: E402
from audiovae.audio.vocoder import GriffinLimVocoder, griffin_lim  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-librosa-mel-to-audio", action="store_true", help="librosa's NNLS is very slow")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import torchaudio

    cfg = MelConfig()
    clips = speech_clips(args.clips, args.seconds, cfg.sample_rate)
    x = torch.from_numpy(clips)
    n = x.shape[-1]
    print(f"{args.clips} clips x {args.seconds:g} s of espeak-ng speech, {cfg.n_mels} mel bins, n_fft {cfg.n_fft}, "
          f"win {cfg.win_length}, hop {cfg.hop_length}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"torchaudio {torchaudio.__version__}, librosa {librosa.__version__}\n")
    rows = []

    # 1. front end
    fe = MelFrontend(cfg)
    ta_mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length,
        n_mels=cfg.n_mels, power=cfg.power, norm="slaney", mel_scale="slaney", pad_mode="constant")
    with torch.no_grad():
        t_ours = best_time(lambda: fe(x))
        t_ta = best_time(lambda: torch.log(torch.clamp(ta_mel(x), min=1e-5)))
    t_lr = best_time(lambda: np.log(np.maximum(librosa.feature.melspectrogram(
        y=clips, sr=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length,
        n_mels=cfg.n_mels, power=cfg.power, pad_mode="constant"), 1e-5)), repeat=2)
    rows += [("front end: wave -> log-mel", "librosa", f"{t_ours:.3f} s", f"{t_lr:.3f} s", f"{t_lr / t_ours:.2f}x", ">= 3x"),
             ("front end: wave -> log-mel", "torchaudio", f"{t_ours:.3f} s", f"{t_ta:.3f} s", f"{t_ta / t_ours:.2f}x", ">= 1.5x")]

    # 2. Griffin-Lim on the true magnitude, same settings (random init, momentum 0.99, 32 iterations)
    w = torch.hann_window(cfg.win_length)
    mag = AF.magnitude(AF.stft(x, w, cfg.n_fft, cfg.hop_length))
    mag_np = mag.numpy()
    ta_gl32 = torchaudio.transforms.GriffinLim(n_fft=cfg.n_fft, n_iter=32, win_length=cfg.win_length,
                                               hop_length=cfg.hop_length, power=1.0, momentum=0.99, length=n)
    t_ours = best_time(lambda: griffin_lim(mag, cfg, 32, init="random", length=n), repeat=1)
    t_ta = best_time(lambda: ta_gl32(mag), repeat=1)
    t_lr = best_time(lambda: librosa.griffinlim(mag_np, n_iter=32, hop_length=cfg.hop_length, win_length=cfg.win_length,
                                                n_fft=cfg.n_fft, momentum=0.99, init="random", length=n, random_state=0),
                     repeat=1, warmup=0)
    rows += [("Griffin-Lim, 32 it, random init", "librosa", f"{t_ours:.2f} s", f"{t_lr:.2f} s", f"{t_lr / t_ours:.2f}x", ">= 3x"),
             ("Griffin-Lim, 32 it, random init", "torchaudio", f"{t_ours:.2f} s", f"{t_ta:.2f} s", f"{t_ta / t_ours:.2f}x", ">= 1x")]

    # 3. mel -> audio end to end, 32 iterations
    logmel = fe(x)
    mel_np = np.exp(logmel.numpy())
    voc = GriffinLimVocoder(cfg, n_iter=32)
    ta_inv = torchaudio.transforms.InverseMelScale(n_stft=cfg.n_freqs, n_mels=cfg.n_mels, sample_rate=cfg.sample_rate,
                                                   norm="slaney", mel_scale="slaney")
    with torch.no_grad():
        t_ours_e2e = best_time(lambda: voc(logmel, num_samples=[n] * len(x)), repeat=1)
        t_ta = best_time(lambda: ta_gl32(ta_inv(torch.exp(logmel))), repeat=1, warmup=0)
    rows.append(("mel -> audio, 32 it", "torchaudio", f"{t_ours_e2e:.2f} s", f"{t_ta:.2f} s", f"{t_ta / t_ours_e2e:.2f}x", "> 1x"))
    if not args.skip_librosa_mel_to_audio:
        t_lr = best_time(lambda: librosa.feature.inverse.mel_to_audio(
            mel_np, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
            power=cfg.power, n_iter=32, length=n, pad_mode="constant"), repeat=1, warmup=0)
        rows.append(("mel -> audio, 32 it", "librosa", f"{t_ours_e2e:.2f} s", f"{t_lr:.2f} s", f"{t_lr / t_ours_e2e:.2f}x", ">= 8x"))
    print(table(rows, ("speed", "peer", "ours", "peer time", "ratio", "target")))

    # 4. quality for time: our default (PGHI + VOCODER_ITERS) vs peers' 100 random-phase iterations, on the true magnitude
    def quality(y: torch.Tensor) -> tuple[float, float, float]:
        y = y.float()
        sc = float(spectral_convergence(mag, AF.magnitude(AF.stft(y, w, cfg.n_fft, cfg.hop_length))).mean())
        mcd = float(mel_cepstral_distortion(x, y, cfg.sample_rate).mean())
        st = float(stoi(x, y, cfg.sample_rate).mean())
        return sc, mcd, st

    ta_gl100 = torchaudio.transforms.GriffinLim(n_fft=cfg.n_fft, n_iter=100, win_length=cfg.win_length,
                                                hop_length=cfg.hop_length, power=1.0, momentum=0.99, length=n)
    torch.manual_seed(0)
    t_ours, (y_ours,) = _timed(lambda: griffin_lim(mag, cfg, VOCODER_ITERS, init="pghi", length=n))
    t_ta100, (y_ta,) = _timed(lambda: ta_gl100(mag))
    t_lr100, (y_lr,) = _timed(lambda: torch.from_numpy(librosa.griffinlim(
        mag_np, n_iter=100, hop_length=cfg.hop_length, win_length=cfg.win_length, n_fft=cfg.n_fft, momentum=0.99,
        init="random", length=n, random_state=0)))
    q = {name: quality(y) for name, y in (("ours", y_ours), ("torchaudio", y_ta), ("librosa", y_lr))}
    qrows = [
        (f"audiovae: PGHI + {VOCODER_ITERS} it", f"{t_ours:.2f}", *(f"{v:.4f}" for v in q["ours"])),
        ("torchaudio GriffinLim 100 it", f"{t_ta100:.2f}", *(f"{v:.4f}" for v in q["torchaudio"])),
        ("librosa griffinlim 100 it", f"{t_lr100:.2f}", *(f"{v:.4f}" for v in q["librosa"])),
    ]
    print("\nquality for time (true STFT magnitude -> audio; SC vs that magnitude, MCD/STOI vs the original)")
    print(table(qrows, ("method", "time (s)", "SC (lower)", "MCD dB (lower)", "STOI (higher)")))
    print(f"time ratio ours / torchaudio-100: {t_ours / t_ta100:.3f} (target <= 0.333)")
    better = all(q["ours"][0] <= q[p][0] and q["ours"][1] <= q[p][1] and q["ours"][2] >= q[p][2] for p in ("torchaudio", "librosa"))
    print(f"ours at least as good on all three figures: {better}")

    # 5. end to end from the log-mel, for reference (each method with its own mel inversion)
    voc_default = GriffinLimVocoder(cfg)
    t_e2e, (y_e2e,) = _timed(lambda: voc_default(logmel, num_samples=[n] * len(x)))
    ta_gl100_e2e, (y_ta_e2e,) = _timed(lambda: ta_gl100(ta_inv(torch.exp(logmel))))
    print("\nfrom the log-mel (mel inversion included), SC vs the true magnitude:")
    print(table([
        (f"audiovae: NNLS + PGHI + {VOCODER_ITERS} it", f"{t_e2e:.2f}", *(f"{v:.4f}" for v in quality(y_e2e))),
        ("torchaudio InverseMelScale + GriffinLim 100 it", f"{ta_gl100_e2e:.2f}", *(f"{v:.4f}" for v in quality(y_ta_e2e))),
    ], ("method", "time (s)", "SC", "MCD dB", "STOI")))


def _timed(fn):
    import time

    t0 = time.perf_counter()
    with torch.no_grad():
        out = fn()
    return time.perf_counter() - t0, (out,)


if __name__ == "__main__":
    main()
