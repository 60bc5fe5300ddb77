"""The ``audiovae`` command line: thin click wrappers over the library."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from audiovae import __version__
from audiovae.errors import AudioVAEError


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)


def friendly_errors(fn):
    """Turn the package's own errors into one line on stderr and exit status 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AudioVAEError as exc:
            _fail(str(exc))
            sys.exit(1)
        except KeyboardInterrupt:
            _fail("interrupted")
            sys.exit(130)

    return wrapper


def _load_mel_config(config: str | None, overrides: tuple[str, ...] = ()):
    from audiovae.audio.config import MelConfig
    from audiovae.config import apply_overrides, from_dict, load_yaml

    cfg = MelConfig()
    if config:
        data = load_yaml(config)
        data = data.get("mel", data)
        cfg = from_dict(MelConfig, data, config)
    return apply_overrides(cfg, overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="audiovae")
def cli() -> None:
    """audiovae: variational autoencoders on 256-bin log-mel speech, with a Griffin-Lim vocoder.

    Start with `audiovae demo -o demo_out` to see the whole pipeline on a built-in corpus.
    """


@cli.command("mel", short_help="Audio files -> log-mel files (.mel.npz) with their configuration.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out-dir", required=True, type=click.Path(path_type=Path), help="Folder for the .mel.npz files.")
@click.option("--config", type=click.Path(dir_okay=False), help="MelConfig YAML (default: 22050 Hz, 256 bins).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a MelConfig field, e.g. --set n_mels=80.")
@click.option("--strict", is_flag=True, help="Stop at the first bad input instead of skipping it.")
@friendly_errors
def mel_cmd(inputs, out_dir, config, overrides, strict):
    """Compute the log-mel of each audio file (or every audio file in a folder).

    Each input becomes OUT_DIR/<name>.mel.npz holding the log-mel and the
    configuration that made it, so `audiovae vocode` needs no settings.
    """
    from audiovae.tasks.signal import mel_files

    cfg = _load_mel_config(config, overrides)
    ok, bad = mel_files(inputs, out_dir, cfg, strict=strict, progress=True)
    _summary(ok, bad, "log-mel file")


@cli.command("vocode", short_help="Log-mel files -> audio with the Griffin-Lim vocoder.")
@click.argument("mels", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out-dir", required=True, type=click.Path(path_type=Path), help="Folder for the .wav files.")
@click.option("--iters", default=32, show_default=True, type=click.IntRange(0, 10000), help="Griffin-Lim iterations.")
@click.option(
    "--init",
    default="pghi",
    show_default=True,
    type=click.Choice(["pghi", "random", "zeros"]),
    help="Initial phase: phase-gradient heap integration, random or zero.",
)
@click.option("--momentum", default=0.99, show_default=True, type=float, help="Fast Griffin-Lim momentum (0 = classic).")
@click.option("--config", type=click.Path(dir_okay=False), help="MelConfig YAML, only for bare .npy inputs.")
@click.option("--strict", is_flag=True, help="Stop at the first bad input instead of skipping it.")
@friendly_errors
def vocode_cmd(mels, out_dir, iters, init, momentum, config, strict):
    """Turn log-mel files (.mel.npz from `audiovae mel`) back into audio with Griffin-Lim."""
    from audiovae.tasks.signal import vocode_files

    cfg = _load_mel_config(config) if config else None
    ok, bad = vocode_files(mels, out_dir, iters, init, momentum, cfg, strict=strict, progress=True)
    _summary(ok, bad, "wav file")


@cli.command("resynth", short_help="wav -> log-mel -> wav, with quality metrics.")
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output audio file.")
@click.option("--iters", default=32, show_default=True, type=click.IntRange(0, 10000), help="Griffin-Lim iterations.")
@click.option("--init", default="pghi", show_default=True, type=click.Choice(["pghi", "random", "zeros"]))
@click.option("--config", type=click.Path(dir_okay=False), help="MelConfig YAML (default: 22050 Hz, 256 bins).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a MelConfig field.")
@friendly_errors
def resynth_cmd(input, output, iters, init, config, overrides):
    """Run wav -> log-mel -> wav and print quality metrics for the pair.

    Metrics: spectral convergence and log-spectral distance on the STFT
    magnitude, mel-cepstral distortion, and STOI when pystoi is installed.
    """
    from audiovae.tasks.signal import resynthesize

    cfg = _load_mel_config(config, overrides)
    result = resynthesize(input, output, cfg, iters, init)
    click.echo(f"wrote {output} ({result['seconds']:.2f} s of audio at {cfg.sample_rate} Hz)")
    names = {
        "spectral_convergence": "spectral convergence",
        "log_spectral_distance_db": "log-spectral distance (dB)",
        "mel_cepstral_distortion_db": "mel-cepstral distortion (dB)",
        "stoi": "STOI",
    }
    for key, label in names.items():
        if key in result["metrics"]:
            click.echo(f"  {label:<30} {result['metrics'][key]:.4f}")
    click.echo(f"  {'vocoder time (s)':<30} {result['vocoder_seconds']:.3f}")


def _summary(ok: list, bad: list, what: str) -> None:
    click.echo(f"wrote {len(ok)} {what}(s)" + (f"; skipped {len(bad)} bad input(s):" if bad else ""))
    for path, problem in bad:
        _fail(f"{path}: {problem}")
    if bad:
        sys.exit(1)


@cli.command("extract", short_help="Audio folder -> feature cache for training.")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--out-dir", required=True, type=click.Path(path_type=Path), help="Feature cache folder.")
@click.option("--config", type=click.Path(dir_okay=False), help="MelConfig YAML (default: 22050 Hz, 256 bins).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a MelConfig field.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0, 64), help="DataLoader workers.")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 0.9), help="Files held out for validation.")
@click.option("--strict", is_flag=True, help="Stop at the first bad file instead of skipping it.")
@click.option("--overwrite", is_flag=True, help="Rebuild a cache that was made with another configuration.")
@friendly_errors
def extract_cmd(source, out_dir, config, overrides, workers, val_fraction, strict, overwrite):
    """Compute a log-mel feature cache from a folder of audio files (or a list file, one path per line).

    Writes a memory-mapped feats.f32, index.json, per-bin stats.npz and the MelConfig.
    Unreadable files are skipped and listed in report.txt. Re-running an
    interrupted extraction computes only what is missing.
    """
    from audiovae.data.features import extract

    cfg = _load_mel_config(config, overrides)
    res = extract(source, out_dir, cfg, workers=workers, val_fraction=val_fraction, strict=strict, overwrite=overwrite)
    click.echo(f"{res.n_utterances} utterances, {res.n_frames} frames ({res.n_frames / cfg.frame_rate:.1f} s) in {out_dir}")
    if res.skipped:
        click.echo(f"skipped {len(res.skipped)} file(s) (listed in {Path(out_dir) / 'report.txt'}):")
        for src, problem in res.skipped:
            _fail(f"{src}: {problem}")


@cli.command("train", short_help="Train a VAE on a feature cache or image folder.")
@click.argument("data", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--model", "model_name", default=None, help="Registered model: dense, conv, mnist or cifar.")
@click.option("-o", "--out-dir", required=True, type=click.Path(path_type=Path), help="Run folder (becomes a model directory).")
@click.option("--config", type=click.Path(dir_okay=False), help="TrainConfig YAML.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after this many optimiser steps.")
@click.option("--resume", is_flag=True, help="Continue the run in OUT_DIR from its last checkpoint.")
@friendly_errors
def train_cmd(data, overrides, model_name, out_dir, config, max_steps, resume):
    """Train a VAE on a feature cache (`audiovae extract`) or an image folder (MNIST IDX / CIFAR-10).

    Any TrainConfig field can be set as KEY=VALUE, model fields as
    model_config.KEY=VALUE (e.g. beta=0.5 kl_warmup=cyclical model_config.latent_dim=16).
    Launch with `torchrun --nproc_per_node=N -m audiovae train ...` for DistributedDataParallel.
    """
    from audiovae.config import apply_overrides, from_dict, load_yaml, to_dict
    from audiovae.models.registry import make_config
    from audiovae.training import TrainConfig, train
    from audiovae.training.config import default_train_config

    if resume:
        if overrides or config or model_name:
            raise click.UsageError("--resume continues with the saved configuration; only --max-steps may change")
        summary = train(data, out_dir, None, resume=True, max_steps=max_steps)
    else:
        base = load_yaml(config) if config else {}
        model_over = [o for o in overrides if o.startswith("model=")]
        if model_name:
            model_over.append(f"model={model_name}")
        model = apply_overrides(from_dict(TrainConfig, {"model": base.get("model", TrainConfig.model)}, config), model_over).model
        # the model's registered training defaults, then the YAML, then KEY=VALUE
        cfg = from_dict(TrainConfig, {**to_dict(default_train_config(model)), **base}, config)
        cfg = apply_overrides(cfg, model_over)
        # fill in the chosen model's defaults so model_config.KEY overrides have somewhere to land
        cfg = from_dict(TrainConfig, {**to_dict(cfg), "model_config": to_dict(make_config(cfg.model, cfg.model_config))})
        cfg = apply_overrides(cfg, [o for o in overrides if not o.startswith("model=")])
        summary = train(data, out_dir, cfg, max_steps=max_steps)
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        click.echo(f"trained {summary['step']} steps; best validation ELBO {summary['best_val_elbo']:.2f} nats/item; "
                   f"run in {out_dir}")


@cli.command("evaluate", short_help="ELBO, IWAE bound, KL and active units of a model.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--k", "k", default=64, show_default=True, type=click.IntRange(1), help="Importance samples for the IWAE bound.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None, help="Default: val (features), test (images).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Evaluate only the first N items.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the figures as JSON.")
@friendly_errors
def evaluate_cmd(run_dir, data, k, split, limit, batch_size, json_out):
    """ELBO, IWAE bound, KL, reconstruction term and active units of a trained model (RUN_DIR/best if present)."""
    import json

    from audiovae.tasks.evaluate import evaluate, format_table
    from audiovae.utils import atomic_write_text

    res = evaluate(run_dir, data, k=k, split=split, limit=limit, batch_size=batch_size)
    click.echo(format_table(res))
    if json_out:
        atomic_write_text(json_out, json.dumps(res, indent=2))
        click.echo(f"wrote {json_out}")


@cli.command("reconstruct", short_help="Pass an audio file through a trained mel VAE.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("audio", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output audio file.")
@friendly_errors
def reconstruct_cmd(run_dir, audio, output):
    """Pass an audio file through a trained mel VAE and the vocoder (the model directory is all it needs)."""
    from audiovae.tasks.generate import reconstruct_file

    click.echo(f"wrote {reconstruct_file(run_dir, audio, output)}")


@cli.command("sample", short_help="Generate audio from a mel VAE's prior.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out-dir", required=True, type=click.Path(path_type=Path))
@click.option("-n", "n", default=4, show_default=True, type=click.IntRange(1), help="How many samples.")
@click.option("--seconds", default=2.0, show_default=True, type=click.FloatRange(0.1), help="Length of each sample.")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(0), help="Prior standard deviation.")
@click.option("--seed", default=0, show_default=True, type=int)
@friendly_errors
def sample_cmd(run_dir, out_dir, n, seconds, temperature, seed):
    """Draw utterances from a mel VAE's prior and vocode them to wav files."""
    import torch

    from audiovae.audio.io import save_audio
    from audiovae.tasks.generate import MelModel

    torch.manual_seed(seed)
    mm = MelModel.load(run_dir)
    for i, (y, _) in enumerate(mm.sample(n, seconds, temperature)):
        click.echo(f"wrote {save_audio(Path(out_dir) / f'sample_{i}.wav', y, mm.sample_rate)}")


@cli.command("demo", short_help="The whole pipeline on a built-in corpus (start here).")
@click.option("-o", "--out-dir", default="demo_out", show_default=True, type=click.Path(path_type=Path))
@click.option("--minutes", default=3.0, show_default=True, type=click.FloatRange(0.05), help="Training time limit.")
@click.option("--utterances", default=96, show_default=True, type=click.IntRange(4), help="Size of the synthetic corpus.")
@click.option("--max-steps", default=3000, show_default=True, type=click.IntRange(1), help="Training step limit.")
@friendly_errors
def demo_cmd(out_dir, minutes, utterances, max_steps):
    """The whole pipeline on a built-in speech-like corpus: synthesise, extract, train a ConvVAE, listen.

    Writes reconstructions, prior samples and an interpolation as wav files,
    mel-spectrogram pictures, loss curves and SUMMARY.md into OUT_DIR.
    """
    from audiovae.tasks.demo import run_demo

    res = run_demo(out_dir, utterances=utterances, minutes=minutes, max_steps=max_steps, log=click.echo)
    click.echo(f"done in {res['seconds'] / 60:.1f} min; read {Path(out_dir) / 'SUMMARY.md'}")


def main() -> None:
    cli(prog_name="audiovae")


if __name__ == "__main__":
    main()
