"""The front end and the vocoder on a CUDA GPU against torchaudio on the same GPU, in the same run.

    python benchmarks/bench_gpu.py                 # 16 clips x 10 s of real speech, batch 64 too
    python benchmarks/bench_gpu.py --clips 4 --repeat 3   # a quick look

Prints issue 9's tables: wave -> log-mel; log-mel -> audio with the default iterations
against torchaudio's 100, and with 32 against 32, with the time split into magnitude (NNLS), initial phase and
iterations; Griffin-Lim at equal iterations from random phase; quality (SC, MCD,
STOI) of our default against torchaudio-100; one call on a batch of 64; training the
conv VAE (the trainer against a bare loop; fp32/bf16; eager/``torch.compile``; batch
32 up to the largest that fits). Each time
is the median of ``--repeat`` timed runs after a warm-up, with
``torch.cuda.synchronize()`` around each. On a machine without a CUDA GPU it says
so and exits with status 0: nothing is measured.

Speech: the Asterisk prompts (real recordings, four speakers), concatenated per
speaker to ``--seconds``; see ``bench_vocoder_clips.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vocoder_clips import asterisk_clips  # noqa: E402
from common import table  # noqa: E402

from audiovae.audio import functional as AF  # noqa: E402
from audiovae.audio.config import VOCODER_ITERS, MelConfig  # noqa: E402
from audiovae.audio.frontend import MelFrontend  # noqa: E402
from audiovae.audio.metrics import mel_cepstral_distortion, spectral_convergence, stoi  # noqa: E402
from audiovae.audio.vocoder import (  # noqa: E402
    GriffinLimVocoder,
    default_iters,
    griffin_lim,
    initial_phase,
    resolve_init,
)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def gpu_time(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` on the GPU over ``repeat`` runs after one warm-up."""
    fn()
    _sync()
    times = []
    for _ in range(repeat):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speech(n: int, seconds: float, sr: int) -> torch.Tensor:
    """``(n, seconds * sr)`` real speech: Asterisk prompts concatenated, speakers in turn."""
    clips = asterisk_clips(max(16, n * 4), sr)
    length = int(seconds * sr)
    out = np.zeros((n, length), np.float32)
    for i in range(n):
        pos, j = 0, i
        while pos < length:
            x = clips[j % len(clips)][1]
            take = min(len(x), length - pos)
            out[i, pos : pos + take] = x[:take]
            pos += take
            j += n
    return torch.from_numpy(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--big-batch", type=int, default=64)
    ap.add_argument("--quality-clips", type=int, default=4)
    ap.add_argument("--train-steps", type=int, default=50, help="timed training steps per setting (0: skip training)")
    ap.add_argument("--train-batches", default="32,128,512,2048", help="training batch sizes to try")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # "cpu": a smoke test of this script
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU on this machine, so nothing was measured; run it on a machine with one.")
        return 0
    import torchaudio

    dev = torch.device(args.device)
    cfg = MelConfig()
    x = speech(args.clips, args.seconds, cfg.sample_rate).to(dev)
    n = x.shape[-1]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{dev} (smoke test, not a GPU figure)"
    print(f"{name}, torch {torch.__version__}, torchaudio {torchaudio.__version__}; "
          f"{args.clips} clips x {args.seconds:g} s of real speech, {cfg.n_mels} mels, n_fft {cfg.n_fft}; "
          f"median of {args.repeat} runs\n")

    # 1. front end
    fe = MelFrontend(cfg).to(dev)
    ta_mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length,
        n_mels=cfg.n_mels, power=cfg.power, norm="slaney", mel_scale="slaney", pad_mode="constant").to(dev)
    win = torch.hann_window(cfg.win_length, device=dev)
    fb = AF.mel_filterbank(cfg, torch.float32, dev)

    def bare():
        spec = torch.stft(x, cfg.n_fft, cfg.hop_length, cfg.win_length, win, center=True, pad_mode="constant",
                          return_complex=True)
        return torch.log(torch.clamp(fb @ spec.abs(), min=cfg.log_floor))

    with torch.no_grad():
        t_fe = gpu_time(lambda: fe(x), args.repeat)
        t_ta = gpu_time(lambda: torch.log(torch.clamp(ta_mel(x), min=cfg.log_floor)), args.repeat)
        t_bare = gpu_time(bare, args.repeat)
    rows = [("wave -> log-mel", f"{t_fe * 1e3:.2f} ms", f"{t_ta * 1e3:.2f} ms (MelSpectrogram)", f"{t_ta / t_fe:.2f}x"),
            ("  bare torch.stft + dense mel + log", f"{t_bare * 1e3:.2f} ms", "", "")]

    # 2. log-mel -> audio
    logmel = fe(x)
    voc = GriffinLimVocoder(cfg).to(dev)
    ta_inv = torchaudio.transforms.InverseMelScale(n_stft=cfg.n_freqs, n_mels=cfg.n_mels, sample_rate=cfg.sample_rate,
                                                   norm="slaney", mel_scale="slaney").to(dev)

    def ta_gl(it: int):
        return torchaudio.transforms.GriffinLim(n_fft=cfg.n_fft, n_iter=it, win_length=cfg.win_length,
                                                hop_length=cfg.hop_length, power=1.0, momentum=0.99, length=n).to(dev)

    ta32, ta100 = ta_gl(32), ta_gl(100)
    lengths = torch.full((args.clips,), n, device=dev)
    iters = default_iters("pghi", dev)
    voc32 = GriffinLimVocoder(cfg, n_iter=32).to(dev)
    with torch.no_grad():
        t_ours = gpu_time(lambda: voc(logmel, num_samples=lengths), args.repeat)
        t_ours32 = gpu_time(lambda: voc32(logmel, num_samples=lengths), args.repeat)
        t_ta32 = gpu_time(lambda: ta32(ta_inv(torch.exp(logmel))), args.repeat)
        t_ta100 = gpu_time(lambda: ta100(ta_inv(torch.exp(logmel))), max(3, args.repeat // 3))
        mag = voc.magnitude(logmel)
        t_mag = gpu_time(lambda: voc.magnitude(logmel), args.repeat)
        t_init = {i: gpu_time(lambda i=i: initial_phase(mag, cfg, i), args.repeat)
                  for i in ("pghi_parallel", "pghi_heap", "random")}
        t_it = gpu_time(lambda: griffin_lim(mag, cfg, 32, init="zeros", length=n), args.repeat) - \
            gpu_time(lambda: griffin_lim(mag, cfg, 0, init="zeros", length=n), args.repeat)
    rows += [(f"log-mel -> audio, default ({iters} it)", f"{t_ours * 1e3:.1f} ms", f"{t_ta100 * 1e3:.1f} ms (InverseMelScale + GL 100)",
              f"{t_ta100 / t_ours:.2f}x (target >= 3x)"),
             ("log-mel -> audio, 32 it", f"{t_ours32 * 1e3:.1f} ms", f"{t_ta32 * 1e3:.1f} ms (InverseMelScale + GL 32)",
              f"{t_ta32 / t_ours32:.2f}x")]
    print(table(rows, ("", "audiovae", "torchaudio, same GPU", "ratio (peer / ours)")))
    print(f"\nwhere the vocoder's time goes: magnitude (NNLS) {t_mag * 1e3:.1f} ms; initial phase: "
          + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t_init.items())
          + f"; 32 iterations {t_it * 1e3:.1f} ms")

    # 3. equal iterations, random init, on the true magnitude
    true_mag = AF.magnitude(AF.stft(x, win, cfg.n_fft, cfg.hop_length))
    with torch.no_grad():
        t_o = gpu_time(lambda: griffin_lim(true_mag, cfg, 32, init="random", length=n), args.repeat)
        t_t = gpu_time(lambda: ta32(true_mag), args.repeat)
    print(f"Griffin-Lim, 32 it, random init: audiovae {t_o * 1e3:.1f} ms, torchaudio {t_t * 1e3:.1f} ms "
          f"({t_t / t_o:.2f}x; target >= 1x)")

    # 4. quality, on the first clips
    q = slice(0, args.quality_clips)

    def quality(y: torch.Tensor) -> str:
        ref, est = x[q].double().cpu(), y[q].double().cpu()
        w64 = torch.hann_window(cfg.win_length, dtype=torch.float64)
        sc = spectral_convergence(AF.magnitude(AF.stft(ref, w64, cfg.n_fft, cfg.hop_length)),
                                  AF.magnitude(AF.stft(est, w64, cfg.n_fft, cfg.hop_length))).mean()
        mcd = mel_cepstral_distortion(ref, est, cfg.sample_rate).mean()
        return f"{float(sc):.4f}", f"{float(mcd):.2f}", f"{float(stoi(ref, est, cfg.sample_rate).mean()):.4f}"

    with torch.no_grad():
        default = resolve_init("pghi", dev)
        rows = [(f"audiovae default ({default} + {iters} it)", f"{t_ours * 1e3:.1f}",
                 *quality(voc(logmel, num_samples=lengths))),
                (f"audiovae, pghi_heap (CPU) + {VOCODER_ITERS} it", "", *quality(GriffinLimVocoder(cfg, init="pghi_heap").to(dev)(
                    logmel, num_samples=lengths))),
                (f"audiovae, random + {iters} it", "", *quality(GriffinLimVocoder(cfg, n_iter=iters, init="random").to(dev)(
                    logmel, num_samples=lengths))),
                ("torchaudio 100 it", f"{t_ta100 * 1e3:.1f}", *quality(ta100(ta_inv(torch.exp(logmel)))))]
    print(f"\nquality on {args.quality_clips} clips (from the log-mel; SC vs the original's magnitude)")
    print(table(rows, ("method", "time (ms, whole batch)", "SC", "MCD dB", "STOI")))

    # 5. one call on a big batch
    big = logmel.repeat((args.big_batch + args.clips - 1) // args.clips, 1, 1)[: args.big_batch]
    big_len = torch.full((args.big_batch,), n, device=dev)
    with torch.no_grad():
        t_big = gpu_time(lambda: voc(big, num_samples=big_len), max(3, args.repeat // 3))
    print(f"\nbatch of {args.big_batch} x {args.seconds:g} s in one call: {t_big * 1e3:.0f} ms "
          f"({args.big_batch * args.seconds / t_big:.1f} s of audio per second); "
          f"batch of {args.clips}: {t_ours * 1e3:.0f} ms")

    if args.train_steps:
        train_table(dev, [int(b) for b in args.train_batches.split(",")], args.train_steps)
    return 0


def train_table(dev: torch.device, batches: list[int], steps: int) -> None:
    """Training the default conv VAE (crops of 64 frames: the synthetic utterances are about 100 frames
    long, and equal shapes keep compiled graphs fixed): the trainer against a bare loop of the same
    model, batches, noise and AdamW, fp32 and bf16 autocast, eager and ``torch.compile``; steps/s and
    seconds of audio per second. A batch that does not fit is reported as such."""
    import tempfile

    from bench_training import bare_loop, trainer_per_step

    from audiovae.data.features import extract
    from audiovae.data.synth import make_corpus
    from audiovae.training.config import default_train_config

    tmp = Path(tempfile.mkdtemp())
    # every training item gives one crop per epoch: enough utterances for the biggest batch
    make_corpus(tmp / "corpus", int(max(batches) * 1.15) + 16)
    extract(tmp / "corpus", tmp / "feats", workers=4, progress=False)
    hop_s = MelConfig().hop_length / MelConfig().sample_rate
    rows = []
    for batch in batches:
        for amp in (False, True):
            for comp in (False, True):
                cfg = default_train_config("conv", batch_size=batch, segment_frames=64, max_steps=steps,
                                           val_every=10**9, val_batches=1, checkpoint_every=10**9, device=dev.type,
                                           amp=amp, amp_dtype="bfloat16", compile=comp, lr_warmup_steps=0)
                label = (batch, "bf16" if amp else "fp32", "compile" if comp else "eager")
                try:
                    bare = bare_loop(tmp / "feats", cfg)
                    trainer = trainer_per_step(tmp / "feats", cfg, tmp / "run")
                except torch.OutOfMemoryError:
                    rows.append((*label, "does not fit", "", "", "", ""))
                    torch.cuda.empty_cache()
                    continue
                rows.append((*label, f"{bare * 1e3:.1f} ms", f"{trainer * 1e3:.1f} ms",
                             f"{(trainer / bare - 1) * 100:+.0f}%", f"{1 / trainer:.1f}",
                             f"{batch * 64 * hop_s / trainer:,.0f}"))
                print(rows[-1], flush=True)
    print(f"\ntraining the default conv VAE ({steps} timed steps after 5 warm-up steps, crops of 64 frames)")
    print(table(rows, ("batch", "precision", "mode", "bare loop/step", "trainer/step", "trainer overhead",
                       "trainer steps/s", "audio s/s")))


if __name__ == "__main__":
    sys.exit(main())
