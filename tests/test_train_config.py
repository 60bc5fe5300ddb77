"""Config resolution lives in the library: ``resolve_train_config`` + ``train()`` trains exactly what
``audiovae train`` does (the same train.yaml), and resuming takes the same explicitly-set fields."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from audiovae.cli import cli
from audiovae.training import resolve_train_config, train

# (CLI arguments after DATA -o RUN --max-steps 1; the same as library arguments: config, model, overrides, given;
#  fields the saved train.yaml must hold)
CASES = [
    (["--model", "dense", "--config", "{conf}", "--set", "model_config.hidden=[8]", "context=4", "--seed", "7",
      "--device", "cpu"],
     ("{conf}", "dense", ["context=4", "model_config.hidden=[8]"], {"seed": 7, "device": "cpu"}),
     {"seed": 7, "device": "cpu", "batch_size": 4, "context": 4, "model_config.hidden": [8], "model_config.latent_dim": 5}),
    (["model=dense", "--set", "lr=0.01", "--set", "model_config.latent_dim=3", "--set", "model_config.hidden=[8]",
      "--config", "{conf}"],
     ("{conf}", None, ["model=dense", "lr=0.01", "model_config.latent_dim=3", "model_config.hidden=[8]"], None),
     {"model": "dense", "seed": 3, "lr": 0.01, "batch_size": 4, "model_config.latent_dim": 3}),
    (["--model", "dense", "batch_size=8", "--set", "model_config.hidden=[8]", "--set", "kl_warmup=none",
      "--device", "cpu"],
     (None, "dense", ["batch_size=8", "model_config.hidden=[8]", "kl_warmup=none"], {"device": "cpu"}),
     {"seed": 0, "device": "cpu", "batch_size": 8, "kl_warmup": "none", "model_config.hidden": [8]}),
]


@pytest.mark.parametrize("cli_args, lib_args, expect", CASES)
def test_the_library_trains_what_the_cli_trains(tmp_path, cli_args, lib_args, expect):
    data = tmp_path / "f.npy"
    np.save(data, np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32))
    conf = tmp_path / "t.yaml"
    conf.write_text("seed: 3\nbatch_size: 4\nmodel_config:\n  latent_dim: 5\n")
    fill = lambda v: str(conf) if v == "{conf}" else v  # noqa: E731
    res = CliRunner().invoke(cli, ["train", str(data), "-o", str(tmp_path / "cli"), "--max-steps", "1",
                                   *map(fill, cli_args)])
    assert res.exit_code == 0, res.output
    config, model, overrides, given = lib_args
    cfg, explicit = resolve_train_config(fill(config) if config else None, model, overrides, given)
    train(data, tmp_path / "lib", cfg, progress=False, max_steps=1)
    by_cli = yaml.safe_load((tmp_path / "cli" / "train.yaml").read_text())
    by_lib = yaml.safe_load((tmp_path / "lib" / "train.yaml").read_text())
    assert by_lib == by_cli
    flat = {**by_cli, **{f"model_config.{k}": v for k, v in by_cli["model_config"].items()}}
    assert {k: flat[k] for k in expect} == expect  # and both are what was asked for
    # the explicitly set fields are what a resume checks against the saved run: resuming with them is accepted
    assert explicit["model"] == "dense" and "model_config.hidden" in explicit
    assert "seed" not in explicit or explicit["seed"] == by_cli["seed"]
    assert train(data, tmp_path / "lib", None, resume=True, progress=False, max_steps=2, given=explicit)["step"] == 2


def test_model_fields_nobody_set_stay_open_for_the_data():
    cfg, explicit = resolve_train_config(None, "dense", ["model_config.hidden=[8]"])
    assert cfg.model_config == {"hidden": [8]}  # latent_dim, n_mels...: the model's defaults or the data's, later
    assert explicit == {"model": "dense", "model_config.hidden": [8]}
