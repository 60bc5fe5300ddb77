"""TensorBoard logging (the [tensorboard] extra): scalars, spectrograms and audio of validation reconstructions;
without the package, one notice and training as before."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from audiovae.training import logging as tblog
from audiovae.training.config import TrainConfig
from audiovae.training.trainer import train
from tests.conftest import require


def _events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list((run / "tb").glob("events.out.tfevents.*"))
    assert files, f"no event file in {run / 'tb'}"
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0, "audio": 0})
    acc.Reload()
    return acc.Tags()


@pytest.mark.parametrize("model,model_config,extra", [
    ("conv", {"channels": 16, "latent_dim": 4}, {"segment_frames": 32, "batch_size": 2}),
    ("dense", {"latent_dim": 4, "hidden": [32]}, {"batch_size": 32}),
])
def test_tensorboard_logs_scalars_spectrograms_and_audio(feats, tmp_path, model, model_config, extra):
    require(importlib.util.find_spec("tensorboard") is not None, "tensorboard (in the dev extra)")
    run = tmp_path / "run"
    cfg = TrainConfig(model=model, model_config=model_config, max_steps=2, val_every=1, **extra)
    train(feats, run, cfg, progress=False)
    tags = _events(run)
    assert {"train/loss", "train/kl", "val/val_elbo", "val/active_units"} <= set(tags["scalars"])
    assert "val/item0/logmel_original_vs_reconstruction" in tags["images"]
    assert "val/item0/reconstruction" in tags["audio"]
    assert "val/item0/original_vocoded" in tags["audio"]


def test_without_tensorboard_one_notice_and_training_goes_on(feats, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` of it raises ImportError
    monkeypatch.setattr(tblog, "_told", False)
    cfg = TrainConfig(model="conv", model_config={"channels": 16, "latent_dim": 4}, segment_frames=32, batch_size=2,
                      max_steps=2, val_every=1)
    summary = train(feats, tmp_path / "a", cfg, progress=False)
    assert tblog.TensorBoardLogger.open(tmp_path / "b", None) is None  # a second run in this process: no repeat
    err = capsys.readouterr().err
    assert err.count("TensorBoard logging is off") == 1, err
    assert "pip install 'audiovae[tensorboard]'" in err
    assert summary["step"] == 2 and (tmp_path / "a" / "best").is_dir()
    assert not (tmp_path / "a" / "tb").exists()
