"""The applications: encode, probe, analyze, interpolate and the report (opened in a real browser)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import require, speak
from PIL import Image
from scipy.stats import norm

from audiovae.cli import cli
from audiovae.data.corpora import folder_manifest
from audiovae.data.features import extract, split_of
from audiovae.tasks.analyze import _class_stats, _nearest, count_params, training_speed
from audiovae.tasks.probe import balanced_subset, fit_probe, probe, wilson
from audiovae.training import TrainConfig, train
from audiovae.training.checkpoint import load_model_dir
from tests.corpora import write_idx as _write_idx

PATCH = 7  # class c is a bright 7x7 patch at one of 10 positions: separable in a known direction


def _blobs(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % 10
    x = rng.integers(0, 60, size=(n, 28, 28))
    for i, c in enumerate(y):
        r, q = divmod(int(c), 5)
        x[i, 3 + r * 14: 3 + r * 14 + PATCH, q * 5 + 1: q * 5 + 1 + PATCH] = rng.integers(200, 256, size=(PATCH, PATCH))
    return x.astype(np.uint8), y.astype(np.uint8)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    """An MNIST-format folder (600 train, 200 test images) whose 10 classes are patch positions."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("blobs")
    for stem, n in (("train", 600), ("t10k", 200)):
        x, y = _blobs(n, rng)
        _write_idx(d / f"{stem}-images-idx3-ubyte.gz", x)
        _write_idx(d / f"{stem}-labels-idx1-ubyte.gz", y)
    return d


@pytest.fixture(scope="module")
def image_run(blobs, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("img") / "run"
    cfg = TrainConfig(model="mnist", model_config={"channels": 8, "latent_dim": 8, "hidden": 32}, batch_size=32,
                      max_steps=40, kl_warmup="none", lr_warmup_steps=0, lr=3e-3, checkpoint_every=1000, val_every=10,
                      val_batches=2)
    train(blobs, run, cfg, progress=False)
    return run


VOICES = {"m": "en+m3", "f": "en+f3"}
LINES = ["The quick brown fox jumps over the lazy dog.", "She sells sea shells by the sea shore.",
         "Griffin and Lim turned magnitudes back into sound.", "Please call Stella and ask her to bring these things.",
         "Every frame has two hundred and fifty six mel bins.", "A latent space of speech, learned from data.",
         "Seven silver swans swam silently seaward.", "Bring the blue book back by Monday.",
         "Numbers like forty two are spoken slowly.", "Rain in the valley fell all night long."]


@pytest.fixture(scope="module")
def speaker_cache(tmp_path_factory) -> Path:
    """espeak-ng speech of two voices (2 held-out and 3 training utterances each), a 'speaker' field in the index."""
    d = tmp_path_factory.mktemp("voices")
    corpus = d / "corpus"
    corpus.mkdir()
    for who, voice in VOICES.items():
        val = [i for i in range(200) if split_of(f"{who}_{i:03d}", 0.4) == "val"][:2]
        trn = [i for i in range(200) if split_of(f"{who}_{i:03d}", 0.4) == "train"][:3]
        for j, i in enumerate(val + trn):
            speak(LINES[(j * 3 + (who == "f")) % len(LINES)], corpus / f"{who}_{i:03d}.wav", voice)
    cache = d / "cache"
    manifest = folder_manifest(corpus, d / "manifest.tsv", speaker_of=lambda p: VOICES[p.name[0]],
                               split_of=lambda uid: split_of(uid, 0.4))
    extract(manifest, cache, workers=0, progress=False)
    return cache


@pytest.fixture(scope="module")
def audio_run(speaker_cache, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("aud") / "run"
    cfg = TrainConfig(model="conv", model_config={"channels": 16, "latent_dim": 4, "downsample": 4, "res_blocks": 1},
                      batch_size=4, max_steps=8, segment_frames=32, kl_warmup="none", lr_warmup_steps=0, lr=2e-3,
                      checkpoint_every=1000, val_every=4, val_batches=2)
    train(speaker_cache, run, cfg, progress=False)
    return run


# --- the statistics ---------------------------------------------------------------------------------------
def test_wilson_interval_matches_published_values():
    # Wilson (1927) / Newcombe (1998) table: 50/100 -> [0.4038, 0.5962]; 0/10 -> [0, 0.2775]
    assert wilson(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)


def test_probe_reaches_the_bayes_accuracy_of_a_known_separable_case():
    # three Gaussian classes at -a, 0, +a along a known direction u in 20 dims, unit noise:
    # the Bayes accuracy is (4 Phi(a/2) - 1) / 3
    rng = np.random.default_rng(1)
    a, d = 3.0, 20
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)

    def draw(n):
        y = rng.integers(0, 3, n)
        return rng.normal(size=(n, d)) + np.outer((y - 1) * a, u), y

    xtr, ytr = draw(4000)
    xte, yte = draw(8000)
    bayes = (4 * norm.cdf(a / 2) - 1) / 3
    r = fit_probe(xtr, ytr, xte, yte)
    lo, hi = r["ci95"]
    assert lo - 0.01 <= bayes <= hi + 0.01, (r["accuracy"], bayes)


def test_probe_separates_a_half_space_and_shuffled_labels_give_chance():
    # classes are the two sides of a hyperplane through the origin with a known normal u: exactly separable
    rng = np.random.default_rng(2)
    u = rng.normal(size=30)
    xtr, xte = rng.normal(size=(3000, 30)), rng.normal(size=(4000, 30))
    ytr, yte = (xtr @ u > 0).astype(int), (xte @ u > 0).astype(int)
    assert fit_probe(xtr, ytr, xte, yte, c=100.0)["accuracy"] > 0.98
    r0 = fit_probe(xtr, rng.permutation(ytr), xte, yte)  # negative control
    assert r0["ci95"][0] - 0.02 < 0.5 < r0["ci95"][1] + 0.02, r0["accuracy"]


def test_balanced_subset_has_equal_class_counts():
    y = np.repeat(np.arange(10), [500, 50, 90, 200, 300, 400, 100, 60, 70, 80])
    idx = balanced_subset(y, 100, seed=3)
    assert len(idx) == len(set(idx)) == 100
    assert (np.bincount(y[idx], minlength=10) == 10).all()


# --- probe on real models ---------------------------------------------------------------------------------
def test_probe_images_separable_and_control_at_chance(image_run, blobs, tmp_path):
    out = tmp_path / "probe.json"
    res = CliRunner().invoke(cli, ["probe", str(image_run), str(blobs), "--labels", "100,all", "--json", str(out)])
    assert res.exception is None, res.output
    p = json.loads(out.read_text())
    assert p == json.loads((image_run / "results" / "probe.json").read_text())
    assert p["n_train"] == 540 and p["n_test"] == 200 and p["n_classes"] == 10  # 60 of 600 are validation
    assert p["dims"] == {"latent": 8, "raw": 784, "pca": 8}
    assert set(p["results"]["latent"]) == {"100", "all"}
    assert p["results"]["raw"]["all"]["accuracy"] >= 0.97  # a patch position is linearly visible in the pixels
    assert p["results"]["latent"]["all"]["accuracy"] >= 0.5  # 5x chance after 40 steps
    assert p["results"]["latent"]["100"]["n_train"] == 100
    assert p["control_shuffled_labels"]["accuracy"] < 0.25  # chance is 0.1
    assert "VAE latent means" in res.output and "[" in res.output


def test_probe_audio_speakers_and_clear_error_without_labels(audio_run, speaker_cache, tmp_path):
    p = probe(audio_run, speaker_cache, label_counts=(None,), progress=False)
    assert p["label_key"] == "speaker" and p["n_classes"] == 2 and p["test_split"] == "val"
    assert p["n_test"] == 4 and p["n_train"] == 6
    assert p["results"]["raw"]["all"]["accuracy"] == 1.0  # a male and a female voice, by their mean spectrum
    assert p["dims"]["latent"] == 8  # time-mean and time-std of 4 latent channels
    bare = tmp_path / "bare"  # the same audio extracted from its folder: no speakers in the index
    corpus = speaker_cache.parent / "corpus"
    extract(corpus, bare, workers=0, val_fraction=0.4, progress=False)
    res = CliRunner().invoke(cli, ["probe", str(audio_run), str(bare)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert "no labels" in res.output and str(bare) in res.output


def test_probe_fits_pca_on_training_items_only_and_draws_balanced_labels(image_run, blobs, tmp_path, monkeypatch):
    """The PCA sees the training split and nothing else (a spy on PCA._fit, which fit and fit_transform share), and
    100 labels are 10 per class even when the training items are sorted by class (the first 100 would be
    classes 0 and 1 only): a spy on fit_probe records the labels each probe is trained on."""
    from sklearn.decomposition import PCA

    import audiovae.tasks.probe as probe_mod
    from audiovae.data.images import read_idx
    from audiovae.data.source import open_data

    data = tmp_path / "sorted"
    data.mkdir()
    x, y = read_idx(blobs / "train-images-idx3-ubyte.gz"), read_idx(blobs / "train-labels-idx1-ubyte.gz")
    order = np.concatenate([np.argsort(y[:540], kind="stable"), np.arange(540, 600)])  # the last 60 validate
    _write_idx(data / "train-images-idx3-ubyte.gz", x[order])
    _write_idx(data / "train-labels-idx1-ubyte.gz", y[order])
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy2(blobs / name, data / name)
    fitted, trained = [], []
    real_fit, real_probe = PCA._fit, probe_mod.fit_probe

    def spy_fit(self, X, *args, **kwargs):
        fitted.append(np.array(X))
        return real_fit(self, X, *args, **kwargs)

    def spy_probe(train_x, train_y, *args, **kwargs):
        trained.append(np.array(train_y))
        return real_probe(train_x, train_y, *args, **kwargs)

    monkeypatch.setattr(PCA, "_fit", spy_fit)
    monkeypatch.setattr(probe_mod, "fit_probe", spy_probe)
    p = probe(image_run, data, label_counts=(100,), progress=False)
    train_raw = probe_mod.raw_features(open_data(data), "train")
    assert len(fitted) == 1 and fitted[0].shape == train_raw.shape and np.array_equal(fitted[0], train_raw)
    assert len(trained) == 4  # latent, raw, pca with 100 labels; the shuffled control with all 540
    for labels in trained[:3]:
        assert (np.bincount(labels, minlength=10) == 10).all(), np.bincount(labels, minlength=10)
    assert p["results"]["raw"]["100"]["accuracy"] > 0.5, p["results"]["raw"]["100"]  # 10 classes: chance is 0.1

# --- encode -----------------------------------------------------------------------------------------------
def test_encode_images_and_image_files(image_run, blobs, tmp_path):
    from audiovae.data.images import read_idx

    x = read_idx(blobs / "t10k-images-idx3-ubyte.gz")
    y = read_idx(blobs / "t10k-labels-idx1-ubyte.gz")
    for i in range(2):
        Image.fromarray(x[i]).save(tmp_path / f"im{i}.png")
    out = tmp_path / "z.npz"
    res = CliRunner().invoke(cli, ["encode", str(image_run), str(blobs), "--split", "test", "-o", str(out)])
    assert res.exception is None, res.output
    z = np.load(out)
    assert z["mu"].shape == (200, 8) and z["logvar"].shape == (200, 8)
    assert (z["labels"] == y).all() and z["ids"][3] == "test:3"
    res = CliRunner().invoke(cli, ["encode", str(image_run), str(tmp_path / "im0.png"), str(tmp_path / "im1.png"),
                                   "-o", str(out)])
    assert res.exception is None, res.output
    z = np.load(out)
    model = load_model_dir(image_run / "best").model
    with torch.no_grad():
        mu, lv = model.encoder_params(torch.from_numpy(x[:2, None].astype(np.float32) / 255))
    np.testing.assert_allclose(z["mu"], mu.numpy(), atol=1e-5)
    np.testing.assert_allclose(z["logvar"], lv.numpy(), atol=1e-5)
    assert "labels" not in z.files
    res = CliRunner().invoke(cli, ["encode", str(image_run), str(tmp_path / "nope.png"), "-o", str(out)])
    assert res.exit_code == 1 and "nope.png" in res.output


def test_encode_audio_pools_latent_frames_over_time(audio_run, speaker_cache, tmp_path):
    from audiovae.tasks.generate import MelModel

    index = json.loads((speaker_cache / "index.json").read_text())
    wav = index[0]["source"]
    out = tmp_path / "a.npz"
    res = CliRunner().invoke(cli, ["encode", str(audio_run), wav, "-o", str(out)])
    assert res.exception is None, res.output
    z = np.load(out)
    mm = MelModel.load(audio_run, device="cpu")
    wave, _ = sf.read(wav, dtype="float32")
    with torch.no_grad():
        mu, _ = mm.model.encoder_params(mm.features(wave))
    np.testing.assert_allclose(z["mu"][0], mu[0].mean(1).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(z["mu_std"][0], mu[0].std(1, unbiased=False).numpy(), rtol=1e-4, atol=1e-5)
    # a folder of audio files and a list file are inputs too, as for `mel` (issue 17)
    folder = tmp_path / "wavs"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(wav, folder / "sub" / "x.wav")
    (tmp_path / "list.txt").write_text(f"{wav}\n")
    for inp in (folder, tmp_path / "list.txt"):
        res = CliRunner().invoke(cli, ["encode", str(audio_run), str(inp), "-o", str(tmp_path / f"{inp.stem}.npz")])
        assert res.exit_code == 0, res.output
        np.testing.assert_allclose(np.load(tmp_path / f"{inp.stem}.npz")["mu"], z["mu"], rtol=1e-4, atol=1e-5)
    # reconstruct: a folder in, a folder out, names mirrored
    res = CliRunner().invoke(cli, ["reconstruct", str(audio_run), str(folder), "-o", str(tmp_path / "rec"),
                                   "--vocoder-iters", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert [p.relative_to(tmp_path / "rec").as_posix() for p in (tmp_path / "rec").rglob("*.wav")] == ["sub/x.wav"]


# --- analyze ----------------------------------------------------------------------------------------------
def test_training_speed_from_logs(tmp_path):
    cols = "step,epoch,loss,elbo,elbo_per_dim,recon,kl,beta,lr,grad_norm,data_s,step_s,items_per_s"
    rows = [f"{s},0,1,1,1,1,1,1,1,1,0.1,0.4,{60 + s}" for s in range(1, 11)]  # 0.5 s per step
    (tmp_path / "metrics.csv").write_text(cols + "\n" + "\n".join(rows) + "\n")
    vals = [(2, -200.0), (4, -120.0), (6, -105.0), (8, -101.0), (10, -100.0)]
    (tmp_path / "validation.csv").write_text("step,epoch,val_elbo,val_elbo_per_dim,val_recon,val_kl,active_units\n"
                                             + "".join(f"{s},0,{v},0,0,0,0\n" for s, v in vals))
    t = training_speed(tmp_path)
    # climb -200 -> -100; 95 % of it is -105, first reached at step 6 = 3.0 s of training
    assert t["step_to_95"] == 6 and t["seconds_to_95"] == pytest.approx(3.0)
    assert t["train_seconds"] == pytest.approx(5.0) and t["items_per_s"] == pytest.approx(65.5)


def test_distances_and_class_statistics_against_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    brute = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).min(1) / math.sqrt(5)
    np.testing.assert_allclose(_nearest(torch.from_numpy(a), torch.from_numpy(b), chunk=3).numpy(), brute, rtol=1e-5)
    s = _class_stats(np.array([0] * 50 + [1] * 50), 10)
    assert s["entropy_bits"] == pytest.approx(1.0) and s["coverage"] == 2
    s = _class_stats(np.arange(1000) % 10, 10)
    assert s["entropy_bits"] == pytest.approx(math.log2(10)) and s["coverage"] == 10


def test_analyze_two_runs(image_run, blobs, tmp_path):
    out = tmp_path / "analysis.json"
    res = CliRunner().invoke(cli, ["analyze", str(image_run), str(image_run), str(blobs), "--limit", "100", "--k", "16",
                                   "--samples", "200", "--json", str(out)])
    assert res.exception is None, res.output
    a = json.loads(out.read_text())
    assert len(a["runs"]) == 2 and a["temperatures"] == [1.0, 0.7]
    r = a["runs"][0]
    model = load_model_dir(image_run / "best").model
    assert r["params"]["total"] == model.num_params() == sum(count_params(model)[k] for k in ("encoder", "decoder", "other"))
    assert r["params"]["encoder"] == sum(p.numel() for p in model.encoder.parameters())
    assert r["training"]["steps"] == 40 and r["training"]["items_per_s"] > 0
    assert r["evaluation"]["iwae"] >= r["evaluation"]["elbo"] - 1.0
    div = r["diversity"]
    assert div["probe_accuracy"] > 0.9
    assert div["held_out"]["entropy_bits"] > 3.0  # held-out images: balanced classes
    for t in ("T=1", "T=0.7"):
        assert 0 <= div[t]["entropy_bits"] <= math.log2(10) + 1e-9 and 1 <= div[t]["coverage"] <= 10
    assert "| parameters: total |" in res.output
    assert json.loads((image_run / "results" / "analysis.json").read_text())["runs"][0]["run"] == str(image_run)


# --- interpolate ------------------------------------------------------------------------------------------
def test_interpolate_images_ends_are_the_reconstructions(image_run, blobs, tmp_path):
    from audiovae.data.images import read_idx

    x = read_idx(blobs / "t10k-images-idx3-ubyte.gz")
    Image.fromarray(x[0]).save(tmp_path / "a.png")
    Image.fromarray(x[5]).save(tmp_path / "b.png")
    res = CliRunner().invoke(cli, ["interpolate", str(image_run), str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                                   "-o", str(tmp_path / "strip.png"), "--steps", "4"])
    assert res.exception is None, res.output
    strip = np.asarray(Image.open(tmp_path / "strip.png"), np.float32) / 255
    assert strip.shape == (3 * 32, 3 * (6 * 30 + 2))  # A, 4 steps, B; 28-pixel tiles 2 apart, drawn 3x
    tile = lambda k: strip[3 * 2: 3 * 30: 3, 3 * (2 + 30 * k): 3 * (30 + 30 * k): 3]
    model = load_model_dir(image_run / "best").model
    with torch.no_grad():
        mu, _ = model.encoder_params(torch.from_numpy(x[[0, 5], None].astype(np.float32) / 255))
        rec = model.decode(mu).mean[:, 0].numpy()
    np.testing.assert_allclose(tile(0), x[0] / 255, atol=1 / 255)
    np.testing.assert_allclose(tile(1), rec[0], atol=1 / 255)  # t = 0
    np.testing.assert_allclose(tile(4), rec[1], atol=1 / 255)  # t = 1


def test_interpolate_audio_writes_steps_and_picture(audio_run, speaker_cache, tmp_path):
    index = json.loads((speaker_cache / "index.json").read_text())
    a, b = index[0]["source"], index[-1]["source"]
    out = tmp_path / "walk.wav"
    res = CliRunner().invoke(cli, ["interpolate", str(audio_run), a, b, "-o", str(out), "--steps", "3"])
    assert res.exception is None, res.output
    y, sr = sf.read(out)
    frames = min(sf.info(a).frames, sf.info(b).frames)  # same rate (22050): cut to the shorter
    hop = 256
    step = (frames // hop + 1 - 1) * hop  # samples the vocoder makes from that many centred frames
    assert abs(len(y) - (3 * step + 2 * int(0.25 * sr))) <= 3 * hop
    assert (tmp_path / "walk.png").read_bytes()[:4] == b"\x89PNG"


# --- the report, in a browser ---------------------------------------------------------------------------
def _browser_check(index: Path, tmp_path: Path) -> dict:
    import browser

    require(browser.chromium() is not None, "chromium")
    seen, stderr = browser.check_page(index)
    assert seen["images"], "no images on the page"
    for src, width, complete in seen["images"]:
        assert complete and width > 0, f"{src} did not decode"
    for src, ready, duration, err in seen["audio"]:
        info = sf.info(index.parent / src)
        assert err is None and ready >= 1, f"{src}: no metadata (error {err})"
        assert duration == pytest.approx(info.frames / info.samplerate, abs=0.01), src
    assert seen["errors"] == [] and browser.console_errors(stderr) == []
    shot = browser.screenshot(index, tmp_path / "report.png")
    keep = os.environ.get("AUDIOVAE_SCREENSHOTS")
    if keep:
        shutil.copy(shot, Path(keep) / f"{index.parent.name}.png")
    px = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert px.std() > 5  # something was drawn
    return seen


def test_report_audio_in_browser(audio_run, speaker_cache, tmp_path):
    from audiovae.tasks.results import write_result

    # a repair result as the repair task writes it: paths of the wavs and pictures it made (inside the run: the
    # report takes no file from outside it)
    made = audio_run / "repairs"
    made.mkdir(exist_ok=True)
    wav = json.loads((speaker_cache / "index.json").read_text())[0]["source"]
    shutil.copy(wav, made / "repaired.wav")
    write_result(audio_run, "repair_audio", {"items": [{"output": str(made / "repaired.wav")}], "mse_gap": 0.5})
    rep = tmp_path / "audio_report"
    res = CliRunner().invoke(cli, ["report", str(audio_run), "-o", str(rep), "--vocoder-iters", "4"])
    assert res.exception is None, res.output
    html = (rep / "index.html").read_text()
    assert "http" not in html.replace("http-equiv", "")  # nothing from the network
    assert "Linear probe" in html and "repair_audio.json" in html
    seen = _browser_check(rep / "index.html", tmp_path)
    wavs = sorted(p.relative_to(rep).as_posix() for p in rep.rglob("*.wav"))
    assert sorted(a[0] for a in seen["audio"]) == wavs and len(wavs) >= 3 * 2 + 3 + 5 + 1
    assert json.loads((audio_run / "results" / "evaluate.json").read_text())["split"] == "val"


def test_report_images_in_browser_and_without_data(image_run, blobs, tmp_path):
    rep = tmp_path / "image_report"
    res = CliRunner().invoke(cli, ["report", str(image_run), "-o", str(rep), "--data", str(blobs)])
    assert res.exception is None, res.output
    seen = _browser_check(rep / "index.html", tmp_path)
    srcs = [s for s, _, _ in seen["images"]]
    assert {"figures/training.png", "figures/reconstructions.png", "figures/samples_T1.png",
            "figures/interpolation.png"} <= set(srcs)
    # DATA asked for but not there is an error (exit 1, one line), not a page that quietly lacks it; the run's own
    # recorded data gone is a warning and a note (tests/test_paths.py)
    gone = tmp_path / "gone_report"
    res = CliRunner().invoke(cli, ["report", str(image_run), "-o", str(gone), "--data", str(tmp_path / "gone")])
    assert res.exit_code == 1 and "gone: no such file or directory" in res.output, res.output
    assert not (gone / "index.html").exists()


def test_probe_cifar_batches_through_the_reader(tmp_path):
    # CIFAR-10 python batches (fixture): class c is a colour, so the classes are linearly separable in the pixels
    import pickle

    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar"
    folder.mkdir()
    colours = rng.integers(0, 256, size=(10, 3))
    for name, n in (("data_batch_1", 300), ("data_batch_2", 300), ("test_batch", 200)):
        y = np.arange(n) % 10
        img = colours[y][:, :, None] + rng.integers(-25, 25, size=(n, 3, 1024))
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": np.clip(img, 0, 255).astype(np.uint8).reshape(n, 3072), b"labels": y.tolist()}, fh)
    run = tmp_path / "run"
    train(folder, run, TrainConfig(model="cifar", model_config={"channels": 8, "latent_dim": 8, "hidden": 32},
                                   batch_size=32, max_steps=10, kl_warmup="none", lr_warmup_steps=0, lr=3e-3,
                                   checkpoint_every=1000, val_batches=2), progress=False)
    p = probe(run, folder, label_counts=(100, None), progress=False)
    assert p["model"] == "cifar" and p["n_test"] == 200 and p["n_train"] == 540
    assert p["dims"] == {"latent": 8, "raw": 3072, "pca": 8}
    assert p["results"]["raw"]["all"]["accuracy"] >= 0.97
    assert p["results"]["latent"]["all"]["accuracy"] >= 0.5
    assert p["control_shuffled_labels"]["accuracy"] < 0.3
