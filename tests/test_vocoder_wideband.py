"""The vocoder's mel-consistency correction (issue 18, wideband speech; docs/vocoder_perf.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiovae.audio import functional as AF
from audiovae.audio.config import MelConfig
from audiovae.audio.frontend import MelFrontend
from audiovae.audio.metrics import mel_cepstral_distortion
from audiovae.audio.vocoder import GriffinLimVocoder, griffin_lim, mel_gain

CFG = MelConfig()


def _mel_gain_reference(rebuilt, mel, fb, power, gmax):
    """Frame by frame, band by band, bin by bin, in float64 numpy."""
    r = np.abs(rebuilt.numpy()).astype(np.float64) ** power
    mel, fb = mel.numpy().astype(np.float64), fb.numpy().astype(np.float64)
    b_, t_, f_ = r.shape
    out = np.ones((b_, t_, f_))
    for b in range(b_):
        for t in range(t_):
            g = np.empty(fb.shape[0])
            for m in range(fb.shape[0]):
                have = sum(fb[m, k] * r[b, t, k] for k in range(f_))
                g[m] = min(max((mel[b, t, m] / max(have, 1e-300)) ** (1 / power), 1 / gmax), gmax)
            for k in range(f_):
                w = fb[:, k]
                if w.sum() > 0:
                    out[b, t, k] = (w * g).sum() / w.sum()
    return out


@pytest.mark.parametrize("power", [1.0, 2.0])
@pytest.mark.parametrize("banded", [False, True])
def test_mel_gain_matches_a_loop_reference(power, banded):
    # fmax below Nyquist: the top bins belong to no band and keep a gain of exactly 1
    cfg = MelConfig(sample_rate=8000, n_fft=256, win_length=256, hop_length=64, n_mels=24, fmax=3000.0, power=power)
    fb = AF.mel_filterbank(cfg, torch.float64)
    g = torch.Generator().manual_seed(0)
    rebuilt = torch.complex(torch.randn(2, 3, cfg.n_freqs, generator=g, dtype=torch.float64),
                            torch.randn(2, 3, cfg.n_freqs, generator=g, dtype=torch.float64))
    have = torch.matmul(AF.magnitude(rebuilt) ** power, fb.T)
    # targets from 0.5x to 2x what the estimate has: some gains inside the clamp, some clamped either way
    mel = have * torch.exp(torch.empty_like(have).uniform_(-math.log(2), math.log(2), generator=g))
    got = mel_gain(rebuilt, mel, fb, power, 1.3, AF.banded_blocks(fb) if banded else None)
    want = _mel_gain_reference(rebuilt, mel, fb, power, 1.3)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    assert (got[..., cfg.n_freqs - 5:] == 1).all()
    assert got.min() >= 1 / 1.3 - 1e-12 and got.max() <= 1.3 + 1e-12


def _speech(speech_dir, n):
    import soundfile as sf

    return torch.from_numpy(sf.read(speech_dir / "utt00.wav", dtype="float32")[0][:n])[None]


def test_mel_correction_lowers_the_mcd(speech_dir):
    """The correction exists to make the vocoded audio's mel spectrum closer to the log-mel it came from,
    which is what MCD measures; with the same iterations it must lower the MCD clearly on a whole
    utterance (espeak-ng, 3.8 s: 6.97 dB without, 6.20 with, 16 iterations)."""
    import soundfile as sf

    x = torch.from_numpy(sf.read(speech_dir / "utt02.wav", dtype="float32")[0])[None]
    logmel = MelFrontend(CFG)(x)
    mcd = {on: float(mel_cepstral_distortion(
        x, GriffinLimVocoder(CFG, n_iter=16, mel_correction=on)(logmel, num_samples=[x.shape[-1]]), CFG.sample_rate)[0])
        for on in (False, True)}
    assert mcd[True] < mcd[False] - 0.5, mcd


def test_mel_correction_fused_equals_torch_path_and_batches_equal_alone(speech_dir, monkeypatch):
    """griffin_lim with the correction: the fused CPU loop (banded products, passes of a few items)
    computes what the torch path (dense products) computes, and a padded batch gives each item what it
    gets alone."""
    from audiovae.audio import vocoder as vocoder_mod

    x = _speech(speech_dir, 16000).double()
    waves = [x[0, :6000], x[0, 3000:14000], x[0, 8000:12000]]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(3, int(lengths.max()), dtype=torch.float64)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    fe = MelFrontend(CFG).double()
    voc = GriffinLimVocoder(CFG).double()
    logmel = fe(batch, lengths)
    mag = voc.magnitude(logmel)
    mel = torch.exp(logmel)
    kw = dict(n_iter=6, lengths=lengths, mel=mel, fb=voc.fb, mel_gain_iters=3)
    fused = griffin_lim(mag, CFG, **kw)
    plain_kw = dict(n_iter=6, lengths=lengths)
    assert (fused - griffin_lim(mag, CFG, **plain_kw)).abs().max() > 1e-3  # the correction changed something
    monkeypatch.setattr(vocoder_mod, "CPU_CHUNK_BYTES", 1)  # passes of one item per thread
    torch.testing.assert_close(griffin_lim(mag, CFG, **kw), fused, rtol=1e-9, atol=1e-9)
    monkeypatch.setattr(vocoder_mod, "use_cpu_kernels", False)
    torch.testing.assert_close(griffin_lim(mag, CFG, **kw), fused, rtol=1e-9, atol=1e-9)
    monkeypatch.undo()
    for i, w in enumerate(waves):
        lm = fe(w[None])
        alone = griffin_lim(voc.magnitude(lm), CFG, n_iter=6, length=len(w), mel=torch.exp(lm), fb=voc.fb,
                            mel_gain_iters=3)[0]
        torch.testing.assert_close(fused[i, : len(w)], alone, rtol=1e-7, atol=1e-7)

