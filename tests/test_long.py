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
@pytest.mark.parametrize("frame_chunk", [5, 37, 100])
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


# --- the vocoder -------------------------------------------------------------------------------------

def _quality(ref: torch.Tensor, est: torch.Tensor) -> dict:
    from audiovae.audio import metrics as M

    win = torch.hann_window(1024, dtype=torch.float64)
    r, e = (AF.magnitude(AF.stft(v[None].double(), win, 2048, 256)) for v in (ref, est))
    return {"sc": float(M.spectral_convergence(r, e)), "lsd": float(M.log_spectral_distance(r, e)),
            "lsd80": float(M.log_spectral_distance(r, e, top_db=80))}


@pytest.fixture(scope="module")
def speech_logmel(speech_dir):
    """About 5 s of espeak-ng speech (two utterances) and its log-mel."""
    from audiovae.audio.io import load_audio

    x = torch.from_numpy(np.concatenate([load_audio(speech_dir / f"utt0{i}.wav", 22050)[0] for i in (0, 1)]))
    return x, MelFrontend(MelConfig())(x[None])


def test_chunked_vocoder_matches_one_pass_quality(speech_logmel):
    """Inverted in chunks of 64 frames (0.7 s, overlap 32), speech comes back as well as in one pass: the phase of
    each chunk continues the previous one's and the chunks are cross-faded (without either, the spectral
    convergence or the LSD gets clearly worse)."""
    from audiovae.audio.vocoder import GriffinLimVocoder

    x, lm = speech_logmel
    assert lm.shape[-1] > 6 * 64
    one = GriffinLimVocoder(MelConfig(), n_iter=16, chunk_frames=None)(lm, num_samples=[len(x)])[0]
    chunked = GriffinLimVocoder(MelConfig(), n_iter=16, chunk_frames=64, overlap_frames=32)(lm, num_samples=[len(x)])[0]
    assert chunked.shape == one.shape and torch.isfinite(chunked).all()
    q1, qc = _quality(x, one), _quality(x, chunked)
    assert abs(qc["lsd"] - q1["lsd"]) < 0.2, (q1, qc)
    assert abs(qc["lsd80"] - q1["lsd80"]) < 0.2, (q1, qc)
    assert qc["sc"] < 1.1 * q1["sc"], (q1, qc)


def test_vocoder_short_inputs_unchanged_and_long_batch_item_by_item(speech_logmel):
    """Inputs no longer than the chunk take the one-pass path bit for bit; in a batch with a long item, a short
    item gets what it gets alone and the long one what it gets chunked alone (lengths respected)."""
    from audiovae.audio.vocoder import GriffinLimVocoder

    x, lm = speech_logmel
    short = lm[..., :60]
    v_one = GriffinLimVocoder(MelConfig(), n_iter=4, chunk_frames=None)
    v_chunk = GriffinLimVocoder(MelConfig(), n_iter=4, chunk_frames=64, overlap_frames=32)
    assert torch.equal(v_chunk(short), v_one(short))
    batch = torch.full((2, lm.shape[1], 200), float(np.log(1e-5)))
    batch[0] = lm[0, :, :200]
    batch[1, :, :50] = lm[0, :, 300:350]
    y = v_chunk(batch, lengths=torch.tensor([200, 50]))
    assert y.shape == (2, 199 * 256)
    torch.testing.assert_close(y[1, : 49 * 256], v_one(lm[:, :, 300:350])[0], rtol=0, atol=1e-5)
    assert not y[1, 49 * 256:].any()
    torch.testing.assert_close(y[0], v_chunk(lm[:, :, :200])[0], rtol=0, atol=1e-5)


# --- repair: windowed Metropolis-within-Gibbs -------------------------------------------------------

CONV_SETTINGS = [{}, {"downsample": 2}, {"downsample": 4, "full_rate_blocks": 1}]


def _tiny_conv(**kw):
    from audiovae.models.conv import ConvVAE, ConvVAEConfig

    torch.manual_seed(0)
    return ConvVAE(ConvVAEConfig(n_mels=8, channels=16, latent_dim=4, **kw)).double().eval()


@pytest.mark.parametrize("kw", CONV_SETTINGS)
def test_decoder_radius_covers_the_receptive_field(kw):
    """Changing one latent frame changes no output frame farther than the radius (measured, not assumed)."""
    from audiovae.tasks.impute import decoder_radius

    m = _tiny_conv(**kw)
    r, ds = decoder_radius(m), kw.get("downsample", 1)
    z = torch.randn(1, 4, 40, dtype=torch.float64)
    z2 = z.clone()
    z2[..., 20] += 3.0
    with torch.no_grad():
        changed = (m.decode(z).params - m.decode(z2).params).abs().amax(1)[0] > 0
    frames = torch.nonzero(changed).flatten()
    assert frames.numel() > 0
    assert frames.min() >= (20 - r) * ds and frames.max() < (21 + r) * ds
    assert decoder_radius(_tiny_conv(norm="group")) is None  # a norm over the sequence is not local


@pytest.mark.parametrize("kw", CONV_SETTINGS)
def test_windowed_mwg_equals_whole_sequence_mwg(kw):
    """Each block's proposal decoded on a latent window around it: the same chain as decoding the whole
    sequence per block (same draws, same decisions, the same estimate to float64 rounding)."""
    from audiovae.tasks.impute import impute

    m = _tiny_conv(**kw)
    x = torch.randn(2, 8, 90, dtype=torch.float64)
    obs = torch.ones_like(x, dtype=torch.bool)
    obs[0, :, 10:14] = False
    obs[0, :, 50:70] = False
    obs[1, :, :5] = False
    obs[1, :, 85:] = False
    out = {}
    for windowed in (True, False):
        torch.manual_seed(1)
        out[windowed] = impute(m, x, obs, "mwg", iters=5, windowed=windowed)
    assert out[True].acceptance == out[False].acceptance
    torch.testing.assert_close(out[True].x, out[False].x, rtol=0, atol=1e-9)
    assert torch.equal(out[True].x[obs], x[obs])


# --- progress bars ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_conv_run(feats, tmp_path_factory):
    from audiovae.training.config import TrainConfig
    from audiovae.training.trainer import train

    run = tmp_path_factory.mktemp("longconv") / "run"
    cfg = TrainConfig(model="conv", model_config={"channels": 16, "latent_dim": 4, "res_blocks": 1}, batch_size=4,
                      max_steps=2, segment_frames=32, lr_warmup_steps=0, checkpoint_every=1000, val_batches=1)
    train(feats, run, cfg, progress=False)
    return run


def _cli(args):
    from click.testing import CliRunner

    from audiovae.cli import cli

    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.stderr


def test_progress_bars_for_sample_interpolate_repair(tiny_conv_run, speech_dir, tmp_path):
    """`sample -n`, `interpolate --steps` and `repair` show a tqdm bar on stderr that counts their work."""
    err = _cli(["sample", tiny_conv_run, "-o", tmp_path / "s", "-n", 3, "--seconds", 0.2])
    assert "sample" in err and "3/3" in err
    a, b = speech_dir / "utt00.wav", speech_dir / "utt01.wav"
    err = _cli(["interpolate", tiny_conv_run, a, b, "-o", tmp_path / "i.wav", "--steps", 3])
    assert "interpolate" in err and "3/3" in err
    err = _cli(["repair", tiny_conv_run, a, "--gap", "0.20:0.25", "--gap", "2.00:2.05", "--chain-iters", 3,
                "-o", tmp_path / "r.wav"])
    assert "repair (mwg)" in err and "6/6" in err  # two crops, three iterations each


def test_vocoder_progress_counts_every_frame_once(speech_logmel):
    """The vocoder's progress hook sees each frame once: per chunk of a long item, per short item."""
    from audiovae.audio.vocoder import GriffinLimVocoder

    _, lm = speech_logmel
    voc = GriffinLimVocoder(MelConfig(), n_iter=1, chunk_frames=64, overlap_frames=32)
    seen = []
    voc.progress = seen.append
    batch = torch.full((2, lm.shape[1], 300), float(np.log(1e-5)))
    batch[0] = lm[0, :, :300]
    batch[1, :, :40] = lm[0, :, :40]
    voc(batch, lengths=torch.tensor([300, 40]))
    assert sum(seen) == 340 and len(seen) > 3
    seen.clear()
    voc(lm[..., :50])
    assert seen == [50]


def test_vocode_bar_moves_for_one_long_file(tmp_path, speech_logmel, monkeypatch, capsys):
    """`vocode` of a single file longer than a chunk shows a bar counted in frames."""
    from audiovae.audio import vocoder as V
    from audiovae.audio.melfile import save_mel
    from audiovae.tasks import signal

    _, lm = speech_logmel
    class SmallChunks(V.GriffinLimVocoder):
        def __init__(self, *args, **kw):
            super().__init__(*args, chunk_frames=64, overlap_frames=32, **kw)

    monkeypatch.setattr(signal, "CHUNK_FRAMES", 64)
    monkeypatch.setattr(signal, "GriffinLimVocoder", SmallChunks)
    path = save_mel(tmp_path / "a.mel.npz", lm[0].numpy(), MelConfig(), (lm.shape[-1] - 1) * 256, "test")
    ok, bad = signal.vocode_files([path], tmp_path / "out" / "a.wav", n_iter=1, progress=True)
    assert len(ok) == 1 and not bad
    err = capsys.readouterr().err
    assert "vocode" in err and f"{lm.shape[-1]}/{lm.shape[-1]}" in err
