"""Metrics against independent computations; configuration round trips and overrides."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import scipy.fft
import torch

from audiovae.audio.config import MelConfig
from audiovae.audio.metrics import (
    log_spectral_distance,
    mel_cepstral_distortion,
    mel_cepstrum,
    spectral_convergence,
    stoi,
)
from audiovae.config import apply_overrides, from_dict, load_yaml, save_yaml
from audiovae.errors import ConfigError


def test_spectral_metrics_closed_form():
    s = torch.rand(2, 100, 30) + 0.1
    assert torch.allclose(spectral_convergence(s, s), torch.zeros(2))
    # scaling by 2: SC = ||S - 2S|| / ||S|| = 1, LSD = 20 log10 2 dB
    assert torch.allclose(spectral_convergence(s, 2 * s), torch.ones(2))
    assert torch.allclose(log_spectral_distance(s, 2 * s), torch.full((2,), 20 * np.log10(2.0)).float(), atol=1e-4)


def test_lsd_over_an_80_db_range_matches_librosa_amplitude_to_db():
    """top_db=80 floors both spectra 80 dB below the reference's peak; a band the reference does not
    carry (zeros) then costs what the estimate puts above that floor, not 100 dB of faint noise."""
    rng = np.random.default_rng(1)
    ref = rng.random((2, 64, 20)) + 1e-3
    ref[1] *= 1e-3  # a quiet item: its floor is its own peak less 80 dB, not a shared or absolute one
    ref[:, 48:] = 0.0  # an empty band, as above 8 kHz in a 16 kHz recording
    est = ref * np.exp(rng.normal(0, 0.3, ref.shape))
    # faint noise where the reference is silent, straddling each item's floor (peak - 80 dB)
    est[:, 48:] = ref.max(axis=(1, 2))[:, None, None] * 1e-4 * rng.uniform(0.3, 3.0, (2, 16, 20))
    expect = []
    for r, e in zip(ref, est):
        db_r = librosa.amplitude_to_db(r, ref=1.0, amin=1e-30, top_db=None)
        db_e = librosa.amplitude_to_db(e, ref=1.0, amin=1e-30, top_db=None)
        lo = db_r.max() - 80.0
        d = np.maximum(db_r, lo) - np.maximum(db_e, lo)
        expect.append(np.sqrt((d**2).mean(axis=0)).mean())
    ours = log_spectral_distance(torch.from_numpy(ref), torch.from_numpy(est), top_db=80.0)
    np.testing.assert_allclose(ours.numpy(), expect, rtol=1e-9)
    absolute = log_spectral_distance(torch.from_numpy(ref), torch.from_numpy(est))
    assert absolute[0] > ours[0] + 3  # the empty band dominates the absolute-floor LSD
    for other in (log_spectral_distance(torch.from_numpy(ref), torch.from_numpy(est), floor=1e-4),
                  log_spectral_distance(torch.from_numpy(ref), torch.from_numpy(est), top_db=70.0)):
        assert not np.allclose(other.numpy(), expect, rtol=1e-3)  # the test tells these apart


def test_mel_cepstrum_matches_librosa_and_scipy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(8000)
    ref_mel = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=1024, hop_length=256, n_mels=80, power=2.0, pad_mode="constant")
    ref = scipy.fft.dct(np.log(np.maximum(ref_mel, 1e-10)), type=2, norm="ortho", axis=0)[:25]
    ours = mel_cepstrum(torch.from_numpy(x)[None], 16000)[0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def test_mcd_zero_for_identical_and_grows_with_noise():
    rng = np.random.default_rng(1)
    t = np.arange(16000) / 16000
    x = torch.from_numpy(np.sin(2 * np.pi * 300 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)))[None]
    assert float(mel_cepstral_distortion(x, x, 16000)[0]) < 1e-6
    n1 = x + 0.01 * torch.from_numpy(rng.standard_normal(x.shape))
    n2 = x + 0.1 * torch.from_numpy(rng.standard_normal(x.shape))
    assert 0 < float(mel_cepstral_distortion(x, n1, 16000)[0]) < float(mel_cepstral_distortion(x, n2, 16000)[0])


def test_stoi_identity(speech):
    wave, sr = speech
    x = torch.from_numpy(wave)[None]
    assert float(stoi(x, x, sr)[0]) > 0.999


def test_melconfig_yaml_round_trip_and_overrides(tmp_path):
    cfg = MelConfig(sample_rate=16000, n_mels=80, fmax=7600.0)
    save_yaml(tmp_path / "c.yaml", cfg.to_dict())
    back = from_dict(MelConfig, load_yaml(tmp_path / "c.yaml"))
    assert back == cfg
    over = apply_overrides(cfg, ["n_mels=64", "fmax=null", "power=2"])
    assert over.n_mels == 64 and over.fmax is None and over.power == 2.0
    with pytest.raises(ConfigError, match="unknown"):
        apply_overrides(cfg, ["n_mel=64"])
    with pytest.raises(ConfigError, match="expects int"):
        apply_overrides(cfg, ["n_mels=many"])
    with pytest.raises(ConfigError, match="unknown MelConfig field"):
        from_dict(MelConfig, {"bogus": 1})


@pytest.mark.parametrize(
    "kwargs,problem",
    [({"sample_rate": 10}, "sample_rate"), ({"win_length": 4096}, "win_length"), ({"fmax": 20000.0}, "fmax"),
     ({"power": 3.0}, "power"), ({"hop_length": 0}, "hop_length")],
)
def test_melconfig_rejects_nonsense(kwargs, problem):
    with pytest.raises(ConfigError, match=problem):
        MelConfig(**kwargs)


def test_melconfig_refuses_empty_mel_bands_as_librosa_finds_them():
    """A band with no FFT bin is refused with a message that says what to change; the bands it names
    are exactly the all-zero rows of librosa's filterbank (checked over a grid, Slaney and HTK)."""
    import dataclasses
    import itertools
    import warnings

    with pytest.raises(ConfigError, match="contain no FFT bin.*n_fft=512 at 22050 Hz.*larger n_fft"):
        MelConfig(n_fft=512, win_length=512, hop_length=128, n_mels=256)
    MelConfig(n_fft=1024)  # rank deficient (rank 218) but every band has bins: accepted, and it vocodes
    for sr, n_fft, n_mels, fmin, htk in itertools.product((8000, 44100), (256, 1024), (40, 128, 256),
                                                          (0.0, 55.0), (False, True)):
        fields = {f.name: f.default for f in dataclasses.fields(MelConfig)}
        fields.update(sample_rate=sr, n_fft=n_fft, win_length=n_fft, hop_length=n_fft // 4, n_mels=n_mels, fmin=fmin,
                      htk=htk)
        cfg = object.__new__(MelConfig)  # bypass validation to ask the check itself
        for k, v in fields.items():
            object.__setattr__(cfg, k, v)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, htk=htk)
        assert cfg.empty_mel_bands() == np.nonzero(fb.max(axis=1) == 0)[0].tolist(), (sr, n_fft, n_mels, fmin, htk)
