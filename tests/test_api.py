"""The Python API: ``audiovae.load(run)`` and the :class:`~audiovae.api.LoadedVAE` it gives."""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

import audiovae
from tests.corpora import tiny_conv_run
from audiovae.training import TrainConfig, train

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def conv_run(feats, tmp_path_factory) -> Path:
    return tiny_conv_run(feats, tmp_path_factory.mktemp("apiconv") / "run")


@pytest.fixture(scope="module")
def dense_run(feats, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("apidense") / "run"
    cfg = TrainConfig(model="dense", model_config={"hidden": [16], "latent_dim": 4}, context=1, batch_size=32,
                      max_steps=2, lr_warmup_steps=0, checkpoint_every=1000, val_batches=1)
    train(feats, run, cfg, progress=False)
    return run


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    from tests.corpora import tiny_image_run

    return tiny_image_run(tmp_path_factory.mktemp("apiimg"))


@pytest.fixture(scope="module")
def two(speech) -> tuple[np.ndarray, np.ndarray]:
    """Two utterances of different lengths (0.4 s and 0.3 s at 22,050 Hz)."""
    wave, sr = speech
    assert sr == 22050
    return wave[2000:2000 + 8820].copy(), wave[12000:12000 + 6615].copy()


def _pad(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    batch = np.zeros((2, max(len(a), len(b))), np.float32)
    batch[0, : len(a)], batch[1, : len(b)] = a, b
    return batch, np.array([len(a), len(b)])


def test_readme_python_example_runs(conv_run, speech_dir, tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    m = re.search(r"## From Python\n.*?```python\n(.*?)```", text, re.S)
    assert m, "README.md has no ```python block under '## From Python'"
    shutil.copytree(conv_run, tmp_path / "run")
    shutil.copy(speech_dir / "utt00.wav", tmp_path / "speech.wav")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(m.group(1), "README.md", "exec"), ns)
    assert isinstance(ns["vae"], audiovae.LoadedVAE)
    assert (tmp_path / "sample.wav").is_file()


def test_load_attributes(conv_run, dense_run, image_run):
    vae = audiovae.load(conv_run, device="cpu")
    assert vae.path == conv_run / "best" and vae.kind == "mel" and vae.sequence and vae.name == "conv"
    assert vae.sample_rate == vae.mel.sample_rate == 22050 and vae.device == torch.device("cpu")
    assert vae.normalizer is not None and vae.vocoder is not None and vae.config["model"] == "conv"
    z = torch.zeros(2, 4, 3)
    assert torch.allclose(vae.prior.log_prob(z), torch.full_like(z, -0.5 * np.log(2 * np.pi)))
    assert vae.prior.sample((2, 4, 3)).shape == (2, 4, 3)
    assert audiovae.load(conv_run, checkpoint="last", device="cpu").path == conv_run
    d = audiovae.load(dense_run, device="cpu")
    assert d.kind == "mel" and not d.sequence and d.context == 1
    i = audiovae.load(image_run / "best", device="cpu")
    assert i.kind == "image" and i.mel is None and i.vocoder is None and i.sample_rate is None


@pytest.mark.parametrize("which", ["conv", "dense"])
def test_batch_equals_items(which, conv_run, dense_run, two):
    """A padded batch with lengths gives each item exactly what it gives alone: encode, decode, reconstruct."""
    vae = audiovae.load(conv_run if which == "conv" else dense_run, device="cpu", vocoder_iters=2)
    a, b = two
    batch, lengths = _pad(a, b)
    z, zl = vae.encode(batch, lengths=lengths)
    za, zb = vae.encode(a), vae.encode(b)
    assert list(zl) == [za.shape[-1], zb.shape[-1]] and za.shape[-1] > zb.shape[-1]
    np.testing.assert_allclose(z[0, :, : zl[0]], za, atol=1e-5)
    np.testing.assert_allclose(z[1, :, : zl[1]], zb, atol=1e-5)
    mel, fl = vae.decode(z, to="logmel", lengths=zl)
    ma, mb = vae.decode(za, to="logmel"), vae.decode(zb, to="logmel")
    assert list(fl) == [ma.shape[-1], mb.shape[-1]]
    np.testing.assert_allclose(mel[0, :, : fl[0]], ma, atol=1e-4)
    np.testing.assert_allclose(mel[1, :, : fl[1]], mb, atol=1e-4)
    audio, sl = vae.decode(z, lengths=zl)
    aa, ab = vae.decode(za), vae.decode(zb)
    assert list(sl) == [len(aa), len(ab)]
    np.testing.assert_allclose(audio[0, : sl[0]], aa, atol=1e-4)
    np.testing.assert_allclose(audio[1, : sl[1]], ab, atol=1e-4)
    rec, rl = vae.reconstruct(batch, lengths=lengths)
    assert list(rl) == [len(a), len(b)]
    np.testing.assert_allclose(rec[1, : len(b)], vae.reconstruct(b), atol=1e-4)


def test_a_16khz_input_equals_the_same_audio_resampled_by_librosa_first(conv_run, two):
    vae = audiovae.load(conv_run, device="cpu")
    a16 = librosa.resample(two[0], orig_sr=22050, target_sr=16000, res_type="soxr_hq")
    ref = librosa.resample(a16, orig_sr=16000, target_sr=22050, res_type="soxr_hq")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        z16 = vae.encode(a16, sample_rate=16000)
        vae.features(a16, sample_rate=16000)
        vae.reconstruct(a16[None], sample_rate=16000, to="logmel")
    said = [w for w in caught if "resampling audio from 16000 Hz" in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]  # once per loaded model
    assert "sample_rate=16000" in str(said[0].message)
    np.testing.assert_allclose(z16, vae.encode(ref), atol=1e-5)
    # the same array without its rate is (as documented) taken to be at the model's rate: different features
    assert vae.features(a16).shape[-1] < vae.features(a16, sample_rate=16000).shape[-1]


def test_types_and_shapes_follow_the_input(conv_run, two):
    vae = audiovae.load(conv_run, device="cpu", vocoder_iters=2)
    a = two[0]
    z = vae.encode(a)
    assert isinstance(z, np.ndarray) and z.shape == (4, -(-vae.mel.num_frames(len(a)) // 4))
    zt = vae.encode(torch.from_numpy(a))
    assert isinstance(zt, torch.Tensor) and zt.shape == z.shape
    np.testing.assert_allclose(zt.numpy(), z, atol=1e-6)
    f = vae.features(a)
    assert isinstance(f, np.ndarray) and f.shape == (vae.mel.n_mels, vae.mel.num_frames(len(a)))
    np.testing.assert_allclose(vae.encode(f[None])[0], z, atol=1e-5)  # 3-D input: features
    batch = np.stack([a, a[::-1].copy()])  # (2, N) without lengths
    zb = vae.encode(batch)
    assert zb.shape == (2, *z.shape)
    np.testing.assert_allclose(zb[0], z, atol=1e-5)
    q = vae.encode(a, posterior=True)
    assert isinstance(q, torch.distributions.Normal) and torch.allclose(q.mean[0], zt, atol=1e-5)
    y = vae.decode(zt)
    assert isinstance(y, torch.Tensor) and y.dim() == 1
    wave = vae.reconstruct(a)
    assert isinstance(wave, np.ndarray) and wave.shape == a.shape
    logmel = vae.decode(z, to="logmel")
    assert vae.to_audio(logmel).shape == ((logmel.shape[-1] - 1) * vae.mel.hop_length,)
    s = vae.sample(2, seconds=0.3, seed=1)
    assert s.shape[0] == 2 and isinstance(s, np.ndarray)
    np.testing.assert_array_equal(s, vae.sample(2, seconds=0.3, seed=1))
    steps = vae.interpolate(a, two[1], steps=3, to="logmel")
    assert steps.shape[:2] == (3, vae.mel.n_mels)
    with pytest.raises(audiovae.InvalidAudioError):
        vae.encode(np.zeros((1, 2, 3, 4), np.float32))
    with pytest.raises(audiovae.InvalidAudioError, match="floating-point"):
        vae.encode((a * 32767).astype(np.int16))
    with pytest.raises(audiovae.InvalidAudioError, match="lengths"):
        vae.encode(batch, lengths=[len(a), len(a) + 1])


def test_dense_per_frame_latents_and_samples(dense_run, two):
    vae = audiovae.load(dense_run, device="cpu", vocoder_iters=2)
    a = two[0]
    f = vae.features(a)
    z = vae.encode(a)
    assert z.shape == (4, f.shape[-1])  # one latent per frame
    assert vae.frames_in(torch.from_numpy(f)[None]).shape == (f.shape[-1], vae.mel.n_mels * 3)
    assert vae.decode(z, to="logmel").shape == f.shape
    assert vae.sample(2, seconds=0.2, to="logmel").shape == (2, vae.mel.n_mels, int(0.2 * vae.mel.frame_rate))


def test_image_model(image_run):
    vae = audiovae.load(image_run, device="cpu")
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(3, 1, 28, 28)).astype(np.uint8)
    z = vae.encode(imgs)
    assert z.shape == (3, 2)
    np.testing.assert_allclose(vae.encode(imgs[1, 0]), z[1], atol=1e-5)  # (H, W) alone: one item out
    np.testing.assert_allclose(vae.encode(imgs.astype(np.float32) / 255), z, atol=1e-5)
    out = vae.decode(z)
    assert out.shape == (3, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    assert vae.reconstruct(torch.from_numpy(imgs)).shape == (3, 1, 28, 28)
    assert vae.sample(4, seed=0).shape == (4, 1, 28, 28)
    assert vae.interpolate(imgs[0], imgs[1], steps=4).shape == (4, 1, 28, 28)
    with pytest.raises(audiovae.ConfigError):
        vae.features(np.zeros(100, np.float32))


def test_models_declare_their_kind_where_they_register():
    from audiovae.models.registry import model_info, models_of

    assert models_of("image") == ("cifar", "mnist") and models_of("mel") == ("conv", "dense")
    assert model_info("conv").sequence and not model_info("dense").sequence
    assert model_info("dense").data == ("features", "frames") and model_info("mnist").data == ("mnist",)


def test_one_loader_and_one_list_of_model_kinds():
    """The loader chain is written once (audiovae.load); model kinds are declared only where models register."""
    root = Path(audiovae.__file__).parent
    chains, lists = [], []
    for f in sorted(root.rglob("*.py")):
        text = f.read_text(encoding="utf-8")
        if "load_model_dir(resolve_model_dir(" in text:
            chains.append(f.relative_to(root).as_posix())
        if re.search(r"^(MODEL_DATA|IMAGE_MODELS|MEL_MODELS)\b", text, re.M):
            lists.append(f.relative_to(root).as_posix())
    assert chains == ["api.py"] and lists == []


def test_import_audiovae_stays_cheap_and_load_is_lazy():
    import subprocess
    import sys

    # torch takes seconds to import; `audiovae --help` and `audiovae download` never need it
    code = ("import sys, audiovae; assert 'torch' not in sys.modules, 'import audiovae pulled in torch'; "
            "assert callable(audiovae.load) and 'torch' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(README.parent)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
