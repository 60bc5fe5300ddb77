"""Repair (inpainting) quality on held-out data, error on the missing part only, against baselines.

    # images: Fashion-MNIST test images with the centre square missing
    python benchmarks/bench_repair.py images --run RUN --data /usr/share/datasets/fashion-mnist -n 500
    # audio: gaps of 50-300 ms in the held-out utterances of a feature cache (its `source` wavs)
    python benchmarks/bench_repair.py audio --run RUN --data FEATURE_CACHE --utterances 24

Images (mnist model, fixed binarisation of the test set): BCE in nats per
missing pixel (and the squared error of the probability) for the VAE chains
(Metropolis-within-Gibbs, pseudo-Gibbs, each with the chain carrying samples or
means), the one-shot VAE reconstruction, the mean training image and the
nearest training image on the observed pixels.

Audio (mel model): for each held-out utterance and each gap length, a gap at a
random position in a loud stretch; the log-mel frames the gap touches are
filled by each method, the whole log-mel is vocoded (same Griffin-Lim for all)
and spliced into the original. Reported: log-mel MSE over the missing frames
(natural-log mel) and the mel-cepstral distortion (dB) of the vocoded gap region
(the gap plus half a window each side) against the original audio, both resampled
to --mcd-sr first (default 14 kHz: the asterisk prompts are G.722, 50-7000 Hz);
means over utterances, and how often the VAE beats each baseline.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def bench_images(args) -> dict:
    from audiovae.tasks.repair import repair_images

    rows = {}
    t0 = time.time()
    for state in args.states.split(","):
        res = repair_images(args.run, args.data, args.mask, args.n, None, None, "mwg", args.iters, seed=args.seed,
                            compare_methods=True, baselines=(state == args.states.split(",")[0]), state=state,
                            progress=True)
        for k, v in res["errors"].items():
            if k == "vae":
                continue
            name = f"{k} (chain carries {state}s)" if k in ("mwg", "pseudo_gibbs") else k
            rows[name] = {**v, **({"acceptance": res["acceptance"][k]} if k in res["acceptance"] else {})}
    out = {"task": "images", "run": args.run, "data": args.data, "mask": args.mask, "images": args.n,
           "iterations": args.iters, "missing_fraction": res["missing_fraction"], "rows": rows,
           "seconds": time.time() - t0}
    print(f"\n{args.n} test images, mask {args.mask} ({100 * res['missing_fraction']:.1f} % missing), "
          f"{args.iters} iterations; error on the missing pixels only\n")
    print("| method | BCE (nats/pixel) | MSE | BCE / best baseline's | MH acceptance |")
    print("|---|---|---|---|---|")
    best_base = min(v["bce"] for k, v in rows.items() if k in ("mean_image", "nearest_neighbour", "vae_oneshot"))
    for k, v in sorted(rows.items(), key=lambda kv: kv[1]["bce"]):
        acc = f"{v['acceptance']:.2f}" if "acceptance" in v else ""
        print(f"| {k} | {v['bce']:.4f} | {v['mse']:.4f} | {v['bce'] / best_base:.3f} | {acc} |")
    return out


def _mcd(ref: np.ndarray, est: np.ndarray, sr: int, band_sr: int | None) -> float:
    """MCD (dB) of two aligned segments; with ``band_sr`` both are first resampled to it, so the mel bands
    cover only the band the recordings hold (G.722 speech: 50-7000 Hz; above it the reference is empty and
    the 80-band MCD would measure nothing but what a method puts into an empty band)."""
    from audiovae.audio.io import resample
    from audiovae.audio.metrics import mel_cepstral_distortion

    if band_sr:
        ref, est = resample(ref, sr, band_sr), resample(est, sr, band_sr)
        sr = band_sr
    return float(mel_cepstral_distortion(torch.from_numpy(ref)[None].double(), torch.from_numpy(est)[None].double(),
                                         sr)[0])


def bench_audio(args) -> dict:
    from audiovae.audio.io import load_audio
    from audiovae.data.source import open_data
    from audiovae.tasks.generate import MelModel
    from audiovae.tasks.repair import repair_wave

    mm = MelModel.load(args.run, vocoder_iters=32, device="cpu")
    mm_std = MelModel.load(args.run, vocoder_iters=32, device="cpu", prior="standard")
    cfg = mm.loaded.mel
    src = open_data(args.data)
    split = "test" if "test" in src.splits() else "val"
    recs = [r for r in src.utterances(split) if 1.0 <= r["frames"] / cfg.frame_rate <= 6.0][: args.utterances]
    rng = np.random.default_rng(args.seed)
    fills = [("mwg", "vae", "mwg"), ("pseudo_gibbs", "vae", "pseudo_gibbs"), ("vae_oneshot", "vae_oneshot", None),
             ("linear", "linear", None), ("repeat_last", "repeat", None), ("silence", "silence", None)]
    if mm.loaded.has_learned_prior:  # the chain under the run's learned prior beside the chain under N(0, I)
        fills.insert(0, ("mwg_learned_prior", "vae", "mwg"))
    gaps_ms = [int(g) for g in args.gaps.split(",")]
    per: dict[int, dict[str, dict[str, list[float]]]] = {g: {n: {"mse": [], "mse_heard": [], "mcd": []}
                                                             for n, _, _ in fills} for g in gaps_ms}
    t0 = time.time()
    from tqdm import tqdm

    for rec in tqdm(recs, desc="utterances"):
        wave, sr = load_audio(rec["source"], cfg.sample_rate)
        ref_mel = mm.frontend(torch.from_numpy(wave)[None])[0].numpy()
        for g in gaps_ms:
            glen = g / 1000
            # a gap starting in a loud frame, at least 0.15 s from either end
            energy = ref_mel.mean(0)
            times = np.arange(len(energy)) / cfg.frame_rate
            ok = (times > 0.15) & (times < len(wave) / sr - glen - 0.15) & (energy >= np.median(energy))
            if not ok.any():
                continue
            a = float(rng.choice(times[ok]))
            gap = [(a, a + glen)]
            i0, i1 = round(a * sr) - cfg.win_length // 2, round((a + glen) * sr) + cfg.win_length // 2
            for name, fill, method in fills:
                torch.manual_seed(args.seed)
                r = repair_wave(mm if name == "mwg_learned_prior" else mm_std, wave, gap, method or "mwg", args.iters,
                                fill=fill)
                m = r["missing"]
                per[g][name]["mse"].append(float(np.mean((r["repaired_logmel"][:, m] - ref_mel[:, m]) ** 2)))
                # as a listener gets it: the repaired audio (vocoded, spliced) analysed again
                heard = mm.frontend(torch.from_numpy(r["wave"])[None])[0].numpy()
                per[g][name]["mse_heard"].append(float(np.mean((heard[:, m] - ref_mel[:, m]) ** 2)))
                per[g][name]["mcd"].append(_mcd(wave[i0:i1], r["wave"][i0:i1], sr, args.mcd_sr))
    out = {"task": "audio", "run": args.run, "data": args.data, "split": split, "utterances": len(recs),
           "iterations": args.iters, "gaps_ms": gaps_ms, "seconds": time.time() - t0, "table": {}}
    print(f"\n{len(recs)} held-out utterances ({split} split), one gap per utterance and length, "
          f"{args.iters} iterations; log-mel MSE over the missing frames, MCD (dB) of the vocoded gap region\n")
    print("MSE: of the filled log-mel; heard: of the repaired audio analysed again (vocoded and spliced, as a "
          "listener gets it)\n")
    head = ("| method | " + " | ".join(f"{g} ms MSE | {g} ms heard | {g} ms MCD" for g in gaps_ms)
            + " | all MSE | all heard | all MCD |")
    print(head)
    print("|" + "---|" * (1 + 3 * len(gaps_ms) + 3))
    for name, _, _ in fills:
        cells, all_mse, all_heard, all_mcd = [], [], [], []
        for g in gaps_ms:
            mse, heard, mcd = per[g][name]["mse"], per[g][name]["mse_heard"], per[g][name]["mcd"]
            cells += [f"{np.mean(mse):.3f}", f"{np.mean(heard):.3f}", f"{np.mean(mcd):.2f}"]
            all_mse += mse
            all_heard += heard
            all_mcd += mcd
        out["table"][name] = {"mse": float(np.mean(all_mse)), "mse_heard": float(np.mean(all_heard)),
                              "mcd": float(np.mean(all_mcd)),
                              **{f"{g}ms": {k: float(np.mean(per[g][name][k])) for k in ("mse", "mse_heard", "mcd")}
                                 for g in gaps_ms}}
        print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(all_mse):.3f} | {np.mean(all_heard):.3f} | "
              f"{np.mean(all_mcd):.2f} |")
    best = min([n for n in ("mwg_learned_prior", "mwg", "pseudo_gibbs") if n in out["table"]],
               key=lambda n: out["table"][n]["mse"])
    print(f"\nhow often {best} beats each baseline (per gap, same gap for all methods):")
    for name in ("vae_oneshot", "linear", "repeat_last", "silence"):
        wins_mse = np.mean([v < w for g in gaps_ms for v, w in zip(per[g][best]["mse"], per[g][name]["mse"])])
        wins_mcd = np.mean([v < w for g in gaps_ms for v, w in zip(per[g][best]["mcd"], per[g][name]["mcd"])])
        print(f"  vs {name:<12} log-mel MSE {100 * wins_mse:.0f} %   MCD {100 * wins_mcd:.0f} %")
    if "mwg_learned_prior" in out["table"]:
        t = out["table"]
        for g in gaps_ms:
            lp, lin, std = (t[n][f"{g}ms"]["mse_heard"] for n in ("mwg_learned_prior", "linear", "mwg"))
            print(f"  {g} ms, heard log-mel MSE: learned prior {lp:.3f} = {100 * (lp / lin - 1):+.1f} % vs linear "
                  f"interpolation ({lin:.3f}; target <= -10 %), {100 * (lp / std - 1):+.1f} % vs N(0, I) ({std:.3f})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["images", "audio"])
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("-n", type=int, default=500, help="images: test images")
    ap.add_argument("--mask", default="centre")
    ap.add_argument("--states", default="sample,mean", help="images: what the chains carry (sample, mean or both)")
    ap.add_argument("--utterances", type=int, default=24, help="audio: held-out utterances")
    ap.add_argument("--gaps", default="50,100,200,300", help="audio: gap lengths in ms")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--mcd-sr", type=int, default=14000,
                    help="audio: resample to this rate before the MCD (0: the model's rate); 14000 for G.722 speech")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = bench_images(args) if args.what == "images" else bench_audio(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
