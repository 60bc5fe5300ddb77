"""Training loggers: ``metrics.csv`` and ``validation.csv`` (:class:`_CSV`, fed by the on-device
:class:`_LogWindow`), the progress bar (:class:`_Progress`) and TensorBoard.

TensorBoard: scalars at every log step; at every validation the log-mel of a few
validation utterances next to their reconstructions (an image) and the reconstructions as audio.

``pip install 'audiovae[tensorboard]'`` turns it on; the run writes ``RUN/tb/`` (``tensorboard --logdir RUN``).
Without the package the trainer says once that TensorBoard logging is off and trains as before.

The media cost little and always the same: only rank 0 logs, only at validations, at most
:data:`MEDIA_ITEMS` utterances cropped to :data:`MEDIA_SECONDS` each, vocoded with
:data:`MEDIA_VOCODER_ITERS` Griffin-Lim iterations (image models: a grid of 8 images and their
reconstructions, no audio).
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from audiovae.utils import atomic_write_text

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
            cond = None
            if getattr(model, "n_conditions", 0):  # a conditioned model: the utterance's own speaker (label)
                cond = torch.as_tensor(self.data.condition_indices([rec], model.condition, model.condition_names),
                                       device=device)
            if model.is_sequence:
                y = model.reconstruct(x[None], cond)[0]
            else:
                fx = frames_with_context(x, self.context)
                y = centre_frames(model.reconstruct(fx, None if cond is None else cond.expand(fx.shape[0])), mel.n_mels,
                                  self.context)[0]
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


# --- metrics.csv / validation.csv and the progress bar ------------------------------------------

TRAIN_COLUMNS = ["step", "epoch", "loss", "elbo", "elbo_per_dim", "recon", "kl", "beta", "lr", "grad_norm",
                 "data_s", "step_s", "items_per_s"]
VAL_COLUMNS = ["step", "epoch", "val_elbo", "val_elbo_per_dim", "val_recon", "val_kl", "active_units"]


class _CSV:
    """Append-only CSV log that survives resume: rows past the resumed step are dropped first."""

    def __init__(self, path: Path, columns: list[str], keep_until_step: int | None):
        self.path, self.columns = path, columns
        if keep_until_step is not None and path.exists():
            with open(path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= keep_until_step]
            lines = [",".join(columns)] + [",".join(r.get(c, "") for c in columns) for r in rows]
            atomic_write_text(path, "\n".join(lines) + "\n")
        elif not path.exists() or keep_until_step is None:
            atomic_write_text(path, ",".join(columns) + "\n")
        self.fh = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.fh, columns, extrasaction="ignore")

    def write(self, row: dict) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class _LogWindow:
    """Sums of the logged quantities over the steps since the last metrics.csv row, kept on the device.

    Nothing here reads a value back from the device until :meth:`take`, whose ``.tolist()`` is the
    loop's one host sync; so the wall time from the window's first step to that sync is the true time of
    its steps on a GPU too (host-side step times there only measure kernel launches)."""

    KEYS = ("loss", "elbo", "elbo_sum", "n_dims", "recon", "kl", "grad_norm", "finite_grads")

    def __init__(self, device: torch.device, jac_per_dim: float, world: int = 1, check_grad: bool = True):
        # check_grad=False with a GradScaler: an inf gradient there only skips the update and lowers the scale
        self.device, self.jac_per_dim, self.world, self.check_grad = device, float(jac_per_dim), world, check_grad
        self.sums = torch.zeros(len(self.KEYS), dtype=torch.float64, device=device)
        self.bad = torch.full((), -1, dtype=torch.int64, device=device)  # first step with a non-finite loss/gradient
        self.steps, self.items, self.t_data, self.t0, self.last = 0, 0, 0.0, 0.0, {}

    def add(self, step: int, s: dict, t_begin: float, t_data: float) -> None:
        if self.steps == 0:
            self.t0 = t_begin
        res = s["res"]
        elbo = res.elbo.detach().double()
        dims = res.n_dims.double()
        jac = self.jac_per_dim * dims  # densities of log-mel features, not of normalised ones
        gnorm = s["gnorm"].detach().double()
        finite_g = torch.isfinite(gnorm)
        # a step skipped by the GradScaler (inf gradient) does not make the window's mean gradient norm inf
        vals = torch.stack([s["loss"].detach().double(), (elbo + jac).mean(), (elbo + jac).sum(), dims.sum(),
                            (res.recon.detach().double() + jac).mean(), res.kl.detach().double().mean(),
                            torch.where(finite_g, gnorm, 0.0), finite_g.double()])
        self.sums += vals
        finite = torch.isfinite(vals[0]) & (finite_g if self.check_grad else True)
        self.bad = torch.where((self.bad < 0) & ~finite, torch.full_like(self.bad, step), self.bad)
        self.steps += 1
        self.items += elbo.shape[0] * self.world
        self.t_data += t_data
        self.last = {"beta": s["beta"], "lr": s["lr"]}

    def take(self) -> tuple[dict, int]:
        """The window's row (means per step) and the first bad step on any rank (-1 if none); starts a new
        window. Under DDP every rank learns of a bad step on any rank, so all stop together."""
        bad = self.bad
        if self.world > 1:
            big = torch.iinfo(torch.int64).max
            bad = torch.where(bad < 0, torch.full_like(bad, big), bad)
            dist.all_reduce(bad, op=dist.ReduceOp.MIN)
            bad = torch.where(bad == big, torch.full_like(bad, -1), bad)
        sums, bad = self.sums.tolist(), int(bad)
        wall = time.perf_counter() - self.t0
        v = dict(zip(self.KEYS, sums))
        n = self.steps
        row = {"loss": v["loss"] / n, "elbo": v["elbo"] / n, "elbo_per_dim": v["elbo_sum"] / max(1.0, v["n_dims"]),
               "recon": v["recon"] / n, "kl": v["kl"] / n,
               "grad_norm": v["grad_norm"] / v["finite_grads"] if v["finite_grads"] else math.inf, **self.last,
               "data_s": self.t_data / n, "step_s": (wall - self.t_data) / n, "items_per_s": self.items / max(1e-9, wall)}
        self.sums.zero_()
        self.bad.fill_(-1)
        self.steps, self.items, self.t_data = 0, 0, 0.0
        return row, bad


class _Progress:
    """A progress bar over whichever limit binds: steps, or the time limit when it comes first."""

    def __init__(self, cfg, step: int, desc: str, enabled: bool):
        self.cfg, self.start_step, self.desc = cfg, step, desc
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=cfg.max_steps, initial=step, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True)
        self.extra = ""

    def update(self, step: int, text: str) -> None:
        if self.cfg.max_minutes and step > self.start_step:
            elapsed = time.perf_counter() - self.t0
            per_step = elapsed / (step - self.start_step)
            fits = step + max(0.0, 60 * self.cfg.max_minutes - elapsed) / per_step
            if fits < self.cfg.max_steps:  # the clock binds: count towards the steps that fit in time
                self.bar.total = max(step, int(fits))
                self.bar.set_description_str(f"{self.desc} ({self.cfg.max_minutes:g} min limit)", refresh=False)
            else:
                self.bar.total = self.cfg.max_steps
                self.bar.set_description_str(self.desc, refresh=False)
        self.bar.n = step
        self.bar.set_postfix_str(f"{text} {self.extra}".strip(), refresh=False)
        self.bar.refresh() if self.bar.n == self.bar.total else self.bar.update(0)

    def note(self, text: str) -> None:
        self.extra = text
        self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        self.bar.close()
