"""Results a user can trust: which checkpoint gets evaluated, normalisation from the model, resume on the same
command line, writes that survive a kill between two renames, mixed precision with a scaler, devices."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from audiovae.audio.normalize import Normalizer
from audiovae.cli import cli
from audiovae.data.features import extract
from audiovae.errors import ConfigError, TrainingError
from audiovae.models import build_model
from audiovae.tasks.evaluate import evaluate
from audiovae.training import TrainConfig, train
from audiovae.training.checkpoint import load_model_dir, load_trainer_state, save_model_dir

SMALL = ["model_config.hidden=[64]", "model_config.latent_dim=8"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "audiovae", *args]


def invoke(*args: str):
    """Run the CLI in-process; a crash (anything but a clean exit) fails the test with its traceback."""
    res = CliRunner().invoke(cli, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


# --- what a run hands to evaluate ------------------------------------------------------------------

def test_run_shorter_than_an_epoch_validates_at_its_last_step(fashion_subset, tmp_path):
    fashion = fashion_subset
    run = tmp_path / "run"
    # 30 steps end inside the first epoch (42 batches): before, the only validation was the untrained one
    res = invoke("train", fashion, "--model", "mnist", "-o", run, "--max-steps", "30", "lr_warmup_steps=0",
                 "kl_warmup=none")
    assert res.exit_code == 0, res.output
    best = yaml.safe_load((run / "best" / "config.yaml").read_text())
    assert best["step"] == 30
    out = invoke("evaluate", run, fashion, "--k", "8", "--json", tmp_path / "e.json")
    assert out.exit_code == 0, out.output
    assert "using mnist model" in out.output and "best (step 30, validation ELBO" in out.output
    ev = __import__("json").loads((tmp_path / "e.json").read_text())
    # an untrained decoder is near p = 1/2 per pixel: 784 ln 2 = 543.4 nats; 30 steps are far better
    assert ev["nll"] < 784 * math.log(2) - 100, ev["nll"]
    assert ev["active_units"] > 0 and ev["step"] == 30
    last = invoke("evaluate", run, fashion, "--k", "8", "--checkpoint", "last")
    assert last.exit_code == 0 and f"{run} (step 30" in last.output


def test_sigterm_stops_after_validating_and_saving(feats, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli("train", str(feats), "-o", str(run), "--model", "dense", "--max-steps", "100000",
                                 "checkpoint_every=100000", "val_every=100000", *SMALL),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        csv = run / "metrics.csv"
        if csv.exists() and csv.read_text().count("\n") > 20:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in out
    state = load_trainer_state(run / "trainer_state.pt")
    step = int(state["step"])
    val_rows = (run / "validation.csv").read_text().splitlines()
    assert int(val_rows[-1].split(",")[0]) == step > 20
    best = yaml.safe_load((run / "best" / "config.yaml").read_text())
    last_val = float(val_rows[-1].split(",")[2])
    # best/ is the best of the validations, the last one included
    assert best["val"]["val_elbo"] >= last_val - 1e-3
    assert yaml.safe_load((run / "config.yaml").read_text())["step"] == step
    # and the same command with --resume goes on from there
    res = subprocess.run(_cli("train", str(feats), "-o", str(run), "--model", "dense", "--max-steps", str(step + 5),
                              "checkpoint_every=100000", "val_every=100000", *SMALL, "--resume"),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(load_trainer_state(run / "trainer_state.pt")["step"]) == step + 5


def test_time_limit_progress_counts_towards_what_fits():
    from audiovae.training.trainer import _Progress

    cfg = TrainConfig(max_steps=100_000, max_minutes=1.0)
    bar = _Progress(cfg, 0, "train", enabled=False)
    bar.t0 -= 6.0  # 10 steps took 6 s: 100 steps fit in a minute, not 100,000
    bar.update(10, "")
    assert 95 <= bar.bar.total <= 101 and "1 min limit" in bar.bar.desc
    bar = _Progress(TrainConfig(max_steps=50, max_minutes=1.0), 0, "train", enabled=False)
    bar.t0 -= 6.0
    bar.update(10, "")
    assert bar.bar.total == 50  # the step limit binds


# --- resume ----------------------------------------------------------------------------------------

def test_resume_takes_the_same_command_line_and_names_what_differs(feats, tmp_path):
    run = tmp_path / "run"
    args = ["train", feats, "-o", run, "--model", "dense", *SMALL, "batch_size=32", "checkpoint_every=5"]
    assert invoke(*args, "--max-steps", "10").exit_code == 0
    res = invoke(*args, "--max-steps", "15", "--resume")
    assert res.exit_code == 0, res.output
    assert int(load_trainer_state(run / "trainer_state.pt")["step"]) == 15
    bad = invoke("train", feats, "-o", run, "--model", "dense", "model_config.hidden=[64]", "model_config.latent_dim=16",
                 "--resume", "--max-steps", "20")
    assert bad.exit_code == 1
    assert "model_config.latent_dim=16" in bad.output and "model_config.latent_dim=8" in bad.output
    other = invoke("train", feats, "-o", run, "--model", "conv", "--resume")
    assert other.exit_code == 1 and "model='conv'" in other.output and "model='dense'" in other.output


def _other_statistics(feats: Path, tmp_path: Path) -> Path:
    """Another cache of the same audio: the same validation utterances, one training utterance moved to a test
    split, so its training statistics differ."""
    import json

    from audiovae.data.corpora import folder_manifest

    recs = json.loads((feats / "index.json").read_text())
    split = {r["id"]: r["split"] for r in recs}
    moved = next(r["id"] for r in recs if r["split"] == "train")
    corpus = Path(recs[0]["source"]).parent
    manifest = folder_manifest(corpus, tmp_path / "manifest.tsv",
                               split_of=lambda uid: "test" if uid == moved else split[uid])
    other = tmp_path / "other"
    extract(manifest, other, workers=0, progress=False)
    with np.load(feats / "stats.npz") as a, np.load(other / "stats.npz") as b:
        assert not np.allclose(a["mean"], b["mean"])  # else the tests below check nothing
    return other


def test_resume_refuses_a_cache_with_other_statistics(feats, tmp_path):
    run = tmp_path / "run"
    train(feats, run, TrainConfig(model="dense", model_config={"hidden": [64], "latent_dim": 8}, max_steps=4),
          progress=False)
    other = _other_statistics(feats, tmp_path)
    with np.load(feats / "stats.npz") as st:
        mean = st["mean"]
    with pytest.raises(ConfigError, match="normalisation statistics"):
        train(other, run, None, resume=True, max_steps=8, progress=False)
    saved = load_model_dir(run).normalizer
    torch.testing.assert_close(saved.mean, torch.from_numpy(mean))  # not overwritten


# --- normalisation from the model, densities of log-mel features -------------------------------

def _dense_with_normalizer(feats: Path, where: Path, std_factor: float) -> Path:
    """A dense VAE whose density over *log-mel* features is the same whatever the normaliser's scale:
    with std multiplied by c, the encoder's first layer is multiplied by c, the decoder's mean divided by c
    and its per-bin scale by c. Its densities of normalised features then differ by D log c."""
    torch.manual_seed(0)
    model = build_model("dense", {"n_mels": 256, "hidden": [32], "latent_dim": 4})
    with np.load(feats / "stats.npz") as st:
        mean, std = torch.from_numpy(st["mean"]), torch.from_numpy(st["std"])
    with torch.no_grad():
        model.encoder[0].weight.mul_(std_factor)
        model.to_out.weight.div_(std_factor)
        model.to_out.bias.div_(std_factor)
        model.likelihood.log_scale.sub_(math.log(std_factor))
    save_model_dir(where, model, "dense", {"n_mels": 256, "hidden": [32], "latent_dim": 4}, Normalizer(mean, std * std_factor),
                   load_model_dir_mel(feats))
    return where


def load_model_dir_mel(feats: Path):
    from audiovae.data.features import FeatureCache

    return FeatureCache(feats).mel_config


def test_nats_are_those_of_log_mel_features_whatever_the_normaliser(feats, tmp_path):
    a = evaluate(_dense_with_normalizer(feats, tmp_path / "a", 1.0), feats, k=4, progress=False)
    b = evaluate(_dense_with_normalizer(feats, tmp_path / "b", 2.0), feats, k=4, progress=False)
    # the two models are one density over log-mel frames: same nats
    assert b["elbo"] == pytest.approx(a["elbo"], abs=1e-3 * abs(a["elbo"]))
    assert b["iwae"] == pytest.approx(a["iwae"], abs=1e-3 * abs(a["iwae"]))
    # and the shift is -sum(log sigma) per frame, from the statistics file itself
    with np.load(feats / "stats.npz") as st:
        assert a["log_jacobian"] == pytest.approx(-np.log(st["std"].astype(np.float64)).sum(), rel=1e-6)


def test_evaluate_normalises_with_the_model_not_the_cache(feats, tmp_path):
    run = tmp_path / "run"
    train(feats, run, TrainConfig(model="dense", model_config={"hidden": [64], "latent_dim": 8}, max_steps=20),
          progress=False)
    other = _other_statistics(feats, tmp_path)  # the same audio, another cache with other statistics
    a = evaluate(run, feats, k=8, progress=False)
    b = evaluate(run, other, k=8, progress=False)
    assert b["elbo"] == pytest.approx(a["elbo"], rel=1e-6) and b["iwae"] == pytest.approx(a["iwae"], rel=1e-6)


# --- model directories as an atomic set --------------------------------------------------------------

@pytest.mark.parametrize("crash_at", ["weights", "between", "config"])
def test_kill_between_the_two_renames_leaves_a_loadable_model(tmp_path, monkeypatch, crash_at):
    import audiovae.training.checkpoint as ckpt

    torch.manual_seed(0)
    old, new = (build_model("dense", {"n_mels": 8, "hidden": [4], "latent_dim": 2}) for _ in range(2))
    cfg = {"n_mels": 8, "hidden": [4], "latent_dim": 2}
    save_model_dir(tmp_path, old, "dense", cfg, None, None, {"step": 1})
    real_replace = os.replace

    def replace(src, dst):
        name = Path(dst).name
        if (crash_at == "weights" and name == "model.safetensors") or (crash_at == "between" and name == "config.yaml" and
                                                                        ".config.pending" in str(src)):
            raise KeyboardInterrupt  # the kill: the first (or the second) rename never happens
        real_replace(src, dst)
        if crash_at == "config" and name == ".config.pending.yaml":
            raise KeyboardInterrupt  # killed after the pending configuration, before the weights' rename

    monkeypatch.setattr(ckpt.os, "replace", replace)
    monkeypatch.setattr("audiovae.utils.os.replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_model_dir(tmp_path, new, "dense", cfg, None, None, {"step": 2})
    monkeypatch.undo()
    loaded = load_model_dir(tmp_path)
    expect = new if crash_at == "between" else old
    assert loaded.config["step"] == (2 if crash_at == "between" else 1)
    for k, v in expect.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)


# --- mixed precision and devices -------------------------------------------------------------------

def test_float16_uses_a_grad_scaler_that_skips_inf_gradients(feats, tmp_path, monkeypatch):
    from audiovae.models.base import BaseVAE

    real_elbo, real_update = BaseVAE.elbo, torch.amp.GradScaler.update
    calls = {"n": 0, "poison": None}
    scales: list[float] = []
    cfg = TrainConfig(model="dense", model_config={"hidden": [32], "latent_dim": 4}, max_steps=8, amp=True,
                      amp_dtype="float16", checkpoint_every=100)

    def record(self, *a, **k):  # the scale after each step's update
        real_update(self, *a, **k)
        scales.append(float(self.get_scale()))

    def inf_grad_only(self, x, *a, **k):
        out = real_elbo(self, x, *a, **k)
        if self.training:
            calls["n"] += 1
            if calls["n"] == calls["poison"]:
                out.loss = out.loss + _InfGrad.apply(out.mu).sum()
        return out

    monkeypatch.setattr(torch.amp.GradScaler, "update", record)
    clean = train(feats, tmp_path / "a", cfg, progress=False)
    clean_scales = list(scales)
    # poison a step at which the clean run did not overflow by itself (which steps overflow in float16
    # depends on the number of threads), after the first steps' overflows have settled the scale
    calls["poison"] = next(s for s in range(3, 9) if clean_scales[s - 1] == clean_scales[s - 2])
    scales.clear()
    monkeypatch.setattr(BaseVAE, "elbo", inf_grad_only)
    summary = train(feats, tmp_path / "b", cfg, progress=False)
    assert clean["step"] == summary["step"] == 8  # the step with the inf gradient was skipped, not fatal
    k = calls["poison"]
    assert scales[: k - 1] == clean_scales[: k - 1]
    assert scales[k - 1] == clean_scales[k - 2] / 2  # the scale was halved at the poisoned step
    # without a scaler (bfloat16), an inf gradient stops the run before the update
    calls["n"] = 0
    with pytest.raises(TrainingError, match="gradient"):
        train(feats, tmp_path / "c", TrainConfig(**{**cfg.__dict__, "amp_dtype": "bfloat16"}), progress=False)


class _InfGrad(torch.autograd.Function):
    """Zero in the forward pass, an infinite gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x):
        return torch.zeros_like(x)

    @staticmethod
    def backward(ctx, g):
        return torch.full_like(g, float("inf"))


def test_device_option_on_a_machine_without_cuda(feats, tmp_path):
    run = tmp_path / "run"
    train(feats, run, TrainConfig(model="dense", model_config={"hidden": [32], "latent_dim": 4}, max_steps=2),
          progress=False)
    ok = invoke("evaluate", run, feats, "--k", "2", "--device", "cpu")
    assert ok.exit_code == 0 and "ELBO" in ok.output
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    for cmd in (["evaluate", run, feats], ["sample", run, "-o", tmp_path / "s"]):
        bad = invoke(*cmd, "--device", "cuda")
        assert bad.exit_code == 1 and "no CUDA device" in bad.output


def test_global_state_is_left_as_found(speech, tmp_path):
    """The vocoder and the atomic writes must not change the caller's flush-denormal setting or umask."""
    from audiovae.audio.config import MelConfig
    from audiovae.audio.frontend import MelFrontend
    from audiovae.audio.vocoder import GriffinLimVocoder
    from audiovae.utils import atomic_write_text

    wave, _ = speech
    cfg = MelConfig()
    logmel = MelFrontend(cfg)(torch.from_numpy(wave[:22050])[None])
    for flush in (True, False):
        torch.set_flush_denormal(flush)
        GriffinLimVocoder(cfg, n_iter=2)(logmel)
        # set_flush_denormal returns whether it could be set; the subnormal test tells its state
        tiny = torch.tensor([1e-40], dtype=torch.float32) * 1.0
        assert (float(tiny[0]) == 0.0) == flush
    torch.set_flush_denormal(False)
    old = os.umask(0o027)
    try:
        probe = tmp_path / "probe.txt"
        atomic_write_text(probe, "x")
        assert os.umask(0o027) == 0o027
        assert probe.stat().st_mode & 0o777 == 0o640  # what open() would give under this umask
    finally:
        os.umask(old)
