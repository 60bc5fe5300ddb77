"""Per clip, from the log-mel, on real speech: audiovae's vocoder against torchaudio's, in the same run.

    python benchmarks/bench_vocoder_clips.py                  # 80 Asterisk clips, 3 timed repeats each
    python benchmarks/bench_vocoder_clips.py --clips 16 --repeat 1   # a quick look
    python benchmarks/bench_vocoder_clips.py --corpus asterisk fillets-en fillets-nl --clips 24 --threads 1

Corpora (``--corpus``, each reported on its own, then all together):

- ``asterisk``: the Asterisk prompts (``asterisk-core-sounds-{es,fr,it,ru}-g722``: real
  recorded telephone speech, one speaker per language, 16 kHz G.722), the same number from each
  language, 1-12 s long, chosen evenly from the sorted file list;
- ``fillets-en`` / ``fillets-nl``: wideband acted speech, the voice lines of the game Fish Fillets
  (``fillets-ng-data``: ``sound/*/en/*.ogg``; ``fillets-ng-data-nl``: ``sound/*/nl/*.ogg``; Ogg
  Vorbis at 22050 or 44100 Hz, many voices), the files recorded at 22050 Hz or more and 1-12 s
  long, chosen evenly from the sorted file list (so held out by file, and none of them is among
  the project's test data).

Every clip is decoded and resampled to the configuration's rate (22050 Hz) with ffmpeg, and
every figure (MCD included) is computed at that rate on that waveform. Each clip goes through
the front end to the default 256-bin log-mel; then, one clip at a time as
``audiovae vocode``/``resynth`` work:

- audiovae: ``GriffinLimVocoder`` (NNLS mel inversion + PGHI + fast Griffin-Lim, the defaults);
- torchaudio: ``InverseMelScale`` (least squares, then ReLU) + ``GriffinLim`` (100 iterations,
  momentum 0.99, random initial phase).

Times are per clip, the median of ``--repeat`` timed runs (the methods interleaved) after one
untimed warm-up call on the first clip (the first call of a fresh vocoder is timed separately); RTF is
the sum of the per-clip medians over the total audio duration. Quality: SC and LSD on
the 2048/256 STFT magnitudes against the original, MCD (24 mel-cepstra) and STOI;
means over clips, and the MCD's standard deviation over clips. Per corpus, the clips where
audiovae's MCD is furthest above torchaudio's are listed (``--worst``). The machine may be
shared: run it twice and compare (time ratios from the interleaved runs are still meaningful
on a loaded machine; absolute times are not).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402

from audiovae.audio.config import VOCODER_ITERS, MelConfig  # noqa: E402
from audiovae.audio.frontend import MelFrontend  # noqa: E402
from audiovae.audio.metrics import resynthesis_metrics  # noqa: E402
from audiovae.audio.vocoder import GriffinLimVocoder, default_iters  # noqa: E402

SOUNDS = Path("/usr/share/asterisk/sounds")
FILLETS = Path("/usr/share/games/fillets-ng/sound")
CORPORA = ("asterisk", "fillets-en", "fillets-nl")
LANGS = ("es_MX_f_Allison", "fr_CA_f_June", "it_IT_m_Carlo", "ru_RU_f_IvrvoiceRU")
G722_BYTES_PER_S = 8000  # 64 kbit/s


def asterisk_clips(n: int, sr: int, min_s: float = 1.0, max_s: float = 12.0) -> list[tuple[str, np.ndarray]]:
    """``n`` clips (name, float32 waveform at ``sr``), n/4 per language, 1-12 s, decoded with ffmpeg."""
    chosen = []
    per = -(-n // len(LANGS))
    for lang in LANGS:
        files = sorted(p for p in (SOUNDS / lang).rglob("*.g722")
                       if min_s * G722_BYTES_PER_S <= p.stat().st_size <= max_s * G722_BYTES_PER_S)
        if not files:
            raise SystemExit(f"no clips under {SOUNDS / lang} (apt-get install asterisk-core-sounds-*-g722)")
        idx = np.linspace(0, len(files) - 1, per).round().astype(int)
        chosen += [files[i] for i in idx]
    return decode([(f"{p.parent.name[:2]}/{p.stem}", p) for p in chosen[:n]], sr, ["-f", "g722"])


def fillets_clips(lang: str, n: int, sr: int, min_s: float = 1.0, max_s: float = 12.0) -> list[tuple[str, np.ndarray]]:
    """``n`` clips of the Fish Fillets voice lines in ``lang`` (recorded at >= 22050 Hz, 1-12 s), decoded with ffmpeg."""
    files = []
    for p in sorted(FILLETS.glob(f"*/{lang}/*.ogg")):
        info = sf.info(str(p))
        if info.samplerate >= 22050 and min_s <= info.frames / info.samplerate <= max_s:
            files.append(p)
    if not files:
        raise SystemExit(f"no clips under {FILLETS}/*/{lang} (apt-get install fillets-ng-data"
                         f"{'' if lang == 'en' else '-' + lang})")
    idx = np.unique(np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int))
    return decode([(f"{lang}/{files[i].parent.parent.name}/{files[i].stem}", files[i]) for i in idx], sr)


def decode(named: list[tuple[str, Path]], sr: int, fmt: list[str] = ()) -> list[tuple[str, np.ndarray]]:
    """Each file decoded to mono float32 at ``sr`` with ffmpeg."""
    out = []
    with tempfile.TemporaryDirectory() as d:
        for i, (name, p) in enumerate(named):
            wav = Path(d) / f"{i}.wav"
            subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *fmt, "-i", str(p),
                            "-ar", str(sr), "-ac", "1", str(wav)], check=True)
            x, file_sr = sf.read(wav, dtype="float32")
            assert file_sr == sr
            out.append((name, x))
    return out


def corpus_clips(corpus: str, n: int, sr: int) -> list[tuple[str, np.ndarray]]:
    if corpus == "asterisk":
        return asterisk_clips(n, sr)
    if corpus.startswith("fillets-"):
        return fillets_clips(corpus.split("-", 1)[1], n, sr)
    raise SystemExit(f"unknown corpus {corpus!r}; choose from {', '.join(CORPORA)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", nargs="+", default=["asterisk"], choices=CORPORA,
                    help="corpora, each reported on its own (default: asterisk)")
    ap.add_argument("--clips", type=int, default=80, help="clips per corpus")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per clip and method (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-iter", type=int, default=None,
                    help=f"our Griffin-Lim iterations (default: the vocoder's for --init on the CPU, {VOCODER_ITERS} for pghi)")
    ap.add_argument("--init", default="pghi", help="our initial phase")
    ap.add_argument("--nnls-iter", type=int, default=None, help="our NNLS iterations (default: the vocoder's)")
    ap.add_argument("--peer-iter", type=int, default=100, help="torchaudio's Griffin-Lim iterations")
    ap.add_argument("--skip-peer", action="store_true", help="time only audiovae")
    ap.add_argument("--worst", type=int, default=5, help="per corpus, list this many clips where we lose most MCD")
    ap.add_argument("--json", type=Path, default=None, help="write the per-clip figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.n_iter is None:
        args.n_iter = default_iters(args.init, "cpu")
    import torchaudio

    cfg = MelConfig()
    clips, corpus_of = [], []
    for corpus in args.corpus:
        got = corpus_clips(corpus, args.clips, cfg.sample_rate)
        clips += got
        corpus_of += [corpus] * len(got)
        secs = [len(x) / cfg.sample_rate for _, x in got]
        print(f"{corpus}: {len(got)} clips ({sum(secs):.0f} s, {min(secs):.1f}-{max(secs):.1f} s)")
    total_s = sum(len(x) for _, x in clips) / cfg.sample_rate
    print(f"{cfg.n_mels} mels, n_fft {cfg.n_fft}, {cfg.sample_rate} Hz, {torch.get_num_threads()} threads, "
          f"{args.repeat} timed repeats per clip, torch {torch.__version__}, torchaudio {torchaudio.__version__}\n")
    fe = MelFrontend(cfg)
    with torch.no_grad():
        logmels = [fe(torch.from_numpy(x)[None]) for _, x in clips]

    # the first call of a fresh vocoder in this process (numba cache load, filterbank set-up)
    t0 = time.perf_counter()
    voc = GriffinLimVocoder(cfg, n_iter=args.n_iter, init=args.init,
                            **({} if args.nnls_iter is None else {"nnls_iter": args.nnls_iter}))
    t_setup = time.perf_counter() - t0
    with torch.no_grad():
        t0 = time.perf_counter()
        voc(logmels[0], num_samples=[len(clips[0][1])])
        t_first = time.perf_counter() - t0
    print(f"first call of a fresh vocoder: construction {t_setup * 1e3:.0f} ms, first clip {t_first * 1e3:.0f} ms "
          f"(clip of {len(clips[0][1]) / cfg.sample_rate:.1f} s; timed figures exclude it)\n", flush=True)

    ta_inv = torchaudio.transforms.InverseMelScale(n_stft=cfg.n_freqs, n_mels=cfg.n_mels, sample_rate=cfg.sample_rate,
                                                   norm="slaney", mel_scale="slaney")

    def peer(logmel: torch.Tensor, n: int) -> torch.Tensor:
        gl = torchaudio.transforms.GriffinLim(n_fft=cfg.n_fft, n_iter=args.peer_iter, win_length=cfg.win_length,
                                              hop_length=cfg.hop_length, power=1.0, momentum=0.99, length=n)
        return gl(ta_inv(torch.exp(logmel)))

    methods = {f"audiovae ({args.init} + {args.n_iter} it)": lambda lm, n: voc(lm, num_samples=[n])}
    if not args.skip_peer:
        methods[f"torchaudio ({args.peer_iter} it)"] = peer
    results = {name: ([], []) for name in methods}
    with torch.no_grad():
        for fn in methods.values():
            fn(logmels[0], len(clips[0][1]))  # warm-up
        torch.manual_seed(0)
        # clip by clip, the methods interleaved in every repeat, so that load from other processes hits both alike
        for i, ((_, x), lm) in enumerate(zip(clips, logmels)):
            if i and i % 20 == 0:
                print(f"after {i} clips:", flush=True)
                summarize(results, sum(len(c[1]) for c in clips[:i]) / cfg.sample_rate)
            times = {name: [] for name in methods}
            outs = {}
            for _ in range(args.repeat):
                for name, fn in methods.items():
                    t0 = time.perf_counter()
                    outs[name] = fn(lm, len(x))
                    times[name].append(time.perf_counter() - t0)
            for name in methods:
                results[name][0].append(statistics.median(times[name]))
                results[name][1].append(resynthesis_metrics(torch.from_numpy(x), outs[name][0], cfg.sample_rate))

    for corpus in args.corpus:
        keep = [i for i, c in enumerate(corpus_of) if c == corpus]
        print(f"\n{corpus}, {len(keep)} clips:")
        summarize({k: ([t[i] for i in keep], [q[i] for i in keep]) for k, (t, q) in results.items()},
                  sum(len(clips[i][1]) for i in keep) / cfg.sample_rate)
        if len(results) == 2 and args.worst:
            (_, (_, q_a)), (_, (_, q_b)) = results.items()
            d = sorted(keep, key=lambda i: q_b[i]["mel_cepstral_distortion_db"] - q_a[i]["mel_cepstral_distortion_db"])
            print("  clips where audiovae loses most MCD to torchaudio (ours - theirs, dB):")
            for i in d[: args.worst]:
                a, b = q_a[i]["mel_cepstral_distortion_db"], q_b[i]["mel_cepstral_distortion_db"]
                print(f"    {clips[i][0]:40s} {len(clips[i][1]) / cfg.sample_rate:5.1f} s  MCD {a:.2f} vs {b:.2f} "
                      f"({a - b:+.2f})  SC dB {20 * np.log10(q_a[i]['spectral_convergence']):.1f} vs "
                      f"{20 * np.log10(q_b[i]['spectral_convergence']):.1f}")
    if len(args.corpus) > 1:
        print(f"\nall {len(clips)} clips:")
        summarize(results, total_s)
    if args.json is not None:
        import json

        args.json.write_text(json.dumps({"clips": [n for n, _ in clips], "corpus": corpus_of,
                                         "methods": {k: {"time_s": t, "metrics": q} for k, (t, q) in results.items()}},
                                        indent=1))


def summarize(results: dict, total_s: float) -> None:
    rows = []
    for name, (times, qual) in results.items():
        sc = np.array([q["spectral_convergence"] for q in qual])
        mcd = np.array([q["mel_cepstral_distortion_db"] for q in qual])
        rows.append((name, f"{np.mean(20 * np.log10(sc)):.2f}", f"{np.mean(sc):.4f}",
                     f"{np.mean([q['log_spectral_distance_db'] for q in qual]):.3f}",
                     f"{mcd.mean():.3f} ± {mcd.std(ddof=1) if len(mcd) > 1 else 0.0:.2f}",
                     f"{np.mean([q['stoi'] for q in qual]):.4f}", f"{sum(times):.2f}", f"{sum(times) / total_s:.4f}"))
    print(table(rows, ("method", "SC dB", "SC", "LSD dB", "MCD dB (± sd)", "STOI", "time (s)", "RTF")))
    if len(results) == 2:
        (_, (t_a, _)), (_, (t_b, _)) = results.items()
        print(f"time ratio audiovae / torchaudio: {sum(t_a) / sum(t_b):.3f} (target <= 0.333)", flush=True)


if __name__ == "__main__":
    main()
