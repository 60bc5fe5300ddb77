"""`audiovae probe`: how linearly separable are the classes in a VAE's latent space?

A linear probe (multinomial logistic regression on standardised features,
scikit-learn) is trained on the training split and scored on the test split
(features: ``test`` when the cache has one, else ``val``), on three kinds of
features:

- ``latent``: the posterior means (images), or their time-mean and time-std (utterances);
- ``raw``: the input itself: grey/colour pixels in [0, 1], or the time-mean and
  time-std of each log-mel bin (utterances);
- ``pca``: a PCA of the raw input with as many components as the latent
  features have (fitted on all training items, without labels, as the VAE was).

Each with 100, 1,000 and all training labels (a class-balanced random subset),
giving the label-efficiency curve. Accuracies carry a 95 % Wilson interval
over the test items. A negative control (the latent probe trained on shuffled
labels) should sit at chance; ``chance`` is the test share of the commonest class.
"""

from __future__ import annotations

import math
import os
import time
import warnings

import numpy as np

from audiovae.data.source import DataSource, open_data
from audiovae.errors import DataError
from audiovae.tasks.encode import encode_split, utterance_labels
from audiovae.api import load
from audiovae.training.checkpoint import pick_device

KIND_NAMES = {"latent": "VAE latent means", "raw": "raw input", "pca": "PCA of raw input", "latent_shuffled":
              "latent, shuffled labels (control)"}


def wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``correct / n``."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def balanced_subset(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` items with (as near as possible) equal counts per class, drawn at random."""
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    classes = np.unique(y)
    per = max(1, n // len(classes))
    picked = np.concatenate([order[y[order] == c][:per] for c in classes])[:n]
    rest = np.setdiff1d(order, picked, assume_unique=True)
    rest = rest[rng.permutation(len(rest))][: n - len(picked)]
    return np.sort(np.concatenate([picked, rest]))


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              max_iter: int = 500, c: float = 1.0) -> dict:
    """Standardise, fit a multinomial logistic regression (L2, ``C=c``), score on the test items."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(train_x, train_y)
    correct = int((clf.predict(test_x) == test_y).sum())
    lo, hi = wilson(correct, len(test_y))
    return {"accuracy": correct / len(test_y), "ci95": [lo, hi], "n_train": len(train_y),
            "n_test": len(test_y), "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
            "seconds": time.perf_counter() - t0, "classifier": clf}


def raw_features(src: DataSource, split: str, limit: int | None = None) -> np.ndarray:
    """The raw input as a vector per item: pixels in [0, 1] (images) or per-bin time-mean and time-std of the log-mel."""
    if src.is_features:
        rows = []
        for rec in src.utterances(split)[:limit]:
            m = src.logmel(rec)
            rows.append(np.concatenate([m.mean(1), m.std(1)]))
        return np.stack(rows).astype(np.float32)
    x = src.images_of(split)[:limit]
    return x.reshape(len(x), -1).astype(np.float32) / 255.0


def _test_split(src: DataSource) -> str:
    if not src.is_features:
        return "test"
    for s in ("test", "val"):
        if s in src.splits():
            return s
    raise DataError("the data has a train split only; a probe needs held-out utterances (val or test)", src.path)


def probe(run: str | os.PathLike, data: str | os.PathLike | DataSource, label_counts: tuple = (100, 1000, None),
          label_key: str | None = None, checkpoint: str = "best", device: str = "auto", limit: int | None = None,
          seed: int = 0, max_iter: int = 500, progress: bool = True) -> dict:
    """Linear-probe accuracies by feature kind (``latent``, ``raw``, ``pca``) and number of training labels.

    ``label_counts``: training-label counts (``None`` = all). ``label_key``:
    for feature caches, the record field holding the class (default ``label``,
    else ``speaker``). ``limit``: use only the first N items of each split.
    Returns a JSON-able dict (``results[kind][count]`` with ``accuracy`` and ``ci95``).
    Raises :class:`DataError` when the data carries no labels.
    """
    from sklearn.decomposition import PCA

    src = data if isinstance(data, DataSource) else open_data(data)
    dev = pick_device(device)
    loaded = load(run, checkpoint, dev)
    test_split = _test_split(src)
    if src.is_features:
        ytr, yte = utterance_labels(src, "train", label_key), utterance_labels(src, test_split, label_key)
        if ytr is None or yte is None:
            keys = label_key or "label or speaker"
            raise DataError(f"no labels: the utterance records of this cache carry no {keys} field "
                            "(a corpus manifest with speakers or labels puts them there)", src.path)
    else:
        ytr, yte = src.labels("train"), src.labels(test_split)
    ytr, yte = np.asarray(ytr)[:limit], np.asarray(yte)[:limit]
    if len(np.unique(ytr)) < 2:
        raise DataError("the training split has fewer than two classes; nothing to classify", src.path)
    enc_tr = encode_split(loaded, src, "train", limit=limit, label_key=label_key, progress=progress)
    enc_te = encode_split(loaded, src, test_split, limit=limit, label_key=label_key, progress=progress)
    raw_tr, raw_te = raw_features(src, "train", limit), raw_features(src, test_split, limit)
    n_comp = min(enc_tr.features().shape[1], raw_tr.shape[1], len(raw_tr))
    pca = PCA(n_components=n_comp, random_state=seed).fit(raw_tr)
    feats = {"latent": (enc_tr.features(), enc_te.features()), "raw": (raw_tr, raw_te),
             "pca": (pca.transform(raw_tr), pca.transform(raw_te))}
    counts = []
    for c in label_counts:
        if c is None or c >= len(ytr):
            if None not in counts:
                counts.append(None)
        elif c not in counts:
            counts.append(int(c))
    results: dict = {k: {} for k in feats}
    from tqdm import tqdm

    jobs = [(kind, c) for c in counts for kind in feats]
    for kind, c in tqdm(jobs, desc="probe", unit="fit", disable=not progress):
        idx = balanced_subset(ytr, len(ytr) if c is None else c, seed)
        tr, te = feats[kind]
        r = fit_probe(tr[idx], ytr[idx], te, yte, max_iter=max_iter)
        r.pop("classifier")
        results[kind]["all" if c is None else str(c)] = r
    # negative control: the same probe on the latent features, labels shuffled
    shuffled = np.random.default_rng(seed + 1).permutation(ytr)
    ctrl = fit_probe(feats["latent"][0], shuffled, feats["latent"][1], yte, max_iter=max_iter)
    ctrl.pop("classifier")
    _, counts_te = np.unique(yte, return_counts=True)
    return {
        "model": loaded.name, "model_dir": str(loaded.path), "step": loaded.config.get("step"), "data": str(src.path),
        "label_key": None if not src.is_features else (label_key or _which_key(src)),
        "train_split": "train", "test_split": test_split, "n_train": len(ytr), "n_test": len(yte),
        "n_classes": len(np.unique(ytr)), "chance": float(counts_te.max() / len(yte)),
        "dims": {"latent": int(feats["latent"][0].shape[1]), "raw": int(raw_tr.shape[1]), "pca": int(n_comp)},
        "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
        "results": results, "control_shuffled_labels": ctrl,
    }


def _which_key(src: DataSource) -> str:
    return "label" if src.labels("train", key="label") is not None else "speaker"


def format_probe(res: dict) -> str:
    """The probe as a markdown table: one row per feature kind, one column per label count."""
    cols = list(res["results"]["latent"])
    head = [("all" if c == "all" else f"{int(c):,}") + " labels" for c in cols]
    head = [h if not h.startswith("all") else f"all {res['n_train']:,} labels" for h in head]
    lines = [f"| features | dims | {' | '.join(head)} |", "|---|---:|" + "---:|" * len(cols)]
    for kind in ("latent", "raw", "pca"):
        cells = []
        for c in cols:
            r = res["results"][kind][c]
            lo, hi = r["ci95"]
            cells.append(f"{100 * r['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")
        lines.append(f"| {KIND_NAMES[kind]} | {res['dims'][kind]} | {' | '.join(cells)} |")
    ctrl = res["control_shuffled_labels"]
    ci = ctrl["ci95"]
    lines += ["", (f"Test accuracy on {res['n_test']:,} {res['test_split']} items ({res['n_classes']} classes) with a "
                   f"95% Wilson interval (over the test items). Chance (commonest class): {100 * res['chance']:.1f}%; "
                   f"control (latent probe trained on one shuffle of the labels): {100 * ctrl['accuracy']:.1f}% "
                   f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]. PCA keeps {100 * res['pca_explained_variance']:.0f}% "
                   "of the raw variance.")]
    slow = [f"{k} ({c} labels)" for k in ("latent", "raw", "pca") for c in cols if not res["results"][k][c]["converged"]]
    if slow:
        lines.append(f"Not converged within the iteration limit (raise --max-iter): {', '.join(slow)}.")
    return "\n".join(lines)
