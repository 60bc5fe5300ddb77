"""Repair (inpainting) of damaged images and audio with a trained VAE: images in :mod:`.images`, audio in
:mod:`.audio`, what they share in :mod:`.common`.

- Images (``mnist``/``cifar`` models): :func:`make_mask` builds the damage (a PNG
  mask, or ``centre``, ``random``, ``left``, ``right``, ``scratch``);
  :func:`repair_images` repairs the first ``n`` test images of an image folder
  with the VAE (see :mod:`audiovae.tasks.impute`) and with the baselines
  (mean image, nearest training neighbour on the observed pixels, one-shot VAE
  reconstruction), measures each on the missing pixels only and writes
  damaged / repaired / original grids.
- Audio (``dense``/``conv`` mel models): :func:`repair_audio` takes a waveform
  with gaps (``[(start_s, end_s)]``), marks every log-mel frame whose analysis
  window touches a gap as missing, fills those frames in the model's normalised
  log-mel, vocodes, and splices the result into the input: outside each gap
  widened by one window (``win_length`` samples, an equal-power crossfade) the
  output samples *are* the input samples.

Error measures (missing part only): images from a Bernoulli model (``mnist``,
binarised pixels) get the mean binary cross-entropy of the filled probability
against the binarised truth (``bce``, nats per missing pixel) and the squared
error of that probability (``mse``); colour images (``cifar``) the squared error
in [0, 1] pixel units (``mse``). Audio gets the log-mel squared error over the
missing frames (natural-log mel, not normalised: ``logmel_mse``).
"""

from audiovae.tasks.impute import DEFAULTS, METHODS
from audiovae.tasks.repair.audio import (
    fill_logmel,
    gap_samples,
    interp_fill,
    missing_frames,
    missing_spans,
    observed_frames,
    packet_loss_gaps,
    parse_gap,
    refuse_image_data,
    repair_audio,
    repair_wave,
    splice,
)
from audiovae.tasks.repair.common import load_run_kind, looks_like_image_data
from audiovae.tasks.repair.images import MASKS, make_mask, nearest_neighbour_fill, read_png_mask, repair_images

__all__ = [
    "DEFAULTS", "METHODS", "MASKS", "make_mask", "read_png_mask", "nearest_neighbour_fill", "repair_images",
    "parse_gap", "packet_loss_gaps", "gap_samples", "missing_frames", "splice", "interp_fill", "fill_logmel",
    "missing_spans", "observed_frames", "repair_wave", "refuse_image_data", "repair_audio", "load_run_kind",
    "looks_like_image_data",
]
