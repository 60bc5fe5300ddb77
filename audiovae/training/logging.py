"""Training loggers. TensorBoard: scalars at every log step; at every validation the log-mel of a few
validation utterances next to their reconstructions (an image) and the reconstructions as audio.

``pip install 'audiovae[tensorboard]'`` turns it on; the run writes ``RUN/tb/`` (``tensorboard --logdir RUN``).
Without the package the trainer says once that TensorBoard logging is off and trains as before.

The media cost little and always the same: only rank 0 logs, only at validations, at most
:data:`MEDIA_ITEMS` utterances cropped to :data:`MEDIA_SECONDS` each, vocoded with
:data:`MEDIA_VOCODER_ITERS` Griffin-Lim iterations (image models: a grid of 8 images and their
reconstructions, no audio).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

MEDIA_ITEMS = 2
MEDIA_SECONDS = 2.0
MEDIA_VOCODER_ITERS = 8
MEDIA_IMAGES = 8
NOTICE = ("TensorBoard logging is off: the tensorboard package is not installed "
          "(pip install 'audiovae[tensorboard]' turns it on)")

_told = False  # the notice is given once per process, however many runs it trains


def _summary_writer():
    """``torch.utils.tensorboard.SummaryWriter``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter


def _notice_off() -> None:
    global _told
    if not _told:
        _told = True
        from tqdm import tqdm

        tqdm.write(NOTICE, file=sys.stderr)


class TensorBoardLogger:
    """Writes one run's TensorBoard events. Build it with :meth:`open` (None when tensorboard is missing).

    ``data``: the run's :class:`audiovae.data.source.DataSource` (the validation items shown come from
    it); ``normalizer``: the run's feature normaliser (None for images); ``context``: the dense model's
    context frames.
    """

    def __init__(self, writer, data, normalizer=None, context: int = 0):
        self.writer, self.data, self.normalizer, self.context = writer, data, normalizer, context
        self.vocoder = None
        self._originals_logged = False

    @classmethod
    def open(cls, log_dir: str | Path, data, normalizer=None, context: int = 0,
             resumed_at: int | None = None) -> "TensorBoardLogger | None":
        """The logger, or None (and the one-time notice) without tensorboard. ``resumed_at``: the step a
        resumed run continues from; TensorBoard drops the earlier events past it (as metrics.csv does)."""
        writer_cls = _summary_writer()
        if writer_cls is None:
            _notice_off()
            return None
        return cls(writer_cls(str(log_dir), purge_step=resumed_at), data, normalizer, context)

    # --- scalars --------------------------------------------------------------------------------
    def scalars(self, prefix: str, values: dict, step: int) -> None:
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    # --- validation media -----------------------------------------------------------------------
    @torch.no_grad()
    def validation_media(self, model, step: int) -> None:
        """Spectrograms and audio (features) or images (image models) of validation reconstructions."""
        was_training = model.training
        model.eval()
        try:
            if self.data.is_features:
                self._mel_media(model, step)
            else:
                self._image_media(model, step)
        finally:
            model.train(was_training)
        self.writer.flush()

    def _val_items(self) -> list[dict]:
        split = "val" if "val" in self.data.splits() else "train"
        return self.data.utterances(split)[:MEDIA_ITEMS]

    def _mel_media(self, model, step: int) -> None:
        from audiovae.audio.vocoder import GriffinLimVocoder
        from audiovae.data.datasets import centre_frames, frames_with_context

        mel = self.data.mel
        device = next(model.parameters()).device
        if self.vocoder is None:
            self.vocoder = GriffinLimVocoder(mel, n_iter=MEDIA_VOCODER_ITERS).to(device)
        n_frames = max(8, int(MEDIA_SECONDS * mel.frame_rate))
        mean = self.normalizer.mean.to(device).view(-1, 1)
        std = self.normalizer.std.to(device).view(-1, 1)
        for i, rec in enumerate(self._val_items()):
            logmel = torch.from_numpy(self.data.logmel(rec)[:, :n_frames]).float().to(device)  # (n_mels, T)
            x = (logmel - mean) / std
            if model.is_sequence:
                y = model.reconstruct(x[None])[0]
            else:
                y = centre_frames(model.reconstruct(frames_with_context(x, self.context)), mel.n_mels, self.context)[0]
            rec_logmel = (y.float() * std + mean)[:, : logmel.shape[1]]
            tag = f"val/item{i}"
            self.writer.add_image(f"{tag}/logmel_original_vs_reconstruction",
                                  _spectrogram_image(logmel.cpu().numpy(), rec_logmel.cpu().numpy()), step,
                                  dataformats="HWC")
            wave = self.vocoder(rec_logmel[None])[0].float().cpu()
            self.writer.add_audio(f"{tag}/reconstruction", _audio(wave), step, sample_rate=mel.sample_rate)
            if not self._originals_logged:  # the same every time: the vocoded original, once, for comparison
                orig = self.vocoder(logmel[None])[0].float().cpu()
                self.writer.add_audio(f"{tag}/original_vocoded", _audio(orig), step, sample_rate=mel.sample_rate)
        self._originals_logged = True

    def _image_media(self, model, step: int) -> None:
        ds, collate = self.data.dataset("val", self.data.kind)
        n = min(MEDIA_IMAGES, len(ds))
        if n == 0:
            return
        device = next(model.parameters()).device
        x = collate([ds[i] for i in range(n)]).x.to(device)
        rec = model.reconstruct(x).float()
        signed = self.data.kind != "mnist"
        pics = torch.cat([x.float(), rec]).cpu().numpy()
        pics = np.clip((pics + 1) / 2 if signed else pics, 0, 1)
        if pics.ndim == 3:
            pics = pics[:, None]
        self.writer.add_images("val/images_original_then_reconstruction", pics, step, dataformats="NCHW")

    def close(self) -> None:
        self.writer.close()


def _audio(wave: torch.Tensor) -> torch.Tensor:
    """A waveform ``(N,)`` as TensorBoard wants it: ``(1, N)`` in [-1, 1]."""
    return wave.clamp(-1, 1)[None]


def _spectrogram_image(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """Two log-mels ``(n_mels, T)`` stacked (original on top, low frequencies at the bottom of each), as an
    ``(H, W, 3)`` float image in [0, 1] (magma colours, one shared scale)."""
    from matplotlib import colormaps

    lo, hi = float(original.min()), float(original.max())
    gap = np.full((2, original.shape[1]), lo, np.float32)
    both = np.concatenate([original[::-1], gap, reconstruction[::-1]], axis=0)
    unit = np.clip((both - lo) / max(hi - lo, 1e-6), 0, 1)
    return colormaps["magma"](unit)[..., :3].astype(np.float32)
