"""The short way in from Python: ``audiovae.load(run)`` gives a :class:`LoadedVAE`.

Example::

    import audiovae
    vae = audiovae.load("run")                   # a run or model folder; best/ by default; device="auto"
    z = vae.encode(wave, sample_rate=16000)      # numpy or torch, (N,) or (B, N) with lengths
    audio = vae.decode(z)                        # waveform(s) at vae.sample_rate

Conventions of every method (torchaudio's style):

- One item in, one item out: a waveform ``(N,)`` gives a latent ``(latent, T')`` and
  back; a batch ``(B, N)`` gives ``(B, latent, T')``.
- A padded batch comes with ``lengths`` ``(B,)`` (valid samples, frames or latent
  frames per item); a call given ``lengths`` returns ``(output, output_lengths)``,
  and each item of the batch is exactly what it would be alone.
- numpy in, numpy out (on the CPU); torch in, torch out (on ``vae.device``). What is
  made from nothing (:meth:`LoadedVAE.sample`) comes back as numpy.
- ``sample_rate=None`` means "already at ``vae.sample_rate``": an array carries no
  rate, so a 16-kHz array passed without ``sample_rate=16000`` is analysed as if it
  were at the model's rate. Given another rate, the audio is resampled (soxr HQ, as
  files are) and a notice says so once per loaded model.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributions import Normal

from audiovae.errors import AudioVAEError, CheckpointError, ConfigError, InvalidAudioError, InvalidFeatureError
from audiovae.models.prior import StandardNormal

__all__ = ["load", "LoadedVAE", "StandardNormal"]

CONVERT_K = 4  # convert(method="knn"): nearest target frames averaged per latent frame
CONVERT_BANK_FRAMES = 40_000  # convert(method="knn"): at most this many latent frames of the target's utterances


def load(path: str | os.PathLike, checkpoint: str = "best", device: str | torch.device = "auto",
         vocoder_iters: int | None = None, prior: str | os.PathLike = "auto") -> "LoadedVAE":
    """Load a trained model.

    Args:
        path: a run folder (its ``best/`` weights, or with ``checkpoint="last"`` its own latest ones) or a
            model folder (``run/best``).
        checkpoint: ``"best"`` (default) or ``"last"``.
        device: ``"auto"`` (CUDA when available, default), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        vocoder_iters: Griffin-Lim iterations of :meth:`LoadedVAE.decode` (default: the vocoder's own).
        prior: ``"auto"`` (default: the run's learned prior, ``RUN/prior``, when it has one trained on these
            weights, else ``N(0, I)``), ``"learned"`` (that prior, or an error), ``"standard"`` (``N(0, I)``)
            or the path of a prior folder or ``.safetensors`` file (``audiovae train-prior -o``).

    Raises :class:`~audiovae.errors.CheckpointError` for a folder that holds no (intact) model.
    """
    from audiovae.training.checkpoint import load_model_dir, pick_device, resolve_model_dir

    dev = device if isinstance(device, torch.device) else pick_device(device)
    loaded = load_model_dir(resolve_model_dir(path, checkpoint), map_location=dev)
    vae = LoadedVAE(loaded.model, loaded.name, loaded.config, loaded.mel, loaded.normalizer, loaded.path, dev,
                    vocoder_iters)
    vae.use_prior(prior)
    return vae


def _prior_file(path: Path) -> Path:
    from audiovae.training.prior import PRIOR_FILE

    return path / PRIOR_FILE if path.is_dir() else path


def _is_numpy(x: Any) -> bool:
    return not isinstance(x, torch.Tensor)


class LoadedVAE:
    """A trained VAE with everything it needs: front end, normaliser, vocoder, prior.

    Attributes:
        model: the :class:`~audiovae.models.base.BaseVAE` (eval mode, on ``device``).
        name: the registered model name (``conv``, ``dense``, ``mnist``, ``cifar``).
        config: the run's configuration (``config.yaml`` as a dict).
        mel: the :class:`~audiovae.audio.config.MelConfig` (``None`` for image models).
        normalizer: per-bin log-mel statistics (``None`` for image models and models of plain log-mel).
        vocoder: the :class:`~audiovae.audio.vocoder.GriffinLimVocoder` (``None`` for image models).
        prior: ``p(z)``: the learned prior (:class:`~audiovae.models.prior.LatentPrior`) or
            :class:`~audiovae.models.prior.StandardNormal`; both have ``sample(shape, temperature, generator,
            cond)`` and ``log_density(z, mask, cond)``. :meth:`use_prior` switches.
        standard_prior: the ``N(0, I)`` the VAE was trained against.
        device: where the model runs.
        sample_rate: the model's audio rate in Hz (``None`` for image models).
        kind: ``"mel"`` or ``"image"``.
        sequence: ``True`` for models of whole sequences (conv), ``False`` for frame models (dense).
        path: the model folder loaded.
    """

    def __init__(self, model, name: str, config: dict, mel, normalizer, path: Path, device: torch.device,
                 vocoder_iters: int | None = None):
        from audiovae.models.registry import model_info

        self.model, self.name, self.config, self.mel, self.path = model, name, config, mel, Path(path)
        self.device = torch.device(device)
        info = model_info(name)
        self.kind, self.sequence = info.kind, info.sequence
        self.standard_prior = StandardNormal(self.device)
        self.prior = self.standard_prior
        self.prior_info: dict | None = None  # the learned prior's metadata (where from, step, validation NLL)
        self._learned = None  # the run's learned prior, once a call asked for it (prior="learned")
        self.vocoder_iters = vocoder_iters
        self._vocoder = self._frontend = None
        self._said_resample = False
        self._banks: dict = {}  # convert(method="knn"): each target's latent frames
        self.normalizer = None if normalizer is None else normalizer.to(self.device)
        self._norm = self.normalizer
        if self.kind == "mel" and normalizer is None:  # a model trained on plain log-mel
            from audiovae.audio.normalize import Normalizer

            self._norm = Normalizer.identity(mel.n_mels).to(self.device)

    def __repr__(self) -> str:
        return f"LoadedVAE({self.name!r}, kind={self.kind!r}, path={str(self.path)!r}, device={str(self.device)!r})"

    # --- priors ---------------------------------------------------------------------------------
    @property
    def has_learned_prior(self) -> bool:
        """Whether :attr:`prior` is a learned prior (else ``N(0, I)``)."""
        return bool(getattr(self.prior, "learned", False))

    def _run_prior_path(self) -> Path:
        from audiovae.tasks.results import run_root

        return _prior_file(run_root(self.path) / "prior")

    def learned_prior(self, where: str | os.PathLike | None = None):
        """The learned prior of this run (``RUN/prior``) or at ``where``, checked to belong to these weights.

        Raises :class:`~audiovae.errors.CheckpointError` when there is none, or it was trained on other weights.
        """
        from audiovae.training.prior import load_prior_file

        path = self._run_prior_path() if where is None else _prior_file(Path(where))
        if not path.exists():
            raise CheckpointError("no learned prior for this run (train one: audiovae train-prior RUN)", path)
        prior, meta = load_prior_file(path, self.device)
        sha = self.config.get("weights_sha256")
        if meta.get("vae_weights_sha256") != sha:
            raise CheckpointError(f"this prior was trained on other VAE weights (its {meta.get('vae_checkpoint')!r} "
                                  f"checkpoint then), not on {self.path}; train the prior again", path)
        if prior.config.latent_dim != self.model.latent_dim:
            raise CheckpointError("this prior models another latent size than the model's", path)
        meta = {k: v for k, v in meta.items() if not k.startswith("_")}
        return prior, {**meta, "path": str(path)}

    def use_prior(self, prior: str | os.PathLike = "auto") -> "LoadedVAE":
        """Make :attr:`prior` ``"auto"``, ``"learned"``, ``"standard"`` or the prior at a path (see :func:`load`)."""
        if prior == "standard" or self.kind != "mel" or not self.sequence:
            if prior not in ("standard", "auto"):
                raise ConfigError(f"a learned prior models latent sequences; the {self.name!r} model has none")
            self.prior, self.prior_info = self.standard_prior, None
            return self
        if prior == "auto":
            self.prior, self.prior_info = self.standard_prior, None
            if self._run_prior_path().exists():
                try:
                    self.prior, self.prior_info = self.learned_prior()
                except CheckpointError as exc:  # e.g. a prior of the best weights, and checkpoint="last" loaded
                    warnings.warn(f"{exc}; sampling from N(0, I)", stacklevel=2)
            return self
        self.prior, self.prior_info = self.learned_prior(None if prior == "learned" else prior)
        return self

    def _prior_for(self, prior: str | None):
        """The prior one call asks for: None = :attr:`prior`; "standard"; "learned" (an error without one)."""
        if prior is None:
            return self.prior
        if prior == "standard":
            return self.standard_prior
        if prior == "learned":
            if self.has_learned_prior:
                return self.prior
            if self._learned is None:
                self._learned = self.learned_prior()[0]
            return self._learned
        raise ConfigError(f"prior must be 'learned' or 'standard', not {prior!r}")

    # --- parts ---------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int | None:
        return None if self.mel is None else self.mel.sample_rate

    @property
    def context(self) -> int:
        """Frames of context on each side of a dense model's input (0 for others)."""
        return int((self.config.get("model_config") or {}).get("context", 0) or 0)

    @property
    def frontend(self):
        """The waveform -> log-mel :class:`~audiovae.audio.frontend.MelFrontend` (built on first use)."""
        if self._frontend is None and self.mel is not None:
            from audiovae.audio.frontend import MelFrontend

            self._frontend = MelFrontend(self.mel).to(self.device)
        return self._frontend

    @property
    def vocoder(self):
        if self._vocoder is None and self.mel is not None:
            from audiovae.audio.vocoder import GriffinLimVocoder

            self._vocoder = GriffinLimVocoder(self.mel, n_iter=self.vocoder_iters).to(self.device)
        return self._vocoder

    # --- conditioning (speaker or label) ---------------------------------------------------------
    @property
    def conditions(self) -> dict | None:
        """``None`` for an unconditioned model, else ``{"key": "speaker" | "label", "names": [...]}``: what the
        decoder is conditioned on and the speakers (labels) it knows (``audiovae train ... condition=speaker``)."""
        n = getattr(self.model, "n_conditions", 0)
        return {"key": self.model.condition, "names": list(self.model.condition_names)} if n else None

    def condition_index(self, speaker=None, label=None) -> torch.Tensor | None:
        """The indices (a LongTensor on :attr:`device`, one per name) of ``speaker`` or ``label`` (a name or a
        list of names) into the model's ``condition_names``; ``None`` when neither is given.

        Raises :class:`~audiovae.errors.ConfigError` for an unknown name ("unknown speaker 'x'; this model knows:
        a, b"), a speaker given to a label model (or the other way round), or either given to a model trained
        without a condition.
        """
        if speaker is not None and label is not None:
            raise ConfigError("give a speaker or a label, not both")
        key, value = ("speaker", speaker) if speaker is not None else ("label", label)
        if value is None:
            return None
        cond = self.conditions
        if cond is None:
            raise ConfigError(f"{self.path} is not conditioned on a speaker or label (trained without condition=...); "
                              f"it cannot take a {key}")
        if cond["key"] != key:
            raise ConfigError(f"{self.path} is conditioned on {cond['key']}, not {key}; give a {cond['key']} "
                              f"(this model knows: {', '.join(cond['names'])})")
        names = [value] if isinstance(value, str) else list(value)
        where = {n: i for i, n in enumerate(cond["names"])}
        for n in names:
            if str(n) not in where:
                raise ConfigError(f"unknown {key} {str(n)!r}; this model knows: {', '.join(cond['names'])}")
        return torch.tensor([where[str(n)] for n in names], dtype=torch.long, device=self.device)

    def _cond(self, n: int, speaker, label, what: str, required: bool = True) -> torch.Tensor | None:
        """``(n,)`` condition indices for ``n`` items from one name or ``n`` names; for a conditioned model with
        none given, a ConfigError when ``required``."""
        idx = self.condition_index(speaker, label)
        if idx is None:
            cond = self.conditions
            if cond is not None and required:
                raise ConfigError(f"{self.path} is conditioned on {cond['key']}: {what} needs a {cond['key']} "
                                  f"(this model knows: {', '.join(cond['names'])})")
            return None
        if idx.numel() == 1:
            return idx.expand(n).clone()
        if idx.numel() != n:
            raise ConfigError(f"{idx.numel()} names for {n} items; give one, or one per item")
        return idx

    def _need(self, kind: str, what: str) -> None:
        if self.kind != kind:
            raise ConfigError(f"{what} needs a {kind} model; {self.path} is a {self.name!r} ({self.kind}) model")

    # --- model input and output of one item ------------------------------------------------------
    def frames_in(self, feats: torch.Tensor) -> torch.Tensor:
        """Model input from one item's normalised log-mel ``(1, n_mels, T)``: a sequence model takes it as it
        is; a dense model takes frames with context ``(T, n_mels * (2 * context + 1))`` (edges replicated)."""
        if self.sequence:
            return feats
        from audiovae.data.datasets import frames_with_context

        return frames_with_context(feats[0], self.context)

    def frames_out(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`frames_in` for a model output: one item's ``(1, n_mels, T)``."""
        if self.sequence:
            return y
        from audiovae.data.datasets import centre_frames

        return centre_frames(y, self.mel.n_mels, self.context)

    # --- helpers -----------------------------------------------------------------------------------
    def _waves(self, wave, lengths, sample_rate) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
        """``(B, N)`` float32 on the device, per-item sample lengths ``(B,)`` at the model's rate, squeeze, numpy."""
        from audiovae.audio.io import resample

        numpy = _is_numpy(wave)
        x = torch.as_tensor(np.asarray(wave) if numpy else wave)
        if x.dim() not in (1, 2) or x.shape[-1] == 0:
            raise InvalidAudioError(f"expected a waveform (N,) or a batch (B, N), got shape {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise InvalidAudioError(f"expected floating-point audio (samples in [-1, 1]), got {x.dtype}")
        squeeze = x.dim() == 1
        x = x.reshape(-1, x.shape[-1]).float()
        n = x.shape[-1]
        lens = torch.full((x.shape[0],), n, dtype=torch.long) if lengths is None else \
            torch.as_tensor(lengths).reshape(-1).long().cpu()
        if lens.numel() != x.shape[0] or bool((lens < 1).any()) or bool((lens > n).any()):
            raise InvalidAudioError(f"lengths must give 1..{n} samples for each of the {x.shape[0]} items, "
                                    f"got {lens.tolist()}")
        if not bool(torch.isfinite(x).all()):
            raise InvalidAudioError("the audio contains NaN or infinite samples")
        sr = self.sample_rate if sample_rate is None else int(sample_rate)
        if sr != self.sample_rate:
            if not self._said_resample:
                warnings.warn(f"audiovae: resampling audio from {sr} Hz to the model's {self.sample_rate} Hz "
                              f"(soxr HQ); a model trained at {sr} Hz needs --set sample_rate={sr} when training",
                              stacklevel=3)
                self._said_resample = True
            items = [resample(x[b, : int(lens[b])].cpu().numpy(), sr, self.sample_rate) for b in range(x.shape[0])]
            lens = torch.tensor([len(v) for v in items], dtype=torch.long)
            x = torch.zeros(len(items), int(lens.max()))
            for b, v in enumerate(items):
                x[b, : len(v)] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        return x.to(self.device), lens, squeeze, numpy

    @staticmethod
    def _out(x: torch.Tensor, numpy: bool, squeeze: bool):
        if squeeze:
            x = x[0]
        return x.detach().cpu().numpy() if numpy else x

    @staticmethod
    def _with(out, lens, numpy: bool, given: bool):
        if not given:
            return out
        return out, (lens.cpu().numpy() if numpy else lens)

    # --- mel models ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _features(self, x: torch.Tensor, lens: torch.Tensor, normalized: bool = True):
        feats = self.frontend(x, lens.to(x.device) if bool((lens != x.shape[-1]).any()) else None)
        frames = self.frontend.frame_lengths(lens)
        return (self._norm(feats) if normalized else feats), frames

    def features(self, wave, sample_rate: int | None = None, lengths=None, normalized: bool = True):
        """Log-mel features of a waveform or a padded batch.

        Args:
            wave: numpy array or torch tensor ``(N,)`` or ``(B, N)``, float.
            sample_rate: the rate of ``wave`` in Hz; ``None`` (default) means it is already at
                ``vae.sample_rate``. Another rate is resampled (said once per loaded model).
            lengths: ``(B,)`` valid samples per item of a padded batch (default: all ``N``).
            normalized: the model's input (per-bin normalised, default) or the plain log-mel.

        Returns:
            ``(n_mels, T)`` or ``(B, n_mels, T)`` with ``T = 1 + N // hop_length``; with ``lengths``,
            ``(features, frame_lengths)``. numpy for numpy input, torch on ``vae.device`` for torch input.
        """
        self._need("mel", "features()")
        x, lens, squeeze, numpy = self._waves(wave, lengths, sample_rate)
        feats, frames = self._features(x, lens, normalized)
        return self._with(self._out(feats, numpy, squeeze), frames, numpy, lengths is not None)

    @torch.no_grad()
    def _encode_feats(self, feats: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mu, logvar, latent lengths)`` of normalised features ``(B, n_mels, T)``, item by item when padded."""
        b, _, t = feats.shape
        if self.sequence and bool((frames == t).all()):
            mu, logvar = self.model.encoder_params(feats)
            return mu, logvar, self.model.latent_size(frames)
        mus, lvs = [], []
        for i in range(b):
            m, lv = self.model.encoder_params(self.frames_in(feats[i: i + 1, :, : int(frames[i])]))
            if not self.sequence:  # (T, d) -> (1, d, T)
                m, lv = m.T[None], lv.T[None]
            mus.append(m)
            lvs.append(lv)
        zl = torch.tensor([m.shape[-1] for m in mus])
        width = int(zl.max())
        mu = feats.new_zeros(b, mus[0].shape[1], width)
        logvar = feats.new_zeros(b, mus[0].shape[1], width)
        for i, (m, lv) in enumerate(zip(mus, lvs)):
            mu[i, :, : m.shape[-1]] = m[0]
            logvar[i, :, : m.shape[-1]] = lv[0]
        return mu, logvar, zl

    def encode(self, x, sample_rate: int | None = None, lengths=None, posterior: bool = False):
        """The posterior mean ``z`` (or the posterior itself) of audio, features or images.

        Args:
            x: mel models: a waveform ``(N,)``, a batch ``(B, N)``, or normalised features ``(B, n_mels, T)``
                (:meth:`features`; a 3-D input is always taken as features). Image models: images
                ``(B, C, H, W)``, ``(C, H, W)`` or ``(H, W)``, floats in [0, 1] or uint8 (0..255).
            sample_rate: of a waveform; ``None`` means ``vae.sample_rate`` (see :meth:`features`).
            lengths: ``(B,)`` valid samples (waveforms) or frames (features) per item.
            posterior: return ``q(z | x)`` as a :class:`torch.distributions.Normal` instead of its mean
                (torch, batched, on ``vae.device``).

        Returns:
            ``z``: ``(latent, T')`` per item, ``(B, latent, T')`` for a batch; ``T' = ceil(T / downsample)``
            for a sequence model, ``T'`` = ``T`` (one latent per frame) for a frame model; images
            ``(latent,)`` / ``(B, latent)``. With ``lengths``: ``(z, latent_lengths)``.
        """
        if self.kind == "image":
            imgs, squeeze, numpy = self._images(x)
            with torch.no_grad():
                mu, logvar = self.model.encoder_params(imgs)
            if posterior:
                return Normal(mu, torch.exp(0.5 * logvar))
            return self._out(mu, numpy, squeeze)
        numpy = _is_numpy(x)
        t = torch.as_tensor(np.asarray(x) if numpy else x)
        if t.dim() == 3:
            feats = t.float().to(self.device)
            if feats.shape[1] != self.mel.n_mels:
                raise InvalidFeatureError(f"expected features (B, {self.mel.n_mels}, T), got {tuple(feats.shape)}")
            frames = torch.full((feats.shape[0],), feats.shape[-1], dtype=torch.long) if lengths is None else \
                torch.as_tensor(lengths).reshape(-1).long().cpu()
            squeeze = False
        else:
            wave, lens, squeeze, numpy = self._waves(x, lengths, sample_rate)
            feats, frames = self._features(wave, lens)
        mu, logvar, zl = self._encode_feats(feats, frames)
        if posterior:
            return self._with(Normal(mu, torch.exp(0.5 * logvar)), zl, False, lengths is not None)
        return self._with(self._out(mu, numpy, squeeze), zl, numpy, lengths is not None)

    @torch.no_grad()
    def _decode_feats(self, z: torch.Tensor, zl: torch.Tensor, frames: torch.Tensor | None,
                      cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised features ``(B, n_mels, T)`` and their frame lengths from latents ``(B, d, T')`` (and the
        items' condition indices ``(B,)`` for a conditioned model)."""
        b, d, w = z.shape
        if not self.sequence:  # frames are independent: the whole batch at once
            y = self.model.decode(z.permute(0, 2, 1).reshape(b * w, d),
                                  cond=None if cond is None else cond.repeat_interleave(w)).mean
            n_mels, c = self.mel.n_mels, self.context
            feats = y.reshape(b, w, n_mels, 2 * c + 1)[..., c].permute(0, 2, 1)
            return feats, zl.clone() if frames is None else frames
        ds = int(self.model.config.downsample)
        if frames is None:
            frames = zl * ds
        if bool((zl == w).all()) and bool((frames == frames[0]).all()):
            return self.model.decode(z, int(frames[0]), cond).mean, frames
        outs = [self.model.decode(z[i: i + 1, :, : int(zl[i])], int(frames[i]), None if cond is None else cond[i: i + 1]).mean
                for i in range(b)]
        feats = z.new_zeros(b, outs[0].shape[1], int(frames.max()))
        for i, o in enumerate(outs):
            feats[i, :, : o.shape[-1]] = o[0]
        return feats, frames

    @torch.no_grad()
    def _vocode(self, logmel: torch.Tensor, frames: torch.Tensor, num_samples: torch.Tensor | None,
                vocoder_iters: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        voc = self.vocoder
        hop = self.mel.hop_length
        samples = (frames - 1) * hop if num_samples is None else num_samples
        old = voc.n_iter
        if vocoder_iters is not None:
            voc.n_iter = vocoder_iters
        try:
            wave = voc(logmel, lengths=frames.to(logmel.device), num_samples=samples.to(logmel.device))
        finally:
            voc.n_iter = old
        return wave, samples

    def decode(self, z, to: str = "audio", lengths=None, vocoder_iters: int | None = None, speaker=None, label=None):
        """Decode latents to audio or log-mel (mel models), or to images (image models).

        A model conditioned on speaker (label) decodes in the voice of ``speaker`` (as ``label``): a name, or one
        name per item of a batch; it needs one.

        Args:
            z: ``(latent, T')`` for one item or ``(B, latent, T')`` (as :meth:`encode` gives); images
                ``(latent,)`` or ``(B, latent)``.
            to: ``"audio"`` (default): waveform(s) at ``vae.sample_rate`` through the Griffin-Lim vocoder;
                ``"logmel"``: the de-normalised log-mel ``(n_mels, T)`` / ``(B, n_mels, T)``.
            lengths: ``(B,)`` valid latent frames per item of a padded batch.
            vocoder_iters: Griffin-Lim iterations for this call (default: those given to :func:`load`).

        Returns:
            ``(N,)`` / ``(B, N)`` audio with ``N = (T - 1) * hop_length`` and ``T = T' * downsample`` (sequence
            models) or ``T = T'`` (frame models); or the log-mel. With ``lengths``: ``(output, output_lengths)``
            in samples (audio) or frames (log-mel). Images: ``(C, H, W)`` / ``(B, C, H, W)`` in [0, 1].
        """
        numpy = _is_numpy(z)
        t = torch.as_tensor(np.asarray(z) if numpy else z).float().to(self.device)
        if self.kind == "image":
            squeeze = t.dim() == 1
            with torch.no_grad():
                out = self.model.decode(t.reshape(-1, t.shape[-1])).mean
            return self._out(out, numpy, squeeze)
        if to not in ("audio", "logmel"):
            raise ConfigError(f"to must be 'audio' or 'logmel', got {to!r}")
        if t.dim() not in (2, 3) or t.shape[-2] != self.model.latent_dim:
            raise InvalidFeatureError(f"expected latents (latent={self.model.latent_dim}, T') or a batch "
                                      f"(B, {self.model.latent_dim}, T'), got {tuple(t.shape)}")
        squeeze = t.dim() == 2
        t = t.reshape(-1, *t.shape[-2:])
        zl = torch.full((t.shape[0],), t.shape[-1], dtype=torch.long) if lengths is None else \
            torch.as_tensor(lengths).reshape(-1).long().cpu()
        cond = self._cond(t.shape[0], speaker, label, "decode()")
        feats, frames = self._decode_feats(t, zl, None, cond)
        return self._finish(feats, frames, None, to, vocoder_iters, numpy, squeeze, lengths is not None)

    def _finish(self, feats, frames, num_samples, to, vocoder_iters, numpy, squeeze, given):
        with torch.no_grad():
            logmel = self._norm.inverse(feats)
        if to == "logmel":
            return self._with(self._out(logmel, numpy, squeeze), frames, numpy, given)
        wave, samples = self._vocode(logmel, frames, num_samples, vocoder_iters)
        return self._with(self._out(wave, numpy, squeeze), samples, numpy, given)

    def to_audio(self, logmel, lengths=None, vocoder_iters: int | None = None, normalized: bool = False):
        """Log-mel ``(n_mels, T)`` or ``(B, n_mels, T)`` -> waveform(s) ``(N,)`` / ``(B, N)`` at ``vae.sample_rate``,
        ``N = (T - 1) * hop_length``, through the model's Griffin-Lim vocoder.

        ``logmel``: de-normalised (what ``decode(z, to="logmel")`` and ``audiovae mel`` give); ``normalized=True``
        for the model's normalised features. ``lengths``: ``(B,)`` valid frames; then ``(audio, sample_lengths)``.
        """
        self._need("mel", "to_audio()")
        numpy = _is_numpy(logmel)
        t = torch.as_tensor(np.asarray(logmel) if numpy else logmel).float().to(self.device)
        squeeze = t.dim() == 2
        t = t.reshape(-1, *t.shape[-2:])
        if normalized:
            t = self._norm.inverse(t)
        frames = torch.full((t.shape[0],), t.shape[-1], dtype=torch.long) if lengths is None else \
            torch.as_tensor(lengths).reshape(-1).long().cpu()
        wave, samples = self._vocode(t, frames, None, vocoder_iters)
        return self._with(self._out(wave, numpy, squeeze), samples, numpy, lengths is not None)

    def reconstruct(self, x, sample_rate: int | None = None, lengths=None, to: str = "audio",
                    vocoder_iters: int | None = None, speaker=None, label=None):
        """Encode to the posterior mean and decode: audio in, audio out (or images in, images out).

        A model conditioned on speaker (label) needs the input's ``speaker`` (``label``): a name, or one per item.

        Args:
            x: a waveform ``(N,)`` or batch ``(B, N)`` (numpy or torch); images as in :meth:`encode`.
            sample_rate, lengths: as in :meth:`features`.
            to: ``"audio"`` (default) or ``"logmel"`` (de-normalised).
            vocoder_iters: as in :meth:`decode`.

        Returns:
            audio of the input's length at ``vae.sample_rate`` (the length after resampling, if resampled);
            with ``lengths``: ``(audio, sample_lengths)``.
        """
        if self.kind == "image":
            return self.decode(self.encode(x))
        wave, lens, squeeze, numpy = self._waves(x, lengths, sample_rate)
        cond = self._cond(wave.shape[0], speaker, label, "reconstruct()")
        feats, frames = self._features(wave, lens)
        mu, _, zl = self._encode_feats(feats, frames)
        rec, frames = self._decode_feats(mu, zl, frames, cond)
        return self._finish(rec, frames, lens, to, vocoder_iters, numpy, squeeze, lengths is not None)

    def convert(self, x, speaker=None, label=None, sample_rate: int | None = None, lengths=None, to: str = "audio",
                vocoder_iters: int | None = None, method: str = "knn", data=None, k: int = CONVERT_K,
                match_stats: bool | None = None):
        """Voice conversion: the content of ``x`` (its timing and phones) in the voice of ``speaker`` (or as
        ``label``), the input's length kept (as many samples out as in, at ``vae.sample_rate``).

        Needs a model trained with ``condition=speaker`` (``label``). ``x`` is encoded by the (unconditioned)
        encoder, so it may be anyone's voice, a training speaker or not. The per-frame latent carries the voice
        too, so the latents are moved to the target before the decoder decodes them with the target's condition:

        - ``method="match"``: each latent channel from the input's own statistics (mean and standard deviation
          over the utterance's latent frames) to the target's (running statistics of the target's training
          latents, kept in the model while it trains): ``(z - mean_src) / std_src * std_tgt + mean_tgt``;
        - ``method="knn"`` (default): that, then each latent frame replaced by the mean of its ``k`` nearest
          latent frames of the target's training utterances (kNN-VC, Baas et al. 2023, in the VAE's latent
          space): every frame decoded is one the target's voice made. Those utterances come from ``data``, a
          feature cache (default: the run's own training cache), encoded once per target and kept;
        - ``method="none"``: the latents as they are (the condition alone).

        Args:
            x: a waveform ``(N,)`` or a batch ``(B, N)`` (numpy or torch), as in :meth:`reconstruct`.
            speaker, label: the target: a name, or one per item.
            to: ``"audio"`` (default) or ``"logmel"``.

        Returns: audio like ``x`` (with ``lengths``: ``(audio, sample_lengths)``).
        """
        if match_stats is not None:  # the older spelling
            method = "match" if match_stats else "none"
        if method not in ("knn", "match", "none"):
            raise ConfigError(f"method must be knn, match or none, got {method!r}")
        self._need("mel", "convert()")
        if self.conditions is None:
            raise ConfigError(f"{self.path} is not conditioned on a speaker (train with condition=speaker for voice "
                              "conversion)")
        wave, lens, squeeze, numpy = self._waves(x, lengths, sample_rate)
        cond = self._cond(wave.shape[0], speaker, label, "convert()")
        feats, frames = self._features(wave, lens)
        mu, _, zl = self._encode_feats(feats, frames)
        if method in ("match", "knn"):
            mu = self._match_stats(mu, zl, cond)
        if method == "knn":
            mu = self._nearest_frames(mu, zl, cond, data, k)
        rec, frames = self._decode_feats(mu, zl, frames, cond)
        return self._finish(rec, frames, lens, to, vocoder_iters, numpy, squeeze, lengths is not None)

    @torch.no_grad()
    def condition_bank(self, index: int, data=None) -> torch.Tensor:
        """Posterior means ``(N, latent)`` of the latent frames of the training utterances of speaker (label)
        ``index`` (at most ``CONVERT_BANK_FRAMES``, in the cache's order), from ``data`` (a feature cache path or
        :class:`~audiovae.data.source.DataSource`; default: the run's own training cache). Kept per target."""
        from audiovae.data.source import DataSource, open_data

        key = (int(index), None if data is None else str(getattr(data, "path", data)))
        if key in self._banks:
            return self._banks[key]
        cond = self.conditions
        path = data if data is not None else self.config.get("data")
        if path is None:
            raise ConfigError(f"{self.path} does not say which cache it was trained on: give data= (a feature cache "
                              f"with the {cond['key']}'s utterances), or method='match'")
        try:
            src = path if isinstance(path, DataSource) else open_data(path)
        except AudioVAEError as exc:
            raise ConfigError(f"the target's training utterances are needed for method='knn' and could not be "
                              f"read ({exc}); give data= (a feature cache), or method='match'") from None
        if not src.is_features or src.mel != self.mel:
            raise ConfigError("the target's utterances must be a feature cache made with the model's MelConfig", src.path)
        name = cond["names"][int(index)]
        split = "train" if "train" in src.splits() else src.splits()[0]
        recs = [r for r in src.utterances(split) if str(r.get(cond["key"], "")) == name]
        if not recs:
            raise ConfigError(f"no utterance of {cond['key']} {name!r} in the {split} split", src.path)
        parts, n = [], 0
        for r in recs:
            if n >= CONVERT_BANK_FRAMES:
                break
            feats = self._norm(torch.from_numpy(src.logmel(r)).float().to(self.device)[None])
            mu, _, _ = self._encode_feats(feats, torch.tensor([feats.shape[-1]]))
            parts.append(mu[0].T)
            n += mu.shape[-1]
        bank = torch.cat(parts)[:CONVERT_BANK_FRAMES].contiguous()
        self._banks[key] = bank
        return bank

    @torch.no_grad()
    def _nearest_frames(self, mu: torch.Tensor, zl: torch.Tensor, cond: torch.Tensor, data, k: int) -> torch.Tensor:
        """Each latent frame ``(B, d, T')`` replaced by the mean of its ``k`` nearest frames of its target's bank."""
        out = mu.clone()
        for i in range(mu.shape[0]):
            bank = self.condition_bank(int(cond[i]), data).to(mu.dtype)
            z = mu[i, :, : int(zl[i])].T  # (T', d)
            kk = max(1, min(int(k), bank.shape[0]))
            for a in range(0, z.shape[0], 2048):  # bounded memory: 2048 x N distances at a time
                idx = torch.cdist(z[a: a + 2048], bank).topk(kk, largest=False).indices
                out[i, :, a: a + idx.shape[0]] = bank[idx].mean(1).T
        return out

    @torch.no_grad()
    def _match_stats(self, mu: torch.Tensor, zl: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, d, T')`` with each item's per-channel mean and std moved to its target's."""
        mean_t, std_t = (s.to(mu.device, mu.dtype) for s in self.model.condition_latent_stats())
        seen = self.model.cond_latent_seen.to(mu.device)
        out = mu.clone()
        for i in range(mu.shape[0]):
            c = int(cond[i])
            if seen[c] == 0:  # a model saved before it saw this speaker: nothing to match
                continue
            m = mu[i, :, : int(zl[i])]
            ms, ss = m.mean(-1, keepdim=True), m.std(-1, keepdim=True, unbiased=False).clamp_min(1e-4)
            out[i, :, : int(zl[i])] = (m - ms) / ss * std_t[c][:, None] + mean_t[c][:, None]
        return out

    def _generator(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def sample(self, n: int = 1, seconds: float = 2.0, temperature: float = 1.0, seed: int | None = None,
               to: str = "audio", vocoder_iters: int | None = None, prior: str | None = None,
               progress: bool = False, frame_noise: float | None = None, speaker=None, label=None) -> np.ndarray:
        """``n`` draws from the prior, decoded: audio ``(n, N)`` at ``vae.sample_rate`` (numpy).

        ``seconds``: length of each (mel models); ``temperature``: scales the prior's standard deviation
        (a learned prior also sharpens its choice of mixture component by it); ``seed``: a fixed draw
        (default: torch's global generator); ``prior``: ``"learned"`` or ``"standard"`` for this call
        (default: :attr:`prior`); ``frame_noise``: a learned prior draws each latent frame as its chosen
        component's mean plus this times the component's scale (default 0; see
        :meth:`audiovae.models.prior.LatentPrior.sample`); ``to="logmel"``: ``(n, n_mels, T)`` instead. A
        frame (dense) model has no model of time: its frames are independent draws. Image models:
        ``(n, C, H, W)`` in [0, 1].

        A model conditioned on speaker (label): ``speaker`` (``label``), a name or one per sample, is whose voice
        is generated; with neither, each sample's speaker is drawn uniformly from those the model knows (before
        the latents, from the same generator: see :meth:`sample_conditions`).
        """
        g = self._generator(seed)
        p = self._prior_for(prior)
        cond = self._cond(n, speaker, label, "sample()", required=False)
        if self.kind == "image":
            z = p.sample(self.model.prior_shape(n), temperature, g)
            with torch.no_grad():
                return self.model.decode(z).mean.cpu().numpy()
        frames = max(4, int(seconds * self.mel.frame_rate))
        shape = self.model.prior_shape(n, frames) if self.sequence else (n, self.model.latent_dim, frames)
        if cond is None and self.conditions is not None:
            cond = self.sample_conditions(n, g)
        if self.sequence:
            z = p.sample(shape, temperature, g, cond=cond, progress=progress, frame_noise=frame_noise)
            with torch.no_grad():
                feats = self.model.decode(z, frames, cond).mean
        else:
            z = p.sample(shape, temperature, g, cond=cond)
            feats, _ = self._decode_feats(z, torch.full((n,), frames), None, cond)
        fl = torch.full((n,), frames, dtype=torch.long)
        return self._finish(feats, fl, None, to, vocoder_iters, True, False, False)

    def sample_conditions(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` speaker (label) indices drawn uniformly from those a conditioned model knows."""
        k = len(self.conditions["names"])
        return torch.randint(k, (n,), generator=generator, device=self.device)

    def interpolate(self, a, b, steps: int = 5, sample_rate: int | None = None, to: str = "audio",
                    vocoder_iters: int | None = None, speaker=None, label=None):
        """Decode ``(1 - t) z_a + t z_b`` for ``steps`` values of ``t`` from 0 to 1 (posterior means).

        ``a``, ``b``: two waveforms ``(N_a,)``, ``(N_b,)`` (mel models; the longer one is cut to the shorter
        one's frames) or two images. Returns ``(steps, N)`` audio (or log-mel / images), numpy for numpy input.
        A conditioned model decodes every step with ``speaker`` (``label``), which it needs.
        """
        if self.kind == "image":
            za, zb = self.encode(a), self.encode(b)
            numpy = _is_numpy(za)
            za, zb = torch.as_tensor(za), torch.as_tensor(zb)
            zs = torch.stack([(1 - t) * za + t * zb for t in np.linspace(0, 1, steps)])
            return self.decode(zs.numpy() if numpy else zs)
        fa = self.features(a, sample_rate)
        fb = self.features(b, sample_rate)
        numpy = _is_numpy(fa)
        fa, fb = torch.as_tensor(fa).to(self.device), torch.as_tensor(fb).to(self.device)
        t_len = min(fa.shape[-1], fb.shape[-1])
        feats = torch.stack([fa[:, :t_len], fb[:, :t_len]])
        mu, _, zl = self._encode_feats(feats, torch.full((2,), t_len))
        zs = torch.stack([(1 - t) * mu[0] + t * mu[1] for t in np.linspace(0, 1, steps)])
        cond = self._cond(steps, speaker, label, "interpolate()")
        rec, frames = self._decode_feats(zs, torch.full((steps,), zs.shape[-1]), torch.full((steps,), t_len), cond)
        return self._finish(rec, frames, None, to, vocoder_iters, numpy, False, False)

    # --- image models ----------------------------------------------------------------------------------
    def _images(self, x) -> tuple[torch.Tensor, bool, bool]:
        numpy = _is_numpy(x)
        t = torch.as_tensor(np.asarray(x) if numpy else x)
        cfg = self.model.config
        c, s = int(cfg.image_channels), int(cfg.image_size)
        squeeze = t.dim() < 4
        if t.dim() == 2:
            t = t[None, None]
        elif t.dim() == 3:
            t = t[None]
        if t.dim() != 4 or tuple(t.shape[1:]) != (c, s, s):
            raise InvalidFeatureError(f"expected images ({c}, {s}, {s}) or a batch (B, {c}, {s}, {s}), got "
                                      f"{tuple(torch.as_tensor(np.asarray(x) if numpy else x).shape)}")
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        return t.to(self.device), squeeze, numpy
