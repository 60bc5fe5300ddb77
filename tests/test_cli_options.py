"""One command line: every shared option means the same in every command that has it (issue 17).

The first tests walk click's command tree (what `audiovae CMD --help` shows); the others run the rules
that walk cannot see: -o is a file for one input and a folder for many, train's --set/--seed/--device,
the recipes' ESPnet spelling.
"""

from __future__ import annotations

import os
import subprocess
from collections import defaultdict
from pathlib import Path

import click
import numpy as np
import pytest
import soundfile as sf
import yaml
from click.testing import CliRunner

from audiovae.cli import cli

ROOT = Path(__file__).resolve().parents[1]

# what each group of commands must offer
VOCODER_COMMANDS = {"vocode", "resynth", "reconstruct", "convert", "sample", "interpolate", "report", "repair", "demo"}
MODEL_COMMANDS = {"train", "evaluate", "encode", "probe", "analyze", "reconstruct", "convert", "sample", "interpolate", "report",
                  "repair", "vocode"}
RANDOM_COMMANDS = {"train", "sample", "repair", "report", "evaluate", "analyze", "probe"}
SETTINGS_COMMANDS = {"mel", "vocode", "resynth", "extract", "train"}
# options that are one shared declaration: name, type, default and help all equal
IDENTICAL = {"--device", "--vocoder-iters", "--seed", "--config", "--set", "--checkpoint", "--k", "--json", "--init",
             "--strict", "--label-key"}
# shared names whose defaults differ on purpose, and why (reviewed; a new difference fails the test)
DEFAULT_DIFFERS = {
    "--output": "the demo alone has a default folder (demo_out)",
    "--batch-size": "vocode counts files vocoded together (8), evaluate counts items (64)",
    "--limit": "analyze compares runs and caps its cost at 1000 items; the others take everything unless told",
    "--max-steps": "the demo is a fixed-budget tour (3000 steps or --minutes); train runs until its config stops it",
    "--val-fraction": "extract holds out only validation (0.1); prepare holds out validation and test (0.05 each)",
    "-n": "repair: test images to repair (200); sample: utterances to draw (4)",
}


def _options() -> dict[str, dict[str, click.Option]]:
    """{long option name: {command: option}} over every command of the CLI."""
    out: dict[str, dict[str, click.Option]] = defaultdict(dict)
    for name, cmd in cli.commands.items():
        for p in cmd.params:
            if isinstance(p, click.Option):
                out[max(p.opts, key=len)][name] = p
    return out


def _type(p: click.Option) -> str:
    t = p.type
    return f"{type(t).__name__}:{sorted(vars(t).items()) if not isinstance(t, click.Path) else ''}"


def test_every_help_page_renders():
    for name, cmd in cli.commands.items():
        res = CliRunner().invoke(cli, [name, "--help"])
        assert res.exit_code == 0 and "Usage:" in res.output, (name, res.output)


def test_shared_options_agree_across_commands():
    opts = _options()
    assert "--out-dir" not in opts and "--iters" not in opts, "old spellings are gone"
    for name, cmd in cli.commands.items():
        for p in cmd.params:
            if "-o" in getattr(p, "opts", ()):
                assert p.opts == ["-o", "--output"], (name, p.opts)
    problems = []
    for long, by_cmd in opts.items():
        if len(by_cmd) < 2:
            continue
        for what, key in (("type", _type), ("default", lambda p: repr(p.default)), ("flag", lambda p: p.is_flag),
                          ("multiple", lambda p: p.multiple), ("spelling", lambda p: tuple(sorted(p.opts))),
                          ("help", lambda p: p.help)):
            if what == "help" and long not in IDENTICAL:
                continue  # e.g. -o says which file or folder it is
            if what == "type" and long == "--output":
                continue  # a file for some commands, a folder for others (click.Path either way)
            values = defaultdict(list)
            for cmd, p in by_cmd.items():
                values[key(p)].append(cmd)
            if len(values) > 1 and not (what == "default" and long in DEFAULT_DIFFERS):
                problems.append(f"{long} {what}: {dict(values)}")
    assert not problems, "\n".join(problems)
    assert set(DEFAULT_DIFFERS) <= set(opts), "a reviewed difference whose option is gone"


@pytest.mark.parametrize("option,commands", [("--vocoder-iters", VOCODER_COMMANDS), ("--device", MODEL_COMMANDS),
                                             ("--seed", RANDOM_COMMANDS), ("--config", SETTINGS_COMMANDS),
                                             ("--set", SETTINGS_COMMANDS)])
def test_every_command_of_a_kind_has_its_option(option, commands):
    have = set(_options()[option])
    assert commands <= have, f"{option} missing on {sorted(commands - have)}"
    assert set(cli.commands) >= commands


def test_seed_default_is_zero_and_k_agrees():
    opts = _options()
    assert {p.default for p in opts["--seed"].values()} == {0}
    assert opts["--k"]["evaluate"].default == opts["--k"]["analyze"].default
    assert opts["--chain-iters"].keys() == {"repair"}


# --- -o: a file for one input, a folder for many ---------------------------------------------------------------------
def _tone(path: Path, seconds: float = 0.3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(22050 * seconds)) / 22050
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050)
    return path


def _ok(res):
    assert res.exit_code == 0, res.output
    return res


def test_output_is_a_file_for_one_input_and_a_folder_for_many(tmp_path):
    a, b = _tone(tmp_path / "in" / "a.wav"), _tone(tmp_path / "in" / "sub" / "b.wav")
    run = CliRunner().invoke
    # one input: the file named
    _ok(run(cli, ["mel", str(a), "-o", str(tmp_path / "a.mel.npz")]))
    _ok(run(cli, ["vocode", str(tmp_path / "a.mel.npz"), "-o", str(tmp_path / "v.wav"), "--vocoder-iters", "1"]))
    assert (tmp_path / "v.wav").is_file() and sf.info(tmp_path / "v.wav").samplerate == 22050
    # an existing folder for one input, or a name of another kind: refused in one line, nothing written
    for args in (["resynth", str(a), "-o", str(tmp_path / "in")], ["vocode", str(tmp_path / "a.mel.npz"), "-o",
                                                                   str(tmp_path / "in")],
                 ["mel", str(a), "-o", str(tmp_path / "m")]):
        res = run(cli, args)
        assert res.exit_code == 1 and res.output.count("\n") == 1 and "one input makes one output file" in res.output
    assert sorted(p.name for p in (tmp_path / "in").rglob("*")) == ["a.wav", "b.wav", "sub"]
    assert not (tmp_path / "m").exists()
    # a missing input (a mistyped folder?) is a bad input, named, not a question about -o
    res = run(cli, ["mel", str(tmp_path / "nosuch"), "-o", str(tmp_path / "m")])
    assert res.exit_code == 1 and f"error: {tmp_path / 'nosuch'}: no such file" in res.output
    # a folder, or a list file: the outputs mirror the inputs in a folder
    _ok(run(cli, ["resynth", str(tmp_path / "in"), "-o", str(tmp_path / "R"), "--vocoder-iters", "1"]))
    assert sorted(str(p.relative_to(tmp_path / "R")) for p in (tmp_path / "R").rglob("*.wav")) == ["a.wav", "sub/b.wav"]
    (tmp_path / "list.txt").write_text("in/a.wav\nin/sub/b.wav\n")
    _ok(run(cli, ["mel", str(tmp_path / "list.txt"), "-o", str(tmp_path / "L")]))
    assert sorted(p.name for p in (tmp_path / "L").iterdir()) == ["a.mel.npz", "b.mel.npz"]


# --- train: --set, --seed and --device are its settings too ----------------------------------------------------------
def test_train_takes_set_seed_and_device(tmp_path):
    data = tmp_path / "f.npy"
    np.save(data, np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32))
    conf = tmp_path / "t.yaml"
    conf.write_text("seed: 3\nbatch_size: 4\n")
    res = CliRunner().invoke(cli, ["train", str(data), "--model", "dense", "-o", str(tmp_path / "run"), "--max-steps",
                                   "1", "--config", str(conf), "--set", "model_config.hidden=[8]", "--set",
                                   "context=4", "--seed", "7", "--device", "cpu"])
    _ok(res)
    saved = yaml.safe_load((tmp_path / "run" / "train.yaml").read_text())
    assert saved["seed"] == 7 and saved["device"] == "cpu" and saved["batch_size"] == 4
    assert saved["model_config"]["hidden"] == [8] and saved["context"] == 4
    # --seed not given: the YAML's seed stays
    _ok(CliRunner().invoke(cli, ["train", str(data), "--model", "dense", "-o", str(tmp_path / "run2"), "--max-steps",
                                 "1", "--config", str(conf), "--set", "model_config.hidden=[8]", "context=4"]))
    assert yaml.safe_load((tmp_path / "run2" / "train.yaml").read_text())["seed"] == 3


# --- recipes: the ESPnet/icefall spelling ----------------------------------------------------------------------------
def test_recipes_take_the_espnet_spelling(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUDIOVAE": "false"}  # no stage runs: no command is called

    def recipe(*args):
        return subprocess.run(["bash", str(ROOT / "recipes" / "ljspeech" / "run.sh"), *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=60)

    for spelling in (("--data_dir", "--exp_dir", "--stop_stage"), ("--data-dir", "--exp-dir", "--stop-stage")):
        d, e, stop = spelling
        r = recipe(d, tmp_path / "data", e, tmp_path / "exp", "--stage", "9", stop, "8", "--set", "max_steps=5")
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "exp" / "stamps").is_dir()
    r = recipe("--exp_dir", tmp_path / "exp", "--stop_stage", "two")
    assert r.returncode == 1 and "--stage and --stop-stage take numbers" in r.stderr
    r = recipe("--exp_dir", tmp_path / "exp", "--set", "nokeyvalue")
    assert r.returncode == 1 and "--set needs key=value" in r.stderr
