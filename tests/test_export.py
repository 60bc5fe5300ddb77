"""audiovae export: ONNX / TorchScript / torch.export files that compute what PyTorch does.

Tolerance: float32 on a CPU, |exported - pytorch| <= 1e-4 + 1e-4 * |pytorch| element-wise
(audiovae.tasks.export.ATOL/RTOL); the README example (librosa features instead of audiovae's)
within 2e-3 + 2e-3 * |pytorch| of the posterior mean.
Models are tiny and untrained (random weights, saved with the checkpoint helpers): equality is what is tested.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from audiovae.audio.config import MelConfig
from audiovae.audio.frontend import MelFrontend
from audiovae.audio.normalize import Normalizer
from audiovae.cli import cli
from audiovae.models.registry import build_model
from audiovae.tasks.export import ATOL, RTOL, export, run_exported
from audiovae.training.checkpoint import save_model_dir

import onnxruntime  # noqa: F401  (the [export] extra is in [dev]: a missing one fails, never skips)

ROOT = Path(__file__).resolve().parents[1]
CONV = {"channels": 8, "latent_dim": 4, "downsample": 4, "res_blocks": 1}
DENSE = {"hidden": [16], "latent_dim": 4, "context": 2}
MNIST = {"channels": 4, "latent_dim": 3, "hidden": 8}


def _close(a, b, atol=ATOL, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.all(np.abs(a - b) <= atol + rtol * np.abs(b)), float(np.abs(a - b).max())


@pytest.fixture(scope="module")
def real(speech):
    """The first espeak-ng utterance: its waveform (22050 Hz) and audiovae's log-mel ``(1, 256, T)``."""
    wave, sr = speech
    assert sr == 22050
    logmel = MelFrontend(MelConfig())(torch.from_numpy(wave)[None])
    return wave, logmel


@pytest.fixture(scope="module")
def models(tmp_path_factory, real):
    """Model directories of a tiny conv, dense and mnist VAE; the mel ones normalised with the utterance's stats."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("export_models")
    logmel = real[1][0]
    norm = Normalizer(logmel.mean(1), logmel.std(1).clamp_min(1e-3))
    out = {}
    for name, cfg in (("conv", CONV), ("dense", DENSE), ("mnist", MNIST)):
        mel = name != "mnist"
        out[name] = save_model_dir(d / name, build_model(name, cfg), name, cfg, norm if mel else None,
                                   MelConfig() if mel else None)
    return out


def _pytorch(model_dir):
    from audiovae.training.checkpoint import load_model_dir

    return load_model_dir(model_dir)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_conv_export_runs_at_lengths_it_was_not_traced_at(models, tmp_path, fmt):
    """Traced at 100 frames; run at 37 and 411 frames (not multiples of downsample=4) and batch 1 and 3."""
    info = export(models["conv"], tmp_path / "x", format=fmt, frames=100)
    assert info["traced_frames"] == 100 and info["downsample"] == 4
    m = _pytorch(models["conv"]).model
    ext = {"onnx": ".onnx", "torchscript": ".pt"}[fmt]
    for b, t in ((1, 37), (3, 411)):
        x = torch.randn(b, 256, t)
        mean, std = run_exported(tmp_path / "x" / f"encoder{ext}", x.numpy())
        with torch.no_grad():
            mu, logvar = m.encoder_params(x)
            want = m.decode(mu).mean, torch.exp(0.5 * m.likelihood._log_scale(mu))
        assert mean.shape == (b, 4, -(-t // 4))
        _close(mean, mu)
        _close(std, torch.exp(0.5 * logvar))
        rec, scale = run_exported(tmp_path / "x" / f"decoder{ext}", mean)
        assert rec.shape == (b, 256, 4 * -(-t // 4))
        _close(rec, want[0], atol=1e-3, rtol=1e-3)  # through the exported mean: input differs by <= ATOL
        _close(scale, want[1].expand_as(want[0]))


def test_dense_export_forms_the_context_frames_itself(models, tmp_path, real):
    """The dense model's sequence interface equals frames_with_context -> model -> centre_frames, on real speech."""
    from audiovae.data.datasets import centre_frames, frames_with_context

    export(models["dense"], tmp_path / "x", format="onnx", frames=50)
    loaded = _pytorch(models["dense"])
    x = loaded.normalizer(real[1])  # (1, 256, T), T != 50
    mean, std = run_exported(tmp_path / "x" / "encoder.onnx", x.numpy())
    with torch.no_grad():
        mu, logvar = loaded.model.encoder_params(frames_with_context(x[0], 2))
        rec = centre_frames(loaded.model.decode(mu).mean, 256, 2)
    _close(mean, mu.T[None])
    _close(std, torch.exp(0.5 * logvar).T[None])
    dec_mean, _scale = run_exported(tmp_path / "x" / "decoder.onnx", mu.T[None].numpy())
    _close(dec_mean, rec)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_equals_pytorch_on_real_speech(models, tmp_path, real, fmt):
    """espeak-ng speech: features.<ext> (waveform -> log-mel, normalised features) equals audiovae's MelFrontend
    at any length and batch; the encoder on those features equals PyTorch's."""
    export(models["conv"], tmp_path / "x", format=fmt, frames=40)
    loaded = _pytorch(models["conv"])
    wave, logmel = real
    ext = {"onnx": ".onnx", "torchscript": ".pt"}[fmt]
    got, feats = run_exported(tmp_path / "x" / f"features{ext}", wave[None])
    _close(got, logmel)
    _close(feats, loaded.normalizer(logmel), atol=1e-3, rtol=1e-3)  # divided by std (>= 1e-3 here)
    two = np.stack([wave[:20000], wave[5000:25000]])  # a batch, another length
    got, _ = run_exported(tmp_path / "x" / f"features{ext}", two)
    _close(got, MelFrontend(MelConfig())(torch.from_numpy(two)))
    # the encoder on the real utterance's features (another length than traced)
    x = loaded.normalizer(logmel)
    mean, std = run_exported(tmp_path / "x" / f"encoder{ext}", x.numpy())
    with torch.no_grad():
        mu, logvar = loaded.model.encoder_params(x)
    _close(mean, mu)
    _close(std, torch.exp(0.5 * logvar))


def test_image_export_has_a_dynamic_batch(models, tmp_path):
    info = export(models["mnist"], tmp_path / "x", format="onnx")
    assert info["image_shape"] == [1, 28, 28] and "stats.npz" not in info["files"]
    m = _pytorch(models["mnist"]).model
    x = torch.rand(5, 1, 28, 28).round()
    mean, std = run_exported(tmp_path / "x" / "encoder.onnx", x.numpy())
    with torch.no_grad():
        mu, logvar = m.encoder_params(x)
        probs = m.decode(mu).mean
    _close(mean, mu)
    _close(std, torch.exp(0.5 * logvar))
    (p,) = run_exported(tmp_path / "x" / "decoder.onnx", mu.numpy())  # Bernoulli: probabilities, no scale
    _close(p, probs)


@pytest.mark.slow  # torch.export's tracing: about 5-10 s even for a tiny model
def test_torch_export_format(models, tmp_path):
    info = export(models["mnist"], tmp_path / "x", format="torch.export")
    assert (tmp_path / "x" / "encoder.pt2").is_file() and isinstance(info["check"], dict)
    m = _pytorch(models["mnist"]).model
    x = torch.rand(4, 1, 28, 28).round()
    with torch.no_grad():
        mu, _ = m.encoder_params(x)
    _close(run_exported(tmp_path / "x" / "encoder.pt2", x.numpy())[0], mu)


def test_export_folder_holds_what_a_user_needs(models, tmp_path):
    out = tmp_path / "x"
    export(models["conv"], out)
    info = json.loads((out / "export.json").read_text())
    assert info["mel"] == MelConfig().to_dict() and info["latent_dim"] == 4
    assert info["parts"]["encoder"]["axes"]["features"] == {"0": "batch", "2": "frames"}
    assert set(info["check"]["parts"]) == {"features", "encoder", "decoder"}
    stats = np.load(out / "stats.npz")
    loaded = _pytorch(models["conv"])
    np.testing.assert_array_equal(stats["mean"], loaded.normalizer.mean.numpy())
    np.testing.assert_array_equal(stats["std"], loaded.normalizer.std.numpy())
    text = (out / "README.txt").read_text()
    assert "NORMALISED log-mel" in text and "(logmel - mean[:, None]) / std[:, None]" in text
    assert "ceil(frames / 4)" in text and "librosa.feature.melspectrogram" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(info["files"] + ["export.json", ".audiovae.lock"])


def test_export_refuses_other_folders_and_replaces_its_own(models, tmp_path):
    from audiovae.folders import folder_kind

    runner = CliRunner()
    res = runner.invoke(cli, ["export", str(models["conv"]), "-o", str(models["dense"])])  # a model directory
    assert res.exit_code == 1 and "not an exported model" in res.output
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    res = runner.invoke(cli, ["export", str(models["conv"]), "-o", str(mine)])
    assert res.exit_code == 1 and "did not write" in res.output and "Traceback" not in res.output
    assert [p.name for p in mine.iterdir() if p.name != ".audiovae.lock"] == ["notes.txt"]
    out = tmp_path / "x"
    res = runner.invoke(cli, ["export", str(models["conv"]), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert folder_kind(out) == "export" and "checked against PyTorch" in res.output
    res = runner.invoke(cli, ["export", str(models["conv"]), "-o", str(out), "--format", "torchscript"])
    assert res.exit_code == 0, res.output
    names = {p.name for p in out.iterdir()}
    assert {"encoder.pt", "decoder.pt"} <= names and not {"encoder.onnx", "decoder.onnx"} & names


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### `audiovae export`"):]
    section = section[:section.index("\n### ")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.slow  # a fresh python importing librosa and onnxruntime: about 10 s
def test_readme_example_runs_without_audiovae(models, tmp_path, real):
    """The README's snippet, in a fresh python that never imports audiovae, on a real (espeak-ng) utterance."""
    wave = real[0]
    sf.write(tmp_path / "speech.wav", wave, 22050)
    export(models["conv"], tmp_path / "exported")
    script = (_readme_example() + "\nimport sys\nassert 'audiovae' not in sys.modules, 'the example imported audiovae'"
              "\nnp.save('mean.npy', mean)\n")
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    got = np.load(tmp_path / "mean.npy")
    loaded = _pytorch(models["conv"])
    with torch.no_grad():
        mu, _ = loaded.model.encoder_params(loaded.normalizer(real[1]))
    _close(got, mu, atol=2e-3, rtol=2e-3)  # librosa's features vs audiovae's front end: float32 noise


@pytest.mark.slow  # training 2 steps: about 10 s
def test_export_a_trained_run_and_the_export_folder_is_its_own_kind(feats, tmp_path, real):
    """A conv run trained 2 steps: `audiovae export RUN` takes its best/ (or --checkpoint last); the export folder
    is refused as a training run's output."""
    from audiovae.training import TrainConfig, train

    run = tmp_path / "run"
    train(feats, run, TrainConfig(model="conv", model_config={"channels": 8, "latent_dim": 4, "downsample": 2,
                                                             "res_blocks": 1},
                                  batch_size=4, segment_frames=32, max_steps=2, kl_warmup="none", lr_warmup_steps=0,
                                  checkpoint_every=1000, val_batches=1), progress=False)
    runner = CliRunner()
    res = runner.invoke(cli, ["export", str(run), "-o", str(tmp_path / "x"), "--checkpoint", "last"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "x" / "export.json").read_text())
    assert info["source"] == str(run.resolve()) and info["step"] == 2 and info["downsample"] == 2
    loaded = _pytorch(run)
    x = loaded.normalizer(real[1])
    with torch.no_grad():
        mu, _ = loaded.model.encoder_params(x)
    _close(run_exported(tmp_path / "x" / "encoder.onnx", x.numpy())[0], mu)
    res = runner.invoke(cli, ["train", str(feats), "-o", str(tmp_path / "x"), "--max-steps", "1"])
    assert res.exit_code == 1 and "is an exported model, not a training run" in res.output, res.output


def test_an_export_that_differs_from_pytorch_is_refused(models, tmp_path, monkeypatch):
    """The built-in check: a file whose outputs differ from PyTorch's is an ExportError naming it, and is not kept."""
    import audiovae.tasks.export as ex
    from audiovae.errors import ExportError

    real_run = ex.run_exported
    monkeypatch.setattr(ex, "run_exported", lambda path, x, fmt=None: [v + 1e-3 for v in real_run(path, x, fmt)])
    with pytest.raises(ExportError, match=r"encoder\.pt: output 'mean' differs from PyTorch"):  # features.pt: optional, skipped
        export(models["conv"], tmp_path / "x", format="torchscript")
    assert not [p for p in (tmp_path / "x").iterdir() if p.suffix in (".pt", ".tmp")]


def test_without_the_export_extra(models, tmp_path, monkeypatch):
    """No onnx: a one-line ExportError naming the extra. No onnxruntime: exported, and said to be unchecked."""
    from audiovae.errors import ExportError

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    info = export(models["mnist"], tmp_path / "x", format="onnx")
    assert info["check"] == "not checked (onnxruntime is not installed)"
    assert "not checked (onnxruntime is not installed)" in (tmp_path / "x" / "README.txt").read_text()
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ExportError, match=r"pip install 'audiovae\[export\]'"):
        export(models["mnist"], tmp_path / "y", format="onnx")
    assert not (tmp_path / "y").exists()  # refused before anything was written
