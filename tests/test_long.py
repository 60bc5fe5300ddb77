"""Long inputs and long work: the chunked front end and vocoder, windowed repair, progress bars.

Chunk sizes are parameters, so a few seconds of audio with tiny chunks exercise the paths a
30-minute file takes with the defaults.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiovae.audio import functional as AF
from audiovae.audio.config import MelConfig
from audiovae.audio.frontend import MelFrontend


def _chirp(seconds: float, sr: int = 22050, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * (150 + 900 * t) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return torch.from_numpy((x + 0.02 * rng.standard_normal(t.size)).astype(np.float32))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("frame_chunk", [1, 37, 100])
def test_chunked_frontend_equals_one_pass(fused, frame_chunk):
    """A long signal analysed a chunk of frames at a time gives the one-pass log-mel (the STFT is frame-local),
    also for a padded batch with lengths and a length that is not a multiple of the hop."""
    cfg = MelConfig()
    w = torch.stack([_chirp(1.5), _chirp(1.5, seed=1)])
    lengths = torch.tensor([w.shape[-1], 20001])
    one = MelFrontend(cfg, fused=fused, frame_chunk=None)(w, lengths)
    assert one.shape[-1] > 2 * frame_chunk or frame_chunk == 100  # several chunks (100: two, the last one short)
    chunked = MelFrontend(cfg, fused=fused, frame_chunk=frame_chunk)(w, lengths)
    assert chunked.shape == one.shape
    torch.testing.assert_close(chunked, one, rtol=0, atol=1e-5)


def test_chunked_frontend_device_path_equals_one_pass():
    """The dense (torch.stft) path, what a GPU takes, chunked the same way."""
    cfg = MelConfig(sample_rate=16000, n_fft=512, win_length=400, hop_length=160, n_mels=80)
    w = _chirp(1.2, sr=16000)[None]
    one = AF.melspectrogram(w, cfg, dense=True, frame_chunk=None)
    chunked = AF.melspectrogram(w, cfg, dense=True, frame_chunk=13)
    torch.testing.assert_close(chunked, one, rtol=1e-5, atol=1e-6)


def test_frontend_default_chunk_leaves_short_inputs_alone():
    assert MelFrontend().frame_chunk == AF.FRAME_CHUNK >= 2048  # short inputs (< 24 s) keep the one-pass path
