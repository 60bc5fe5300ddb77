"""`audiovae report`: one HTML page to look at and listen to a run, opening with no server.

``REPORT_DIR/index.html`` plus its files beside it (``figures/``, ``audio/``):
no script, no CDN, no network. It shows the configuration, training curves,
evaluation figures, and then for a mel model spectrograms with ``<audio>``
players (reconstructions, prior samples, an interpolation, repairs) and their perceptual scores
(with the ``[eval]`` extra), for an image model image grids; then every result a task left in ``RUN/results``
(probe, analysis, evaluation, repairs). Whatever is missing is said on the page.

``REPORT_DIR/.audiovae-report.json`` lists every file a report wrote there: a
rerun replaces only those (and removes the ones it no longer needs); a folder
holding any other file is refused, never cleared. Only pictures and wavs inside
the run folder (links resolved) are copied into the report.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from audiovae.data.source import DataSource, open_data
from audiovae.errors import AudioVAEError, OutputError
from audiovae.folders import LOCK_NAME, check_kind, output_folder
from audiovae.tasks.results import read_results, run_root, write_result
from audiovae.api import load
from audiovae.training.checkpoint import describe, pick_device
from audiovae.utils import atomic_path, atomic_write_text, check_output_dir

MANIFEST = ".audiovae-report.json"  # the files a report wrote into its folder (relative paths)

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
figure{margin:1em 0}figcaption{font-size:.9em;color:#555}.note{background:#fff6e0;padding:.5em 1em;border-left:4px solid #e0a000}
.players{display:flex;flex-wrap:wrap;gap:1em}.players div{font-size:.85em}audio{display:block;width:260px}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.8em}
"""


class _Page:
    """Collects sections and the files they point to (all relative to the report folder)."""

    def __init__(self, out: Path, owned: list[str] = ()):
        self.out = out
        self.parts: list[str] = []
        self.images: list[str] = []
        self.audio: list[str] = []
        self.owned = set(owned)  # every file a report wrote into ``out`` (this one or the one before)
        self.written: list[str] = []

    def file(self, rel: str) -> Path:
        """``out/rel`` to write a file to; the manifest names it before it exists, so a rerun knows it for ours."""
        if rel not in self.owned:
            self.owned.add(rel)
            _write_manifest(self.out, self.owned)
        self.written.append(rel)
        return self.out / rel

    def h2(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def p(self, text: str, cls: str = "") -> None:
        self.parts.append(f"<p{' class=' + chr(34) + cls + chr(34) if cls else ''}>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        self.p(text, "note")

    def raw(self, text: str) -> None:
        self.parts.append(text)

    def img(self, rel: str, caption: str) -> None:
        self.images.append(rel)
        self.parts.append(f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption)}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def players(self, items: list[tuple[str, str]]) -> None:
        """``[(relative wav path, label)]`` as a row of players."""
        cells = []
        for rel, label in items:
            self.audio.append(rel)
            cells.append(f'<div>{html.escape(label)}<audio controls preload="metadata" src="{html.escape(rel)}">'
                         f"</audio></div>")
        self.parts.append('<div class="players">' + "".join(cells) + "</div>")

    def table(self, rows: list[tuple], head: tuple | None = None) -> None:
        out = ["<table>"]
        if head:
            out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>")
        for r in rows:
            out.append("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r) + "</tr>")
        self.parts.append("".join(out) + "</table>")

    def markdown(self, md: str) -> None:
        """The small markdown the tasks print: ``|`` tables and paragraphs."""
        block: list[str] = []

        def flush():
            if block:
                rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in block]
                rows = [r for r in rows if not all(set(c) <= set("-: ") for c in r)]
                self.table([tuple(r) for r in rows[1:]], tuple(rows[0]))
                block.clear()

        for ln in md.splitlines():
            if ln.strip().startswith("|"):
                block.append(ln)
            else:
                flush()
                if ln.strip():
                    self.p(ln.strip())
        flush()

    def html(self, title: str) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
                + "\n".join(self.parts) + "\n</body></html>\n")


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _open_data_or_note(data, cfg: dict) -> tuple[DataSource | None, str | None]:
    """The DATA to reconstruct from and, when there is none, the note saying why. DATA given explicitly
    that cannot be opened raises (the caller asked for it); the run's own recorded data may be gone."""
    path = data if data is not None else cfg.get("data")
    if path is None:
        return None, "No DATA given and the model's config.yaml names none: no reconstructions or evaluation figures."
    try:
        return open_data(path), None
    except AudioVAEError as exc:
        if data is not None:
            raise
        return None, (f"The run's data is not available ({exc}); reconstructions and evaluation figures need it. "
                      "Give it as `audiovae report RUN -o DIR --data DATA`.")


def make_report(run: str | os.PathLike, out_dir: str | os.PathLike, data: str | os.PathLike | None = None,
                checkpoint: str = "best", device: str = "auto", vocoder_iters: int | None = None, n_items: int = 3,
                seed: int = 0, evaluate_k: int = 16, evaluate_limit: int = 200, progress: bool = False,
                warn: Callable[[str], None] | None = None, scores: bool = True) -> Path:
    """Write ``out_dir/index.html`` for a run and return its path.

    ``data``: the DATA to take reconstructions from (default: the path in the
    model's ``config.yaml``; a note on the page, and ``warn(note)``, when it is gone; ``data`` given but
    unusable raises). When the run
    has no ``results/evaluate.json``, or one of another checkpoint than the one shown (an older step, after
    training went on), and the data is there, a quick evaluation (``evaluate_k`` samples,
    ``evaluate_limit`` items) is run and saved there. Every section says which step its figures are from.
    ``progress``: a line on stderr per section (and the evaluation's progress bar). ``scores``: a mel run's
    perceptual scores (DNSMOS, speaker similarity; :func:`audiovae.tasks.analyze.perceptual_scores`, a few
    clips) when the ``[eval]`` extra is installed, else a line saying how to install it.
    """
    out = Path(out_dir)
    check_kind(out, "report")  # a run, cache or model folder is not written over as a report
    claim_report_dir(out)  # a folder holding files a report did not write is refused before any work
    root = run_root(run)
    dev = pick_device(device)
    loaded = load(run, checkpoint, dev)
    src, data_note = _open_data_or_note(data, loaded.config)  # before anything is written: a bad --data changes nothing
    with output_folder(out, "report", clean=("", "audio", "figures")):  # one writer at a time
        return _write_report(out, run, root, loaded, src, data_note, warn, checkpoint, device, vocoder_iters,
                             n_items, seed, evaluate_k, evaluate_limit, progress, scores)


def _write_report(out: Path, run, root: Path, loaded, src, data_note, warn, checkpoint, device, vocoder_iters,
                  n_items, seed, evaluate_k, evaluate_limit, progress, scores: bool = True) -> Path:
    previous = claim_report_dir(out)  # refuses a folder holding files the report did not write
    page = _Page(out, previous)
    say = _Steps(progress, 4 + (3 + bool(scores) if loaded.mel is not None else 2))
    step = loaded.config.get("step")
    at = f"step {step}" if step is not None else "step not recorded"
    page.raw(f"<h1>audiovae report: {html.escape(root.name or str(root))}</h1>")
    page.p(describe(loaded) + f"; {loaded.model.num_params():,} parameters.")
    if data_note:
        page.note(data_note)
        if warn is not None:
            warn(data_note)
    say("configuration and training curves")
    _config_section(page, loaded)
    _training_section(page, root, out, loaded)
    results = read_results(root)
    stale = stale_evaluation(results.get("evaluate"), loaded)
    ev_note = None  # said in the evaluation section
    if stale and src is not None:
        from audiovae.tasks.evaluate import evaluate

        say(f"evaluating the checkpoint at {at} (k={evaluate_k}, up to {evaluate_limit} items)"
            + ("" if "evaluate" not in results else f"; the saved evaluation {stale}"))
        try:
            ev = evaluate(loaded, src, k=evaluate_k, limit=evaluate_limit, seed=seed, progress=progress)
            write_result(root, "evaluate", ev)
            if "evaluate" in results:
                ev_note = f"The saved evaluation {stale}: evaluated again (written to {root / 'results'})."
            results["evaluate"] = ev
        except AudioVAEError as exc:
            ev_note = f"evaluation failed: {exc}"
            results.pop("evaluate", None)
    else:
        say("evaluation (saved)" if not stale else "evaluation (no data to evaluate on)")
        if stale and "evaluate" in results:
            ev_note = (f"The saved evaluation {stale}, and there is no DATA to evaluate again: its table below is "
                       f"of step {results['evaluate'].get('step')}. Give DATA to evaluate this checkpoint "
                       "(`audiovae report RUN -o DIR --data DATA`).")
    torch.manual_seed(seed)
    say("evaluation figures (KL per channel, latent PCA)")
    _evaluation_section(page, loaded, src, results.get("evaluate"), out, at, ev_note)
    if loaded.mel is not None:
        _audio_sections(page, run, loaded, src, out, checkpoint, device, vocoder_iters, n_items, seed, at, say)
        if scores:
            _scores_section(page, loaded, src, vocoder_iters, n_items, seed, at, say)
    else:
        _image_sections(page, loaded, src, out, seed, at, say)
    say("results in RUN/results")
    _results_sections(page, root, results, out, step)
    missing = [p for p in page.images + page.audio if not (out / p).is_file()]
    if missing:  # a bug, not a user error: every file the page names was written above
        raise RuntimeError(f"report files missing: {missing}")
    index = page.file("index.html")
    atomic_write_text(index, page.html(f"audiovae report: {root.name}"))
    for rel in sorted(set(previous) - set(page.written)):  # ours from the last report, not used now
        old = out / rel
        if old.is_file() and not old.is_symlink():
            old.unlink()
    _write_manifest(out, page.written)
    return index


def claim_report_dir(out: Path) -> list[str]:
    """Check that ``out`` may hold a report and return the files an earlier report wrote there.

    A new or empty folder, or one holding only what a report wrote (its
    :data:`MANIFEST`), is fine; a file, a link or anything else in it means the
    folder is someone else's: :class:`OutputError`, and nothing in it is touched.
    """
    check_output_dir(out)
    if not out.is_dir():
        return []
    owned = _read_manifest(out)
    allowed = set(owned) | ({MANIFEST} if (out / MANIFEST).is_file() else set()) | {LOCK_NAME}
    foreign = []
    for folder, dirs, files in os.walk(out):
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]):
            path = Path(folder, name)
            rel = path.relative_to(out).as_posix()
            if path.is_symlink() or rel not in allowed:
                foreign.append(rel)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise OutputError(f"holds files a report did not write ({foreign[0]}{more}); nothing was changed: "
                          "give a new or empty folder", out)
    return owned


def _read_manifest(out: Path) -> list[str]:
    """The relative paths :data:`MANIFEST` lists ([] when it is missing, unreadable or names a path outside)."""
    try:
        files = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(files, list) or not all(isinstance(f, str) and f and not f.startswith("/")
                                             and ".." not in f.split("/") and "\\" not in f for f in files):
        return []
    return files


def _write_manifest(out: Path, files) -> None:
    atomic_write_text(out / MANIFEST, json.dumps({"written_by": "audiovae report", "files": sorted(files)}, indent=1))


def _config_section(page: _Page, loaded) -> None:
    cfg = loaded.config
    page.h2("Configuration")
    page.table([(k, v) for k, v in (cfg.get("model_config") or {}).items()], ("model field", "value"))
    train = cfg.get("train") or {}
    if train:
        keep = [(k, v) for k, v in train.items() if k != "model_config"]
        page.raw("<details><summary>training configuration</summary>")
        page.table(keep, ("training field", "value"))
        page.raw("</details>")
    if cfg.get("mel"):
        page.raw("<details><summary>feature configuration (MelConfig)</summary>")
        page.table(list(cfg["mel"].items()), ("MelConfig field", "value"))
        page.raw("</details>")
    page.p(f"Data it was trained on: {cfg.get('data', 'not recorded')}")


class _Steps:
    """One line on stderr per section of the report, ``report [i/n]: what`` (nothing unless ``enabled``)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.i = enabled, total, 0

    def __call__(self, what: str) -> None:
        self.i += 1
        if self.enabled:
            import sys

            print(f"report [{min(self.i, self.total)}/{self.total}]: {what}...", file=sys.stderr, flush=True)


def stale_evaluation(ev: dict | None, loaded) -> str | None:
    """Why a saved ``evaluate.json`` cannot stand for the checkpoint ``loaded`` (``None``: it can).

    It must be of the same weights: the same ``weights_sha256`` when both record one, else the same
    step. Missing or unreadable: stale too."""
    if not ev:
        return "is missing"
    if "error" in ev:
        return "is unreadable"
    have, want = ev.get("weights_sha256"), loaded.config.get("weights_sha256")
    ev_step, step = ev.get("step"), loaded.config.get("step")
    if have and want:
        if have == want:
            return None
        if ev_step is not None and step is not None and ev_step != step:
            return f"is of step {ev_step}, older than the checkpoint shown (step {step})" if ev_step < step else (
                f"is of step {ev_step}, not the checkpoint shown (step {step})")
        return "is of other weights than the checkpoint shown"
    if ev_step == step and step is not None:
        return None
    if ev_step is None:
        return "does not say which step it is of"
    return f"is of step {ev_step}, not the checkpoint shown (step {step})"


def _item_units(loaded, where: str) -> tuple[str, int | None]:
    """``(what one item is, how many log-mel dims make a frame or None)`` for validation or evaluation figures."""
    if loaded.mel is None:
        return "image", None
    if not loaded.model.is_sequence:
        return "frame", loaded.mel.n_mels
    if where == "validation":
        seg = (loaded.config.get("train") or {}).get("segment_frames")
        return (f"crop of up to {seg} frames" if seg else "crop"), loaded.mel.n_mels
    return "whole utterance", loaded.mel.n_mels


def _training_section(page: _Page, root: Path, out: Path, loaded=None) -> None:
    from audiovae.tasks.plots import plot_training

    page.h2("Training")
    if not (root / "metrics.csv").is_file():
        page.note(f"No training log ({root / 'metrics.csv'}): a model directory without its run folder.")
        return
    item = _item_units(loaded, "validation")[0] if loaded is not None else "item"
    plot_training(page.file("figures/training.png"), root, item)
    what = f" (a {item})" if loaded is not None else ""
    page.img("figures/training.png", f"Training loss and KL per training item{what} (dashed: the KL weight beta of "
             "the warm-up) and validation ELBO per dimension.")
    summ = root / "summary.json"
    if summ.is_file():
        s = json.loads(summ.read_text())
        page.p(f"Curves up to step {s.get('step')}."
               + (" Stopped at the time limit." if s.get("time_limit") else "")
               + (" Stopped early." if s.get("stopped_early") else ""))
    if loaded is not None:
        _validation_lines(page, root, loaded)


def _validation_lines(page: _Page, root: Path, loaded) -> None:
    """The best and the last validation, each with its step and its units (per frame, and per item saying what
    an item is: a training crop, a frame, an image)."""
    from audiovae.tasks.plots import _read_csv

    try:
        vals = [r for r in _read_csv(root / "validation.csv") if r.get("val_elbo") not in (None, "")]
        rows = [(int(float(r["step"])), float(r["val_elbo"]), float(r["val_elbo_per_dim"])) for r in vals]
    except (OSError, ValueError, KeyError):
        rows = []
    if not rows:
        return
    item, frame_dims = _item_units(loaded, "validation")

    def fig(r) -> str:
        step, per_item, per_dim = r
        if frame_dims is None:
            return f"{per_item:,.2f} nats/{item} ({per_dim:.4f} nats/dim) at step {step}"
        per_frame = per_dim * frame_dims
        if item == "frame":
            return f"{per_frame:,.2f} nats/frame at step {step}"
        return f"{per_frame:,.2f} nats/frame ({per_item:,.1f} nats per validation item, a {item}) at step {step}"

    best = max(rows, key=lambda r: r[1])
    page.p(f"Best validation ELBO: {fig(best)}" + (" (the best/ checkpoint)" if (root / "best").is_dir() else "")
           + ("" if rows[-1] is best else f"; last validation: {fig(rows[-1])}") + ".")


@torch.no_grad()
def _evaluation_section(page: _Page, loaded, src: DataSource | None, ev: dict | None, out: Path,
                        at: str = "", note: str | None = None) -> None:
    from audiovae.models.base import gaussian_kl
    from audiovae.tasks.encode import encode_split, utterance_labels
    from audiovae.tasks.evaluate import model_dataset
    from audiovae.tasks.figures import plot_kl_units, plot_latent_scatter

    page.h2(f"Evaluation ({at})" if at else "Evaluation")
    if note:
        page.note(note)
    if ev:
        item, frame_dims = _item_units(loaded, "evaluation")
        per = f"nats/{item}" if item != "whole utterance" else "nats/utterance"
        ev = dict(ev)
        if frame_dims is not None and ev.get("elbo_per_frame") is None and ev.get("elbo_per_dim") is not None:
            ev["elbo_per_frame"] = ev["elbo_per_dim"] * frame_dims  # an evaluate.json written before it said so
        keys = [("elbo_per_frame", "ELBO (nats/frame)"), ("iwae_per_frame", f"IWAE bound, k={ev.get('k')} (nats/frame)"),
                ("elbo", f"ELBO ({per})"), ("iwae", f"IWAE bound, k={ev.get('k')} ({per})"),
                ("iwae_stderr", "standard error"), ("kl", f"KL ({per})"), ("elbo_per_dim", "ELBO (nats/dim)"),
                ("bits_per_dim", "bits/dim (IWAE)"), ("active_units", "active units"), ("latent_dim", "latent channels"),
                ("items", f"items ({item}s)"), ("frames_per_item", f"frames per {item} (mean)")]
        if item == "frame":  # per item is per frame: one row each
            keys = [k for k in keys if k[0] not in ("elbo_per_frame", "iwae_per_frame", "frames_per_item")]
        page.table([(label, ev[k]) for k, label in keys if ev.get(k) is not None],
                   (f"on the {ev.get('split')} split, checkpoint at step {ev.get('step')}", "value"))
    else:
        page.note("No evaluation: run `audiovae evaluate RUN DATA` (or give the report DATA).")
    if src is None:
        return
    split = "val" if src.is_features else "test"
    try:
        ds, collate = model_dataset(loaded, src, split)
    except AudioVAEError as exc:
        page.note(f"The data does not fit this model: {exc}")
        return
    dev = next(loaded.model.parameters()).device
    kls = []
    n = min(len(ds), 256 if not src.is_features else 64)
    for i in range(n) if loaded.model.is_sequence else range(0, n, 128):
        items = [i] if loaded.model.is_sequence else list(range(i, min(n, i + 128)))
        b = collate([ds[j] for j in items] if loaded.model.is_sequence else ds.__getitems__(items)).to(dev)
        mu, lv = loaded.model.encoder_params(b.x)
        kl = gaussian_kl(mu, lv)
        kls.append((kl.mean(-1) if kl.dim() == 3 else kl).cpu().numpy())  # per latent frame
    kl = np.concatenate(kls).mean(0)
    plot_kl_units(page.file("figures/kl_units.png"), kl, threshold=None)
    page.img("figures/kl_units.png", f"KL per latent channel, mean over {n} {split} items: channels near zero carry "
             "nothing (collapsed to the prior).")
    enc = encode_split(loaded, src, split, limit=2000)
    labels = enc.labels
    if src.is_features and labels is None:
        labels = utterance_labels(src, split)
    plot_latent_scatter(page.file("figures/latent_pca.png"), enc.features(), labels,
                        f"latent means of {len(enc.ids)} {split} items, first two principal components")
    page.img("figures/latent_pca.png", "Posterior means projected on their first two principal components"
             + (", coloured by label (class or speaker)." if labels is not None else " (the data carries no labels)."))


def _audio_sections(page: _Page, run, loaded, src, out: Path, checkpoint, device, vocoder_iters, n_items, seed,
                    at: str = "", say: Callable[[str], None] = lambda what: None) -> None:
    from audiovae.audio.io import load_audio, save_audio
    from audiovae.tasks.generate import MelModel
    from audiovae.tasks.plots import plot_mels

    mm = MelModel.load(run, vocoder_iters=vocoder_iters, checkpoint=checkpoint, device=device)
    sr, fr = mm.sample_rate, loaded.mel.frame_rate
    inv = lambda f: mm.loaded.normalizer.inverse(f)[0].cpu().numpy()
    tag = f" ({at})" if at else ""
    say("reconstructions")
    page.h2("Reconstructions" + tag)
    chosen: list[dict] = []
    if src is not None and src.is_features:
        recs = src.utterances("val" if "val" in src.splits() else src.splits()[-1])
        seen: set = set()
        for r in recs:  # one per speaker / source folder first, so different voices show
            who = r.get("speaker") or Path(str(r.get("source", r["id"]))).stem.split("_")[0]
            if who not in seen:
                seen.add(who)
                chosen.append(r)
        chosen = (chosen + [r for r in recs if r not in chosen])[:n_items]
    if not chosen:
        page.note("No held-out utterances to reconstruct (the data is not available).")
    conds = mm.loaded.conditions
    if conds is not None:  # a conditioned model decodes each utterance with its own speaker (label)
        chosen = [r for r in chosen if r.get(conds["key"]) in conds["names"]]
    waves, first_cond = [], None
    for i, rec in enumerate(chosen):
        name = f"utt{i}_{_safe(rec['id'])}"
        source = rec.get("source")
        cond = None if conds is None else mm.loaded.condition_index(**{conds["key"]: rec[conds["key"]]})
        first_cond = cond if first_cond is None else first_cond
        if source and Path(source).is_file():
            wave, _ = load_audio(source, sr, segment=rec.get("segment"))  # a lhotse cut: only its segment
            y, feats, rfeats = mm.reconstruct(wave, cond)
            label = "original"
        else:  # the audio is gone; the cache still has its log-mel
            feats = mm.loaded.normalizer(torch.from_numpy(src.logmel(rec))[None].to(mm.device))
            x = mm.frames_in(feats)
            rfeats = mm.frames_out(mm.model.reconstruct(x, mm._item_cond(cond, x)))
            wave = mm.to_audio(feats)
            y = mm.to_audio(rfeats, len(wave))
            label = "original log-mel, vocoded (the audio file is gone)"
        waves.append(wave)
        save_audio(page.file(f"audio/{name}_original.wav"), wave, sr)
        save_audio(page.file(f"audio/{name}_reconstruction.wav"), y, sr)
        plot_mels(page.file(f"figures/{name}.png"), [inv(feats), inv(rfeats)], [f"{label}: {rec['id']}",
                  "VAE reconstruction (posterior mean)"], fr)
        page.img(f"figures/{name}.png", f"{rec['id']}: log-mel of the original and of its reconstruction")
        page.players([(f"audio/{name}_original.wav", label), (f"audio/{name}_reconstruction.wav", "reconstruction")])
    say("samples from the prior")
    page.h2("Samples from the prior" + tag)
    torch.manual_seed(seed)
    scond = None if conds is None else torch.arange(3) % len(conds["names"])  # the first speakers (labels) in turn
    samples = mm.sample(3, seconds=2.0, seed=seed, cond=scond)
    if mm.loaded.has_learned_prior:
        info = mm.loaded.prior_info
        which = "learned prior"
        page.p(f"From the run's learned prior ({info.get('path')}, step {info.get('step')}, validation NLL "
               f"{_cell(info.get('val_nll'))} nats per latent frame): each latent frame drawn given the ones before. "
               "Without it (audiovae train-prior RUN) samples come from N(0, I), every frame independent: noise.")
    else:
        which = "z ~ N(0, I)"
        page.note("These come from N(0, I), every latent frame drawn independently: for a conv model that is noise, "
                  "not speech. Train a learned prior (audiovae train-prior RUN) and make the report again.")
    for i, (y, _) in enumerate(samples):
        save_audio(page.file(f"audio/prior_sample_{i}.wav"), y, sr)
    plot_mels(page.file("figures/prior_samples.png"), [inv(f) for _, f in samples],
              [f"sample {i} ({which}" + ("" if scond is None else f", {conds['key']} {conds['names'][int(scond[i])]}")
               + ")" for i in range(len(samples))], fr)
    page.img("figures/prior_samples.png", f"Three 2-second utterances decoded from the {which}")
    page.players([(f"audio/prior_sample_{i}.wav", f"sample {i}") for i in range(len(samples))])
    say("interpolation")
    page.h2("Interpolation" + tag)
    if len(waves) >= 2:
        steps = mm.interpolate(waves[0], waves[1], steps=5, cond=first_cond)
        ts = np.linspace(0, 1, len(steps))
        for i, (y, _) in enumerate(steps):
            save_audio(page.file(f"audio/interp_{i}.wav"), y, sr)
        plot_mels(page.file("figures/interpolation.png"), [inv(f) for _, f in steps], [f"t = {t:.2f}" for t in ts], fr,
                  suptitle=f"{chosen[0]['id']} -> {chosen[1]['id']}")
        page.img("figures/interpolation.png", "Decoding (1 - t) z_a + t z_b between two utterances' posterior means")
        page.players([(f"audio/interp_{i}.wav", f"t = {t:.2f}") for i, t in enumerate(ts)])
    else:
        page.note("An interpolation needs two held-out utterances.")


def _scores_section(page: _Page, loaded, src, vocoder_iters, n_items: int, seed: int, at: str = "",
                    say: Callable[[str], None] = lambda what: None) -> None:
    """DNSMOS (and speaker similarity, ASR for English data) of a few held-out utterances, their
    reconstructions, prior samples and conversions, or the line saying how to install the scores."""
    from audiovae.audio.perceptual import missing
    from audiovae.tasks.analyze import format_perceptual, perceptual_scores

    say("perceptual scores")
    page.h2("Perceptual scores" + (f" ({at})" if at else ""))
    note = missing("DNSMOS") or missing("speaker similarity")
    if note is not None:
        page.note(f"Perceptual scores (DNSMOS, speaker similarity, ASR): {note}.")
        return
    if src is None or not src.is_features:
        page.note("Perceptual scores need the held-out utterances (the data is not available).")
        return
    try:
        res = perceptual_scores(loaded, src, n_items=min(n_items, 2), n_samples=2, seconds=3.0, seed=seed,
                                vocoder_iters=vocoder_iters)  # a few clips: DNSMOS takes ~0.5 s a clip
    except AudioVAEError as exc:
        page.note(f"Perceptual scores failed: {exc}")
        return
    page.markdown(format_perceptual(res))


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(s))[:40]


@torch.no_grad()
def _image_sections(page: _Page, loaded, src, out: Path, seed: int, at: str = "",
                    say: Callable[[str], None] = lambda what: None) -> None:
    from audiovae.tasks.evaluate import model_dataset
    from audiovae.tasks.figures import image_grid, to_unit

    model, signed = loaded.model, loaded.name != "mnist"
    dev = next(model.parameters()).device
    tag = f" ({at})" if at else ""
    say("reconstructions")
    page.h2("Reconstructions" + tag)
    if src is not None and not src.is_features:
        ds, collate = model_dataset(loaded, src, "test")
        x = collate(ds.__getitems__(list(range(min(16, len(ds)))))).x.to(dev)
        rec = model.reconstruct(x)
        raw = src.images_of("test")[: len(x)].astype(np.float32) / 255.0
        raw = raw[:, None] if raw.ndim == 3 else raw
        image_grid(page.file("figures/reconstructions.png"),
                   np.concatenate([raw, to_unit(x.cpu().numpy(), signed), to_unit(rec.cpu().numpy(), signed)]),
                   ncol=len(x))
        page.img("figures/reconstructions.png", "Test images (top), as the model sees them (middle: binarised for "
                 "a Bernoulli model) and their reconstructions (bottom: mean of p(x | z = posterior mean)).")
    else:
        page.note("No test images to reconstruct (the data is not available).")
    say("samples from the prior and interpolation")
    page.h2("Samples from the prior" + tag)
    for t in (1.0, 0.7):
        torch.manual_seed(seed)
        s = model.sample(64, temperature=t).cpu().numpy()
        name = f"samples_T{t:g}.png"
        image_grid(page.file(f"figures/{name}"), to_unit(s, signed), ncol=16)
        page.img(f"figures/{name}", f"64 samples, z ~ N(0, {t:g}^2 I), mean of p(x | z)")
    page.h2("Interpolation" + tag)
    torch.manual_seed(seed)
    if src is not None and not src.is_features:
        ds, collate = model_dataset(loaded, src, "test")
        x = collate(ds.__getitems__(list(range(min(8, len(ds)))))).x.to(dev)
        mu, _ = model.encoder_params(x)
        pairs = [(2 * i, 2 * i + 1) for i in range(len(x) // 2)]
        ts = torch.linspace(0, 1, 10, device=dev)[:, None]
        rows = [to_unit(model.decode((1 - ts) * mu[a:a + 1] + ts * mu[b:b + 1]).mean.cpu().numpy(), signed)
                for a, b in pairs]
        image_grid(page.file("figures/interpolation.png"), np.concatenate(rows), ncol=10)
        page.img("figures/interpolation.png", "Each row: decoding (1 - t) z_a + t z_b between two test images' "
                 "posterior means, t from 0 to 1")
    else:
        page.note("An interpolation needs test images (the data is not available).")


def _from_step(res, step) -> str:
    """" (from step N)" for a saved result, saying when that is not the checkpoint shown above."""
    s = res.get("step") if isinstance(res, dict) else None
    if s is None:
        return " (step not recorded)"
    return f" (from step {s}" + ("" if step is None or s == step else f"; the checkpoint shown is step {step}") + ")"


def _results_sections(page: _Page, root: Path, results: dict, out: Path, step=None) -> None:
    from audiovae.tasks.analyze import format_analysis
    from audiovae.tasks.probe import format_probe

    page.h2("Linear probe (classification with VAE features)")
    if "probe" in results and "results" in results["probe"]:
        pr = results["probe"]
        page.p(f"{pr['model']} latents on {pr['data']} (labels: {pr.get('label_key') or 'image classes'})"
               f"{_from_step(pr, step)}.")
        page.markdown(format_probe(pr))
    else:
        page.note("Not run: `audiovae probe RUN DATA` writes RUN/results/probe.json.")
    page.h2("Analysis: size, training speed, diversity")
    if "analysis" in results and "runs" in results["analysis"]:
        page.p("Each run's step is in the table (model (step)).")
        page.markdown(format_analysis(results["analysis"]))
    else:
        page.note("Not run: `audiovae analyze RUN DATA` writes RUN/results/analysis.json.")
    page.h2("Repairs")
    repairs = {k: v for k, v in results.items() if k.startswith("repair")}
    if not repairs:
        page.note("Not run: `audiovae repair RUN ...` writes RUN/results/repair_images.json or repair_audio.json.")
    for name, res in repairs.items():
        page.p(f"{name}{_from_step(res, step)}:")
        _show_files(page, name, res, root / "results", root)
    others = {k: v for k, v in results.items() if k not in ("probe", "analysis", "evaluate") and not k.startswith("repair")}
    for name, res in others.items():
        page.h2(f"Results: {name}{_from_step(res, step)}")
        _show_files(page, name, res, root / "results", root)


def _show_files(page: _Page, name: str, res, base: Path, root: Path) -> None:
    """Copy the pictures and wavs a result JSON names into the report and show them, then the JSON itself.

    Only files inside the run folder ``root`` (after resolving links) are taken:
    a result that names any other file gets a note instead, never a copy.
    """
    found: list[Path] = []
    outside: list[str] = []
    top = root.resolve()

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str) and Path(v).suffix.lower() in (".png", ".wav", ".jpg", ".jpeg"):
            p = Path(v) if Path(v).is_absolute() else base / v
            if not p.is_file() and (base.parent / v).is_file():
                p = base.parent / v
            if not p.is_file():
                return
            real = p.resolve()
            if not real.is_relative_to(top):
                outside.append(v)
            elif real not in found:
                found.append(real)

    walk(res)
    page.p(f"{name}.json: {len(found)} file(s).")
    if outside:
        page.note(f"Not shown: {len(outside)} file(s) outside the run folder ({', '.join(outside[:3])}"
                  f"{', ...' if len(outside) > 3 else ''}); the report takes only files inside {root}.")
    players = []
    for i, p in enumerate(found):
        rel = f"figures/{name}_{i}_{_safe(p.stem)}{p.suffix.lower()}"
        with atomic_path(page.file(rel), suffix=p.suffix.lower()) as tmp:
            shutil.copyfile(p, tmp)
        if p.suffix.lower() == ".wav":
            players.append((rel, p.name))
        else:
            page.img(rel, p.name)
    if players:
        page.players(players)
    text = json.dumps(res, indent=1)
    page.raw(f"<details><summary>{html.escape(name)}.json</summary><pre>{html.escape(text[:20000])}</pre></details>")
