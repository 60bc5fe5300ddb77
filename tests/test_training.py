"""Feature extraction, training (dense, conv, image), exact resume after SIGKILL, checkpoints, DDP, evaluate."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from audiovae.cli import cli
from audiovae.data.features import FeatureCache, extract
from audiovae.errors import CheckpointError, ConfigError, TrainingError
from audiovae.tasks.evaluate import evaluate
from audiovae.training import TrainConfig, train
from audiovae.training.checkpoint import load_model_dir, load_trainer_state

SMALL_DENSE = {"hidden": [64], "latent_dim": 8}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "audiovae", *args]


# --- extraction -------------------------------------------------------------------------------

def test_extract_cache_contents(feats, speech_dir):
    cache = FeatureCache(feats)
    assert cache.feats.shape[1] == 256 and isinstance(cache.feats, np.memmap)
    assert len(cache.index) == 6 and {r["split"] for r in cache.index} == {"train", "val"}
    # statistics are the train split's per-bin mean/std
    train = np.concatenate([cache.logmel(r) for r in cache.utterances("train")], axis=1)
    np.testing.assert_allclose(cache.mean, train.mean(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cache.std, train.std(1), rtol=1e-3, atol=1e-4)
    # each utterance equals the front end run on its file
    from audiovae import MelFrontend

    rec = cache.index[0]
    wave, _ = sf.read(rec["source"], dtype="float32")
    np.testing.assert_allclose(cache.logmel(rec), MelFrontend(cache.mel_config)(torch.from_numpy(wave)[None])[0].numpy(), atol=1e-5)


def test_extract_skips_bad_files_and_resumes(speech_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(speech_dir, src)
    (src / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    (src / "empty.flac").write_bytes(b"")
    out = tmp_path / "f"
    res = extract(src, out, workers=2, progress=False)
    assert res.n_utterances == 6 and len(res.skipped) == 2
    report = (out / "report.txt").read_text()
    assert "broken.wav" in report and "empty.flac" in report
    # simulate an interrupted run: two utterances were never written, the assembled files never made
    parts = sorted((out / "parts").glob("*.npy"))
    for p in parts[:2]:
        p.unlink()
    (out / "feats.f32").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in parts[2:]}
    res = extract(src, out, workers=0, progress=False)
    assert res.n_utterances == 6
    assert {p.name: p.stat().st_mtime_ns for p in parts[2:]} == before  # finished files were not redone
    # another configuration is never silently reused
    from audiovae import MelConfig

    with pytest.raises(ConfigError, match="different configuration"):
        extract(src, out, MelConfig(n_mels=80), workers=0, progress=False)
    with pytest.raises(Exception, match="strict|broken|readable"):
        extract(src, tmp_path / "g", workers=0, strict=True, progress=False)


def test_cache_checksums_catch_edits_that_keep_the_offsets(feats, tmp_path):
    """index.json and stats.npz edited so that every other check still passes (offsets contiguous, frames adding
    up, statistics of the right shape): only the checksums in cache.json can tell, and they must."""
    from audiovae.errors import DataError

    cache = tmp_path / "c"
    shutil.copytree(feats, cache)
    index = json.loads((cache / "index.json").read_text())
    moved = next(r for r in index if r["split"] == "val")
    moved["split"] = "train"  # a validation utterance slipped into training
    (cache / "index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"index\.json: does not belong with feats\.f32 \(checksum"):
        FeatureCache(cache)
    shutil.copy2(feats / "index.json", cache / "index.json")
    FeatureCache(cache)  # the original is accepted again
    with np.load(cache / "stats.npz") as st:
        stats = dict(st)
    stats["mean"] = stats["mean"] + 1.0
    with open(cache / "stats.npz", "wb") as fh:
        np.savez(fh, **stats)
    with pytest.raises(DataError, match=r"stats\.npz: does not belong with feats\.f32 \(checksum"):
        FeatureCache(cache)


# --- training -------------------------------------------------------------------------------------

def _first_last_val(run: Path) -> tuple[float, float]:
    rows = [ln.split(",") for ln in (run / "validation.csv").read_text().splitlines()[1:]]
    return float(rows[0][2]), float(rows[-1][2])


def test_dense_vae_learns_without_collapse(feats, tmp_path):
    run = tmp_path / "dense"
    cfg = TrainConfig(model="dense", model_config={"latent_dim": 16}, batch_size=64, max_steps=150, val_every=25,
                      kl_warmup_steps=50, lr_warmup_steps=10, checkpoint_every=1000)
    train(feats, run, cfg, progress=False)
    first, last = _first_last_val(run)
    assert last > first + 50  # nats per frame of 256 bins
    ev = evaluate(run, feats, k=8, progress=False)
    assert ev["active_units"] >= 4 and ev["iwae"] >= ev["elbo"]


def test_conv_vae_learns_without_collapse(feats, tmp_path):
    run = tmp_path / "conv"
    cfg = TrainConfig(model="conv", model_config={"channels": 64, "latent_dim": 8}, batch_size=4, segment_frames=48,
                      max_steps=120, val_every=30, kl_warmup_steps=40, lr_warmup_steps=10, lr=2e-3, checkpoint_every=1000)
    train(feats, run, cfg, progress=False)
    first, last = _first_last_val(run)
    assert last > first
    ev = evaluate(run, feats, k=4, progress=False)
    assert ev["active_units"] >= 2 and ev["iwae"] >= ev["elbo"]
    # a model directory alone reconstructs audio: copy it away from the data and use it
    alone = tmp_path / "alone"
    shutil.copytree(run / "best", alone)
    from audiovae.tasks.generate import MelModel

    mm = MelModel.load(alone)
    wave, _ = sf.read(json.loads((feats / "index.json").read_text())[0]["source"], dtype="float32")
    y, x_feats, r_feats = mm.reconstruct(wave)
    assert y.shape == wave.shape and np.isfinite(y).all() and np.abs(y).max() > 1e-3
    corr = np.corrcoef(x_feats.flatten().numpy(), r_feats.flatten().numpy())[0, 1]
    assert corr > 0.5, corr


def test_image_vae_lowers_test_nll(fashion_subset, tmp_path):
    run = tmp_path / "img"
    cfg = TrainConfig(model="mnist", batch_size=64, max_steps=2, kl_warmup="none", lr_warmup_steps=0, lr=1e-3,
                      checkpoint_every=1000)
    train(fashion_subset, run, cfg, progress=False)
    before = evaluate(run / "best", fashion_subset, k=10, progress=False)
    shutil.rmtree(run)
    train(fashion_subset, run, TrainConfig(**{**cfg.__dict__, "max_steps": 200}), progress=False)
    after = evaluate(run / "best", fashion_subset, k=10, progress=False)
    assert after["nll"] < before["nll"] - 100, (before["nll"], after["nll"])
    assert after["bits_per_dim"] == pytest.approx(after["nll"] / (784 * np.log(2)))
    assert after["iwae"] >= after["elbo"]


def test_cifar_reader_and_logistic_training(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar"
    folder.mkdir()
    base = rng.integers(0, 256, size=(1, 3072))
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        data = np.clip(base + rng.integers(-20, 20, size=(64, 3072)), 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": list(rng.integers(0, 10, 64))}, fh)
    run = tmp_path / "run"
    train(folder, run, TrainConfig(model="cifar", batch_size=16, max_steps=30, kl_warmup="none", lr_warmup_steps=0,
                                   lr=2e-3, checkpoint_every=1000), progress=False)
    rows = [ln.split(",") for ln in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert float(rows[-1][2]) < float(rows[0][2])  # loss fell

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    from audiovae.data.images import load_image_folder
    from audiovae.errors import DataError

    with pytest.raises(DataError, match="refusing"):
        load_image_folder(folder)
    assert not (tmp_path / "pwned").exists()


# --- resume, checkpoints ---------------------------------------------------------------------------

RESUME_ARGS = ["--model", "dense", "batch_size=32", "model_config.hidden=[64]", "model_config.latent_dim=8",
               "checkpoint_every=5", "val_every=10", "kl_warmup_steps=20", "lr_warmup_steps=5"]


def test_resume_after_sigkill_is_bit_exact(feats, tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(_cli("train", str(feats), "-o", str(ref), "--max-steps", "60", *RESUME_ARGS), check=True,
                   capture_output=True)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli("train", str(feats), "-o", str(run), "--max-steps", "60", *RESUME_ARGS),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        state = run / "trainer_state.pt"
        if state.exists():
            try:
                step = int(load_trainer_state(state)["step"])
            except CheckpointError:
                step = 0
            if step >= 15:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None and killed_at < 60, "the run finished before it could be killed"
    res = subprocess.run(_cli("train", str(feats), "-o", str(run), "--resume"), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    _assert_same_run(ref, run)


TIMING_COLUMNS = ("data_s", "step_s", "items_per_s")


def _assert_same_run(ref: Path, run: Path) -> None:
    """``run`` (stopped and resumed) ends as ``ref`` (uninterrupted) did: the same weights, best/ byte for byte,
    best validation ELBO and early-stopping counter, validation.csv, and metrics.csv but for its timing columns."""
    sa, sb = load_trainer_state(ref / "trainer_state.pt"), load_trainer_state(run / "trainer_state.pt")
    for key in ("step", "epoch", "batch_in_epoch", "best_val", "bad_validations", "last_val_step"):
        assert sa[key] == sb[key], (key, sa[key], sb[key])
    a, b = _weights(ref), _weights(run)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    best = sorted(p.name for p in (ref / "best").iterdir())
    assert best == sorted(p.name for p in (run / "best").iterdir())
    for name in best:
        assert (ref / "best" / name).read_bytes() == (run / "best" / name).read_bytes(), f"best/{name} differs"
    assert (ref / "validation.csv").read_text() == (run / "validation.csv").read_text()
    ra, rb = _rows(ref), _rows(run)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k not in TIMING_COLUMNS} == \
            {k: v for k, v in y.items() if k not in TIMING_COLUMNS}, (x, y)
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (ref, run))
    assert {**sa, "out_dir": None} == {**sb, "out_dir": None}


# validation ELBOs by step, in place of the real ones: an improvement at 5, then worse ones that an early
# stopping patience of 3 counts across the crash (steps 10, 15 | 20), then (if it did not stop) better again
VAL_SCRIPT = {0: -100.0, 5: -50.0, 10: -60.0, 15: -70.0, 20: -55.0, 25: -40.0, 30: -45.0, 35: -48.0, 40: -47.0}


def test_resume_restores_best_patience_and_logs(feats, tmp_path, monkeypatch):
    """A run that crashes at step 17 (checkpoint at 10, validation at 15 already logged) and is resumed ends as the
    uninterrupted run: it still stops early at step 20 (patience 3, two bad validations before the crash), best/
    is still the step-5 model, and the rows logged after the checkpoint are not duplicated."""
    from audiovae.training import trainer as trainer_mod

    real_validate, real_method, real_step = trainer_mod.validate, trainer_mod.Trainer.validate, trainer_mod.Trainer.train_step
    at = {}

    def method(self):
        at["step"] = self.step
        return real_method(self)

    def scripted(*args, **kwargs):
        return {**real_validate(*args, **kwargs), "val_elbo": VAL_SCRIPT[at["step"]]}

    monkeypatch.setattr(trainer_mod.Trainer, "validate", method)
    monkeypatch.setattr(trainer_mod, "validate", scripted)
    cfg = TrainConfig(model="dense", model_config=SMALL_DENSE, batch_size=32, max_steps=40, val_every=5,
                      checkpoint_every=10, early_stop_patience=3, lr_warmup_steps=2, val_batches=1)
    summary = train(feats, tmp_path / "ref", cfg, progress=False)
    assert summary["stopped_early"] and summary["step"] == 20 and summary["best_val_elbo"] == -50.0

    def crash(self, batch):
        if self.step == 16:
            raise KeyboardInterrupt  # a crash during step 17
        return real_step(self, batch)

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        train(feats, tmp_path / "run", cfg, progress=False)
    assert [int(r["step"]) for r in _rows(tmp_path / "run")][-1] == 16
    assert "\n15," in (tmp_path / "run" / "validation.csv").read_text()
    monkeypatch.setattr(trainer_mod.Trainer, "train_step", real_step)
    train(feats, tmp_path / "run", None, resume=True, progress=False)
    _assert_same_run(tmp_path / "ref", tmp_path / "run")


def test_checkpoint_write_is_atomic(feats, tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = TrainConfig(model="dense", model_config=SMALL_DENSE, batch_size=32, max_steps=4, checkpoint_every=2)
    train(feats, run, cfg, progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.suffix in (".safetensors", ".yaml", ".pt")}
    import safetensors.torch

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        train(feats, run, None, resume=True, max_steps=8, progress=False)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.suffix in (".safetensors", ".yaml", ".pt")}
    assert after["model.safetensors"] == before["model.safetensors"]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    load_model_dir(run)  # still a consistent model directory


def test_tampered_or_foreign_checkpoints_are_refused(feats, tmp_path):
    run = tmp_path / "run"
    train(feats, run, TrainConfig(model="dense", model_config=SMALL_DENSE, batch_size=32, max_steps=2), progress=False)
    load_model_dir(run)
    # 1. a flipped byte in the weights
    for w in (run / "model.safetensors", run / "best" / "model.safetensors"):
        data = bytearray(w.read_bytes())
        data[-3] ^= 0xFF
        w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_model_dir(run)
    res = CliRunner().invoke(cli, ["evaluate", str(run), str(feats), "--k", "2"])
    assert isinstance(res.exception, SystemExit) and res.exit_code == 1 and "checksum" in res.output

    # 2. a pickle that would run code, in place of the trainer state
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"step": 1, "evil": Evil()}, run / "trainer_state.pt")
    with pytest.raises(CheckpointError, match="refusing"):
        train(feats, run, None, resume=True, progress=False)
    assert not (tmp_path / "pwned").exists()

    # 3. a foreign file with a matching checksum is still not loaded as weights
    import hashlib

    import yaml

    w.write_bytes(pickle.dumps(Evil()))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["weights_sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_model_dir(run)
    assert not (tmp_path / "pwned").exists()


def _spoil_step(monkeypatch, step: int, what: str = "loss") -> None:
    """Spoil training step ``step`` (counting training-mode ELBO calls): ``"loss"`` makes the loss NaN;
    ``"gradient"`` leaves the loss finite and scales its gradient by inf (a backward hook)."""
    from audiovae.models.base import BaseVAE

    real = BaseVAE.elbo
    calls = {"n": 0}

    def poisoned(self, x, *a, **k):
        out = real(self, x, *a, **k)
        if self.training:
            calls["n"] += 1
            if calls["n"] == step and what == "loss":
                out.loss = out.loss * float("nan")
            elif calls["n"] == step:
                out.loss.register_hook(lambda g: g * float("inf"))
        return out

    monkeypatch.setattr(BaseVAE, "elbo", poisoned)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(feats, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _spoil_step(monkeypatch, 5)
    cfg = TrainConfig(model="dense", model_config=SMALL_DENSE, batch_size=32, max_steps=20, checkpoint_every=2, val_every=100)
    with pytest.raises(TrainingError, match="nan"):
        train(feats, run, cfg, progress=False)
    state = load_trainer_state(run / "trainer_state.pt")
    assert int(state["step"]) == 4
    loaded = load_model_dir(run)
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, state["model"][k])
    res = CliRunner().invoke(cli, ["train", str(feats), "-o", str(tmp_path / "r2"), "--model", "dense", "lr=1e30",
                                   "grad_clip=0", "batch_size=32", "--max-steps", "50"])
    assert isinstance(res.exception, SystemExit), res.exception  # a crash is not a clean exit
    assert res.exit_code == 1 and ("non-finite" in res.output or "became" in res.output), res.output


@pytest.mark.parametrize("free_bits", [0.0, 0.15])
def test_two_process_ddp_matches_one_process(feats, tmp_path, free_bits):
    # free_bits=0.15 nats sits among the units' KLs over these steps: clamping on each process's half batch
    # instead of the global batch changes which units are clamped, and the weights
    common = ["--model", "dense", "model_config.hidden=[64]", "model_config.latent_dim=8", "--max-steps", "6",
              "checkpoint_every=100", "val_every=100", "lr_warmup_steps=0", "device=cpu", "kl_warmup=none",
              f"free_bits={free_bits}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "audiovae",
                          "train", str(feats), "-o", str(tmp_path / "ddp"), "batch_size=16", *common],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run(_cli("train", str(feats), "-o", str(tmp_path / "one"), "batch_size=32", *common),
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "one")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    # and both really trained: the weights moved from the initial ones (the trainer seeds torch with the run's
    # seed, then builds the model) by far more than the two runs differ
    from audiovae.models import build_model

    saved = load_model_dir(tmp_path / "one").config
    torch.manual_seed(TrainConfig.seed)
    init = {f"model.{k}": v for k, v in build_model(saved["model"], saved["model_config"]).state_dict().items()}
    assert init.keys() <= a.keys()
    moved = max(float((b[k] - init[k]).abs().max()) for k in init)
    apart = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved > 1e-3 and moved > 100 * apart, (moved, apart)


POISON_RANK_1 = """
import os, sys
import torch
from audiovae.models.base import BaseVAE

real, calls = BaseVAE.elbo, {"n": 0}

def poisoned(self, x, *a, **k):
    out = real(self, x, *a, **k)
    if self.training and os.environ["RANK"] == "1":
        calls["n"] += 1
        if calls["n"] == 5:  # this rank's loss value only: the gradients (and so the other rank) stay finite
            out.loss = out.loss + torch.tensor(float("nan"))
    return out

BaseVAE.elbo = poisoned
from audiovae.cli import cli
cli(sys.argv[1:])
"""


def test_ddp_bad_step_on_one_rank_stops_every_rank(feats, tmp_path):
    """A non-finite loss on rank 1 only, with log_every=4: the ranks share their first bad step at the log step
    (an all-reduce), so both stop there with the same message and neither waits for the other. The two ranks
    are started by hand (torchrun would kill rank 0 as soon as rank 1 fails, before it can speak)."""
    import socket

    script = tmp_path / "poison.py"
    script.write_text(POISON_RANK_1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(
            [sys.executable, str(script), "train", str(feats), "-o", str(tmp_path / "run"), "--model", "dense",
             "model_config.hidden=[32]", "model_config.latent_dim=4", "batch_size=8", "--max-steps", "12",
             "log_every=4", "checkpoint_every=4", "val_every=100", "device=cpu"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env))
    errs = [p.communicate(timeout=300)[1] for p in procs]
    for rank, (p, err) in enumerate(zip(procs, errs)):
        assert p.returncode != 0, (rank, err[-1500:])
        assert "non-finite at step 5 (found at step 8" in err, (rank, err[-1500:])
    state = load_trainer_state(tmp_path / "run" / "trainer_state.pt")
    assert int(state["step"]) == 4 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_evaluate_json(feats, tmp_path):
    run = tmp_path / "run"
    train(feats, run, TrainConfig(model="dense", model_config=SMALL_DENSE, batch_size=32, max_steps=10), progress=False)
    res = CliRunner().invoke(cli, ["evaluate", str(run), str(feats), "--k", "16", "--json", str(tmp_path / "e.json")])
    assert res.exception is None and res.exit_code == 0, res.output
    data = json.loads((tmp_path / "e.json").read_text())
    for key in ("elbo", "iwae", "k", "kl", "recon", "active_units", "latent_dim", "params"):
        assert key in data
    assert data["k"] == 16 and data["latent_dim"] == 8 and data["iwae"] >= data["elbo"]
    assert data["elbo"] == pytest.approx(data["recon"] - data["kl"], rel=2e-2)
    assert "IWAE bound" in res.output


def test_demo_end_to_end_small(tmp_path, monkeypatch):
    import yaml

    from audiovae.data.source import open_data
    from audiovae.tasks.demo import run_demo

    # `audiovae demo -o demo_out` as the README has it: a relative output folder (paths/issue 16)
    monkeypatch.chdir(tmp_path)
    res = run_demo("demo", utterances=12, minutes=1.0, max_steps=12, channels=32, latent_dim=4,
                   vocoder_iters=4, log=lambda *_: None, progress=False)
    out = tmp_path / "demo"
    # read back from another working directory: the manifest, cache and run name the same files
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert "skipped 0 file(s)" in (out / "features" / "report.txt").read_text()
    recorded = yaml.safe_load((out / "run" / "config.yaml").read_text())["data"]
    src = open_data(recorded)
    assert len(src.records) == 12 and all(Path(r["source"]).is_file() for r in src.records)
    wavs = [out / p for group in ("reconstructions", "samples", "interpolation") for p in res["files"][group]]
    assert len(wavs) >= 6
    for w in wavs:
        y, sr = sf.read(w)
        assert sr == 22050 and len(y) > 2000 and np.abs(y).max() > 1e-3
    for p in res["files"]["pictures"]:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ConvVAE" in (out / "SUMMARY.md").read_text()
    # the demo ends with the report: every wav and picture it names is there
    html = (out / "report" / "index.html").read_text()
    for rel in re.findall(r'(?:src)="([^"]+)"', html):
        assert (out / "report" / rel).is_file(), rel
    assert html.count("<audio") >= 3 * 2 + 3 + 5




def test_cli_train_uses_the_models_registered_training_defaults(feats, tmp_path):
    """`audiovae train --model conv` takes the conv VAE's registered batch size, crop, lr and warm-ups;
    the dense model keeps TrainConfig's generic ones; KEY=VALUE still wins over both."""
    import yaml

    from audiovae.models.conv import TRAIN_DEFAULTS

    def saved(run: str, *args: str) -> dict:
        res = CliRunner().invoke(cli, ["train", str(feats), "-o", str(tmp_path / run), *args, "--max-steps", "1"])
        assert res.exit_code == 0, res.output
        return yaml.safe_load((tmp_path / run / "train.yaml").read_text())

    conv = saved("conv", "--model", "conv", "model_config.channels=16", "val_batches=1")
    expected = {k: v for k, v in TRAIN_DEFAULTS.items() if k not in ("max_steps", "val_batches")}
    assert {k: conv[k] for k in expected} == expected
    assert TRAIN_DEFAULTS["batch_size"] != TrainConfig.batch_size  # else this test checks nothing
    dense = saved("dense", "--model", "dense", "model_config.hidden=[16]", "val_batches=1")
    assert dense["batch_size"] == TrainConfig.batch_size and dense["lr"] == TrainConfig.lr
    over = saved("over", "--model", "conv", "model_config.channels=16", "val_batches=1", "batch_size=3")
    assert over["batch_size"] == 3 and over["segment_frames"] == TRAIN_DEFAULTS["segment_frames"]


# --- logging without per-step host syncs, torch.compile -------------------------------------------

def _rows(run: Path) -> list[dict]:
    import csv

    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_log_every_writes_window_means_and_leaves_training_alone(feats, tmp_path):
    """log_every=4 (what a GPU run uses, to avoid a host sync per step) logs the mean of each window of
    steps, closing a window early at a checkpoint; the weights are those of a per-step-logged run."""
    common = dict(model="dense", model_config=SMALL_DENSE, batch_size=32, max_steps=12, checkpoint_every=6,
                  val_every=100, lr_warmup_steps=2)
    train(feats, tmp_path / "a", TrainConfig(**common, log_every=1), progress=False)
    train(feats, tmp_path / "b", TrainConfig(**common, log_every=4), progress=False)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    per_step, windows = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert [int(r["step"]) for r in per_step] == list(range(1, 13))
    assert [int(r["step"]) for r in windows] == [4, 6, 8, 12]  # the checkpoint at 6 closes a window
    for row, (lo, hi) in zip(windows, [(1, 4), (5, 6), (7, 8), (9, 12)]):
        for key in ("loss", "elbo", "kl", "grad_norm"):
            expect = np.mean([float(r[key]) for r in per_step[lo - 1 : hi]])
            assert float(row[key]) == pytest.approx(expect, rel=1e-4, abs=1e-4), (key, lo, hi)
        assert float(row["lr"]) == pytest.approx(float(per_step[hi - 1]["lr"]))


def test_loader_workers_change_nothing(feats, tmp_path):
    """num_workers=2 (what a GPU run uses to keep the device fed) trains the same weights as the main
    process: the random crops come from (seed, epoch, position), not from a worker's RNG. Three epochs,
    so the workers are started again at each epoch boundary."""
    common = dict(model="conv", model_config={"channels": 32, "latent_dim": 8, "res_blocks": 1}, batch_size=4,
                  segment_frames=64, max_epochs=3, max_steps=1000, checkpoint_every=1000, val_every=1000,
                  lr_warmup_steps=2)
    train(feats, tmp_path / "w0", TrainConfig(**common, num_workers=0), progress=False)
    train(feats, tmp_path / "w2", TrainConfig(**common, num_workers=2), progress=False)
    a, b = _weights(tmp_path / "w0"), _weights(tmp_path / "w2")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted({int(r["epoch"]) for r in _rows(tmp_path / "w2")}) == [0, 1, 2]


@pytest.mark.parametrize("model,model_config,extra", [
    ("conv", {"channels": 32, "latent_dim": 8, "res_blocks": 1}, {"free_bits": 0.1, "segment_frames": 32}),
    ("dense", SMALL_DENSE, {"context": 2}),
])
def test_no_host_sync_in_a_step_between_log_steps(feats, tmp_path, monkeypatch, model, model_config, extra):
    """With log_every > 1 (a GPU's default) a training step asks the device for nothing: counted on the CPU
    with a dispatch mode (tests/host_syncs.py) around each step and each addition to the log window.
    With log_every=1 the per-step finiteness checks show up, so the count does see syncs."""
    from audiovae.training import trainer as trainer_mod
    from host_syncs import HostSyncs

    found: dict[str, list[list[str]]] = {"step": [], "window": []}

    def counted(fn, key):
        def wrapper(*args, **kwargs):
            with HostSyncs() as s:
                out = fn(*args, **kwargs)
            found[key].append(s.where)
            return out
        return wrapper

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", counted(trainer_mod.Trainer.train_step, "step"))
    monkeypatch.setattr(trainer_mod._LogWindow, "add", counted(trainer_mod._LogWindow.add, "window"))
    common = dict(model=model, model_config=model_config, batch_size=4, max_steps=6, val_every=100,
                  checkpoint_every=100, **extra)
    train(feats, tmp_path / "a", TrainConfig(**common, log_every=3), progress=False)
    assert len(found["step"]) == len(found["window"]) == 6
    assert found["step"] == [[]] * 6 and found["window"] == [[]] * 6, found
    found["step"].clear()
    train(feats, tmp_path / "b", TrainConfig(**common, log_every=1), progress=False)
    assert all(len(w) == 2 and all("isfinite" in line for line in w) for w in found["step"]), found["step"]


@pytest.mark.parametrize("with_lengths", [True, False])
def test_loader_pins_batches_for_the_gpu(monkeypatch, with_lengths):
    """With pin_memory=True (on CUDA) the DataLoader pins what collate returns through the same function
    used here; a Batch must come back with page-locked tensors, or every non-blocking copy to the GPU
    blocks. (Pinning itself needs CUDA, so Tensor.pin_memory is replaced by a recording stand-in.)"""
    from torch.utils.data._utils.pin_memory import pin_memory as loader_pin

    from audiovae.data.datasets import Batch

    pinned: list[torch.Tensor] = []

    def fake_pin(self, *args, **kwargs):
        pinned.append(self.clone())
        return pinned[-1]

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    batch = Batch(torch.randn(2, 3, 5), torch.tensor([5, 3]) if with_lengths else None)
    out = loader_pin(batch)
    assert isinstance(out, Batch) and out.x is pinned[0] and torch.equal(out.x, batch.x)
    assert (out.lengths is pinned[1]) if with_lengths else (out.lengths is None and len(pinned) == 1)


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_log_every_finds_a_bad_step_late_but_before_the_next_checkpoint(feats, tmp_path, monkeypatch, what):
    """A NaN loss, or an inf gradient behind a finite loss, at step 5 with log_every=10: the window finds
    the step before the checkpoint at step 8, and the step-4 checkpoint stays good."""
    _spoil_step(monkeypatch, 5, what)
    cfg = TrainConfig(model="dense", model_config=SMALL_DENSE, batch_size=32, max_steps=20, checkpoint_every=4,
                      val_every=100, log_every=10)
    with pytest.raises(TrainingError, match="non-finite at step 5 .found at step 8"):
        train(feats, tmp_path / "run", cfg, progress=False)
    state = load_trainer_state(tmp_path / "run" / "trainer_state.pt")
    assert int(state["step"]) == 4 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_compiled_training_matches_eager_and_resumes_exactly(feats, tmp_path):
    pytest.importorskip("torch._inductor")
    common = dict(model="dense", model_config=SMALL_DENSE, batch_size=32, checkpoint_every=100, val_every=100,
                  lr_schedule="constant", kl_warmup="none", lr_warmup_steps=0)
    from torch._dynamo.utils import counters

    train(feats, tmp_path / "eager", TrainConfig(**common, max_steps=8), progress=False)
    counters.clear()
    train(feats, tmp_path / "full", TrainConfig(**common, max_steps=8, compile=True), progress=False)
    # compile=true really compiled the encoder and decoder, and not once per step (8 steps, 2 parts):
    # training, and validation's other batch shapes, are a handful of graphs
    assert 0 < counters["stats"]["unique_graphs"] <= 8, dict(counters["stats"])
    train(feats, tmp_path / "part", TrainConfig(**common, max_steps=4, compile=True), progress=False)
    train(feats, tmp_path / "part", resume=True, progress=False, given={"max_steps": 8})
    eager, full, part = (_weights(tmp_path / n) for n in ("eager", "full", "part"))
    assert all(torch.equal(full[k], part[k]) for k in full), "a resumed compiled run differs from an uninterrupted one"
    for k in eager:  # the compiled model computes the same function (fused kernels round differently)
        torch.testing.assert_close(full[k], eager[k], rtol=1e-3, atol=1e-4)
    with pytest.raises(ConfigError, match="compile"):
        train(feats, tmp_path / "part", resume=True, progress=False, given={"compile": False})
