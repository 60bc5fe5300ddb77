"""Reconstruction fidelity of the conv VAE on real recorded speech, at a fixed CPU time budget.

    python benchmarks/bench_fidelity.py --minutes 20 DATA_LIST [--seed S]
    python benchmarks/bench_fidelity.py --minutes 4 DATA_LIST --set model_config.latent_dim=64   # an ablation

DATA_LIST is a text file of audio paths, one per line. The files are split BY
FILE: a file is a test file when the SHA-1 of its path relative to the list's
common folder falls below ``--test-fraction`` (a fixed rule, independent of the
seed and of the other files). The rest become a feature cache (with the
library's own train/validation split) under ``--work``, reused between runs.

Then the default ``conv`` TrainConfig (plus ``--set KEY=VALUE`` overrides)
trains for ``--minutes`` of wall time, and every test utterance is

- resynthesised by the vocoder from its true log-mel (copy synthesis, the
  reference row: what the vocoder alone costs), and
- encoded, decoded (posterior mean) and vocoded (the VAE row),

each scored against the original waveform: spectral convergence (dB), log
spectral distance (dB) on the 2048/256 STFT, STOI, and the log-mel RMSE
(nats of log-mel, against the true log-mel). The model's ELBO, IWAE bound
(``--k`` samples), KL and active units on the test utterances are printed too.
``--snapshots 5,10`` also scores copies of the weights taken at those minutes
of the same run (the curve against training time). Deterministic given the
seed, except where the time limit cuts training (steps reached are printed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402

from audiovae.audio.config import MelConfig  # noqa: E402
from audiovae.audio.frontend import MelFrontend  # noqa: E402
from audiovae.audio.io import load_audio  # noqa: E402
from audiovae.audio.metrics import resynthesis_metrics  # noqa: E402
from audiovae.audio.vocoder import GriffinLimVocoder  # noqa: E402
from audiovae.config import apply_overrides, from_dict, to_dict  # noqa: E402
from audiovae.data.features import extract  # noqa: E402
from audiovae.models.registry import make_config  # noqa: E402
from audiovae.training import TrainConfig, train  # noqa: E402
from audiovae.training.checkpoint import load_model_dir  # noqa: E402
from audiovae.training.config import default_train_config  # noqa: E402
from audiovae.training.metrics import active_units  # noqa: E402


def read_list(path: Path) -> list[Path]:
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    files = [Path(ln) if Path(ln).is_absolute() else path.parent / ln for ln in lines]
    missing = [f for f in files if not f.exists()]
    if missing:
        raise SystemExit(f"error: {path}: {len(missing)} listed file(s) missing, e.g. {missing[0]}")
    return files


def split_by_file(files: list[Path], fraction: float) -> tuple[Path, list[Path], list[Path]]:
    """``(root, train_files, test_files)``: test when sha1(relative path) < fraction."""
    root = Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
    train_files, test_files = [], []
    for f in files:
        rel = str(f.resolve().relative_to(root))
        h = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (test_files if h < fraction else train_files).append(f)
    return root, train_files, test_files


def build_features(root: Path, train_files: list[Path], work: Path) -> Path:
    """A feature cache of the non-test files, made once (a mirror of symlinks keeps the ids unique)."""
    key = hashlib.sha1("\n".join(sorted(str(f.resolve()) for f in train_files)).encode()).hexdigest()[:12]
    feats = work / f"features_{key}"
    if (feats / "cache.json").exists():  # written last: a complete cache
        return feats
    mirror = work / f"corpus_{key}"
    for f in train_files:
        link = mirror / f.resolve().relative_to(root)
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f.resolve())
    extract(mirror, feats, MelConfig(), workers=0, val_fraction=0.05, progress=False)
    return feats


class Snapshots(threading.Thread):
    """Copies the run's latest checkpointed weights when the run has trained ``minutes[i]`` minutes."""

    def __init__(self, run: Path, minutes: list[float]):
        super().__init__(daemon=True)
        self.run_dir, self.minutes = run, sorted(minutes)
        self.taken: list = []
        self.stop = threading.Event()

    def run_started(self) -> float | None:
        m = self.run_dir / "metrics.csv"
        if m.exists() and len(m.read_text().splitlines()) > 1:
            return time.perf_counter()
        return None

    def run(self) -> None:  # noqa: D102 (Thread API)
        t0 = None
        while t0 is None and not self.stop.wait(0.2):
            t0 = self.run_started()
        for m in self.minutes:
            if self.stop.wait(max(0.0, t0 + 60 * m - time.perf_counter())):
                return
            dst = self.run_dir.parent / f"{self.run_dir.name}_at_{m:g}min"
            for _ in range(50):  # the trainer may be between writing the weights and the config
                shutil.rmtree(dst, ignore_errors=True)
                dst.mkdir(parents=True)
                try:
                    for name in ("model.safetensors", "config.yaml"):
                        shutil.copy2(self.run_dir / name, dst / name)
                    load_model_dir(dst)
                    self.taken.append((m, dst))
                    break
                except Exception:
                    time.sleep(0.3)


def load_tests(test_files: list[Path], cfg: MelConfig, max_seconds: float) -> list[dict]:
    fe = MelFrontend(cfg)
    items = []
    for f in test_files:
        wave, _ = load_audio(f, cfg.sample_rate, min_samples=cfg.win_length)
        wave = wave[: int(max_seconds * cfg.sample_rate)]
        with torch.no_grad():
            logmel = fe(torch.from_numpy(wave)[None])  # (1, n_mels, T)
        items.append({"name": f.name, "path": str(f), "wave": wave, "logmel": logmel})
    return items


def score(items: list[dict], logmels: list[torch.Tensor], vocoder: GriffinLimVocoder, sr: int,
          keep: list | None = None) -> dict:
    """Mean SC (dB), LSD (dB), STOI and log-mel RMSE of vocoded ``logmels`` against the originals.

    ``keep``: a list that receives each vocoded waveform ``(N,)`` (numpy)."""
    rows = []
    for it, lm in zip(items, logmels):
        with torch.no_grad():
            y = vocoder(lm, num_samples=[len(it["wave"])])[0]
        if keep is not None:
            keep.append(y.numpy())
        m = resynthesis_metrics(torch.from_numpy(it["wave"]), y, sr)
        rows.append({"sc_db": 20 * math.log10(max(m["spectral_convergence"], 1e-12)),
                     "lsd_db": m["log_spectral_distance_db"], "lsd80_db": m["log_spectral_distance_80db_db"],
                     "stoi": m.get("stoi", float("nan")),
                     "logmel_rmse": float((lm - it["logmel"]).square().mean().sqrt())})
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


@torch.no_grad()
def model_figures(model_dir: Path, items: list[dict], k: int, seed: int) -> tuple[dict, list[torch.Tensor]]:
    """Bounds on the test utterances (nats per utterance, whole utterances one at a time) and reconstructions."""
    loaded = load_model_dir(model_dir)
    model, norm = loaded.model.eval(), loaded.normalizer
    torch.manual_seed(seed)
    elbo, iwae, kl, dims, mus, recs = [], [], [], 0, [], []
    for it in items:
        x = norm(it["logmel"])
        _, logw = model.log_weights(x, k=k, chunk=k)
        out = model.elbo(x)
        elbo.append(float(logw.mean()))
        iwae.append(float(torch.logsumexp(logw[:, 0], 0) - math.log(k)))
        kl.append(float(out.kl[0]))
        dims += x.numel()
        mus.append(out.mu[0].T)
        recs.append(norm.inverse(model.reconstruct(x)))
    n = len(items)
    figs = {"elbo": sum(elbo) / n, "iwae": sum(iwae) / n, "kl": sum(kl) / n, "elbo_per_dim": sum(elbo) / dims,
            "kl_per_dim": sum(kl) / dims, "active_units": active_units(torch.cat(mus)), "latent_dim": model.latent_dim,
            "params": model.num_params()}
    return figs, recs


def write_figures(out: Path, items: list[dict], recs: list[torch.Tensor], waves: list, vocoder: GriffinLimVocoder,
                  mel: MelConfig, results: dict, curve_only: bool = False) -> None:
    """The curve (STOI, LSD against minutes), and (unless ``curve_only``) one spectrogram picture and
    three wav pairs of the reconstructions ``recs`` / ``waves``."""
    from audiovae.audio.io import resample, save_audio
    from audiovae.tasks.plots import _plt, plot_mels

    out.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    rows, copy = results["rows"], results["copy_synthesis"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    mins = [r["minutes"] for r in rows]
    for ax, key, label, goal in ((axes[0], "stoi", "STOI (higher is better)", 0.90),
                                 (axes[1], "lsd_db", "LSD dB, floor -100 dBFS (lower is better)", 4.5),
                                 (axes[2], "lsd80_db", "LSD dB, 80 dB range (lower is better)", None)):
        ax.plot(mins, [r[key] for r in rows], "o-", label="VAE reconstruction")
        ax.axhline(copy[key], color="k", ls="--", lw=1, label="copy synthesis (vocoder on true log-mel)")
        if goal is not None:
            ax.axhline(goal, color="tab:red", ls=":", lw=1, label="goal")
        ax.set_xlabel("training minutes (this 2-core CPU)")
        ax.set_title(label, fontsize=10)
        ax.set_xticks(mins)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"conv VAE on {len(items)} held-out asterisk utterances", fontsize=10)
    fig.savefig(out / "fidelity_curve.png", dpi=110)
    plt.close(fig)
    if curve_only:
        return
    # the test utterance closest to the median STOI of the VAE row, 0.5-4 s long, for the picture
    fe = MelFrontend(mel)
    lengths = [len(it["wave"]) / mel.sample_rate for it in items]
    order = sorted((i for i in range(len(items)) if 0.8 <= lengths[i] <= 3.5), key=lambda i: -lengths[i])
    order = order or sorted(range(len(items)), key=lambda i: -lengths[i])
    pick = order[: max(3, len(order) // 4)]
    i0 = pick[0]
    with torch.no_grad():
        copy_wave = vocoder(items[i0]["logmel"], num_samples=[len(items[i0]["wave"])])[0]
        heard = [items[i0]["logmel"][0], fe(copy_wave[None])[0], fe(torch.from_numpy(waves[i0])[None])[0]]
    plot_mels(out / "fidelity_spectrogram.png", [m.numpy() for m in heard],
              [f"original: {items[i0]['name']} (held-out test file)", "copy synthesis (vocoder on the true log-mel)",
               "VAE reconstruction (posterior mean, then the same vocoder)"], mel.frame_rate)
    audio = out / "audio"
    for i in pick[:3]:
        stem = Path(items[i]["name"]).stem
        n = min(len(items[i]["wave"]), int(3.0 * mel.sample_rate))
        save_audio(audio / f"{stem}_original.wav", resample(items[i]["wave"][:n], mel.sample_rate, 16000), 16000)
        save_audio(audio / f"{stem}_vae.wav", resample(waves[i][:n], mel.sample_rate, 16000), 16000)


def plot_curves(jsons: list[str], out: Path) -> None:
    """One curve per results JSON (a run and its snapshots): STOI, LSD and LSD80 against training minutes.
    A run that stopped at ``max_steps`` before its time limit is plotted at the minutes it trained."""
    from audiovae.tasks.plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    copy = None
    for spec in jsons:
        path, _, name = spec.partition("=")  # RESULTS.json or RESULTS.json=LABEL
        res = json.loads(Path(path).read_text())
        copy = res["copy_synthesis"]
        end = min(res["settings"]["minutes"], res.get("train_seconds", math.inf) / 60)
        rows = sorted(res["rows"], key=lambda r: r["minutes"])
        mins = [min(r["minutes"], end) for r in rows]
        label = (name + ", " if name else "") + f"{res['settings']['minutes']:g}-min run" + (f" (stopped at {rows[-1]['steps']:,} steps, {end:.1f} min)"
                                                               if end < res["settings"]["minutes"] - 0.5 else "")
        for ax, key in zip(axes, ("stoi", "lsd_db", "lsd80_db")):
            ax.plot(mins, [r[key] for r in rows], "o-", label=label)
    for ax, key, title, goal in zip(axes, ("stoi", "lsd_db", "lsd80_db"),
                                    ("STOI (higher is better)", "LSD dB, floor -100 dBFS (lower is better)",
                                     "LSD dB, 80 dB range (lower is better)"), (0.90, 4.5, None)):
        ax.axhline(copy[key], color="k", ls="--", lw=1, label="copy synthesis")
        if goal is not None:
            ax.axhline(goal, color="tab:red", ls=":", lw=1, label="issue's goal")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training minutes (one core of this 2-core CPU)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("default conv VAE, 46 held-out asterisk utterances", fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def report(results: dict, args, n_items: int, summary: dict, train_s: float, load) -> None:
    """Print the table (copy synthesis row, then the VAE rows) and write the JSON."""
    copy = results["copy_synthesis"]
    print(f"\ntest: {n_items} held-out utterances; trained {summary['step']} steps in {train_s / 60:.1f} min "
          f"(load average {load[0]:.2f}); {results['rows'][-1]['params']:,} parameters")
    header = ("", "steps", "SC dB", "LSD dB", "LSD80 dB", "STOI", "log-mel RMSE", "ELBO", "IWAE", "KL", "active")
    rows = [("copy synthesis", "", f"{copy['sc_db']:.1f}", f"{copy['lsd_db']:.2f}", f"{copy['lsd80_db']:.2f}",
             f"{copy['stoi']:.3f}", "0", "", "", "", "")]
    for r in results["rows"]:
        rows.append((f"VAE, {r['minutes']:g} min", r["steps"], f"{r['sc_db']:.1f}", f"{r['lsd_db']:.2f}",
                     f"{r['lsd80_db']:.2f}", f"{r['stoi']:.3f}",
                     f"{r['logmel_rmse']:.3f}", f"{r['elbo']:.0f}", f"{r['iwae']:.0f}", f"{r['kl']:.0f}",
                     f"{r['active_units']}/{r['latent_dim']}"))
    print(table(rows, header))
    print("(LSD: absolute floor, -100 dB re full scale; LSD80: over the 80 dB below each original's peak. ELBO, "
          "IWAE (k=%d), KL: nats per test utterance; log-mel RMSE in nats of log-mel)" % args.k, flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_list", type=Path, help="text file of audio paths, one per line")
    ap.add_argument("--minutes", type=float, default=20.0, help="training wall-time budget (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="TrainConfig override, e.g. lr=2e-3 or model_config.latent_dim=64 (repeatable)")
    ap.add_argument("--snapshots", default="", help="also score the weights at these minutes, e.g. 5,10")
    ap.add_argument("--test-fraction", type=float, default=0.022, help="hash threshold of the held-out files")
    ap.add_argument("--max-test-seconds", type=float, default=6.0, help="cut long test files to this length")
    ap.add_argument("--limit-test", type=int, default=None, help="score only the first N test files (quick checks)")
    ap.add_argument("--k", type=int, default=16, help="importance samples for the IWAE bound")
    ap.add_argument("--vocoder-iters", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("bench_fidelity_work"), help="scratch folder (cache, runs)")
    ap.add_argument("--name", default=None, help="run name under WORK/runs (default: from the settings)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--rescore", type=Path, nargs="+", default=None, metavar="MODEL_DIR",
                    help="train nothing: score these model directories (e.g. WORK/runs/NAME) on the same test files")
    ap.add_argument("--figures", type=Path, default=None,
                    help="write the curve, a spectrogram picture and three original/VAE wav pairs (16 kHz, <= 3 s) here")
    ap.add_argument("--plot", nargs="+", default=None, metavar="RESULTS_JSON[=LABEL]",
                    help="train nothing: draw the curves of these --json results into --figures/fidelity_curve.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.plot:
        plot_curves(args.plot, (args.figures or Path(".")) / "fidelity_curve.png")
        return {}

    files = read_list(args.data_list)
    root, train_files, test_files = split_by_file(files, args.test_fraction)
    print(f"{len(files)} files: {len(train_files)} for training/validation, {len(test_files)} held-out test files")
    args.work.mkdir(parents=True, exist_ok=True)
    feats = build_features(root, train_files, args.work)
    mel = MelConfig()
    items = load_tests(test_files[: args.limit_test], mel, args.max_test_seconds)
    vocoder = GriffinLimVocoder(mel, n_iter=args.vocoder_iters)

    copy_path = args.work / f"copy_synthesis_{hashlib.sha1(repr((sorted(t['path'] for t in items), args.max_test_seconds, args.vocoder_iters, 'lsd80')).encode()).hexdigest()[:12]}.json"
    if copy_path.exists():
        copy = json.loads(copy_path.read_text())
    else:
        copy = score(items, [it["logmel"] for it in items], vocoder, mel.sample_rate)
        copy_path.write_text(json.dumps(copy))

    if args.rescore:
        results = {"settings": {"rescore": [str(p) for p in args.rescore], "test_files": len(items)},
                   "copy_synthesis": copy, "rows": []}
        for model_dir in args.rescore:
            figs, recs = model_figures(model_dir, items, args.k, args.seed)
            step = int(__import__("yaml").safe_load((model_dir / "config.yaml").read_text()).get("step", 0))
            results["rows"].append({"minutes": float("nan"), "name": model_dir.name, "steps": step,
                                    **score(items, recs, vocoder, mel.sample_rate), **figs})
            print(model_dir, json.dumps(results["rows"][-1]), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
        return results

    cfg = default_train_config("conv", seed=args.seed)  # what `audiovae train --model conv` uses
    cfg = from_dict(TrainConfig, {**to_dict(cfg), "model_config": to_dict(make_config("conv", cfg.model_config))})
    cfg = apply_overrides(cfg, [f"max_minutes={args.minutes}", *args.overrides])
    name = args.name or ("_".join(o.replace("model_config.", "") for o in args.overrides) or "default") + f"_{args.minutes:g}min_s{args.seed}"
    run = args.work / "runs" / name
    if run.exists():
        shutil.rmtree(run)
    snaps_at = [float(s) for s in args.snapshots.split(",") if s.strip()]
    snaps = Snapshots(run, [m for m in snaps_at if m < args.minutes])
    if snaps.minutes:
        cfg = apply_overrides(cfg, [f"checkpoint_every={min(cfg.checkpoint_every, 10)}"])
    snaps.start()
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    print(f"training for {args.minutes:g} min (load average {load0:.1f}) -> {run}", flush=True)
    summary = train(feats, run, cfg, progress=False)
    train_s = time.perf_counter() - t0
    snaps.stop.set()
    snaps.join()
    load = os.getloadavg()

    results = {"settings": {"minutes": args.minutes, "seed": args.seed, "overrides": args.overrides,
                            "test_files": len(items), "train_files": len(train_files), "data_list": str(args.data_list),
                            "load_average_start": load0, "load_average_end": list(load)},
               "copy_synthesis": copy, "rows": []}
    results["train_seconds"] = train_s
    results["summary"] = summary
    # the full run first (it makes the pictures and audio), then the snapshots; the table is printed and
    # the JSON written after each row, so a slow machine still leaves the most important figures behind
    for i, (minutes, model_dir) in enumerate([(args.minutes, run), *snaps.taken]):
        t1 = time.perf_counter()
        figs, recs = model_figures(model_dir, items, args.k, args.seed)
        print(f"[{minutes:g} min weights] bounds in {time.perf_counter() - t1:.0f} s; vocoding and scoring...", flush=True)
        step = int(__import__("yaml").safe_load((model_dir / "config.yaml").read_text()).get("step", summary["step"]))
        waves: list = []
        row = {"minutes": minutes, "steps": step, **score(items, recs, vocoder, mel.sample_rate, waves), **figs}
        results["rows"] = sorted([*results["rows"], row], key=lambda r: r["minutes"])
        if i == 0 and args.figures:
            write_figures(args.figures, items, recs, waves, vocoder, mel, results)
        report(results, args, len(items), summary, train_s, load)
    if args.figures and len(results["rows"]) > 1:
        write_figures(args.figures, items, [], [], vocoder, mel, results, curve_only=True)
    return results


if __name__ == "__main__":
    main()
