"""No silent surprises: audio resampled up is said once, metrics cover the input's band, the report re-evaluates
a stale evaluation and names the step and units of every figure, long work says what it is doing."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from audiovae.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def _speechlike(path: Path, sr: int, seconds: float = 0.6, seed: int = 0) -> Path:
    """Harmonics of a gliding 150 Hz voice plus a little noise, band-limited to the file's own Nyquist."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 150 + 30 * np.sin(2 * np.pi * 2 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, int(sr / 2 / 200)))
    wave = 0.3 * wave / np.abs(wave).max() + 0.003 * rng.standard_normal(len(t))
    sf.write(path, wave.astype(np.float32), sr)
    return path


def _notes(res) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if "resampled up" in ln]


# --- a file resampled up is said once per command, with how to keep its rate ------------------------------------
def test_mel_says_once_how_many_files_were_resampled_up(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        _speechlike(src / f"low{i}.wav", 16000, 0.2, seed=i)
    _speechlike(src / "full.wav", 22050, 0.2)
    (src / "bad.wav").write_bytes(b"RIFF not audio")
    res = CliRunner().invoke(cli, ["mel", str(src), "-o", str(tmp_path / "m")])
    assert res.exit_code == 1 and "bad.wav" in res.stderr, res.output  # a bad input: skipped, listed, exit 1
    assert _notes(res) == ["note: 3 files were resampled up from 16000 Hz to 22050 Hz (nothing above 8000 Hz in them); "
                           "to keep their rate: --set sample_rate=16000"]
    # the advice works, and files at the target rate (or above) are not counted
    res = CliRunner().invoke(cli, ["mel", str(src), "-o", str(tmp_path / "m16"), "--set",
                                                   "sample_rate=16000"])
    assert res.exit_code == 1 and _notes(res) == []


def test_extract_counts_files_read_in_dataloader_workers(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        _speechlike(src / f"low{i}.wav", 16000, 0.3, seed=i)
    res = CliRunner().invoke(cli, ["extract", str(src), "-o", str(tmp_path / "c"), "--workers", "1",
                                                   "--val-fraction", "0.5"])
    assert res.exit_code == 0, res.output + res.stderr
    assert _notes(res) == ["note: 2 files were resampled up from 16000 Hz to 22050 Hz (nothing above 8000 Hz in them); "
                           "to keep their rate: --set sample_rate=16000"]


def test_resynth_scores_the_inputs_own_band(tmp_path):
    from audiovae.audio.config import MelConfig
    from audiovae.audio.io import take_upsampled
    from audiovae.tasks.signal import resynthesize

    low = _speechlike(tmp_path / "low.wav", 16000, 1.0)  # STOI wants 30 frames of 25.6 ms after silence removal
    take_upsampled()
    res = resynthesize(low, tmp_path / "out.wav", MelConfig(), n_iter=8)
    assert res["source_rate"] == 16000 and res["metrics"]["band_max_hz"] == 8000
    assert take_upsampled() == {(16000, 22050): 1}
    # the same pair scored over the whole 0-11025 Hz band: the empty band above 8 kHz only adds error
    from audiovae.audio.io import load_audio
    from audiovae.audio.metrics import resynthesis_metrics

    x, _ = load_audio(low, 22050)
    y, _ = load_audio(tmp_path / "out.wav")
    whole = resynthesis_metrics(torch.from_numpy(x), torch.from_numpy(y), 22050)
    own = resynthesis_metrics(torch.from_numpy(x), torch.from_numpy(y), 22050, max_hz=8000)
    assert whole["band_max_hz"] == 11025 and own["log_spectral_distance_db"] < whole["log_spectral_distance_db"] - 1
    # the command says which band it scored
    out = CliRunner().invoke(cli, ["resynth", str(low), "-o", str(tmp_path / "o2.wav"), "--vocoder-iters", "4"])
    assert out.exit_code == 0, out.output + out.stderr
    assert "metrics over 0-8000 Hz (the input's band: it is 16000 Hz audio)" in out.output
    assert len(_notes(out)) == 1


# --- the report: a stale evaluation is redone, every figure names its step and its units --------------------------
def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def test_report_reevaluates_when_the_saved_evaluation_is_older_than_the_checkpoint(tmp_path):
    from audiovae.training import TrainConfig, train

    rng = np.random.default_rng(0)
    for stem, n in (("train", 64), ("t10k", 16)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)))
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    run = tmp_path / "run"
    cfg = TrainConfig(model="mnist", model_config={"channels": 4, "latent_dim": 2, "hidden": 8}, batch_size=16,
                      max_steps=2, kl_warmup="none", lr_warmup_steps=0, checkpoint_every=1000, val_every=2,
                      val_batches=1)
    train(tmp_path, run, cfg, progress=False)

    def report(out):
        res = CliRunner().invoke(cli, ["report", str(run), "-o", str(out), "--data", str(tmp_path),
                                                       "--checkpoint", "last"])
        assert res.exit_code == 0, res.output + res.stderr
        return res, (out / "index.html").read_text()

    _, page = report(tmp_path / "rep1")
    assert json.loads((run / "results" / "evaluate.json").read_text())["step"] == 2
    assert "Evaluation (step 2)" in page and "checkpoint at step 2" in page
    train(tmp_path, run, None, resume=True, max_steps=4, progress=False)  # training goes on: the checkpoint is step 4
    res, page = report(tmp_path / "rep2")
    ev = json.loads((run / "results" / "evaluate.json").read_text())
    assert ev["step"] == 4 and ev["weights_sha256"]
    assert "is of step 2, older than the checkpoint shown (step 4): evaluated again" in page
    assert "Evaluation (step 4)" in page and "checkpoint at step 4" in page and "checkpoint at step 2" not in page
    for section in ("Reconstructions", "Samples from the prior", "Interpolation"):
        assert f"{section} (step 4)" in page
    assert "Best validation ELBO" in page and "nats/image" in page
    # it said what it was doing, a line per section, the evaluation among them
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("report [")]
    assert len(lines) == 6 and lines[-1].startswith("report [6/6]") and any("evaluating" in ln for ln in lines)
    # nothing changed since: the saved evaluation stands
    res, _ = report(tmp_path / "rep3")
    assert "report [2/6]: evaluation (saved)" in res.stderr


@pytest.fixture(scope="module")
def conv_run(feats, tmp_path_factory) -> Path:
    from audiovae.training import TrainConfig, train

    run = tmp_path_factory.mktemp("conv") / "run"
    cfg = TrainConfig(model="conv", model_config={"channels": 8, "latent_dim": 2, "downsample": 4, "res_blocks": 1},
                      batch_size=2, max_steps=2, segment_frames=32, kl_warmup="none", lr_warmup_steps=0,
                      checkpoint_every=1000, val_every=2, val_batches=1)
    train(feats, run, cfg, progress=False)
    return run


def test_a_model_command_names_the_models_rate(conv_run, tmp_path):
    low = _speechlike(tmp_path / "low.wav", 16000, 0.4)
    res = CliRunner().invoke(cli, ["reconstruct", str(conv_run), str(low), "-o", str(tmp_path / "r.wav")])
    assert res.exit_code == 0, res.output
    assert _notes(res) == ["note: 1 file was resampled up from 16000 Hz to 22050 Hz (nothing above 8000 Hz in it); "
                           "the model works at 22050 Hz (a model for 16000 Hz audio is trained on features extracted "
                           "with --set sample_rate=16000)"]


def test_which_saved_evaluations_stand_for_a_checkpoint():
    from types import SimpleNamespace

    from audiovae.tasks.report import stale_evaluation

    ckpt = SimpleNamespace(config={"step": 45, "weights_sha256": "b" * 64})
    assert stale_evaluation({"step": 45, "weights_sha256": "b" * 64}, ckpt) is None
    assert stale_evaluation({"step": 30, "weights_sha256": "a" * 64}, ckpt) == (
        "is of step 30, older than the checkpoint shown (step 45)")
    # best/ and the run's last weights at one step differ: the checksum tells them apart
    assert stale_evaluation({"step": 45, "weights_sha256": "a" * 64}, ckpt) == "is of other weights than the checkpoint shown"
    assert stale_evaluation({"step": 45}, ckpt) is None  # written before evaluations recorded their weights
    assert stale_evaluation({"step": 30}, ckpt) == "is of step 30, not the checkpoint shown (step 45)"
    assert stale_evaluation({"elbo": -1.0}, ckpt) == "does not say which step it is of"
    assert stale_evaluation(None, ckpt) == "is missing"
    assert stale_evaluation({"error": "x: unreadable"}, ckpt) == "is unreadable"


def test_validation_and_evaluation_figures_say_what_an_item_is(conv_run, feats, tmp_path):
    from audiovae.tasks.evaluate import evaluate, format_table
    from audiovae.tasks.report import _Page, _evaluation_section, _training_section
    from audiovae.training.checkpoint import load_model_dir

    run = conv_run
    loaded = load_model_dir(run / "best")
    ev = evaluate(loaded, feats, k=2, limit=2, progress=False)
    assert ev["item"] == "utterance" and ev["frames_per_item"] > 32
    assert ev["elbo_per_frame"] * ev["frames_per_item"] == pytest.approx(ev["elbo"], rel=1e-9)
    assert "ELBO (nats/utterance)" in format_table(ev) and "ELBO (nats/frame)" in format_table(ev)
    page = _Page(tmp_path / "rep")
    _training_section(page, run, tmp_path / "rep", loaded)
    _evaluation_section(page, loaded, None, ev, tmp_path / "rep", "step 2")
    text = "\n".join(page.parts)
    val = [ln for ln in page.parts if "Best validation ELBO" in ln][0]
    assert "nats/frame" in val and "a crop of up to 32 frames" in val and "at step 2" in val
    assert "ELBO (nats/frame)" in text and "ELBO (nats/utterance)" in text and "nats/item" not in text


# --- the one-time kernel compilation says what it is doing ------------------------------------------------------
def test_kernel_compilation_is_announced_once_when_the_cache_is_cold(tmp_path):
    code = ("import torch; from audiovae.audio import _cpu_kernels as K\n"
            "assert K._cache_is_cold(K._gl_spectral)\n"
            "K.announce_compile(K._gl_spectral); K.announce_compile(K._nnls_frames)\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines().count("compiling the CPU kernels (once after installing, ~10 s)...") == 1


def test_no_compile_note_for_a_kernel_already_compiled(capsys):
    from audiovae.audio import _cpu_kernels as K

    a = torch.randn(1, 3, 5, dtype=torch.complex64)
    K.gl_spectral(a, None, a.abs(), 0.0)  # compiled or loaded now
    capsys.readouterr()
    assert not K._cache_is_cold(K._gl_spectral)
    K._announced = False
    K.gl_spectral(a, None, a.abs(), 0.0)
    assert "compiling" not in capsys.readouterr().err


def test_train_says_what_a_validation_item_is(tmp_path):
    """`train` ends with the best validation ELBO in nats per frame / crop / image, never a bare "nats/item"."""
    from click.testing import CliRunner

    from audiovae.cli import cli

    data = tmp_path / "frames.npy"
    np.save(data, np.random.default_rng(0).standard_normal((400, 256)).astype(np.float32))
    res = CliRunner().invoke(cli, ["train", str(data), "--model", "dense", "-o", str(tmp_path / "run"),
                                   "--max-steps", "1", "--set", "model_config.hidden=[8]"])
    assert res.exit_code == 0, res.output
    assert "nats per frame;" in res.output and "nats/item" not in res.output
