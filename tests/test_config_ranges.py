"""Configuration values out of range are refused before any work starts: one line naming the field, the
value and the allowed range (and the file it came from), never a traceback and never a run that "trains"
on nonsense. Every field of TrainConfig, MelConfig and each model config has a check; the sizes a config
asks for (FFT length, layer widths, parameters) are bounded."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from audiovae.audio.config import MelConfig
from audiovae.cli import cli
from audiovae.config import MAX_PARAMETERS, from_dict
from audiovae.errors import ConfigError
from audiovae.models import build_model, make_config
from audiovae.models.conv import ConvVAEConfig
from audiovae.models.dense import DenseVAEConfig
from audiovae.models.image import CIFARVAEConfig, MNISTVAEConfig
from audiovae.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]

# --- the table: for every field of every configuration dataclass, a value it refuses --------------------------
BAD_TRAIN = {
    "model": ("bogus", "model=bogus: must be one of cifar, conv, dense, mnist"),
    "model_config": ([1, 2], "model_config=[1, 2]: must be a mapping of the model's fields (model_config.KEY=VALUE)"),
    "batch_size": (0, "batch_size=0: must be an integer >= 1"),
    "lr": (math.nan, "lr=nan: must be a finite number >= 0"),
    "weight_decay": (-0.1, "weight_decay=-0.1: must be a finite number >= 0"),
    "lr_schedule": ("bogus", "lr_schedule=bogus: must be one of constant, cosine"),
    "lr_warmup_steps": (-1, "lr_warmup_steps=-1: must be an integer >= 0"),
    "max_steps": (0, "max_steps=0: must be an integer >= 1"),
    "max_epochs": (0, "max_epochs=0: must be an integer >= 1"),
    "max_minutes": (math.inf, "max_minutes=inf: must be a finite number >= 0"),
    "grad_clip": (-1.0, "grad_clip=-1.0: must be a finite number >= 0"),
    "beta": (-0.5, "beta=-0.5: must be a finite number >= 0"),
    "kl_warmup": ("sigmoid", "kl_warmup=sigmoid: must be one of none, linear, cyclical"),
    "kl_warmup_steps": (-2, "kl_warmup_steps=-2: must be an integer >= 0"),
    "kl_cycle_ramp": (1.5, "kl_cycle_ramp=1.5: must be a finite number >= 0 and <= 1"),
    "free_bits": (math.nan, "free_bits=nan: must be a finite number >= 0"),
    "seed": (2**70, "seed=1180591620717411303424: must be an integer in 0..4294967295"),
    "amp": ("maybe", "amp=maybe: must be one of False, True"),
    "amp_dtype": ("int8", "amp_dtype=int8: must be one of auto, bfloat16, float16"),
    "num_workers": (-1, "num_workers=-1: must be an integer in 0..256"),
    "threads": (-2, "threads=-2: must be an integer in 0..4096"),
    "segment_frames": (0, "segment_frames=0: must be an integer >= 1"),
    "context": (100000, "context=100000: must be an integer in 0..1000"),
    "val_every": (-1, "val_every=-1: must be an integer >= 0"),
    "val_batches": (0, "val_batches=0: must be an integer >= 1"),
    "checkpoint_every": (0, "checkpoint_every=0: must be an integer >= 1"),
    "early_stop_patience": (-1, "early_stop_patience=-1: must be an integer >= 0"),
    "device": ("gpu", "device=gpu: must be one of auto, cpu, cuda, cuda:N"),
    "log_every": (-5, "log_every=-5: must be an integer >= 0"),
    "compile": (2, "compile=2: must be one of False, True"),
    "condition": ("voice", "condition=voice: must be one of none, speaker, label"),
}
BAD_MEL = {
    "sample_rate": (10**7, "sample_rate=10000000: must be an integer in 1000..384000"),
    "n_fft": (2**28, "n_fft=268435456: must be an integer in 16..65536"),
    "win_length": (4096, "win_length=4096: must be an integer in 1..2048"),
    "hop_length": (0, "hop_length=0: must be an integer in 1..1024"),
    "n_mels": (10**6, "n_mels=1000000: must be an integer in 1..4096"),
    "fmin": (math.nan, "fmin=nan: must be a finite number >= 0"),
    "fmax": (20000.0, "fmax=20000.0: must be above fmin (0) and at most sample_rate/2 (11025 Hz)"),
    "power": (3.0, "power=3.0: must be 1.0 (magnitude) or 2.0 (power)"),
    "log_floor": (0.0, "log_floor=0.0: must be a finite number > 0 and < 1"),
    "htk": ("maybe", "htk=maybe: must be true or false"),
    "norm": ("htk", "norm=htk: must be slaney or null"),
}
BAD_DENSE = {
    "n_mels": (0, "n_mels=0: must be an integer in 1..4096"),
    "context": (-2, "context=-2: must be an integer in 0..1000"),
    "hidden": ([25000, 25000], "hidden=[25000, 25000]: must be a list of 1 to 64 layer widths in 1..16384"),
    "latent_dim": (-5, "latent_dim=-5: must be an integer in 1..16384"),
    "likelihood": ("logistic", "likelihood=logistic: must be one of gaussian, gaussian_fixed, bernoulli"),
    "condition": ("voice", "condition=voice: must be one of none, speaker, label"),
    "condition_names": (["a", "a"], "condition_names=['a', 'a']: must be a list of at most 100000 distinct non-empty names"),
}
BAD_CONV = {
    "n_mels": (5000, "n_mels=5000: must be an integer in 1..4096"),
    "channels": (0, "channels=0: must be an integer in 1..16384"),
    "latent_dim": (0, "latent_dim=0: must be an integer in 1..16384"),
    "downsample": (3, "downsample=3: must be one of 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024"),
    "kernel": (4, "kernel=4: must be an odd integer in 1..63 (an even kernel would shift the frames)"),
    "res_blocks": (40, "res_blocks=40: must be an integer in 0..16"),
    "full_rate_blocks": (-1, "full_rate_blocks=-1: must be an integer in 0..16"),
    "norm": ("batch", "norm=batch: must be one of layer, group, none"),
    "likelihood": ("poisson", "likelihood=poisson: must be one of gaussian, gaussian_fixed, bernoulli, logistic"),
    "min_log_scale": (math.nan, "min_log_scale=nan: must be a finite number"),
    "adversary": (-1.0, "adversary=-1.0: must be a finite number >= 0"),
    "condition": ("voice", "condition=voice: must be one of none, speaker, label"),
    "condition_names": (["a", "a"], "condition_names=['a', 'a']: must be a list of at most 100000 distinct non-empty names"),
}
BAD_IMAGE = {
    "image_channels": (0, "image_channels=0: must be an integer in 1..64"),
    "image_size": (30, "image_size=30: must be a multiple of 4 in 4..1024"),
    "channels": (-1, "channels=-1: must be an integer in 1..16384"),
    "latent_dim": (0, "latent_dim=0: must be an integer in 1..16384"),
    "hidden": (10**6, "hidden=1000000: must be an integer in 1..16384"),
    "likelihood": ("poisson", "likelihood=poisson: must be one of gaussian, gaussian_fixed, bernoulli, logistic"),
}
TABLES = [(TrainConfig, BAD_TRAIN), (MelConfig, BAD_MEL), (DenseVAEConfig, BAD_DENSE), (ConvVAEConfig, BAD_CONV),
          (MNISTVAEConfig, BAD_IMAGE), (CIFARVAEConfig, BAD_IMAGE)]


def test_every_field_of_every_config_has_a_refused_value_in_the_table():
    """A field added without a range check (and without a row here) fails this test."""
    for cls, table in TABLES:
        assert set(table) == {f.name for f in dataclasses.fields(cls)}, cls.__name__


@pytest.mark.parametrize("cls,name,value,message",
                         [(cls, name, value, msg) for cls, table in TABLES for name, (value, msg) in table.items()],
                         ids=lambda v: getattr(v, "__name__", None) if isinstance(v, type) else None)
def test_a_value_out_of_range_is_refused_naming_field_and_range(cls, name, value, message):
    with pytest.raises(ConfigError) as err:
        cls(**{name: value})
    assert str(err.value) == message
    # the same from a file: the file is named too
    data = {name: value} if cls is not TrainConfig or name == "model" else {"model": "dense", name: value}
    with pytest.raises(ConfigError) as err:
        from_dict(cls, data, "conf/x.yaml")
    assert str(err.value).startswith("conf/x.yaml: ") and name in str(err.value)


def test_yaml_types_are_not_stretched():
    """A truth value is no number and a number other than 0 or 1 no truth value."""
    for data, field in (({"batch_size": True}, "batch_size"), ({"lr": False}, "lr"), ({"amp": 2}, "amp"),
                        ({"compile": 0.5}, "compile"), ({"batch_size": 2.5}, "batch_size")):
        with pytest.raises(ConfigError, match=rf"^train.yaml: field '{field}' expects"):
            from_dict(TrainConfig, data, "train.yaml")
    assert from_dict(TrainConfig, {"amp": 1, "compile": "off", "batch_size": 4.0}).batch_size == 4


def test_model_fields_are_checked_through_train_config_with_their_path():
    with pytest.raises(ConfigError, match=r"^model_config\.latent_dim=-5: must be an integer in 1\.\.16384$"):
        TrainConfig(model="dense", model_config={"latent_dim": -5})
    with pytest.raises(ConfigError, match=r"^model_config\.downsample=3: must be one of 1, 2, 4"):
        TrainConfig(model="conv", model_config={"downsample": 3})
    with pytest.raises(ConfigError, match="unknown DenseVAEConfig field"):
        TrainConfig(model="dense", model_config={"latnt_dim": 4})
    assert TrainConfig(model_config=None).model_config == {}  # `model_config:` with nothing under it


def test_model_size_is_bounded_before_anything_is_allocated():
    """Widths within the per-layer bound can still add up: the parameter count is taken on the meta device."""
    with pytest.raises(ConfigError, match=rf"at most {MAX_PARAMETERS:,} parameters; the dense model .* has "
                                          r"1,546,112,576"):
        build_model("dense", {"hidden": [16000, 16000, 16000, 16000]})
    with pytest.raises(ConfigError, match=r"^model_config: must be a model of at most .* the conv model"):
        TrainConfig(model="conv", model_config={"channels": 16384})
    with pytest.raises(ConfigError, match="hidden=25000"):
        make_config("mnist", {"hidden": 25000})
    assert build_model("dense", {"hidden": [64], "latent_dim": 4}).input_dim == 256  # small models still build


def test_a_model_directory_asking_for_a_huge_model_is_refused_before_it_is_built(tmp_path):
    """config.yaml of a model directory edited to hidden: [25000, 25000] (a 5 GB model; the weights' checksum
    still matches): refused with the field and its bound instead of building it."""
    from audiovae.training.checkpoint import load_model_dir, save_model_dir
    from audiovae.errors import CheckpointError

    small = {"n_mels": 8, "hidden": [4], "latent_dim": 2}
    save_model_dir(tmp_path / "m", build_model("dense", small), "dense", small, None, None)
    cfg = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())
    cfg["model_config"]["hidden"] = [25000, 25000]
    (tmp_path / "m" / "config.yaml").write_text(yaml.safe_dump(cfg))
    # refused before anything is built: by the config's own bounds, or (an edited config.yaml) by its checksum
    with pytest.raises(CheckpointError, match=r"hidden=\[25000, 25000\]: must be a list of 1 to 64 layer widths in "
                                              r"1\.\.16384|no longer match config_sha256"):
        load_model_dir(tmp_path / "m")


def test_the_seed_bound_is_one_every_generator_takes():
    """seed=2**70 used to crash deep in torch's seeding; the largest seed allowed works everywhere it goes."""
    import torch

    from audiovae.data.datasets import SeededBatchSampler
    from audiovae.training.config import MAX_SEED
    from audiovae.training.trainer import _noise

    cfg = TrainConfig(seed=MAX_SEED)
    torch.manual_seed(cfg.seed)
    batches = list(SeededBatchSampler(10, 2, cfg.seed, 10**6))
    assert len(batches) == 5 and all(0 <= s < 2**63 for b in batches for _, s in b)
    assert _noise(cfg.seed, 10**9, 0, 1)(torch.Size([2, 3])).shape == (2, 3)
    with pytest.raises(ConfigError, match="seed=4294967296"):
        TrainConfig(seed=MAX_SEED + 1)


def test_library_train_refuses_a_config_changed_after_it_was_made(tmp_path):
    """Checked again before the data is opened (the data path here does not even exist)."""
    cfg = TrainConfig(model="dense", model_config={"hidden": [8], "latent_dim": 2}, batch_size=4, max_steps=2)
    cfg.val_batches = 0
    with pytest.raises(ConfigError, match=r"^val_batches=0: must be an integer >= 1$"):
        train(tmp_path / "no_such_data.npy", tmp_path / "run", cfg, progress=False)
    assert not (tmp_path / "run").exists()


# --- the command line -----------------------------------------------------------------------------------------
CLI_CASES = [
    (["batch_size=0"], "batch_size=0: must be an integer >= 1"),
    (["batch_size=-3"], "batch_size=-3: must be an integer >= 1"),
    (["checkpoint_every=0"], "checkpoint_every=0: must be an integer >= 1"),
    (["lr=nan"], "lr=nan: must be a finite number >= 0"),
    (["lr=-1"], "lr=-1.0: must be a finite number >= 0"),
    (["num_workers=-1"], "num_workers=-1: must be an integer in 0..256"),
    ([f"seed={2**70}"], "seed=1180591620717411303424: must be an integer in 0..4294967295"),
    (["context=-2"], "context=-2: must be an integer in 0..1000"),
    (["context=100000"], "context=100000: must be an integer in 0..1000"),
    (["model_config.latent_dim=-5"], "model_config.latent_dim=-5: must be an integer in 1..16384"),
    (["model_config.latent_dim=0"], "model_config.latent_dim=0: must be an integer in 1..16384"),
    (["model_config=[1,2]"], "model_config=[1, 2]: must be a mapping"),
    (["val_batches=0"], "val_batches=0: must be an integer >= 1"),
    (["lr_schedule=bogus"], "lr_schedule=bogus: must be one of constant, cosine"),
    (["amp_dtype=int8"], "amp_dtype=int8: must be one of auto, bfloat16, float16"),
    (["grad_clip=-1"], "grad_clip=-1.0: must be a finite number >= 0"),
    (["free_bits=nan"], "free_bits=nan: must be a finite number >= 0"),
    (["model_config.hidden=[25000,25000]"], "model_config.hidden=[25000, 25000]: must be a list of 1 to 64"),
    (["model_config.hidden=[16000,16000,16000,16000]"], "model_config: must be a model of at most 1,000,000,000"),
    (["latent_dim=4"], "unknown configuration key 'latent_dim' (did you mean model_config.latent_dim?)"),
]


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """A small .npy of log-mel frames: data a dense VAE trains on in a second (if a bad value got through)."""
    path = tmp_path_factory.mktemp("frames") / "frames.npy"
    np.save(path, np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32))
    return path


def _refused(res, out: Path, *expected: str) -> None:
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    line = res.stderr.strip()
    assert "\n" not in line and "Traceback" not in res.output, res.output
    assert line.startswith("error: ") and all(e in line for e in expected), line
    assert not list(out.rglob("*.safetensors")) and not (out / "metrics.csv").exists()


@pytest.mark.parametrize("args,expected", CLI_CASES, ids=[c[0][0][:40] for c in CLI_CASES])
def test_train_cli_refuses_a_bad_setting_in_one_line_before_any_work(frames, tmp_path, args, expected):
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", str(frames), "--model", "dense", "-o", str(out), "--max-steps", "2",
                                   "batch_size=4", "model_config.hidden=[8]", *args])
    _refused(res, out, f"command line: {expected}")
    assert not out.exists()


def test_train_cli_names_the_yaml_file_and_a_resumed_runs_train_yaml(frames, tmp_path):
    conf = tmp_path / "train.yaml"
    conf.write_text("model: dense\nmodel_config: [1, 2]\n")
    res = CliRunner().invoke(cli, ["train", str(frames), "-o", str(tmp_path / "a"), "--config", str(conf)])
    _refused(res, tmp_path / "a", f"{conf}: model_config=[1, 2]: must be a mapping")
    conf.write_text("model: dense\nbatch_size: 0\n")
    res = CliRunner().invoke(cli, ["train", str(frames), "-o", str(tmp_path / "a"), "--config", str(conf)])
    _refused(res, tmp_path / "a", f"{conf}: batch_size=0: must be an integer >= 1")
    # a run whose train.yaml was edited: refused on --resume before its data or checkpoint is read
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.yaml").write_text(yaml.safe_dump({"model": "dense", "lr": float("nan")}))
    res = CliRunner().invoke(cli, ["train", str(frames), "--model", "dense", "-o", str(run), "--resume"])
    _refused(res, run, f"{run / 'train.yaml'}: lr=nan: must be a finite number >= 0")


def test_a_model_only_the_data_makes_too_big_is_refused_naming_the_data(tmp_path):
    """With the defaults' 256 bins this dense model fits the bound; the data's 300 bins take it over."""
    data = tmp_path / "f.npy"
    np.save(data, np.random.default_rng(0).standard_normal((400, 300)).astype(np.float32))
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", str(data), "--model", "dense", "-o", str(out), "context=1000",
                                   "model_config.hidden=[900]"])
    _refused(res, out, f"{data}: model_config: must be a model of at most 1,000,000,000 parameters; the dense model "
                       "of this configuration has 1,081,832,464")
    assert not out.exists()


@pytest.mark.parametrize("command", ["mel", "resynth", "extract"])
def test_signal_commands_refuse_a_huge_fft_before_allocating(tmp_path, command):
    import soundfile as sf

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(2205, np.float32) + 0.1, 22050)
    out = tmp_path / ("o.wav" if command == "resynth" else "o")
    res = CliRunner().invoke(cli, [command, str(wav), "-o", str(out), "--set", "n_fft=268435456"])
    _refused(res, out, "n_fft=268435456: must be an integer in 16..65536")
    assert not out.exists()


# --- what must still be accepted ------------------------------------------------------------------------------
def test_defaults_and_every_recipe_conf_still_validate():
    from audiovae.cli import _load_mel_config, _train_config
    from audiovae.models import available
    from audiovae.training.config import default_train_config

    MelConfig()
    TrainConfig()
    for name in available():
        default_train_config(name)
        make_config(name)
    confs = sorted(ROOT.glob("recipes/*/conf/*.yaml"))
    assert len(confs) >= 10
    for conf in confs:
        if conf.name == "train.yaml":
            cfg, _ = _train_config(str(conf), None, ())
            make_config(cfg.model, cfg.model_config)
        else:
            _load_mel_config(str(conf))
