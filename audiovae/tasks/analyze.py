"""`audiovae analyze`: size, training speed, bounds and sample diversity of one or more runs, side by side.

Per run:

- parameters of the encoder, the decoder and in total;
- training throughput (median items/s over the logged steps) and training time
  (the sum of the logged step times, data loading included, validation and
  checkpoints excluded), from ``metrics.csv``;
- time to 95 % of the final validation ELBO: the first validation at which the
  ELBO has made 95 % of its whole climb from the first validation to the last
  (``validation.csv``; a fraction of the *improvement*, since ELBOs can be
  negative or positive), as training time and step;
- ELBO, IWAE bound and active units (:func:`audiovae.tasks.evaluate.evaluate`);
- diversity of prior samples at each temperature:

  - images: a linear probe on pixels (trained on the training images) names
    the class of each sample; the entropy of those classes (bits; uniform over
    10 classes is 3.32) and the coverage (classes given at least 1 % of the
    samples), beside the same probe on held-out images; and the RMS pixel
    distance from each sample to its nearest training image against the same
    for held-out images (samples much closer than held-out images would be
    copies of the training set);
  - audio: utterances are compared by their time-pooled log-mel (per-bin mean
    and std over time; RMS distance in nats): mean pairwise distance between
    prior samples against between real (held-out) utterances, and the
    distance to the nearest training utterance, samples against held-out ones;
- mel runs, with the ``[eval]`` extra: perceptual scores of a few held-out utterances, their reconstructions,
  prior samples (and conversions of a speaker-conditioned run): DNSMOS P.835, speaker similarity, and for
  English data a transcript's word error rate (:func:`perceptual_scores`); without it, a line saying how to
  install it.
"""

from __future__ import annotations

import csv
import inspect
import os
import re
from pathlib import Path

import numpy as np
import torch

from audiovae.data.source import DataSource, open_data
from audiovae.tasks.evaluate import evaluate
from audiovae.tasks.results import run_root
from audiovae.api import load
from audiovae.training.checkpoint import pick_device


def count_params(model: torch.nn.Module) -> dict:
    """``{"encoder", "decoder", "other", "total"}`` parameter counts (``other``: likelihood, output heads...)."""
    n = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0
    enc, dec, total = n(getattr(model, "encoder", None)), n(getattr(model, "decoder", None)), n(model)
    return {"encoder": enc, "decoder": dec, "other": total - enc - dec, "total": total}


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def training_speed(run: str | os.PathLike) -> dict:
    """Throughput, training time and time to 95 % of the final validation ELBO from a run's logs (see module doc)."""
    run = run_root(run)
    rows = _read_csv(run / "metrics.csv")
    vals = _read_csv(run / "validation.csv")
    out: dict = {"logged_steps": len(rows)}
    if not rows:
        return out
    step = np.array([int(r["step"]) for r in rows])
    secs = np.array([float(r["step_s"]) + float(r["data_s"]) for r in rows])
    clock = np.cumsum(secs)  # training time at the end of each logged step
    out.update(steps=int(step[-1]), items_per_s=float(np.median([float(r["items_per_s"]) for r in rows])),
               train_seconds=float(clock[-1]), seconds_per_step=float(np.median(secs)))
    if len(vals) >= 2:
        vstep = np.array([int(v["step"]) for v in vals])
        velbo = np.array([float(v["val_elbo"]) for v in vals])
        first, final = velbo[0], velbo[-1]
        target = first + 0.95 * (final - first)
        hit = int(np.argmax(velbo >= target)) if final >= first else len(vals) - 1
        s = int(vstep[hit])
        out.update(final_val_elbo=float(final), first_val_elbo=float(first), step_to_95=s,
                   seconds_to_95=float(clock[min(len(clock) - 1, np.searchsorted(step, s))]))
    return out


def _nearest(a: torch.Tensor, b: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """RMS distance (Euclidean / sqrt(D)) from each row of ``a`` to its nearest row of ``b``, ``(len(a),)``."""
    out = []
    for i in range(0, len(a), chunk):
        out.append(torch.cdist(a[i:i + chunk].double(), b.double()).min(1).values)
    return torch.cat(out).float() / a.shape[1] ** 0.5


def _mean_pairwise(a: torch.Tensor) -> float:
    d = torch.cdist(a.double(), a.double()) / a.shape[1] ** 0.5
    n = len(a)
    return float(d.sum() / (n * (n - 1))) if n > 1 else float("nan")


def _class_stats(pred: np.ndarray, n_classes: int) -> dict:
    counts = np.bincount(pred, minlength=n_classes).astype(float)
    p = counts / counts.sum()
    nz = p[p > 0]
    return {"entropy_bits": float(-(nz * np.log2(nz)).sum()), "coverage": int((p >= 0.01).sum()),
            "class_share": p.round(4).tolist()}


@torch.no_grad()
def image_diversity(loaded, src: DataSource, temperatures=(1.0, 0.7), n_samples: int = 1000,
                    train_limit: int = 10000, seed: int = 0) -> dict:
    """Class entropy/coverage of prior samples (by a pixel probe) and nearest-training-image distances."""
    from audiovae.tasks.probe import fit_probe, raw_features

    g = torch.Generator().manual_seed(seed)
    xtr = src.images_of("train")
    idx = torch.randperm(len(xtr), generator=g)[:train_limit].numpy()
    raw_tr = raw_features(src, "train")[idx]
    y_tr = src.labels("train")[idx]
    raw_te = raw_features(src, "test")[:n_samples]
    y_te = src.labels("test")[:n_samples]
    fit = fit_probe(raw_tr, y_tr, raw_te, y_te, max_iter=300)
    clf = fit["classifier"]
    n_classes = int(max(y_tr.max(), y_te.max()) + 1)
    tr_t, te_t = torch.from_numpy(raw_tr), torch.from_numpy(raw_te)
    held = _nearest(te_t, tr_t)
    res = {"probe_accuracy": fit["accuracy"], "held_out": {**_class_stats(clf.predict(raw_te), n_classes),
                                                           "nearest_train_rms": float(held.mean())}}
    dev = next(loaded.model.parameters()).device
    for t in temperatures:
        torch.manual_seed(seed)
        x = loaded.model.sample(n_samples, temperature=t).to(dev).cpu().float()
        if loaded.name != "mnist":  # signed colour images -> [0, 1]
            x = (x.clamp(-1, 1) + 1) / 2
        flat = x.reshape(len(x), -1).numpy()
        near = _nearest(torch.from_numpy(flat), tr_t)
        res[f"T={t:g}"] = {**_class_stats(clf.predict(flat), n_classes), "nearest_train_rms": float(near.mean()),
                           "nearest_ratio": float(near.mean() / held.mean())}
    res["n_samples"], res["train_compared"] = n_samples, len(idx)
    return res


def _pooled(logmel: np.ndarray) -> np.ndarray:
    return np.concatenate([logmel.mean(1), logmel.std(1)]).astype(np.float32)


@torch.no_grad()
def audio_diversity(loaded, src: DataSource, temperatures=(1.0, 0.7), n_samples: int = 16, seconds: float = 2.0,
                    max_utts: int = 200, seed: int = 0) -> dict:
    """Pairwise and nearest-training distances of prior samples vs real utterances (time-pooled log-mel)."""
    from audiovae.data.datasets import centre_frames

    held_split = "test" if "test" in src.splits() else "val"
    tr = torch.from_numpy(np.stack([_pooled(src.logmel(r)) for r in src.utterances("train")[:max_utts]]))
    he = torch.from_numpy(np.stack([_pooled(src.logmel(r)) for r in src.utterances(held_split)[:max_utts]]))
    res = {"held_out": {"pairwise_rms": _mean_pairwise(he), "nearest_train_rms": float(_nearest(he, tr).mean()),
                        "utterances": len(he)}}
    model, norm = loaded.model, loaded.normalizer
    frames = max(4, int(seconds * loaded.mel.frame_rate))
    ctx = int(loaded.config["model_config"].get("context", 0))
    dev = next(model.parameters()).device
    for t in temperatures:
        torch.manual_seed(seed)
        pooled = []
        for _ in range(n_samples):
            if model.is_sequence:
                y = model.sample(1, size=frames, temperature=t)
            else:  # a dense VAE: independent frames
                y = centre_frames(model.sample(frames, temperature=t), loaded.mel.n_mels, ctx)
            pooled.append(_pooled(norm.to(dev).inverse(y)[0].cpu().numpy()))
        s = torch.from_numpy(np.stack(pooled))
        near = _nearest(s, tr)
        res[f"T={t:g}"] = {"pairwise_rms": _mean_pairwise(s), "nearest_train_rms": float(near.mean()),
                           "pairwise_ratio": _mean_pairwise(s) / res["held_out"]["pairwise_rms"],
                           "nearest_ratio": float(near.mean()) / res["held_out"]["nearest_train_rms"]}
    res["n_samples"], res["seconds"] = n_samples, seconds
    return res


# --- perceptual scores (the [eval] extra) -----------------------------------------------------------------------
ENGLISH = re.compile(r"^en(?:[_-]|$)", re.IGNORECASE)  # a language code: en, en_US, en-GB...


def _call(fn, *args, **kw):
    """``fn(*args, **kw)`` without the keywords ``fn`` does not take (``prior=``, ``speaker=``: a run of a build
    without learned priors or conditioning has neither), and without those whose value is ``None``."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kw = {k: v for k, v in kw.items() if k in params}
    return fn(*args, **{k: v for k, v in kw.items() if v is not None})


def is_english(records: list[dict]) -> bool:
    """Whether utterances are English by their language fields: ``label`` or ``speaker`` starting with a language
    code (``en``, ``en_US``, as corpus readers of multilingual data such as the asterisk prompts write them)."""
    tags = [str(r.get("label") or r.get("speaker") or "") for r in records]
    return bool(tags) and all(ENGLISH.match(t) for t in tags)


def held_out_clips(loaded, src: DataSource, n: int, split: str | None = None) -> list[tuple[dict, np.ndarray, str]]:
    """Up to ``n`` held-out utterances ``(record, wave at the model's rate, "original" | "copy synthesis")``, one
    per speaker first so that several voices are heard; an utterance whose audio file is gone is its cached log-mel
    vocoded (copy synthesis)."""
    from audiovae.audio.io import load_audio

    split = split or ("test" if "test" in src.splits() else "val" if "val" in src.splits() else src.splits()[-1])
    recs = src.utterances(split)
    first, seen = [], set()
    for r in recs:
        who = r.get("speaker")
        if who not in seen:
            seen.add(who)
            first.append(r)
    chosen = (first + [r for r in recs if r not in first])[:n]
    out = []
    for r in chosen:
        source = r.get("source")
        if source and Path(source).is_file():
            wave, _ = load_audio(source, loaded.sample_rate, segment=r.get("segment"))
            out.append((r, wave, "original"))
        else:
            out.append((r, np.asarray(loaded.to_audio(src.logmel(r))), "copy synthesis"))
    return out


def _row(what: str, P, waves: list, sr: int, **extra) -> dict:
    s = P.dnsmos(waves, sr, peak=P.DNSMOS_PEAK)
    return {"what": what, "n": len(waves), "dnsmos_ovrl": float(np.mean(s["ovrl"])),
            "dnsmos_sig": float(np.mean(s["sig"])), "dnsmos_bak": float(np.mean(s["bak"])),
            "short_clips": int(np.sum(s["short"])), **extra}


def _targeting(P, emb: np.ndarray, targets: list, sources: list, centroids: dict) -> dict:
    """Speaker-embedding cosines of outputs ``emb`` to their target speaker's centroid against their source's
    (conversions) or the other speakers' (conditioned samples: ``sources[i]`` = None)."""
    diff, closer = [], []
    for e, t, s in zip(emb, targets, sources):
        to_t = P.cosine(e, centroids[t])
        others = [P.cosine(e, centroids[o]) for o in ([s] if s is not None else [o for o in centroids if o != t])]
        if not others:
            continue
        diff.append(to_t - max(others))
        closer.append(to_t > max(others))
    return {"cos_target_minus_other": float(np.mean(diff)) if diff else None,
            "closer_to_target": float(np.mean(closer)) if closer else None, "pairs": len(diff)}


@torch.no_grad()
def perceptual_scores(loaded, src: DataSource, n_items: int = 3, n_samples: int = 3, seconds: float = 3.0,
                      temperature: float = 1.0, seed: int = 0, asr: bool | None = None,
                      vocoder_iters: int | None = None, split: str | None = None) -> dict:
    """DNSMOS P.835 (and speaker similarity, and an English transcript) of a mel run's reconstructions, prior
    samples (N(0, I), and the learned prior when the run has one) and, for a speaker-conditioned run, its
    samples per speaker and conversions between speakers, beside the held-out originals they come from.

    ``{"available": False, "note": how to install}`` without the ``[eval]`` extra. Else ``{"available": True,
    "rows": [{"what", "n", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", ...}], ...}``: reconstructions carry
    ``speaker_cos`` (to their original) and, with ``asr`` (default: when the utterances' language fields say
    English), ``wer`` against the transcript of the original; conditioned samples and conversions carry
    ``cos_target_minus_other`` (cosine to the target speaker's centroid, of the held-out originals' speaker
    embeddings, minus the cosine to the source's, or to the nearest other speaker's for samples) and
    ``closer_to_target``; conversions ``length_kept``. Small by design (``n_items`` utterances, ``n_samples``
    samples of ``seconds``): DNSMOS scores 9-s windows at about a second each on a CPU.
    """
    from audiovae.audio import perceptual as P

    note = P.missing("DNSMOS") or P.missing("speaker similarity")
    if note is not None:
        return {"available": False, "note": note}
    sr = loaded.sample_rate
    clips = held_out_clips(loaded, src, n_items, split)
    if not clips:
        return {"available": True, "rows": [], "note": "no held-out utterances to score"}
    recs = [c[0] for c in clips]
    originals = [c[1] for c in clips]
    kinds = sorted({c[2] for c in clips})
    speakers = [r.get("speaker") for r in recs]
    cond = getattr(loaded, "conditions", None)
    conditioned = bool(cond) and cond.get("key") == "speaker"
    asr = is_english(recs) and P.available("ASR") if asr is None else asr
    res: dict = {"available": True, "split": recs[0].get("split"), "seconds": seconds, "temperature": temperature,
                 "asr": bool(asr), "rows": []}
    emb_orig = P.speaker_embeddings(originals, sr)
    by_spk: dict = {}
    for e, s in zip(emb_orig, speakers):
        by_spk.setdefault(s, []).append(e)
    centroids = {s: P.centroid(np.stack(v)) for s, v in by_spk.items() if s is not None}
    res["rows"].append(_row(f"held-out utterances ({', '.join(kinds)})", P, originals, sr))
    recon = [np.asarray(_call(loaded.reconstruct, w, speaker=s if conditioned else None, vocoder_iters=vocoder_iters))
             for w, s in zip(originals, speakers)]
    extra = {"speaker_cos": float(np.mean(P.speaker_similarity(originals, recon, sr)))}
    if asr:
        said = P.transcribe(originals, sr)
        heard = P.transcribe(recon, sr)
        extra["wer"] = float(np.mean([P.word_error_rate(a, b) for a, b in zip(said, heard)]))
        res["transcripts"] = [{"id": r["id"], "original": a, "reconstruction": b} for r, a, b in zip(recs, said, heard)]
    res["rows"].append(_row("VAE reconstructions", P, recon, sr, **extra))
    known = [s for s in centroids if conditioned and s in cond["names"]]
    priors = [("standard", "N(0, I)")]
    if getattr(loaded, "has_learned_prior", False):
        priors.append(("learned", "learned prior"))
    for key, name in priors:
        want = [known[i % len(known)] for i in range(n_samples)] if known else None
        waves = np.asarray(_call(loaded.sample, n_samples, seconds=seconds, temperature=temperature, seed=seed,
                                 prior=key, speaker=want, vocoder_iters=vocoder_iters))
        extra = {}
        if want and len(centroids) > 1:
            extra = _targeting(P, P.speaker_embeddings(list(waves), sr), want, [None] * len(want), centroids)
        res["rows"].append(_row(f"samples, {name}, T = {temperature:g}" + (" (per speaker)" if want else ""), P,
                                list(waves), sr, **extra))
    if conditioned and hasattr(loaded, "convert") and len(known) > 1:
        outs, targets, sources, kept = [], [], [], []
        for w, s in zip(originals, speakers):
            for t in known:
                if t != s and s in centroids:
                    y = np.asarray(_call(loaded.convert, w, speaker=t, vocoder_iters=vocoder_iters))
                    outs.append(y)
                    targets.append(t)
                    sources.append(s)
                    kept.append(len(y) == len(w))
        if outs:
            extra = _targeting(P, P.speaker_embeddings(outs, sr), targets, sources, centroids)
            res["rows"].append(_row("conversions (every other speaker)", P, outs, sr, length_kept=bool(all(kept)),
                                    **extra))
    return res


def format_perceptual(res: dict) -> str:
    """The rows of :func:`perceptual_scores` as a markdown table (or the line saying how to install the extra)."""
    if not res.get("available"):
        return f"Perceptual scores: {res.get('note')}"
    if not res.get("rows"):
        return f"Perceptual scores: {res.get('note', 'nothing to score')}"
    head = "| | DNSMOS OVRL | DNSMOS SIG | DNSMOS BAK | speaker | other |"
    lines = [head, "|---|---:|---:|---:|---|---|"]
    for r in res["rows"]:
        spk, other = "", []
        if r.get("speaker_cos") is not None:
            spk = f"cos to original {r['speaker_cos']:.2f}"
        if r.get("cos_target_minus_other") is not None:
            spk = (f"cos to target − {'source' if 'conversion' in r['what'] else 'others'} "
                   f"{r['cos_target_minus_other']:+.3f}, closer to target {r['closer_to_target']:.0%} of {r['pairs']}")
        if r.get("wer") is not None:
            other.append(f"WER vs original's transcript {r['wer']:.0%}")
        if "length_kept" in r:
            other.append("length kept" if r["length_kept"] else "length NOT kept")
        if r.get("short_clips"):
            other.append(f"{r['short_clips']} clip(s) under 1 s")
        lines.append(f"| {r['what']} (n={r['n']}) | {r['dnsmos_ovrl']:.2f} | {r['dnsmos_sig']:.2f} | "
                     f"{r['dnsmos_bak']:.2f} | {spk} | {'; '.join(other)} |")
    lines.append("")
    lines.append("DNSMOS P.835 (1 = bad, 5 = excellent; speechmos), speaker embeddings by resemblyzer (cosine), "
                 + ("transcripts by pocketsphinx en-us; " if res.get("asr") else "")
                 + f"held-out split {res.get('split')!s}.")
    return "\n".join(lines)


def analyze_run(run: str | os.PathLike, data: str | os.PathLike | DataSource, temperatures=(1.0, 0.7), k: int = 16,
                limit: int | None = 1000, n_samples: int | None = None, checkpoint: str = "best", device: str = "auto",
                seed: int = 0, progress: bool = True, scores: bool = True) -> dict:
    """The analysis of one run (see the module docstring); JSON-able. ``scores``: for a mel run, also the
    perceptual scores of :func:`perceptual_scores` (``res["perceptual"]``; a note when the extra is missing)."""
    src = data if isinstance(data, DataSource) else open_data(data)
    dev = pick_device(device)
    loaded = load(run, checkpoint, dev)
    ev = evaluate(run, src, k=k, limit=limit, checkpoint=checkpoint, device=device, seed=seed, progress=progress)
    res = {"run": str(run_root(run)), "model": loaded.name, "step": loaded.config.get("step"),
           "params": count_params(loaded.model), "training": training_speed(run),
           "evaluation": {key: ev.get(key) for key in ("split", "items", "k", "elbo", "iwae", "iwae_stderr",
                                                      "elbo_per_dim", "bits_per_dim", "kl", "active_units",
                                                      "latent_dim")}}
    if src.is_features:
        res["diversity"] = audio_diversity(loaded, src, temperatures, n_samples or 16, seed=seed)
        if scores and loaded.mel is not None:
            res["perceptual"] = perceptual_scores(loaded, src, seed=seed)
    else:
        res["diversity"] = image_diversity(loaded, src, temperatures, n_samples or 1000, seed=seed)
    return res


def analyze(runs: list, data: str | os.PathLike, temperatures=(1.0, 0.7), **kw) -> dict:
    """Analyse several runs on the same DATA: ``{"data", "temperatures", "runs": [analyze_run(...), ...]}``."""
    src = open_data(data)
    return {"data": str(src.path), "temperatures": list(temperatures),
            "runs": [analyze_run(r, src, temperatures, **kw) for r in runs]}


def _fmt(v, spec: str = ",.1f") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def format_analysis(res: dict) -> str:
    """Markdown table: one row per figure, one column per run."""
    runs = res["runs"]
    temps = res["temperatures"]
    rows: list[tuple[str, list[str]]] = [
        ("model (step)", [f"{r['model']} ({r['step']})" for r in runs]),
        ("parameters: encoder", [_fmt(r["params"]["encoder"], ",d") for r in runs]),
        ("parameters: decoder", [_fmt(r["params"]["decoder"], ",d") for r in runs]),
        ("parameters: total", [_fmt(r["params"]["total"], ",d") for r in runs]),
        ("training steps", [_fmt(r["training"].get("steps"), ",d") for r in runs]),
        ("throughput (items/s, median)", [_fmt(r["training"].get("items_per_s")) for r in runs]),
        ("training time (min, step times)", [_fmt(r["training"].get("train_seconds", 0) / 60, ".2f") for r in runs]),
        ("time to 95% of final val ELBO (min)", [_fmt(r["training"].get("seconds_to_95", float("nan")) / 60, ".2f")
                                                  for r in runs]),
        ("  at step", [_fmt(r["training"].get("step_to_95"), ",d") for r in runs]),
        ("ELBO (nats/item)", [_fmt(r["evaluation"]["elbo"], ",.2f") for r in runs]),
        ("IWAE bound (nats/item)", [f"{_fmt(r['evaluation']['iwae'], ',.2f')} (k={r['evaluation']['k']})" for r in runs]),
        ("active units", [f"{r['evaluation']['active_units']} / {r['evaluation']['latent_dim']}" for r in runs]),
    ]
    images = [r for r in runs if "probe_accuracy" in r["diversity"]]
    audio = [r for r in runs if "pairwise_rms" in r["diversity"].get("held_out", {})]
    col = lambda r, t, key, spec=".2f": (_fmt(r["diversity"].get(t, {}).get(key), spec)
                                        if r["diversity"].get(t) else "-")
    if images:
        rows.append(("held-out images: class entropy (bits) / coverage",
                     [f"{col(r, 'held_out', 'entropy_bits')} / {col(r, 'held_out', 'coverage', 'd')}"
                      if r in images else "-" for r in runs]))
        rows.append(("held-out images: nearest-train RMS distance", [col(r, "held_out", "nearest_train_rms", ".3f")
                                                                     if r in images else "-" for r in runs]))
        for t in temps:
            key = f"T={t:g}"
            rows.append((f"samples {key}: class entropy (bits) / coverage",
                         [f"{col(r, key, 'entropy_bits')} / {col(r, key, 'coverage', 'd')}" if r in images else "-"
                          for r in runs]))
            rows.append((f"samples {key}: nearest-train RMS distance (x held-out)",
                         [f"{col(r, key, 'nearest_train_rms', '.3f')} ({col(r, key, 'nearest_ratio')}x)"
                          if r in images else "-" for r in runs]))
    if audio:
        rows.append(("real utterances: mean pairwise distance (nats)",
                     [col(r, "held_out", "pairwise_rms", ".3f") if r in audio else "-" for r in runs]))
        rows.append(("real utterances: nearest-train distance", [col(r, "held_out", "nearest_train_rms", ".3f")
                                                                 if r in audio else "-" for r in runs]))
        for t in temps:
            key = f"T={t:g}"
            rows.append((f"samples {key}: mean pairwise distance (x real)",
                         [f"{col(r, key, 'pairwise_rms', '.3f')} ({col(r, key, 'pairwise_ratio')}x)" if r in audio
                          else "-" for r in runs]))
            rows.append((f"samples {key}: nearest-train distance (x real)",
                         [f"{col(r, key, 'nearest_train_rms', '.3f')} ({col(r, key, 'nearest_ratio')}x)" if r in audio
                          else "-" for r in runs]))
    names = [Path(r["run"]).name or r["run"] for r in runs]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(runs)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    for name, r in zip(names, runs):
        if "perceptual" in r:
            lines += ["", f"Perceptual scores of {name}:" if r["perceptual"].get("rows") else "",
                      format_perceptual(r["perceptual"])]
    return "\n".join(lines)
