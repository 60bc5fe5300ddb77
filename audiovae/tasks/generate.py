"""Reconstruct, sample and interpolate audio with a trained mel VAE: a model directory is all it needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from audiovae.api import LoadedVAE, load
from audiovae.audio.io import load_audio
from audiovae.errors import ConfigError


@dataclass
class MelModel:
    """A loaded mel VAE (:func:`audiovae.load`'s :class:`~audiovae.api.LoadedVAE`) with the one-utterance
    helpers the commands use: features and audio as ``(1, n_mels, T)`` tensors. From Python, use
    ``audiovae.load`` and its methods."""

    vae: LoadedVAE

    @classmethod
    def load(cls, model_dir: str | os.PathLike, vocoder_iters: int | None = None, checkpoint: str = "best",
             device: str = "auto", prior: str = "auto") -> "MelModel":
        """Load ``model_dir`` (a run folder: its ``best/`` or ``last`` weights) onto ``device``; ``prior`` as in
        :func:`audiovae.load`."""
        vae = load(model_dir, checkpoint, device, vocoder_iters, prior=prior)
        if vae.mel is None or vae.normalizer is None:
            raise ConfigError(f"{vae.path} is a {vae.name!r} model, not a mel VAE")
        return cls(vae)

    @property
    def loaded(self) -> LoadedVAE:
        return self.vae

    @property
    def frontend(self):
        return self.vae.frontend

    @property
    def vocoder(self):
        return self.vae.vocoder

    @property
    def model(self):
        return self.vae.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def sample_rate(self) -> int:
        return self.vae.sample_rate

    @property
    def context(self) -> int:
        return self.vae.context

    def features(self, wave: np.ndarray) -> torch.Tensor:
        """Normalised log-mel ``(1, n_mels, T)`` of a waveform ``(N,)``, on the model's device."""
        with torch.no_grad():
            return self.loaded.normalizer(self.frontend(torch.from_numpy(wave)[None].to(self.device)))

    def frames_in(self, feats: torch.Tensor) -> torch.Tensor:
        """Model input from ``(1, n_mels, T)`` (see :meth:`audiovae.api.LoadedVAE.frames_in`)."""
        return self.vae.frames_in(feats)

    def frames_out(self, y: torch.Tensor) -> torch.Tensor:
        return self.vae.frames_out(y)

    def to_audio(self, feats: torch.Tensor, num_samples: int | None = None) -> np.ndarray:
        """Normalised log-mel ``(1, n_mels, T)`` -> waveform ``(N,)`` via the model's MelConfig."""
        with torch.no_grad():
            logmel = self.loaded.normalizer.inverse(feats)
            wave = self.vocoder(logmel, num_samples=None if num_samples is None else [num_samples])
        return wave[0].cpu().numpy()

    def _item_cond(self, cond: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        """One item's condition index ``(1,)`` as the model input ``x`` needs it (one per frame for a frame model)."""
        if cond is None:
            return None
        return cond.reshape(1).to(self.device).expand(x.shape[0])

    @torch.no_grad()
    def reconstruct(self, wave: np.ndarray, cond: torch.Tensor | None = None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """``(audio, input features, reconstructed features)`` for a waveform (``cond``: the speaker or label
        index ``(1,)`` a conditioned model decodes with, :meth:`LoadedVAE.condition_index`)."""
        feats = self.features(wave)
        x = self.frames_in(feats)
        rec = self.frames_out(self.model.reconstruct(x, self._item_cond(cond, x)))
        return self.to_audio(rec, len(wave)), feats, rec

    def sample(self, n: int, seconds: float, temperature: float = 1.0,
               progress: bool = False, seed: int | None = None,
               cond: torch.Tensor | None = None) -> list[tuple[np.ndarray, torch.Tensor]]:
        """``n`` utterances from the prior: ``[(audio, features (1, n_mels, T))]`` (``cond``: a conditioned
        model's speaker or label index per sample, ``(n,)``)."""
        return list(self.iter_samples(n, seconds, temperature, progress, seed, cond))

    @torch.no_grad()
    def iter_samples(self, n: int, seconds: float, temperature: float = 1.0, progress: bool = False,
                     seed: int | None = None, cond: torch.Tensor | None = None, frame_noise: float | None = None):
        """:meth:`sample` one utterance at a time (``n`` of them need not fit in memory together), from the
        loaded model's prior (learned or ``N(0, I)``); ``seed``: the draws of one generator seeded with it
        (default: torch's global generator); ``cond``: a conditioned model's speaker or label index per
        sample, ``(n,)``; ``frame_noise``: see :meth:`audiovae.api.LoadedVAE.sample`;
        ``progress``: a bar on stderr."""
        from tqdm import tqdm

        frames = max(4, int(seconds * self.loaded.mel.frame_rate))
        g = None if seed is None else torch.Generator(device=self.device).manual_seed(int(seed))
        prior = self.loaded.prior
        for i in tqdm(range(n), desc="sample", unit="utt", disable=not progress):
            c = None if cond is None else cond[i: i + 1].to(self.device)
            if self.model.is_sequence:
                z = prior.sample(self.model.prior_shape(1, frames), temperature, g, cond=c, frame_noise=frame_noise)
                feats = self.model.decode(z, frames, c).mean
            else:  # a dense VAE has no model of time: independent frames from the prior
                z = prior.sample(self.model.prior_shape(frames), temperature, g)
                feats = self.frames_out(self.model.decode(z, None, None if c is None else c.expand(frames)).mean)
            yield self.to_audio(feats), feats

    @torch.no_grad()
    def interpolate(self, a: np.ndarray, b: np.ndarray, steps: int = 5, progress: bool = False,
                    cond: torch.Tensor | None = None) -> list[tuple[np.ndarray, torch.Tensor]]:
        """Decode ``(1 - t) z_a + t z_b`` for ``steps`` values of t in [0, 1] (posterior means; shorter length);
        ``progress``: a bar on stderr; ``cond``: the speaker or label index ``(1,)`` a conditioned model
        decodes every step with (it needs one)."""
        from tqdm import tqdm

        fa, fb = self.features(a), self.features(b)
        t_len = min(fa.shape[-1], fb.shape[-1])
        za = self.model.encoder_params(self.frames_in(fa[..., :t_len]))[0]
        zb = self.model.encoder_params(self.frames_in(fb[..., :t_len]))[0]
        out = []
        for t in tqdm(np.linspace(0, 1, steps), desc="interpolate", unit="step", disable=not progress):
            z = (1 - t) * za + t * zb
            feats = self.frames_out(self.model.decode(z, t_len if self.model.is_sequence else None,
                                                      self._item_cond(cond, z)).mean)
            out.append((self.to_audio(feats), feats))
        return out


def reconstruct_file(model_dir: str | os.PathLike | MelModel, audio: str | os.PathLike, out: str | os.PathLike,
                     cond: torch.Tensor | None = None) -> Path:
    """Reconstruct an audio file through a trained model (a run folder or a loaded :class:`MelModel`) and write it
    (``cond``: the speaker or label index ``(1,)`` of a conditioned model)."""
    from audiovae.audio.io import save_audio

    mm = model_dir if isinstance(model_dir, MelModel) else MelModel.load(model_dir)
    wave, sr = load_audio(audio, mm.sample_rate, min_samples=mm.loaded.mel.win_length)
    y, _, _ = mm.reconstruct(wave, cond)
    return save_audio(out, y, sr)


def convert_file(vae: LoadedVAE, audio: str | os.PathLike, out: str | os.PathLike, speaker=None, label=None,
                 vocoder_iters: int | None = None, method: str = "knn", data=None, k: int = 4) -> Path:
    """Voice conversion of an audio file (:meth:`LoadedVAE.convert`), written with as many samples as it has (at
    the model's rate)."""
    from audiovae.audio.io import save_audio

    wave, sr = load_audio(audio, vae.sample_rate, min_samples=vae.mel.win_length)
    y = vae.convert(wave, speaker=speaker, label=label, vocoder_iters=vocoder_iters, method=method, data=data, k=k)
    return save_audio(out, y, sr)
