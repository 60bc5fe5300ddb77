"""Export a trained model's encoder and decoder to ONNX, TorchScript or ``torch.export`` files.

``export(run, out_dir, format="onnx")`` writes, into an output folder of the kind "export":

- ``features.<ext>`` (mel models): a waveform -> its log-mel and the normalised features (``torch.stft``);
- ``encoder.<ext>``: normalised features -> the posterior's ``mean`` and ``std``;
- ``decoder.<ext>``: a latent -> the mean of ``p(x | z)`` (and its ``scale`` where the likelihood has one);
- ``stats.npz`` (mel models): the per-bin ``mean`` and ``std`` that normalise log-mel features;
- ``export.json``: what was exported (format, model, MelConfig, inputs and outputs with their axes, the check);
- ``README.txt``: the same for a reader who has no audiovae: shapes, normalisation, how to compute the features.

Mel models take and give whole sequences: ``(batch, n_mels, frames)`` with a dynamic number of frames
(the dense model's frames, with their context window, are formed inside the exported graph), so a file
exported at one length runs at any other. Image models have a dynamic batch and a fixed image size.

After writing, every exported file is run once on inputs of another batch size and length than it was
traced at and compared with PyTorch (:data:`TOLERANCE`); a mismatch is an :class:`ExportError`. ONNX
files are checked with ``onnxruntime`` when it is installed (``pip install 'audiovae[export]'``).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiovae.errors import ConfigError, ExportError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "torch.export": ".pt2"}
FORMAT = "audiovae-export/1"
MARKER = "export.json"
# exported vs PyTorch, float32 on a CPU: |a - b| <= ATOL + RTOL * |b| everywhere
ATOL, RTOL = 1e-4, 1e-4
TOLERANCE = f"|exported - pytorch| <= {ATOL:g} + {RTOL:g} * |pytorch|"
OPSET = 17


def _scale_of(likelihood, params: torch.Tensor) -> torch.Tensor | None:
    """The scale of ``p(x | z)`` shaped like its mean, or None (Bernoulli)."""
    from audiovae.models.likelihoods import DiscretizedLogisticLikelihood, GaussianLikelihood

    if isinstance(likelihood, GaussianLikelihood):
        return torch.exp(likelihood._log_scale(params)).expand_as(params)
    if isinstance(likelihood, DiscretizedLogisticLikelihood):
        return torch.exp(likelihood._split(params)[1])
    return None


class MelEncoder(nn.Module):
    """Normalised log-mel ``(B, n_mels, T)`` -> posterior ``mean``, ``std`` ``(B, latent_dim, T')``;
    ``T' = ceil(T / downsample)`` for the conv model, ``T`` for the dense one (a latent per frame)."""

    def __init__(self, model, context: int = 0):
        super().__init__()
        self.model, self.context = model, int(context)

    def forward(self, features: torch.Tensor):
        if self.model.is_sequence:
            mu, logvar = self.model.encoder_params(features)
        else:
            b, t = features.shape[0], features.shape[2]
            mu, logvar = self.model.encoder_params(_frames(features, self.context))
            mu, logvar = (v.reshape(b, t, -1).transpose(1, 2) for v in (mu, logvar))
        return mu, torch.exp(0.5 * logvar)


def _frames(features: torch.Tensor, c: int) -> torch.Tensor:
    """``(B, n_mels, T)`` -> the dense model's inputs ``(B * T, n_mels * (2c + 1))``: bin-major, then time,
    edges replicated (as :func:`audiovae.data.datasets.frames_with_context`)."""
    b, n, t = features.shape
    if c == 0:
        return features.transpose(1, 2).reshape(b * t, n)
    p = F.pad(features, (c, c), mode="replicate")
    win = torch.stack([p[..., k:k + t] for k in range(2 * c + 1)], -1)  # (B, n_mels, T, 2c + 1)
    return win.transpose(1, 2).reshape(b * t, n * (2 * c + 1))


class MelDecoder(nn.Module):
    """Latent ``(B, latent_dim, T')`` -> mean (and scale) of ``p(x | z)``, ``(B, n_mels, T' * downsample)``."""

    def __init__(self, model, n_mels: int, context: int = 0):
        super().__init__()
        self.model, self.n_mels, self.context = model, int(n_mels), int(context)

    def forward(self, z: torch.Tensor):
        lik = self.model.likelihood
        if self.model.is_sequence:
            params = self.model.decoder_params(z)
            out = [lik.mean(params), _scale_of(lik, params)]
        else:
            b, t = z.shape[0], z.shape[2]
            params = self.model.decoder_params(z.transpose(1, 2).reshape(b * t, -1))
            w = 2 * self.context + 1
            out = [None if v is None else v.reshape(b, t, self.n_mels, w)[..., self.context].transpose(1, 2)
                   for v in (lik.mean(params), _scale_of(lik, params))]
        return tuple(v for v in out if v is not None)


class MelFeatures(nn.Module):
    """Waveform ``(B, N)`` -> ``logmel`` ``(B, n_mels, 1 + N // hop)`` (as :class:`~audiovae.audio.frontend.MelFrontend`)
    and, with a normaliser, the normalised ``features`` the encoder takes. Written with ``torch.stft`` so that
    it exports (ONNX's STFT operator)."""

    def __init__(self, mel, normalizer=None):
        from audiovae.audio.functional import mel_filterbank

        super().__init__()
        self.mel = mel
        w = torch.hann_window(mel.win_length, periodic=True)
        left = (mel.n_fft - mel.win_length) // 2
        self.register_buffer("window", F.pad(w, (left, mel.n_fft - mel.win_length - left)))
        self.register_buffer("fb", mel_filterbank(mel, torch.float32))
        self.normalizer = normalizer

    def forward(self, wave: torch.Tensor):
        m = self.mel
        x = F.pad(wave[:, None], (m.n_fft // 2, m.n_fft // 2))[:, 0]  # centred frames, zero-padded
        spec = torch.stft(x, m.n_fft, m.hop_length, window=self.window, center=False, return_complex=False)
        mag = spec.square().sum(-1) ** (0.5 * m.power)  # (B, n_fft // 2 + 1, T)
        logmel = torch.log(torch.clamp(torch.matmul(self.fb, mag), min=m.log_floor))
        return (logmel,) if self.normalizer is None else (logmel, self.normalizer(logmel))


class ImageEncoder(nn.Module):
    """Images ``(B, C, H, W)`` -> posterior ``mean``, ``std`` ``(B, latent_dim)``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        mu, logvar = self.model.encoder_params(images)
        return mu, torch.exp(0.5 * logvar)


class ImageDecoder(nn.Module):
    """Latent ``(B, latent_dim)`` -> mean (and scale) of ``p(x | z)`` ``(B, C, H, W)``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor):
        params = self.model.decoder_params(z)
        lik = self.model.likelihood
        return tuple(v for v in (lik.mean(params), _scale_of(lik, params)) if v is not None)


def _parts(loaded, frames: int, batch: int = 2):
    """``[(name, module, example input, input name, output names, dynamic axes {name: {axis: label}})]``."""
    from audiovae.models.likelihoods import BernoulliLikelihood

    model = loaded.model
    cfg = loaded.config.get("model_config") or {}
    d = model.latent_dim
    has_scale = not isinstance(model.likelihood, BernoulliLikelihood)
    dec_out = ["mean", "scale"] if has_scale else ["mean"]
    if loaded.mel is not None:
        n_mels = loaded.mel.n_mels
        context = int(cfg.get("context", 0)) if not model.is_sequence else 0
        ds = int(getattr(model.config, "downsample", 1)) if model.is_sequence else 1
        tz = -(-frames // ds)
        seq = {0: "batch", 2: "frames"}
        lat = {0: "batch", 2: "latent_frames"}
        feat_out = ["logmel"] + (["features"] if loaded.normalizer is not None else [])
        return [
            ("features", MelFeatures(loaded.mel, loaded.normalizer), 0.1 * torch.randn(batch, frames * loaded.mel.hop_length),
             "wave", feat_out, {"wave": {0: "batch", 1: "samples"}, **{k: seq for k in feat_out}}),
            ("encoder", MelEncoder(model, context), torch.randn(batch, n_mels, frames), "features", ["mean", "std"],
             {"features": seq, "mean": lat, "std": lat}),
            ("decoder", MelDecoder(model, n_mels, context), torch.randn(batch, d, tz), "z", dec_out,
             {"z": lat, **{k: {0: "batch", 2: "out_frames"} for k in dec_out}}),
        ]
    c, s = model.config.image_channels, model.config.image_size
    b = {0: "batch"}
    return [
        ("encoder", ImageEncoder(model), torch.rand(batch, c, s, s) * 2 - 1, "images", ["mean", "std"],
         {"images": b, "mean": b, "std": b}),
        ("decoder", ImageDecoder(model), torch.randn(batch, d), "z", dec_out, {"z": b, **{k: b for k in dec_out}}),
    ]


def _export_one(module, example, in_name, out_names, axes, fmt: str, path: Path) -> None:
    """Write ``module`` traced at ``example`` to ``path`` (a temporary name) in format ``fmt``."""
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer notes are not the user's business
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(module, (example,), check_trace=False), str(path))
        elif fmt == "torch.export":
            with open(path, "wb") as fh:
                torch.export.save(torch.export.export(module, (example,), dynamic_shapes=_dims(axes, in_name)), fh)
        else:
            _to_onnx(module, example, in_name, out_names, axes, path)


def _dims(axes: dict, in_name: str):
    return ({a: torch.export.Dim.AUTO for a in axes[in_name]},)


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'audiovae[export]'") from None


def _to_onnx(module, example, in_name, out_names, axes, path: Path) -> None:
    """The TorchScript-based exporter (fast, needs no onnxscript) where this torch still has it, else the
    ``torch.export``-based one."""
    _need_onnx()
    kw = dict(input_names=[in_name], output_names=out_names, opset_version=OPSET)
    try:
        torch.onnx.export(module, (example,), str(path), dynamic_axes=axes, dynamo=False, **kw)
    except Exception as legacy:  # noqa: BLE001 - a torch whose legacy exporter is gone: the torch.export-based one
        try:
            torch.onnx.export(module, (example,), str(path), dynamic_shapes=_dims(axes, in_name), dynamo=True,
                              external_data=False, **kw)
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"cannot export to ONNX ({str(legacy).splitlines()[0][:200]}; "
                              f"{str(exc).splitlines()[0][:200]})", path) from None


def run_exported(path: str | os.PathLike, x: np.ndarray, format: str | None = None) -> list[np.ndarray]:
    """Run one exported file on ``x``; its outputs as numpy arrays. ``format``: one of :data:`FORMATS`
    (default: from the file's extension)."""
    path = Path(path)
    fmt = format or {v: k for k, v in FORMATS.items()}.get(path.suffix)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation note
        if fmt == "torchscript":
            mod = torch.jit.load(str(path))
        else:
            with open(path, "rb") as fh:  # a file object: torch.export.load wants a name ending in .pt2
                mod = torch.export.load(fh).module()
        out = mod(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
    return [v.numpy() for v in (out if isinstance(out, (tuple, list)) else [out])]


def _check(module, path: Path, x: torch.Tensor, names: list[str], fmt: str, shown: Path) -> float:
    """Run the exported file ``path`` on ``x`` and compare with ``module``; the largest absolute difference.
    Errors name ``shown`` (the file's final name; ``path`` is its temporary one)."""
    with torch.no_grad():
        want = [v.numpy() for v in module(x)]
    try:
        got = run_exported(path, x.numpy(), fmt)
    except Exception as exc:  # noqa: BLE001 - the runtime refused the input (a shape fixed at export time...)
        raise ExportError(f"the exported file cannot run on an input of shape {tuple(x.shape)} "
                          f"({str(exc).strip().splitlines()[0][:300]})", shown) from None
    if len(got) != len(want):
        raise ExportError(f"gives {len(got)} outputs, PyTorch {len(want)}", shown)
    worst = 0.0
    for name, a, b in zip(names, got, want):
        if a.shape != b.shape:
            raise ExportError(f"output {name!r} has shape {a.shape} exported, {b.shape} in PyTorch (input "
                              f"{tuple(x.shape)})", shown)
        if not np.all(np.abs(a - b) <= ATOL + RTOL * np.abs(b)):
            raise ExportError(f"output {name!r} differs from PyTorch by up to {np.abs(a - b).max():.3g} (input "
                              f"{tuple(x.shape)}; allowed {TOLERANCE})", shown)
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


def _check_input(example: torch.Tensor, seq: bool) -> torch.Tensor:
    """An input of another batch size (and, for sequences, another length) than ``example``."""
    shape = list(example.shape)
    shape[0] += 1
    if seq:  # the time axis (frames, latent frames or samples) is the last
        shape[-1] = max(1, shape[-1] // 3 + 1)
    g = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=g) if example.min() < 0 else torch.rand(shape, generator=g)


def export(run: str | os.PathLike, out_dir: str | os.PathLike, format: str = "onnx", checkpoint: str = "best",
           frames: int = 100, check: bool = True) -> dict:
    """Export the encoder and decoder of ``run`` (a run folder or model directory) into ``out_dir``.

    ``format``: ``onnx``, ``torchscript`` or ``torch.export`` (see :data:`FORMATS`); ``checkpoint``:
    ``best`` or ``last``; ``frames``: the length mel models are traced at (any length runs afterwards);
    ``check``: run each file once on another batch size and length and compare it with PyTorch
    (ONNX: when ``onnxruntime`` is installed). Returns what ``export.json`` holds.

    ``out_dir`` must be new, empty or an earlier export (whose files a rerun replaces); a folder of another
    kind, or one holding files an export did not write, is refused (:class:`~audiovae.errors.OutputFolderError`).
    """
    from audiovae.folders import output_folder
    from audiovae.api import load
    from audiovae.utils import atomic_path, atomic_write_bytes, atomic_write_text

    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose {', '.join(FORMATS)}")
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= 100000:
        raise ConfigError(f"frames must be an integer in 1..100000, got {frames!r}")
    if format == "onnx":
        _need_onnx()  # before anything is written
    loaded = load(run, checkpoint, device="cpu")
    parts = _parts(loaded, frames)
    ext = FORMATS[format]
    files = [f"{name}{ext}" for name, *_ in parts] + (["stats.npz"] if loaded.normalizer is not None else [])
    files.append("README.txt")
    out_dir = Path(out_dir)
    with output_folder(out_dir, "export") as out:
        old = _earlier_files(out)
        info = _describe(loaded, format, parts, files, frames)
        atomic_write_text(out / MARKER, json.dumps({**info, "files": sorted(set(files) | old)}, indent=1) + "\n")
        if loaded.normalizer is not None:
            buf = io.BytesIO()  # as the feature cache's stats.npz
            np.savez(buf, mean=loaded.normalizer.mean.numpy(), std=loaded.normalizer.std.numpy())
            atomic_write_bytes(out / "stats.npz", buf.getvalue())
        checks = {}
        for name, module, example, in_name, out_names, axes in parts:
            path = out / f"{name}{ext}"
            try:
                with atomic_path(path, suffix=ext) as tmp:
                    _export_one(module, example, in_name, out_names, axes, format, tmp)
                    if check and _can_check(format):
                        x = _check_input(example, loaded.mel is not None)
                        checks[name] = {"input_shape": list(x.shape),
                                        "max_abs_diff": _check(module, tmp, x, out_names, format, path)}
            except Exception as exc:  # noqa: BLE001 - the waveform front end is a bonus: say why it is missing
                if name != "features":
                    raise
                files.remove(path.name)
                del info["parts"][name]
                info["features"] = f"not exported ({str(exc).strip().splitlines()[0][:300]})"
        info["check"] = ({"tolerance": TOLERANCE, "parts": checks} if checks else
                         "not checked" + ("" if not check else " (onnxruntime is not installed)"))
        atomic_write_text(out / "README.txt", _readme(info))
        atomic_write_text(out / MARKER, json.dumps(info, indent=1) + "\n")
        for stale in sorted(old - set(files)):
            (out / stale).unlink(missing_ok=True)
    return info


def _can_check(fmt: str) -> bool:
    if fmt != "onnx":
        return True
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _earlier_files(out: Path) -> set[str]:
    """The files an earlier export listed in ``out``; refuses a folder holding any other file."""
    from audiovae.errors import OutputFolderError
    from audiovae.folders import LOCK_NAME

    listed: set[str] = set()
    if (out / MARKER).is_file():
        try:
            data = json.loads((out / MARKER).read_text(encoding="utf-8"))
            listed = {f for f in data.get("files", []) if isinstance(f, str) and f == os.path.basename(f)
                      and f not in ("", ".", "..")}
        except (OSError, ValueError, AttributeError):
            listed = set()
    foreign = sorted(p.name for p in out.iterdir() if p.name not in listed | {MARKER, LOCK_NAME})
    if foreign:
        raise OutputFolderError(f"holds files an export did not write ({', '.join(foreign[:3])}"
                                f"{', ...' if len(foreign) > 3 else ''}); use a new or empty folder", out)
    return listed


def _describe(loaded, fmt: str, parts, files: list[str], frames: int) -> dict:
    model = loaded.model
    io = {}
    for name, _module, example, in_name, out_names, axes in parts:
        io[name] = {"file": f"{name}{FORMATS[fmt]}", "input": in_name, "outputs": out_names,
                    "axes": {k: {str(a): lab for a, lab in v.items()} for k, v in axes.items()}}
    info = {
        "format": FORMAT,
        "export_format": fmt,
        "model": loaded.name,
        "model_config": loaded.config.get("model_config") or {},
        "likelihood": type(model.likelihood).__name__,
        "latent_dim": model.latent_dim,
        "source": str(loaded.path.resolve()),
        "step": loaded.config.get("step"),
        "torch": torch.__version__,
        "traced_frames": frames if loaded.mel is not None else None,
        "parts": io,
        "files": files,
    }
    if loaded.mel is not None:
        info["mel"] = loaded.mel.to_dict()
        info["downsample"] = int(getattr(model.config, "downsample", 1)) if model.is_sequence else 1
        info["stats"] = "stats.npz" if loaded.normalizer is not None else None
    else:
        info["image_shape"] = [model.config.image_channels, model.config.image_size, model.config.image_size]
    return info


def _readme(info: dict) -> str:
    enc, dec = info["parts"]["encoder"], info["parts"]["decoder"]
    how = {"onnx": "onnxruntime.InferenceSession(FILE).run(None, {INPUT: x})",
           "torchscript": "torch.jit.load(FILE)(x)",
           "torch.export": "torch.export.load(FILE).module()(x)"}[info["export_format"]]
    lines = [
        f"An audiovae {info['model']} VAE exported as {info['export_format']} (audiovae export; {info['format']}).",
        f"Source: {info['source']}" + (f", step {info['step']}" if info.get("step") is not None else ""),
        f"Run a file: {how}. All tensors are float32.",
        "",
    ]
    scale = "scale" in dec["outputs"]
    d = info["latent_dim"]
    if "mel" in info:
        m, ds = info["mel"], info["downsample"]
        feat = info["parts"].get("features")
        if feat:
            lines += [
                f"{feat['file']}: input 'wave' (batch, samples), mono at {m['sample_rate']} Hz;",
                f"  output 'logmel' (batch, {m['n_mels']}, 1 + samples // {m['hop_length']}): the log-mel below"
                + (", and 'features' (same shape): it normalised, the encoder's input." if "features" in
                   feat["outputs"] else "."),
            ]
        else:
            lines.append(f"No waveform front end: {info.get('features', 'not exported')}.")
        lines += [
            f"{enc['file']}: input '{enc['input']}' (batch, {m['n_mels']}, frames), NORMALISED log-mel;",
            f"  outputs 'mean', 'std' (batch, {d}, latent_frames): the posterior q(z | x) = N(mean, std^2),",
            f"  latent_frames = ceil(frames / {ds}). Any number of frames and any batch size.",
            f"{dec['file']}: input 'z' (batch, {d}, latent_frames);",
            f"  output 'mean' (batch, {m['n_mels']}, latent_frames * {ds}): the decoded normalised log-mel"
            + (f" (keep the first `frames`)" if ds > 1 else "") + ";",
        ]
        if scale:
            lines.append("  output 'scale' (same shape): the Gaussian likelihood's standard deviation per bin.")
        lines += [
            "",
            "Normalisation (stats.npz holds per-bin 'mean' and 'std', shape (n_mels,)):",
            "  normalised = (logmel - mean[:, None]) / std[:, None];  logmel = normalised * std[:, None] + mean[:, None]",
            "",
            "Log-mel features (the MelConfig below; the same as librosa's defaults with these settings):",
            f"  mel = librosa.feature.melspectrogram(y=wave, sr={m['sample_rate']}, n_fft={m['n_fft']}, "
            f"hop_length={m['hop_length']}, win_length={m['win_length']},",
            f"        n_mels={m['n_mels']}, fmin={m['fmin']}, fmax={m['fmax']}, power={m['power']}, htk={m['htk']}, "
            f"norm={m['norm']!r}, center=True)",
            f"  logmel = log(max(mel, {m['log_floor']}))     # natural log, shape (n_mels, frames)",
            f"  the waveform is mono at {m['sample_rate']} Hz (resample it first).",
            "",
            "MelConfig: " + json.dumps(m),
            "",
            "The Griffin-Lim vocoder is not exported (its phase initialisation and NNLS are not single graphs).",
            "Any Griffin-Lim of the de-normalised log-mel gives audio, e.g.",
            f"  librosa.feature.inverse.mel_to_audio(np.exp(logmel), sr={m['sample_rate']}, n_fft={m['n_fft']}, "
            f"hop_length={m['hop_length']}, win_length={m['win_length']}, power={m['power']},",
            f"        fmin={m['fmin']}, fmax={m['fmax']}, htk={m['htk']}, norm={m['norm']!r}, n_iter=64)",
        ]
    else:
        c, s, _ = info["image_shape"]
        rng = {"BernoulliLikelihood": "pixels in [0, 1] (binarised for training)",
               "DiscretizedLogisticLikelihood": "pixels in [-1, 1] (2 * k / 255 - 1 for 8-bit k)"}.get(
                   info["likelihood"], "pixels as in training")
        lines += [
            f"{enc['file']}: input '{enc['input']}' (batch, {c}, {s}, {s}), {rng};",
            f"  outputs 'mean', 'std' (batch, {d}): the posterior q(z | x) = N(mean, std^2). Any batch size.",
            f"{dec['file']}: input 'z' (batch, {d}); output 'mean' (batch, {c}, {s}, {s})"
            + (" (probabilities)" if info["likelihood"] == "BernoulliLikelihood" else "")
            + (" and 'scale' (same shape)" if scale else "") + ".",
        ]
    check = info.get("check")
    lines += ["", "Checked against PyTorch: " + (json.dumps(check) if isinstance(check, dict) else str(check)), ""]
    return "\n".join(lines)


__all__ = ["export", "run_exported", "FORMATS", "TOLERANCE", "MelEncoder", "MelDecoder", "ImageEncoder",
           "ImageDecoder"]
