"""The ``audiovae`` command line: thin click wrappers over the library."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from audiovae import __version__
from audiovae.audio.config import VOCODER_ITERS, VOCODER_ITERS_PARALLEL_PGHI
from audiovae.errors import AudioVAEError, DataError
from audiovae.utils import rank

# Options shared by several commands: one name, one meaning, one default everywhere (tests/test_cli_options.py
# walks every command's --help and checks it).
_DEVICE = click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu or cuda.")
ITERS_HELP = (f"Griffin-Lim iterations of the vocoder [default: {VOCODER_ITERS}; {VOCODER_ITERS_PARALLEL_PGHI} when "
              "the initial phase is the parallel PGHI (pghi on a GPU, or pghi_parallel)].")
_VOCODER_ITERS = click.option("--vocoder-iters", default=None, type=click.IntRange(0, 10000), help=ITERS_HELP)
_SEED = click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
                     help="Seed of the random numbers drawn (the same seed gives the same result).")
_CONFIG = click.option("--config", type=click.Path(dir_okay=False),
                       help="YAML file of this command's settings (the keys of --set; see the command's help).")
_SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                    help="Change one setting (repeatable; applied after --config). The keys are listed in the "
                         "command's help.")
_PRIOR = click.option("--prior", "prior", type=click.Choice(["auto", "learned", "standard"]), default="auto",
                      show_default=True, help="The prior over the latent: learned = the run's learned prior "
                      "(audiovae train-prior RUN), standard = N(0, I) (what the VAE trained against), auto = learned "
                      "when the run has one.")
_INIT = click.option(
    "--init",
    default="pghi",
    show_default=True,
    type=click.Choice(["pghi", "pghi_heap", "pghi_parallel", "random", "zeros"]),
    help="Initial phase: phase-gradient integration (pghi: the heap on a CPU, the parallel scan on a GPU), "
         "random or zero.",
)
_JSON = click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
                     help="Also write the result as JSON to this file.")
_STRICT = click.option("--strict", is_flag=True, help="Stop at the first bad input instead of skipping it.")
IO_HELP = ("Several inputs, a folder or a list file (.txt, one path per line): a folder, each output mirroring its "
           "input's relative path.")


def _output(help: str, **kw):
    """``-o/--output``: the one spelling of a command's output (a file, or a folder as its help says)."""
    return click.option("-o", "--output", "output", type=click.Path(path_type=Path), help=help, **kw)


def _given(name: str) -> bool:
    """Whether the current command's option ``name`` was given on the command line (not its default)."""
    from click.core import ParameterSource

    return click.get_current_context().get_parameter_source(name) not in (ParameterSource.DEFAULT, None)

_OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace output files that already exist (an input "
                          "is never written over, even with this flag).")


def _refuse_inputs(outputs, *inputs) -> None:
    """Refuse, before any work, an output file that is one of the command's inputs (other files are replaced)."""
    from audiovae.utils import check_output_file

    for out in outputs:
        if out is not None and not Path(out).is_dir():
            check_output_file(out, [i for i in inputs if i is not None], overwrite=True)


_THREADS = click.option("--threads", default=0, show_default=True, type=click.IntRange(0),
                        help="CPU threads; 0 = auto: the CPUs this process may use, or 1 when another busy process "
                             "makes that faster (see AUDIOVAE_THREADS_POLICY in audiovae/threads.py).")


def _threads(threads: int, numba: bool = True) -> None:
    import os

    from audiovae.threads import apply

    apply(threads, numba=numba, share=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # torchrun: split the CPUs


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)


def friendly_errors(fn):
    """Turn the package's own errors into one line on stderr and exit status 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _say_upsampled(clear=True)
        try:
            return fn(*args, **kwargs)
        except AudioVAEError as exc:
            _say_upsampled()  # before the error line
            _fail(str(exc))
            sys.exit(1)
        except KeyboardInterrupt:
            _fail("interrupted")
            sys.exit(130)
        finally:
            _say_upsampled()  # also when the command exits 1 after listing bad inputs

    return wrapper


def _say_upsampled(clear: bool = False) -> None:
    """Once per command, on stderr: how many input files were resampled up (their upper band is empty)."""
    from audiovae.audio.io import take_upsampled, upsampling_notice

    counts = take_upsampled()
    if clear:
        return
    ctx = click.get_current_context(silent=True)
    # a model command works at its model's rate: there --set sample_rate does not apply
    keep = ctx is None or not any(p.name == "run_dir" for p in ctx.command.params)
    for line in upsampling_notice(counts, keep_hint=keep):
        click.echo(f"note: {line}", err=True)


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
@_output("One input file: the .mel.npz file to write. " + IO_HELP, required=True)
@_CONFIG
@_SET
@_STRICT
@_OVERWRITE
@_THREADS
@friendly_errors
def mel_cmd(inputs, output, config, overrides, strict, overwrite, threads):
    """Compute the log-mel of each audio file (or every audio file in a folder or list file).

    `mel a.wav -o a.mel.npz` writes one file; with several inputs, a folder or a
    list, each input becomes OUTPUT/<name>.mel.npz, the files of a folder keeping
    their sub-folders (DIR/a/x.wav -> OUTPUT/a/x.mel.npz). Each holds the log-mel
    and the configuration that made it, so `audiovae vocode` needs no settings.
    Two inputs that would land on one output, or an existing output without
    --overwrite, are refused before anything is written.

    Settings (--config YAML keys, or a `mel:` section; --set KEY=VALUE): the
    MelConfig fields (sample_rate 22050, n_mels 256, n_fft, hop_length, ...).
    """
    _threads(threads)
    from audiovae.tasks.signal import mel_files

    cfg = _load_mel_config(config, overrides)
    ok, bad = mel_files(inputs, output, cfg, strict=strict, progress=True, overwrite=overwrite)
    _summary(ok, bad, "log-mel file")


@cli.command("vocode", short_help="Log-mel files -> audio with the Griffin-Lim vocoder.")
@click.argument("mels", nargs=-1, required=True, type=click.Path(path_type=Path))
@_output("One input file: the audio file to write (.wav, .flac...). " + IO_HELP, required=True)
@_VOCODER_ITERS
@_INIT
@click.option("--momentum", default=0.99, show_default=True, type=float, help="Fast Griffin-Lim momentum (0 = classic).")
@_CONFIG
@_SET
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1),
              help="Files of the same configuration vocoded together (similar lengths; each as if alone).")
@_DEVICE
@_STRICT
@_OVERWRITE
@_THREADS
@friendly_errors
def vocode_cmd(mels, output, vocoder_iters, init, momentum, config, overrides, batch_size, device, strict, overwrite,
               threads):
    """Turn log-mel files (.mel.npz from `audiovae mel`) back into audio with Griffin-Lim.

    `vocode a.mel.npz -o a.wav` writes one file; with several inputs, a folder or
    a list, each input becomes OUTPUT/<name>.wav, named as `audiovae mel` names
    its outputs (a folder's sub-folders kept). An existing file (say the
    recording a log-mel was made from) is replaced only with --overwrite.

    Settings (--config, --set): the MelConfig of bare .npy inputs (a .mel.npz
    carries its own).
    """
    _threads(threads)
    from audiovae.tasks.signal import vocode_files
    from audiovae.training.checkpoint import pick_device

    cfg = _load_mel_config(config, overrides) if config or overrides else None
    ok, bad = vocode_files(mels, output, vocoder_iters, init, momentum, cfg, strict=strict, progress=True,
                           batch_size=batch_size, device=pick_device(device), overwrite=overwrite)
    _summary(ok, bad, "wav file")


@cli.command("resynth", short_help="wav -> log-mel -> wav, with quality metrics.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@_output("One input file: the audio file to write (.wav, .flac...). " + IO_HELP, required=True)
@_VOCODER_ITERS
@_INIT
@_CONFIG
@_SET
@_OVERWRITE
@_THREADS
@friendly_errors
def resynth_cmd(inputs, output, vocoder_iters, init, config, overrides, overwrite, threads):
    """Run wav -> log-mel -> wav and print quality metrics for each pair.

    Metrics: spectral convergence and log-spectral distance on the STFT
    magnitude, mel-cepstral distortion, and STOI when pystoi is installed. They
    cover the input's own band: a 16 kHz file read at 22050 Hz is scored over
    0-8000 Hz (the band above is empty in it), and the output says which band.
    Outputs are named as `audiovae mel` names its own (with the input's suffix
    replaced by .wav when OUTPUT is a folder).

    Settings (--config, --set): the MelConfig fields, as for `audiovae mel`.
    """
    _threads(threads)
    from audiovae.tasks.signal import WRITABLE_AUDIO, plan_io, resynthesize

    cfg = _load_mel_config(config, overrides)
    plan = plan_io(inputs, output, WRITABLE_AUDIO, overwrite)
    names = {
        "spectral_convergence": "spectral convergence",
        "log_spectral_distance_db": "log-spectral distance (dB)",
        "mel_cepstral_distortion_db": "mel-cepstral distortion (dB)",
        "stoi": "STOI",
    }
    for src, dst in plan:
        result = resynthesize(src, dst, cfg, vocoder_iters, init, overwrite=overwrite)
        top, src_sr = result["metrics"]["band_max_hz"], result["source_rate"]
        band = f"the input's band: it is {src_sr} Hz audio" if src_sr < cfg.sample_rate else "the whole band"
        click.echo(f"wrote {dst} ({result['seconds']:.2f} s of audio at {cfg.sample_rate} Hz); metrics over "
                   f"0-{top:g} Hz ({band}):")
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


def _corpus_names(kind: str) -> list[str]:
    from audiovae.data.corpora import corpus_names  # the registry (a light import)

    return list(corpus_names(kind))


@cli.command("prepare", short_help="Corpus on disk -> manifest.tsv (utterances, speakers, labels, text, splits).")
@click.argument("corpus", type=click.Choice(_corpus_names("prepare")), metavar="CORPUS")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for manifest.tsv and report.txt.")
@click.option("--split-by", type=click.Choice(["file", "speaker"]), default=None,
              help="For corpora without official splits: hold out files (default) or whole speakers.")
@click.option("--val-fraction", default=0.05, show_default=True, type=click.FloatRange(0, 0.9),
              help="Share of files (or speakers) for validation, where the corpus has no official split.")
@click.option("--test-fraction", default=0.05, show_default=True, type=click.FloatRange(0, 0.9),
              help="Share of files (or speakers) for test, where the corpus has no official split.")
@click.option("--subdirs", type=click.Choice(["none", "speaker", "label"]), default="none", show_default=True,
              help="folder corpus: what the first level of sub-folders names.")
@_STRICT
@friendly_errors
def prepare_cmd(corpus, data_dir, out_dir, split_by, val_fraction, test_fraction, subdirs, strict):
    """Read CORPUS in its official layout at DATA_DIR and write OUTPUT/manifest.tsv.

    \b
    CORPUS is one of:
      ljspeech        LJSpeech-1.1 (metadata.csv, wavs/); one speaker
      vctk            VCTK 0.92 (wav48_silence_trimmed/pXXX/*_mic1.flac, txt/, speaker-info.txt)
      librispeech     LibriSpeech root or one subset; official splits train-*/dev-*/test-*
      speechcommands  Speech Commands v0.02; label = keyword, official validation/testing lists
      folder          any folder of audio files (--subdirs speaker|label for one folder per speaker/label)
      wav.scp         a Kaldi data folder: wav.scp (+ utt2spk, text)
      asterisk        Debian's asterisk-core-sounds-*-g722 (/usr/share/asterisk/sounds): 4 voices, fixed split

    The manifest is a TSV (id, path, duration, sample_rate, speaker, label, text,
    split) whose header says how it was split. Feed it to `audiovae extract`.
    Unreadable files are left out and listed in OUTPUT/report.txt.
    """
    from audiovae.data.corpora import prepare
    from audiovae.utils import check_output_dir

    check_output_dir(out_dir)
    man = prepare(corpus, data_dir, out_dir, split_by=split_by, val_fraction=val_fraction, test_fraction=test_fraction,
                  subdirs=subdirs, strict=strict, progress=True)
    click.echo(man.summary())
    click.echo(f"wrote {Path(out_dir) / 'manifest.tsv'}")
    for src, problem in man.skipped:
        _fail(f"{src}: {problem}")


@cli.command("extract", short_help="Audio folder or manifest -> feature cache for training.")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path), help="Feature cache folder.")
@_CONFIG
@_SET
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0, 64), help="DataLoader workers.")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 0.9),
              help="Files held out for validation (folders, lists and lhotse manifests; a manifest from "
                   "`audiovae prepare` keeps its own splits).")
@_STRICT
@click.option("--overwrite", is_flag=True, help="Rebuild a cache that was made with another configuration.")
@click.option("--shard", default=None, metavar="I/N", help="Featurise only shard I of N (0-based); assemble later with --merge.")
@click.option("--merge", is_flag=True, help="Assemble the cache from the parts all shards wrote (same SOURCE).")
@_THREADS
@friendly_errors
def extract_cmd(source, out_dir, config, overrides, workers, val_fraction, strict, overwrite, shard, merge, threads):
    """Compute a log-mel feature cache from SOURCE: a manifest (`audiovae prepare`), a lhotse CutSet or
    RecordingSet (cuts.jsonl.gz: speakers and text from its supervisions, a cut into a longer recording
    reads only its segment), a folder of audio files, or a list file (one path per line).

    Writes a memory-mapped feats.f32, index.json (with each utterance's split,
    speaker, label and text from a manifest), per-bin stats.npz of the train split,
    and the MelConfig. Unreadable files are skipped and listed in report.txt.
    Re-running computes only what is missing and repairs a torn cache.
    Settings (--config, --set): the MelConfig fields, as for `audiovae mel`.

    \b
    Across processes or machines (all writing into one OUTPUT folder):
      audiovae extract SRC -o OUT --shard 0/4 ... --shard 3/4; then audiovae extract SRC -o OUT --merge
      torchrun --nproc_per_node=4 -m audiovae extract SRC -o OUT   (rank 0 merges after a barrier)
    """
    _threads(threads, numba=workers == 0 and not merge)  # numba runs here only without workers (no fork after it)
    from audiovae.data.features import FeatureCache, extract, merge as merge_parts, parse_shard
    from audiovae.utils import check_output_dir

    if merge and shard:
        raise click.UsageError("--merge and --shard exclude each other")
    check_output_dir(out_dir)
    if merge:
        res = merge_parts(source, out_dir, val_fraction=val_fraction)
    else:
        cfg = _load_mel_config(config, overrides)
        res = extract(source, out_dir, cfg, workers=workers, val_fraction=val_fraction, strict=strict,
                      overwrite=overwrite, shard=parse_shard(shard) if shard else None)
    if rank() != 0:
        return  # under torchrun rank 0 reports the merged cache
    if res.assembled:
        seconds = res.n_frames / FeatureCache(out_dir).mel_config.frame_rate
        click.echo(f"{res.n_utterances} utterances, {res.n_frames} frames ({seconds:.1f} s) in {out_dir}")
    else:
        click.echo(f"shard {shard}: {res.n_utterances} utterances, {res.n_frames} frames in {out_dir}; "
                   "assemble with --merge when every shard is done")
    if res.skipped:
        where = f" (listed in {Path(out_dir) / 'report.txt'})" if res.assembled else ""
        click.echo(f"skipped {len(res.skipped)} file(s){where}:")
        for src, problem in res.skipped:
            _fail(f"{src}: {problem}")


@cli.command("train", short_help="Train a VAE on a feature cache or image folder.")
@click.argument("data", type=click.Path(path_type=Path))
@click.argument("positional", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--model", "model_name", default=None, help="Registered model: dense, conv, mnist or cifar.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder (becomes a model directory).")
@_CONFIG
@_SET
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after this many optimiser steps.")
@_SEED
@_DEVICE
@click.option("--resume", is_flag=True, help="Continue the run in OUTPUT from its last checkpoint (the same command "
              "line with --resume added; only --max-steps / max_minutes may change).")
@friendly_errors
def train_cmd(data, positional, model_name, out_dir, config, overrides, max_steps, seed, device, resume):
    """Train a VAE on a feature cache (`audiovae extract`) or an image folder (MNIST IDX / CIFAR-10).

    Settings (--config YAML, --set KEY=VALUE): the TrainConfig fields, model
    fields as model_config.KEY (e.g. --set beta=0.5 --set kl_warmup=cyclical
    --set model_config.latent_dim=16). A bare KEY=VALUE after DATA is the same as
    --set KEY=VALUE. --seed and --device, when given, set the fields seed and device.
    Launch with `torchrun --nproc_per_node=N -m audiovae train ...` for DistributedDataParallel.
    With `pip install 'audiovae[tensorboard]'` the run also logs to OUTPUT/tb (scalars, and at each
    validation the log-mel and audio of validation reconstructions).

    However the run ends (--max-steps, --set max_minutes=M, early stopping, Ctrl-C or
    SIGTERM) it validates at its last step and saves, so OUTPUT/best is never
    older than the last validation. A second Ctrl-C stops at once.
    """
    from audiovae.training import train
    from audiovae.training.config import resolve_train_config
    from audiovae.utils import check_output_dir

    check_output_dir(out_dir)
    # the whole configuration in one library call (audiovae.training.config.resolve_train_config)
    cfg, given = resolve_train_config(config, model_name, (*positional, *overrides),
                                      {name: value for name, value in (("seed", seed), ("device", device)) if _given(name)})
    if resume:
        summary = train(data, out_dir, None, resume=True, max_steps=max_steps, given=given)
    else:
        summary = train(data, out_dir, cfg, max_steps=max_steps)
    if rank() == 0:
        how = ("interrupted; resume with --resume" if summary.get("interrupted")
               else "stopped at the time limit" if summary.get("time_limit")
               else "stopped early" if summary.get("stopped_early") else "done")
        click.echo(f"trained {summary['step']} steps ({how}); best validation ELBO {summary['best_val_elbo']:.2f} "
                   f"nats per {_validation_item(out_dir)}; run in {out_dir}")
        if summary.get("interrupted"):
            sys.exit(130)


def _train_config(config: str | None, model_name: str | None, overrides: tuple[str, ...]):
    """The TrainConfig a command line asks for (the library's :func:`resolve_train_config`)."""
    from audiovae.training.config import resolve_train_config

    return resolve_train_config(config, model_name, overrides)


def _validation_item(run: Path) -> str:
    """What one validation item of a run is, for the unit of its validation ELBO (as the report says it)."""
    from audiovae.config import load_yaml
    from audiovae.models.registry import model_info

    try:
        cfg = load_yaml(Path(run) / "train.yaml")
        info = model_info(cfg["model"])
    except (OSError, KeyError, TypeError, AudioVAEError):
        return "item"
    if info.kind == "image":
        return "image"
    return f"crop of up to {cfg.get('segment_frames')} frames" if info.sequence else "frame"


IWAE_K = 64  # importance samples for the IWAE bound: one default for evaluate and analyze
_K = click.option("--k", "k", default=IWAE_K, show_default=True, type=click.IntRange(1),
                  help="Importance samples for the IWAE bound.")
_CHECKPOINT = click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
                           help="best: the run's best/ (best validation ELBO); last: the latest weights.")


@cli.command("evaluate", short_help="ELBO, IWAE bound, KL and active units of a model.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@_K
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None, help="Default: val (features), test (images).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Evaluate only the first N items.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1), help="Items evaluated together.")
@_JSON
@_SEED
@_CHECKPOINT
@_DEVICE
@_PRIOR
@friendly_errors
def evaluate_cmd(run_dir, data, k, split, limit, batch_size, json_out, seed, checkpoint, device, prior):
    """ELBO, IWAE bound, KL, reconstruction term and active units of a trained model on DATA.

    Feature models use the normalisation saved with the model (not the cache's) and
    report densities of log-mel features, so figures are comparable across caches.
    With the learned prior (--prior learned, or auto when the run has one) every bound is
    against it and the KL is a Monte-Carlo estimate, so the difference to --prior standard
    is, in nats, how much better it models the latents.
    """
    from audiovae.api import load
    from audiovae.tasks.evaluate import evaluate, format_table
    from audiovae.training.checkpoint import describe
    from audiovae.utils import check_output_file

    if json_out:
        check_output_file(json_out, [data], overwrite=True)
    loaded = load(run_dir, checkpoint, device, prior=prior)
    click.echo(describe(loaded))
    res = evaluate(loaded, data, k=k, split=split, limit=limit, batch_size=batch_size, seed=seed, prior=None)
    click.echo(format_table(res))
    if json_out:
        _write_json(res, json_out, None, "evaluate")


_SPEAKER = click.option("--speaker", default=None, metavar="NAME",
                        help="A model trained with condition=speaker: whose voice (one of the training speakers; an "
                             "unknown one is refused with the list).")
_LABEL = click.option("--label", default=None, metavar="NAME",
                      help="A model trained with condition=label: which label (class) to generate as.")


def _condition(loaded, speaker: str | None, label: str | None):
    """The condition index ``(1,)`` that --speaker/--label name for a loaded model (None when neither is given)."""
    return loaded.condition_index(speaker=speaker, label=label)


@cli.command("reconstruct", short_help="Pass audio files through a trained mel VAE.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="AUDIO...")
@_output("One input file: the audio file to write (.wav, .flac...). " + IO_HELP, required=True)
@_VOCODER_ITERS
@_SPEAKER
@_LABEL
@_CHECKPOINT
@_DEVICE
@_OVERWRITE
@_THREADS
@friendly_errors
def reconstruct_cmd(run_dir, inputs, output, vocoder_iters, speaker, label, checkpoint, device, overwrite, threads):
    """Pass audio files through a trained mel VAE and the vocoder (the model directory is all it needs).

    A model trained with condition=speaker (label) decodes with the speaker (label) given by --speaker
    (--label): the inputs' own, for a reconstruction; another one converts (see `audiovae convert`).
    """
    _threads(threads)
    from audiovae.errors import ConfigError
    from audiovae.tasks.generate import MelModel, reconstruct_file
    from audiovae.tasks.signal import WRITABLE_AUDIO, plan_io
    from audiovae.training.checkpoint import describe

    plan = plan_io(inputs, output, WRITABLE_AUDIO, overwrite)
    mm = MelModel.load(run_dir, vocoder_iters=vocoder_iters, checkpoint=checkpoint, device=device)
    cond = _condition(mm.loaded, speaker, label)
    if cond is None and mm.loaded.conditions is not None:
        c = mm.loaded.conditions
        raise ConfigError(f"{mm.loaded.path} is conditioned on {c['key']}: give the inputs' --{c['key']} (this model "
                          f"knows: {', '.join(c['names'])})")
    click.echo(describe(mm.loaded))
    for src, dst in plan:
        click.echo(f"wrote {reconstruct_file(mm, src, dst, cond)}")


@cli.command("convert", short_help="Voice conversion: audio files in the voice of a training speaker.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="AUDIO...")
@_output("One input file: the audio file to write (.wav, .flac...). " + IO_HELP, required=True)
@_SPEAKER
@_LABEL
@click.option("--latents", "method", type=click.Choice(["knn", "match", "none"]), default="knn", show_default=True,
              help="How the input's latents are moved to the target before decoding with its condition: match (each "
                   "latent channel's mean and spread over the utterance set to the target's), knn (match, then each "
                   "latent frame replaced by the mean of its --neighbours nearest frames of the target's training utterances), "
                   "none.")
@click.option("--neighbours", "k", default=4, show_default=True, type=click.IntRange(1),
              help="--latents knn: nearest target frames averaged per frame.")
@click.option("--data", "data", default=None, type=click.Path(path_type=Path),
              help="--latents knn: the feature cache holding the target's utterances [default: the run's own "
                   "training cache].")
@_VOCODER_ITERS
@_SEED
@_CHECKPOINT
@_DEVICE
@_OVERWRITE
@_THREADS
@friendly_errors
def convert_cmd(run_dir, inputs, output, speaker, label, method, k, data, vocoder_iters, seed, checkpoint, device,
                overwrite, threads):
    """Say the content of each AUDIO file (its words, timing and phones) in the voice of --speaker.

    RUN is a model trained with condition=speaker (`audiovae train DATA --model conv condition=speaker`);
    --speaker is one of its training speakers (an unknown name is refused with the list, before anything is
    written). The input may be anyone's voice. Each output has exactly as many samples as its input (at the
    model's sample rate: other rates are resampled). A model trained with condition=label takes --label.
    """
    _threads(threads)
    import torch

    from audiovae.api import load
    from audiovae.errors import ConfigError
    from audiovae.tasks.generate import convert_file
    from audiovae.tasks.signal import WRITABLE_AUDIO, plan_io
    from audiovae.training.checkpoint import describe

    plan = plan_io(inputs, output, WRITABLE_AUDIO, overwrite)
    vae = load(run_dir, checkpoint, device, vocoder_iters)
    vae._need("mel", "convert")
    if vae.conditions is None:
        raise ConfigError(f"{vae.path} is not conditioned on a speaker or label: voice conversion needs a model "
                          "trained with condition=speaker")
    target = _condition(vae, speaker, label)
    if target is None:
        c = vae.conditions
        raise ConfigError(f"convert needs the target --{c['key']} (this model knows: {', '.join(c['names'])})")
    if method == "knn":  # the target's frames first: a missing cache is refused before anything is written
        vae.condition_bank(int(target[0]), data)
    torch.manual_seed(seed)
    click.echo(describe(vae))
    for src, dst in plan:
        click.echo(f"wrote {convert_file(vae, src, dst, speaker, label, method=method, data=data, k=k)}")


@cli.command("sample", short_help="Generate audio from a mel VAE's prior (learned or N(0, I)).")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the samples (sample_<i>.wav).")
@click.option("-n", "n", default=4, show_default=True, type=click.IntRange(1), help="How many samples.")
@click.option("--seconds", default=2.0, show_default=True, type=click.FloatRange(0.1), help="Length of each sample.")
@_PRIOR
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(0),
              help="Scales the prior's standard deviation (a learned prior also sharpens its choice of mixture "
              "component); below 1: more typical, less varied.")
@click.option("--frame-noise", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Learned prior: each latent frame is its chosen component's mean plus this times the "
              "component's scale (0: the mean, the clearest sound; 1: an exact draw from the prior).")
@_SPEAKER
@_LABEL
@_SEED
@_VOCODER_ITERS
@_CHECKPOINT
@_DEVICE
@_OVERWRITE
@_THREADS
@friendly_errors
def sample_cmd(run_dir, out_dir, n, seconds, prior, temperature, frame_noise, speaker, label, seed, vocoder_iters,
               checkpoint, device, overwrite, threads):
    """Draw utterances from a mel VAE's prior and vocode them to wav files (OUTPUT/sample_<i>.wav).

    A conv model with a learned prior (RUN/prior, from `audiovae train-prior RUN`) samples
    its latent frames one at a time from it: speech-like sequences, where N(0, I) draws
    every latent frame independently (noise). --seed fixes the draws.

    A model trained with condition=speaker speaks in the voice of --speaker (condition=label: --label); without
    one, each sample's speaker is drawn at random (from --seed) and said on stderr.
    """
    _threads(threads, numba=True)
    import torch

    from audiovae.audio.io import save_audio
    from audiovae.tasks.generate import MelModel
    from audiovae.training.checkpoint import describe
    from audiovae.utils import check_output_dir, check_output_file

    check_output_dir(out_dir)  # checks only: an output path that cannot be written is named first
    for i in range(n):
        check_output_file(Path(out_dir) / f"sample_{i}.wav", overwrite=overwrite)
    mm = MelModel.load(run_dir, vocoder_iters=vocoder_iters, checkpoint=checkpoint, device=device, prior=prior)
    cond = _condition(mm.loaded, speaker, label)  # an unknown speaker is refused before anything is written
    if cond is not None:
        cond = cond.expand(n)
    elif mm.loaded.conditions is not None:
        c = mm.loaded.conditions
        cond = mm.loaded.sample_conditions(n, torch.Generator(mm.loaded.device).manual_seed(seed))
        click.echo(f"note: no --{c['key']}: each sample's {c['key']} drawn at random: "
                   + ", ".join(f"sample_{i} {c['names'][int(k)]}" for i, k in enumerate(cond)), err=True)
    click.echo(describe(mm.loaded))
    which = (f"learned prior ({mm.loaded.prior_info['path']}, step {mm.loaded.prior_info.get('step')})"
             if mm.loaded.has_learned_prior else "N(0, I)")
    click.echo(f"sampling from the {which}, temperature {temperature:g}")
    for i, (y, _) in enumerate(mm.iter_samples(n, seconds, temperature, progress=True, seed=seed, cond=cond,
                                                frame_noise=frame_noise)):
        click.echo(f"wrote {save_audio(Path(out_dir) / f'sample_{i}.wav', y, mm.sample_rate)}")


@cli.command("train-prior", short_help="Train a learned prior over a conv VAE's latent sequences (for sample, repair).")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("positional", nargs=-1, metavar="[DATA] [KEY=VALUE]...")
@click.option("-o", "--output", "out_dir", default=None, type=click.Path(path_type=Path),
              help="Prior folder (default: RUN/prior, where sample, repair and evaluate look).")
@_SET
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after this many optimiser steps.")
@_SEED
@_DEVICE
@click.option("--resume", is_flag=True, help="Continue the prior in OUTPUT from its last checkpoint (only "
              "--max-steps / max_minutes may change).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly_errors
def train_prior_cmd(run_dir, positional, out_dir, overrides, max_steps, seed, device, resume, no_progress):
    """Train an autoregressive prior over the latent sequences of the conv VAE in RUN.

    The VAE stays frozen; its encoder's posteriors over DATA's train split (default:
    the cache the run was trained on) are what the prior learns to generate: a GRU
    that predicts each latent frame from the ones before as a mixture of Gaussians
    (kind=codebook, the default: 512 shared components, the GRU reading the previous
    frames' codes; kind=mixture: 8 components per frame from the previous frame
    itself). A speaker-conditioned run gets a prior conditioned on the speaker.
    Settings as KEY=VALUE (or --set): kind, hidden, layers, components, whiten,
    batch_size, crop, lr, max_steps, max_minutes, val_every, checkpoint_every, seed,
    threads, checkpoint (best|last: which VAE weights). Like train: a time limit, Ctrl-C /
    SIGTERM stop with a checkpoint, --resume continues bit for bit.
    """
    from audiovae.config import apply_overrides
    from audiovae.training.prior import PriorTrainConfig, train_prior

    data = None
    sets = list(overrides)
    for arg in positional:
        if "=" in arg and not Path(arg).exists():
            sets.append(arg)
        elif data is None:
            data = arg
        else:
            _fail(f"one DATA only (got {data!r} and {arg!r}); settings are KEY=VALUE")
    if _given("seed"):
        sets.append(f"seed={seed}")
    if max_steps is not None:
        sets.append(f"max_steps={max_steps}")
    cfg = apply_overrides(PriorTrainConfig(), sets)
    given = {k.split("=", 1)[0].strip(): getattr(cfg, k.split("=", 1)[0].strip()) for k in sets}
    summary = train_prior(run_dir, data, out_dir, cfg if not resume else None, resume=resume, given=given,
                          progress=not no_progress, device=device)
    how = ("interrupted; resume with --resume" if summary["interrupted"]
           else "stopped at the time limit" if summary["time_limit"] else "done")
    click.echo(f"trained the prior {summary['step']} steps ({how}); best validation NLL "
               f"{summary['best_val_nll_per_frame']:.2f} nats per latent frame; prior in {summary['out_dir']}")
    if summary["interrupted"]:
        sys.exit(130)


@cli.command("repair", short_help="Fill damaged images or gaps in audio with a trained VAE.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Images: a folder for damaged/repaired/original.png. Audio: the repaired audio file.")
@click.option("--mask", default="centre", show_default=True, metavar="KIND|MASK.png",
              help="Images: centre, random, left, right, scratch, or a PNG whose light pixels mark the damage.")
@click.option("--fraction", default=0.5, show_default=True, type=float, help="Images: missing fraction for --mask random.")
@click.option("-n", "n", default=200, show_default=True, type=click.IntRange(1), help="Images: repair the first N test images.")
@click.option("--gap", "gaps", multiple=True, metavar="START:END", help="Audio: a gap in seconds (repeatable).")
@click.option("--drop", type=float, default=None, help="Audio: lose each packet with this probability (packet loss).")
@click.option("--packet-ms", default=20.0, show_default=True, type=click.FloatRange(1), help="Audio: packet length for --drop.")
@click.option("--method", type=click.Choice(["auto", "mwg", "pseudo_gibbs", "oneshot"]), default="auto",
              show_default=True,
              help="mwg: Metropolis-within-Gibbs (Mattei & Frellsen 2018); pseudo_gibbs (Rezende et al. 2014); "
                   "oneshot: one decode of the damaged input (a baseline); auto: the one measured better for the "
                   "data (pseudo_gibbs for images, mwg for audio; see docs/repair.md).")
@click.option("--chain-iters", "iters", default=100, show_default=True, type=click.IntRange(1),
              help="Iterations of the repair chain (mwg, pseudo_gibbs).")
@_PRIOR
@_SEED
@_VOCODER_ITERS
@_JSON
@_CHECKPOINT
@_DEVICE
@_THREADS
@friendly_errors
def repair_cmd(run_dir, input, output, mask, fraction, n, gaps, drop, packet_ms, method, iters, prior, seed,
               vocoder_iters, json_out, checkpoint, device, threads):
    """Repair damaged data with the VAE in RUN_DIR, keeping what is observed exactly.

    \b
    Image model (mnist, cifar), INPUT an image folder:
      audiovae repair RUN IMAGE_DATA --mask centre -n 200 -o OUT --json repair.json
    repairs the first N test images and reports, for the VAE and each baseline (mean image,
    nearest training neighbour, one-shot VAE reconstruction), the error on the missing pixels.
    \b
    Mel model (dense, conv), INPUT an audio file (or a folder or list file of them):
      audiovae repair RUN IN.wav --gap 1.20:1.45 [--gap ...] -o OUT.wav
      audiovae repair RUN IN.wav --drop 0.1 -o OUT.wav
    fills the log-mel frames the gaps touch, vocodes, and writes OUT.wav (same length; outside
    each gap and a one-window crossfade the samples are the input's) and OUT.png (log-mels).
    A folder or list: OUT is a folder, each output named after its input as `audiovae mel` does.

    Given a run folder, a copy of the JSON goes to RUN_DIR/results/ for `audiovae report`.
    """
    _threads(threads)
    _refuse_inputs([output, Path(output).with_suffix(".png"), json_out], input, mask)
    from audiovae.tasks.impute import DEFAULTS
    from audiovae.models.registry import models_of
    from audiovae.tasks.repair import (
        load_run_kind,
        parse_gap,
        repair_audio,
        repair_images,
    )

    kind = load_run_kind(run_dir, checkpoint)
    if method == "auto":
        method = DEFAULTS["images" if kind in models_of("image") else "audio"]
    if kind in models_of("image"):
        if gaps or drop is not None:
            raise click.UsageError("--gap/--drop are for audio; RUN_DIR holds an image model")
        res = repair_images(run_dir, input, mask, n, output, json_out, method, iters, fraction, seed,
                            checkpoint=checkpoint, device=device, progress=True)
        click.echo(f"{res['images']} test images, mask {res['mask']} ({100 * res['missing_fraction']:.1f} % missing); "
                   f"error on the missing pixels ({method}, {iters} iterations):")
        for name, err in res["errors"].items():
            click.echo(f"  {name:<20} " + "  ".join(f"{k} {v:.4f}" for k, v in err.items()))
        for path in res["files"].values():
            click.echo(f"wrote {path}")
    else:
        from audiovae.tasks.repair import refuse_image_data
        from audiovae.tasks.signal import WRITABLE_AUDIO, many_inputs, plan_io

        refuse_image_data(input, run_dir)
        many = many_inputs([input])
        if many and json_out:
            raise click.UsageError("--json takes the result of one audio file; give one INPUT (or leave --json out)")
        # a folder or list file of audio: OUTPUT is a folder, as for `mel` (files replaced, as for one file)
        plan = plan_io([input], output, WRITABLE_AUDIO, overwrite=True) if many else [(input, output)]
        if not plan:
            raise DataError("holds no audio files to repair", input)
        for src, dst in plan:
            res = repair_audio(run_dir, src, dst, [parse_gap(g) for g in gaps], drop, packet_ms, method, iters,
                               seed, json_out, checkpoint=checkpoint, device=device, vocoder_iters=vocoder_iters,
                               progress=True, prior=prior)
            acc = "" if res["acceptance"] is None else f", acceptance {res['acceptance']:.2f}"
            click.echo(f"{f'{src}: ' if many else ''}filled {res['missing_frames']} of {res['frames']} frames "
                       f"({res['gap_samples']} samples in {len(res['gaps_s'])} gap(s)) with {method}{acc}, "
                       f"{res['prior']} prior")
            for path in res["files"].values():
                click.echo(f"wrote {path}")
    if json_out:
        click.echo(f"wrote {json_out}")


@cli.command("demo", short_help="The whole pipeline on a built-in corpus (start here).")
@click.option("-o", "--output", "out_dir", default="demo_out", show_default=True, type=click.Path(path_type=Path),
              help="Folder for everything the demo makes.")
@click.option("--minutes", default=2.5, show_default=True, type=click.FloatRange(0.05), help="Training time limit.")
@click.option("--utterances", default=96, show_default=True, type=click.IntRange(4), help="Size of the synthetic corpus.")
@click.option("--max-steps", default=3000, show_default=True, type=click.IntRange(1), help="Training step limit.")
@_VOCODER_ITERS
@friendly_errors
def demo_cmd(out_dir, minutes, utterances, max_steps, vocoder_iters):
    """The whole pipeline on a built-in speech-like corpus: synthesise, extract, train a ConvVAE, listen.

    Writes reconstructions, prior samples and an interpolation as wav files,
    mel-spectrogram pictures, loss curves, SUMMARY.md and report/index.html (all
    of it on one page, with audio players) into OUTPUT.
    """
    from audiovae.tasks.demo import run_demo

    res = run_demo(out_dir, utterances=utterances, minutes=minutes, max_steps=max_steps, vocoder_iters=vocoder_iters,
                   log=click.echo)
    click.echo(f"done in {res['seconds'] / 60:.1f} min; read {Path(out_dir) / 'SUMMARY.md'}")


@cli.command("download", short_help="Download and extract a corpus's official archives (checksum-verified).")
@click.argument("corpus", required=False)
@click.argument("data_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--subset", "subsets", multiple=True, help="Subset(s) to fetch, e.g. --subset dev-clean --subset "
              "train-clean-100 for LibriSpeech (default: the corpus's usual ones; see --list).")
@click.option("--mirror", envvar="AUDIOVAE_MIRROR", default=None, metavar="URL",
              help="Fetch each archive from URL/<file name> instead (env AUDIOVAE_MIRROR).")
@click.option("--checksums", envvar="AUDIOVAE_CHECKSUMS", default=None, type=click.Path(dir_okay=False),
              help="sha256sum-style file whose entries replace the built-in checksums (env AUDIOVAE_CHECKSUMS).")
@click.option("--locate", is_flag=True, help="Download nothing: print the corpus folder if DATA_DIR holds it, else fail.")
@click.option("--remove-archives", is_flag=True, help="Delete each archive once extracted.")
@click.option("--retries", default=5, show_default=True, type=click.IntRange(0), help="Retries after a dropped connection.")
@click.option("--list", "list_", is_flag=True, help="List the corpora, their subsets and archives.")
@friendly_errors
def download_cmd(corpus, data_dir, subsets, mirror, checksums, locate, remove_archives, retries, list_):
    """Fetch CORPUS's official archives into DATA_DIR, verify and extract them; print the corpus folder.

    Downloads resume after an interruption (HTTP Range on DATA_DIR/downloads/*.part),
    are retried with backoff and checked against the published size and SHA-256/MD5
    before use; a file with a wrong checksum is kept aside as *.bad-checksum.
    Nothing is downloaded when DATA_DIR already holds the corpus (or is a copy of
    it, e.g. /usr/share/datasets/fashion-mnist for fashion_mnist). Progress goes to
    stderr; stdout gets only the corpus folder, for scripts:
    `corpus=$(audiovae download ljspeech data)`.
    """
    from audiovae.data.download import CORPORA, fetch_corpus, get_corpus, locate as locate_corpus
    from audiovae.errors import DownloadError

    if list_:
        for c in CORPORA.values():
            click.echo(f"{c.name:<15} {c.note}")
            for name, archives in c.subsets.items():
                star = "*" if name in c.default_subsets else " "
                for a in archives:
                    size = f"{a.size / 1e6:,.0f} MB" if a.size else "?"
                    click.echo(f"   {star}{name:<16} {size:>10}  {a.url}")
        return
    if not corpus or data_dir is None:
        raise click.UsageError("give CORPUS and DATA_DIR (or --list)")
    if locate:
        found = locate_corpus(corpus, data_dir, subsets or None)
        if found is None:
            raise DownloadError(f"no {get_corpus(corpus).name} corpus here (run `audiovae download {corpus} "
                                f"{data_dir}`)", data_dir)
    else:
        found = fetch_corpus(corpus, data_dir, subsets or None, mirror=mirror, checksums=checksums,
                             keep_archives=not remove_archives, retries=retries,
                             log=lambda m: click.echo(m, err=True))
    click.echo(str(found))


@cli.command("manifest", short_help="Show a manifest: its summary, its splits, or one split's utterances (for scripts).")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--splits", "list_splits", is_flag=True, help="Print the splits it has (train, val, test), one per line.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="Print the utterances of this split, one per line: id<TAB>absolute path.")
@click.option("--limit", type=click.IntRange(1), default=None, help="With --split: the first N only.")
@friendly_errors
def manifest_cmd(manifest, list_splits, split, limit):
    """Read MANIFEST (a manifest.tsv or its folder, from `audiovae prepare`) and print what it holds.

    Without options: utterances, hours, speakers and labels per split. The recipes
    use --splits and --split instead of parsing the TSV themselves.
    """
    from audiovae.data.corpora import manifest_splits, manifest_utterances, read_manifest

    if list_splits:
        for name in manifest_splits(manifest):
            click.echo(name)
    elif split:
        for u in manifest_utterances(manifest, split, limit):
            click.echo(f"{u.id}\t{u.path}")
    else:
        click.echo(read_manifest(manifest).summary())


_TEMPS = click.option("--temperatures", default="1.0,0.7", show_default=True,
                      help="Prior temperatures for the diversity figures, comma-separated.")


def _write_json(obj: dict, json_out: Path | None, run_dir: Path | None, name: str) -> None:
    """Write a task's result to --json and, when it is a run's, to RUN/results/NAME.json (which the report shows)."""
    from audiovae.tasks.results import save_result

    for path in save_result(obj, json_out or None, run_dir, name):
        click.echo(f"wrote {path}")


@cli.command("encode", short_help="Posterior means of images, frames or utterances -> .npz.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The .npz to write.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="For DATA inputs: only this split (default: every split).")
@click.option("--limit", type=click.IntRange(1), default=None, help="For DATA inputs: the first N items of each split.")
@click.option("--label-key", default=None, help="Feature caches: the record field holding the label (default: label, "
              "else speaker).")
@_CHECKPOINT
@_DEVICE
@friendly_errors
def encode_cmd(run_dir, inputs, output, split, limit, label_key, checkpoint, device):
    """Encode INPUTS with a trained model: posterior means and log-variances, one row per item.

    INPUTS are DATA paths (feature cache, frame array, image folder: every
    utterance or image of each split), audio files (mel models) or image files
    (image models). Utterances are pooled over time: `mu` and `logvar` are the
    time-means of the latent frames' posteriors, `mu_std` the time-std of their
    means. The .npz holds ids, mu, logvar, features (what `probe` classifies),
    split and, where the data has them, labels.
    """
    from audiovae.api import load
    from audiovae.tasks.encode import encode_inputs
    from audiovae.training.checkpoint import describe

    _refuse_inputs([output], *inputs)

    loaded = load(run_dir, checkpoint, device)
    click.echo(describe(loaded))
    enc = encode_inputs(loaded, inputs, split=split, limit=limit, label_key=label_key)
    enc.save(output)
    click.echo(f"wrote {output}: {len(enc.ids)} items, features {enc.features().shape[1]}-dim"
               + ("" if enc.labels is None else f", {len(set(enc.labels.tolist()))} distinct labels"))


def _counts(text: str) -> tuple:
    try:
        return tuple(None if c.strip() == "all" else int(c) for c in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected counts like 100,1000,all, got {text!r}") from None


@cli.command("probe", short_help="Linear classifier on VAE latents vs raw input and PCA.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--labels", "labels", default="100,1000,all", show_default=True,
              help="Training-label counts for the label-efficiency curve.")
@click.option("--label-key", default=None, help="Feature caches: the record field holding the label (default: label, "
              "else speaker).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N items of each split.")
@click.option("--max-iter", default=500, show_default=True, type=click.IntRange(10),
              help="L-BFGS iterations per classifier (raw pixels of 55,000 images take the longest).")
@_SEED
@_JSON
@_CHECKPOINT
@_DEVICE
@friendly_errors
def probe_cmd(run_dir, data, labels, label_key, limit, max_iter, seed, json_out, checkpoint, device):
    """Train a linear classifier (multinomial logistic regression) on the latent means of DATA's training split.

    Reports test accuracy with a 95% Wilson interval for the latent means, the
    raw input (pixels, or time-pooled log-mel) and a PCA of the raw input with
    as many dimensions as the latent features, with 100, 1,000 and all training
    labels; and a negative control (shuffled labels). Labels: image classes, or
    the speaker/label field of a feature cache's records. Writes RUN/results/probe.json.
    """
    from audiovae.tasks.probe import format_probe, probe

    _refuse_inputs([json_out], data)

    res = probe(run_dir, data, label_counts=_counts(labels), label_key=label_key, limit=limit, seed=seed,
                max_iter=max_iter, checkpoint=checkpoint, device=device)
    click.echo(format_probe(res))
    _write_json(res, json_out, run_dir, "probe")


@cli.command("analyze", short_help="Parameters, training speed, bounds and sample diversity, one column per run.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RUN... DATA")
@_K
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1), help="Items to evaluate the bounds on.")
@click.option("--samples", default=None, type=click.IntRange(2), help="Prior samples per temperature "
              "(default: 1000 images, 16 utterances).")
@_TEMPS
@_JSON
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the table here.")
@click.option("--scores/--no-scores", default=True, show_default=True,
              help="Mel runs: DNSMOS, speaker similarity (and ASR, English data) of a few reconstructions, samples "
              "and conversions (pip install 'audiovae[eval]').")
@_SEED
@_CHECKPOINT
@_DEVICE
@friendly_errors
def analyze_cmd(paths, k, limit, samples, temperatures, json_out, md_out, scores, seed, checkpoint, device):
    """Compare runs on DATA (the last argument): parameters (encoder/decoder/total), training throughput and
    time, time to 95% of the final validation ELBO, ELBO/IWAE, active units, and the diversity of prior samples
    at two temperatures (images: classes a pixel probe assigns, nearest-training-image distance; audio: pairwise
    and nearest-training log-mel distances), each against real held-out data; for mel runs with the [eval]
    extra, perceptual scores (DNSMOS, speaker similarity, ASR on English data) of a few held-out utterances, their
    reconstructions, prior samples and conversions. Writes RUN/results/analysis.json for each run.
    """
    from audiovae.tasks.analyze import analyze, format_analysis
    from audiovae.utils import atomic_write_text

    _refuse_inputs([json_out, md_out], *paths)

    if len(paths) < 2:
        raise click.UsageError("give at least one RUN and then DATA")
    try:
        temps = tuple(float(t) for t in temperatures.split(","))
    except ValueError:
        raise click.BadParameter(f"expected numbers like 1.0,0.7, got {temperatures!r}") from None
    res = analyze(list(paths[:-1]), paths[-1], temps, k=k, limit=limit, n_samples=samples, checkpoint=checkpoint,
                  device=device, seed=seed, scores=scores)
    table = format_analysis(res)
    click.echo(table)
    if md_out:
        atomic_write_text(md_out, table + "\n")
        click.echo(f"wrote {md_out}")
    _write_json(res, json_out, None, "analysis")
    for run, one in zip(paths[:-1], res["runs"]):
        _write_json({**res, "runs": [one]}, None, run, "analysis")


@cli.command("interpolate", short_help="Decode the latent path between two audio files or two images.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Audio: a .wav (the steps in a row) and a .png beside it; images: a .png strip.")
@click.option("--steps", type=click.IntRange(2), default=None, help="Points from A to B (default: 5 audio, 8 images).")
@_VOCODER_ITERS
@_CHECKPOINT
@_DEVICE
@_SPEAKER
@_LABEL
@friendly_errors
def interpolate_cmd(run_dir, a, b, output, steps, vocoder_iters, checkpoint, device, speaker, label):
    """Encode A and B to their posterior means and decode evenly spaced points between them.

    Two audio files with a mel model: OUT is a wav of the steps one after another
    (0.25 s apart) and OUT.png their log-mels. Two images with an image model: OUT
    is a PNG strip (A, the steps, B).
    """
    from audiovae.tasks.interpolate import interpolate

    _refuse_inputs([output, Path(output).with_suffix(".png")], a, b)

    kw = {"vocoder_iters": vocoder_iters} if vocoder_iters is not None else {}  # audio only
    kw.update({k: v for k, v in (("speaker", speaker), ("label", label)) if v is not None})
    res = interpolate(run_dir, a, b, output, steps, checkpoint=checkpoint, device=device, progress=True, **kw)
    click.echo(f"wrote {res['output']}" + (f" and {res['picture']}" if "picture" in res else "")
               + f" ({res['steps']} steps)")


@cli.command("report", short_help="One self-contained HTML page to look at and listen to a run.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Report folder.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="DATA for reconstructions (default: the path in the model's config.yaml).")
@_VOCODER_ITERS
@click.option("--scores/--no-scores", default=True, show_default=True,
              help="Perceptual scores of a mel run's audio (DNSMOS, speaker similarity; pip install 'audiovae[eval]').")
@_SEED
@_CHECKPOINT
@_DEVICE
@friendly_errors
def report_cmd(run_dir, out_dir, data, vocoder_iters, scores, seed, checkpoint, device):
    """Write OUTPUT/index.html: configuration, training curves, evaluation figures, reconstructions, prior
    samples and interpolations (spectrograms with audio players, or image grids), and the probe, analysis and
    repair results found in RUN/results (only files inside RUN are copied). Opens from disk: no server, no network.

    OUTPUT must be new, empty or an earlier report: a rerun replaces only the files a report wrote there
    (listed in OUTPUT/.audiovae-report.json); a folder holding any other file is refused, nothing touched.

    A saved RUN/results/evaluate.json of another checkpoint (training went on since) is evaluated again when
    DATA is there; every section names the step its figures are from. A line on stderr per section.
    """
    from audiovae.tasks.report import make_report

    index = make_report(run_dir, out_dir, data, checkpoint=checkpoint, device=device, vocoder_iters=vocoder_iters,
                        seed=seed, progress=True, warn=lambda note: click.echo(f"warning: {note}", err=True),
                        scores=scores)
    click.echo(f"wrote {index}")


@cli.command("export", short_help="A trained model's encoder and decoder as ONNX, TorchScript or torch.export files.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (new, empty or an earlier export).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript", "torch.export"]), default="onnx",
              show_default=True, help="onnx (needs pip install 'audiovae[export]'), torchscript (.pt) or "
              "torch.export (.pt2).")
@click.option("--frames", type=click.IntRange(1, 100000), default=100, show_default=True,
              help="Mel models: the length the graph is traced at (any length runs afterwards).")
@_CHECKPOINT
@friendly_errors
def export_cmd(run_dir, output, fmt, frames, checkpoint):
    """Export RUN_DIR's encoder (normalised features -> posterior mean and std), decoder (latent -> mean,
    and scale where the likelihood has one) and, for mel models, front end (waveform -> log-mel and normalised
    features) into OUTPUT, with stats.npz (the normaliser), export.json and a README.txt that say the shapes,
    the normalisation and how to compute the features without audiovae. The vocoder is not exported.

    Mel models run at any number of frames and batch size, image models at any batch size. Each file is run
    once on another length and batch size than it was traced at and compared with PyTorch (ONNX: with
    onnxruntime, when installed).
    """
    from audiovae.tasks.export import export

    info = export(run_dir, output, format=fmt, checkpoint=checkpoint, frames=frames)
    check = info["check"]
    said = (f"checked against PyTorch ({check['tolerance']})" if isinstance(check, dict) else check)
    click.echo(f"wrote {', '.join(info['files'])} into {output} ({said})")


def main() -> None:
    cli(prog_name="audiovae")


if __name__ == "__main__":
    main()
