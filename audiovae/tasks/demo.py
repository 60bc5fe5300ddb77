"""`audiovae demo`: the whole pipeline on a built-in synthetic corpus, in a few minutes on a CPU."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from audiovae.audio.config import MelConfig
from audiovae.audio.io import load_audio, save_audio
from audiovae.audio.vocoder import default_iters
from audiovae.data.corpora import folder_manifest
from audiovae.data.features import extract
from audiovae.data.synth import make_corpus
from audiovae.tasks.evaluate import evaluate
from audiovae.tasks.generate import MelModel
from audiovae.tasks.plots import plot_mels, plot_training
from audiovae.tasks.report import make_report
from audiovae.tasks.results import write_result
from audiovae.training.config import TrainConfig
from audiovae.training.trainer import train
from audiovae.errors import OutputError
from audiovae.folders import LOCK_NAME, output_folder
from audiovae.utils import atomic_write_text, check_output_dir

DEMO_MARK = ".audiovae-demo"


def run_demo(out_dir: str | os.PathLike, utterances: int = 96, minutes: float = 2.5, max_steps: int = 3000,
             channels: int = 128, latent_dim: int = 16, vocoder_iters: int | None = None, log=print, progress: bool = True) -> dict:
    """Synthesise a corpus, extract 256-bin features, train a ConvVAE, write audio, pictures, a summary and
    ``report/index.html`` (the page of :func:`audiovae.tasks.report.make_report`)."""
    out = Path(out_dir)
    t0 = time.time()
    claim_demo_dir(out, mark=False)  # before anything is written, not even the lock file
    with output_folder(out, None):  # one demo at a time in a folder
        claim_demo_dir(out)
        if (out / "run" / "trainer_state.pt").exists():
            shutil.rmtree(out / "run")  # the earlier demo's own run: a demo starts over; real runs use --resume
        return _run_demo(out, t0, utterances, minutes, max_steps, channels, latent_dim, vocoder_iters, log, progress)


def claim_demo_dir(out: Path, mark: bool = True) -> None:
    """Refuse an output folder that holds anything but an earlier demo (whose folder carries :data:`DEMO_MARK`),
    then mark it as the demo's: the demo replaces its own corpus, features and run, never a user's files."""
    check_output_dir(out)
    foreign = sorted(p.name for p in out.iterdir() if p.name not in (DEMO_MARK, LOCK_NAME)) if out.is_dir() else []
    if foreign and not (out / DEMO_MARK).is_file():
        raise OutputError(f"holds files the demo did not write ({foreign[0]}"
                          f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); nothing was changed: "
                          "give a new or empty folder, or an earlier demo's", out)
    if mark:
        atomic_write_text(out / DEMO_MARK, "written by `audiovae demo`: it may replace what it wrote here\n")


def _run_demo(out: Path, t0: float, utterances: int, minutes: float, max_steps: int, channels: int, latent_dim: int,
              vocoder_iters: int | None, log, progress: bool) -> dict:
    log(f"[1/6] synthesising {utterances} utterances (source-filter speech, 6 voices) -> {out / 'corpus'}")
    make_corpus(out / "corpus", utterances, progress=progress)
    log("[2/6] extracting 256-bin log-mel features")
    cfg = MelConfig()
    # the synthetic voice of each utterance is its speaker (file names are <voice>_<n>.wav): `audiovae probe`
    # classifies speakers with it and the report colours the latent space by voice
    manifest = folder_manifest(out / "corpus", out / "corpus", speaker_of=lambda p: p.stem.split("_")[0],
                               val_fraction=0.15, corpus="demo")
    ex = extract(manifest, out / "features", cfg, workers=0, progress=progress)
    log(f"      {ex.n_utterances} utterances, {ex.n_frames} frames ({ex.n_frames / cfg.frame_rate:.0f} s)")
    log(f"[3/6] training a ConvVAE for at most {minutes:g} min / {max_steps} steps")
    segment = 64
    index = json.loads((out / "features" / "index.json").read_text())
    n_items = sum(max(1, r["frames"] // segment) for r in index if r["split"] == "train")
    tcfg = TrainConfig(model="conv", model_config={"channels": channels, "latent_dim": latent_dim, "downsample": 4},
                       batch_size=max(1, min(16, n_items)), lr=2e-3, max_steps=max_steps, max_minutes=minutes, segment_frames=segment,
                       kl_warmup="linear", kl_warmup_steps=max(1, max_steps // 3), lr_warmup_steps=50,
                       checkpoint_every=100, free_bits=0.05, val_batches=20, val_every=50)
    summary = train(out / "features", out / "run", tcfg, progress=progress)
    log("[4/6] evaluating (IWAE bound with k=16 on the validation utterances)")
    ev = evaluate(out / "run", out / "features", k=16, progress=progress)
    mm = MelModel.load(out / "run", vocoder_iters=vocoder_iters)
    iters = vocoder_iters if vocoder_iters is not None else default_iters(mm.vocoder.init, mm.device)
    log(f"[5/6] writing audio and pictures with the Griffin-Lim vocoder ({iters} iterations)")
    frame_rate = cfg.frame_rate
    files: dict[str, list[str]] = {"reconstructions": [], "samples": [], "interpolation": [], "pictures": []}
    val_all = [r for r in index if r["split"] == "val"]
    # one utterance per voice first, so the reconstructions show different speakers
    voices: dict[str, dict] = {}
    for r in val_all:
        voices.setdefault(Path(r["source"]).stem.split("_")[0], r)
    val = list(voices.values()) + [r for r in val_all if r not in voices.values()]
    for rec in val[:3]:
        wave, sr = load_audio(rec["source"], cfg.sample_rate)
        y, feats, rfeats = mm.reconstruct(wave)
        name = Path(rec["source"]).stem
        save_audio(out / "reconstructions" / f"{name}_original.wav", wave, sr)
        save_audio(out / "reconstructions" / f"{name}_reconstruction.wav", y, sr)
        inv = mm.loaded.normalizer.inverse
        png = plot_mels(out / "reconstructions" / f"{name}.png", [inv(feats)[0].numpy(), inv(rfeats)[0].numpy()],
                        [f"original: {name}", "VAE reconstruction (posterior mean)"], frame_rate)
        files["reconstructions"] += [f"reconstructions/{name}_original.wav", f"reconstructions/{name}_reconstruction.wav"]
        files["pictures"].append(str(png.relative_to(out)))
    samples = mm.sample(3, seconds=1.5)
    for i, (y, feats) in enumerate(samples):
        save_audio(out / "samples" / f"prior_sample_{i}.wav", y, cfg.sample_rate)
        files["samples"].append(f"samples/prior_sample_{i}.wav")
    png = plot_mels(out / "samples" / "prior_samples.png", [mm.loaded.normalizer.inverse(f)[0].numpy() for _, f in samples],
                    [f"sample {i} from the prior" for i in range(len(samples))], frame_rate)
    files["pictures"].append(str(png.relative_to(out)))
    if len(val) >= 2:
        a, _ = load_audio(val[0]["source"], cfg.sample_rate)
        b, _ = load_audio(val[1]["source"], cfg.sample_rate)
        steps = mm.interpolate(a, b, steps=5)
        gap = np.zeros(int(0.25 * cfg.sample_rate), np.float32)
        joined = np.concatenate([np.concatenate([y, gap]) for y, _ in steps])
        save_audio(out / "interpolation" / "interpolation.wav", joined, cfg.sample_rate)
        png = plot_mels(out / "interpolation" / "interpolation.png",
                        [mm.loaded.normalizer.inverse(f)[0].numpy() for _, f in steps],
                        [f"t = {t:.2f}" for t in np.linspace(0, 1, 5)], frame_rate,
                        suptitle=f"{Path(val[0]['source']).stem} -> {Path(val[1]['source']).stem}")
        files["interpolation"].append("interpolation/interpolation.wav")
        files["pictures"].append(str(png.relative_to(out)))
    png = plot_training(out / "training.png", out / "run")
    files["pictures"].append(str(png.relative_to(out)))
    write_result(out / "run", "evaluate", ev)  # the report shows it instead of evaluating again
    log("[6/6] writing the report: open report/index.html in a browser")
    index = make_report(out / "run", out / "report", data=out / "features", vocoder_iters=vocoder_iters)
    files["report"] = [str(index.relative_to(out))]
    result = {"seconds": time.time() - t0, "train": summary, "evaluation": ev, "files": files}
    atomic_write_text(out / "demo.json", json.dumps(result, indent=2, default=str))
    atomic_write_text(out / "SUMMARY.md", _summary_md(out, ex, summary, ev, files, time.time() - t0))
    return result


def _summary_md(out: Path, ex, summary: dict, ev: dict, files: dict, seconds: float) -> str:
    lines = [
        "# audiovae demo",
        "",
        f"Made in {seconds / 60:.1f} min. What happened:",
        "",
        f"1. `corpus/`: {ex.n_utterances} synthetic utterances (glottal pulses through formant filters, 6 voices).",
        f"2. `features/`: 256-bin log-mel features, {ex.n_frames} frames, with per-bin mean/std (`stats.npz`).",
        f"3. `run/`: a ConvVAE trained for {summary['step']} steps; `run/best/` holds the best validation checkpoint.",
        "4. Validation figures (nats per utterance, higher is better; log-densities of the log-mel",
        "   features, continuous, so they can be positive):",
        "",
        f"   - ELBO {ev['elbo']:.1f}, IWAE bound (k={ev['k']}) {ev['iwae']:.1f}"
        + (f" +- {ev['iwae_stderr']:.1f} (standard error over {ev['items']} utterances)" if ev["iwae_stderr"] else ""),
        f"   - per dimension: ELBO {ev['elbo_per_dim']:.3f} nats",
        f"   - KL {ev['kl']:.1f} nats, active latent units {ev['active_units']} of {ev['latent_dim']}",
        f"   - {ev['params']:,} parameters",
        "",
        "5. Listen and look:",
        "",
    ]
    for group, paths in files.items():
        lines.append(f"   - {group}: " + ", ".join(f"`{p}`" for p in paths))
    lines += ["", "Open `report/index.html` in a browser to see and hear all of it on one page.",
              "", "Train on your own speech: `audiovae extract MY_WAVS -o feats && audiovae train feats --model conv -o run`."]
    return "\n".join(lines) + "\n"
