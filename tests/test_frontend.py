"""The mel front end against librosa and torchaudio, batching with lengths, the default filterbank."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from audiovae.audio import functional as AF
from audiovae.audio.config import MelConfig
from audiovae.audio.frontend import MelFrontend

SETTINGS = [
    # sample_rate, n_fft, win_length, hop, n_mels, fmin, fmax, power
    (22050, 2048, 1024, 256, 256, 0.0, None, 1.0),
    (16000, 512, 400, 160, 80, 20.0, 7600.0, 2.0),
    (44100, 4096, 2048, 512, 128, 50.0, 16000.0, 1.0),
    (8000, 256, 256, 64, 40, 0.0, None, 2.0),
    (24000, 1024, 1024, 300, 100, 30.0, 11000.0, 2.0),
]


def _signal(sr: int, seconds: float = 1.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    chirp = np.sin(2 * np.pi * (200 + 1500 * t) * t)
    return (0.3 * chirp + 0.05 * rng.standard_normal(t.size)).astype(np.float64)


@pytest.mark.parametrize("sr,n_fft,win,hop,n_mels,fmin,fmax,power", SETTINGS)
def test_matches_librosa(sr, n_fft, win, hop, n_mels, fmin, fmax, power):
    cfg = MelConfig(sr, n_fft, win, hop, n_mels, fmin, fmax, power)
    x = _signal(sr)
    ref = librosa.feature.melspectrogram(
        y=x, sr=sr, n_fft=n_fft, hop_length=hop, win_length=win, n_mels=n_mels, fmin=fmin, fmax=fmax,
        power=power, center=True, pad_mode="constant",
    )
    fe = MelFrontend(cfg).double()
    ours = fe.mel(torch.from_numpy(x)[None])[0].numpy()
    assert ours.shape == ref.shape
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel <= 1e-5, rel
    # float32 path: relative error of the whole spectrogram
    ours32 = MelFrontend(cfg).mel(torch.from_numpy(x).float()[None])[0].double().numpy()
    assert np.linalg.norm(ours32 - ref) / np.linalg.norm(ref) <= 1e-5


@pytest.mark.parametrize("sr,n_fft,win,hop,n_mels,fmin,fmax,power", SETTINGS[:3])
def test_matches_torchaudio(sr, n_fft, win, hop, n_mels, fmin, fmax, power):
    torchaudio = pytest.importorskip("torchaudio")
    cfg = MelConfig(sr, n_fft, win, hop, n_mels, fmin, fmax, power)
    x = torch.from_numpy(_signal(sr, seed=1))[None]
    ta = torchaudio.transforms.MelSpectrogram(
        sample_rate=sr, n_fft=n_fft, win_length=win, hop_length=hop, f_min=fmin, f_max=fmax, n_mels=n_mels,
        power=power, norm="slaney", mel_scale="slaney", center=True, pad_mode="constant",
    ).double()
    ref = ta(x)[0].numpy()
    ours = MelFrontend(cfg).double().mel(x)[0].numpy()
    assert np.abs(ours - ref).max() / np.abs(ref).max() <= 1e-5


def test_log_compression_is_hifigan_style():
    cfg = MelConfig()
    x = torch.from_numpy(_signal(cfg.sample_rate)).float()[None]
    fe = MelFrontend(cfg)
    logmel = fe(x)
    expected = torch.log(torch.clamp(fe.mel(x), min=1e-5))
    torch.testing.assert_close(logmel, expected)
    # silence maps to the floor exactly
    assert torch.allclose(fe(torch.zeros(1, 4096)), torch.full((1, 256, 17), np.log(1e-5)))


def test_batch_with_lengths_equals_one_by_one():
    cfg = MelConfig()
    fe = MelFrontend(cfg)
    lengths = [22050, 9000, 15333, 257]
    items = [torch.from_numpy(_signal(cfg.sample_rate, seed=i)).float()[:n] for i, n in enumerate(lengths)]
    batch = torch.randn(len(items), max(lengths))  # garbage past each length must be ignored
    for i, it in enumerate(items):
        batch[i, : len(it)] = it
    out = fe(batch, torch.tensor(lengths))
    frames = fe.frame_lengths(torch.tensor(lengths))
    for i, it in enumerate(items):
        alone = fe(it[None])[0]
        assert alone.shape[-1] == frames[i]
        torch.testing.assert_close(out[i, :, : frames[i]], alone, rtol=1e-5, atol=1e-5)
        assert torch.all(out[i, :, frames[i] :] == np.log(cfg.log_floor))


def test_default_filterbank_full_rank_no_empty_filter():
    cfg = MelConfig()
    assert cfg.n_mels == 256 and cfg.sample_rate == 22050
    fb = AF.mel_filterbank(cfg, torch.float64)
    assert fb.shape == (256, cfg.n_fft // 2 + 1)
    assert bool((fb.max(dim=1).values > 0).all()), "an empty mel filter"
    assert int(torch.linalg.matrix_rank(fb)) == 256
    # and the reason for n_fft=2048: 1024 would be rank deficient
    fb1024 = AF.mel_filterbank(cfg.replace(n_fft=1024), torch.float64)
    assert int(torch.linalg.matrix_rank(fb1024)) < 256


def test_banded_matmul_equals_dense():
    fb = AF.mel_filterbank(MelConfig(), torch.float64)
    blocks = AF.banded_blocks(fb)
    x = torch.rand(3, fb.shape[1], 7, dtype=torch.float64)
    torch.testing.assert_close(AF.banded_matmul(fb, blocks, x), fb @ x)
    u = torch.rand(3, fb.shape[0], 7, dtype=torch.float64)
    torch.testing.assert_close(AF.banded_matmul(fb, blocks, u, transpose=True), fb.T @ u)


def test_dtypes_and_shapes():
    cfg = MelConfig()
    fe = MelFrontend(cfg)
    x = torch.randn(2, 5000)
    assert fe(x).dtype == torch.float32
    assert fe(x.double()).dtype == torch.float64
    assert fe(x).shape == (2, 256, 1 + 5000 // 256)
    assert fe(x[0]).shape == (256, 1 + 5000 // 256)
    with pytest.raises(TypeError):
        fe(torch.zeros(2, 100, dtype=torch.int16))


def test_stft_istft_round_trip():
    w = torch.hann_window(1024, dtype=torch.float64)
    x = torch.randn(2, 10000, dtype=torch.float64)
    spec = AF.stft(x, w, 2048, 256)
    # magnitudes equal torch.stft's (only the phase reference differs)
    ref = torch.stft(x, 2048, 256, 1024, w, center=True, pad_mode="constant", return_complex=True)
    torch.testing.assert_close(spec.abs(), ref.abs())
    torch.testing.assert_close(AF.istft(spec, w, 2048, 256, 10000), x)


@pytest.mark.parametrize("sr,n_fft,win,hop,n_mels,fmin,fmax,power", SETTINGS[:2])
def test_device_path_matches_librosa_and_fused(sr, n_fft, win, hop, n_mels, fmin, fmax, power):
    """The path used off the CPU (torch.stft + one dense filterbank product) equals librosa and the fused kernel."""
    cfg = MelConfig(sr, n_fft, win, hop, n_mels, fmin, fmax, power)
    x = _signal(sr, seed=2)
    ref = librosa.feature.melspectrogram(
        y=x, sr=sr, n_fft=n_fft, hop_length=hop, win_length=win, n_mels=n_mels, fmin=fmin, fmax=fmax,
        power=power, center=True, pad_mode="constant",
    )
    fe = MelFrontend(cfg).double()
    dense = AF.melspectrogram(torch.from_numpy(x)[None], cfg, window=fe.window, fb=fe.fb, dense=True)[0].numpy()
    assert np.abs(dense - ref).max() / np.abs(ref).max() <= 1e-5
    # with lengths, a padded batch on the dense path equals the fused path item by item
    lengths = torch.tensor([len(x), len(x) // 3])
    batch = torch.from_numpy(np.stack([x, np.roll(x, 500)]))
    fused = AF.melspectrogram(batch, cfg, lengths, fe.window, fe.fb, fe.blocks, csr=fe.csr)
    dense_b = AF.melspectrogram(batch, cfg, lengths, fe.window, fe.fb, dense=True)
    torch.testing.assert_close(dense_b, fused, rtol=1e-6, atol=1e-9 * float(fused.abs().max()))
