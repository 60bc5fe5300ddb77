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


@cli.command("mel")
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


@cli.command("vocode")
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


@cli.command("resynth")
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


def _register_training_commands() -> None:
    try:
        from audiovae import cli_train  # noqa: F401
    except ImportError:  # pragma: no cover
        pass


def main() -> None:
    _register_training_commands()
    cli(prog_name="audiovae")


if __name__ == "__main__":
    main()
