"""Speaker/label-conditioned models: training, resume, sampling per speaker, unknown speakers, conversion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from audiovae.cli import cli
from audiovae.errors import ConfigError

SPEAKERS = ("quiet", "loud")
GAIN = 4.0  # the loud speaker says the same utterances 12 dB louder: a known, constant log-mel offset
TINY = ["--model", "conv", "model_config.channels=16", "model_config.latent_dim=4", "model_config.res_blocks=1",
        "batch_size=4", "segment_frames=32", "checkpoint_every=5", "val_every=10", "lr_warmup_steps=2",
        "kl_warmup_steps=10", "lr=3e-3"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "audiovae", *args]


@pytest.fixture(scope="session")
def two_speakers(tmp_path_factory) -> Path:
    """A 32-bin feature cache of two speakers (manifest with speakers and labels): the same synthesised utterances,
    the second speaker 12 dB louder; 4 train, 1 val, 1 test utterance each."""
    from audiovae.audio.config import MelConfig
    from audiovae.data.corpora import Manifest, Utterance, write_manifest
    from audiovae.data.features import extract
    from audiovae.data.synth import VOICES, synthesize_utterance

    root = tmp_path_factory.mktemp("two_speakers")
    utts = []
    splits = ["train"] * 4 + ["val", "test"]
    for j, split in enumerate(splits):
        wave = synthesize_utterance(np.random.default_rng(j), VOICES[1], sr=16000, n_syllables=4)
        wave = 0.2 * wave / np.abs(wave).max()
        for spk, gain in zip(SPEAKERS, (1.0, GAIN)):
            path = root / "wav" / spk / f"u{j}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, gain * wave, 16000, subtype="FLOAT")
            utts.append(Utterance(f"{spk}_u{j}", path, speaker=spk, label=f"lab{j % 2}", split=split,
                                  duration=len(wave) / 16000, sample_rate=16000))
    man = write_manifest(Manifest(utts, "test", str(root), "by hand"), root / "man")
    out = root / "feats"
    extract(man, out, MelConfig(sample_rate=16000, n_mels=32), workers=0, progress=False)
    return out


def _train(data: Path, run: Path, *extra: str, steps: int = 20) -> subprocess.CompletedProcess:
    return subprocess.run(_cli("train", str(data), "-o", str(run), "--max-steps", str(steps), *TINY, *extra),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def speaker_run(two_speakers, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cond_run") / "run"
    res = _train(two_speakers, run, "condition=speaker", steps=60)
    assert res.returncode == 0, res.stderr[-3000:]
    return run


def test_training_fills_the_condition_from_the_train_split(speaker_run):
    from audiovae.config import load_yaml

    mc = load_yaml(speaker_run / "best" / "config.yaml")["model_config"]
    assert mc["condition"] == "speaker" and mc["condition_names"] == sorted(SPEAKERS)
    import audiovae

    vae = audiovae.load(speaker_run)
    assert vae.conditions == {"key": "speaker", "names": sorted(SPEAKERS)}
    assert vae.model.n_conditions == 2
    assert vae.condition_index(speaker="loud").tolist() == [0]
    with pytest.raises(ConfigError, match="unknown speaker 'nobody'; this model knows: loud, quiet"):
        vae.condition_index(speaker="nobody")
    with pytest.raises(ConfigError, match="speaker"):
        vae.condition_index(label="lab0")


def test_decoder_uses_the_speaker(speaker_run, two_speakers):
    """Decoding the same latents as each speaker moves the log-mel by the speakers' true difference (the data's
    mean log-mel of the loud speaker minus the quiet one's, 12 dB): a decoder that ignores cond fails."""
    import audiovae
    from audiovae.data.source import open_data

    data = open_data(two_speakers)
    mean = {s: np.mean([data.logmel(r).mean() for r in data.utterances("train") if r["speaker"] == s])
            for s in SPEAKERS}
    true_diff = mean["loud"] - mean["quiet"]
    assert true_diff > 1.0
    vae = audiovae.load(speaker_run)
    rec = [r for r in data.utterances("val") if r["speaker"] == "quiet"][0]
    z = vae.encode(torch.from_numpy((data.logmel(rec) - vae.normalizer.mean.cpu().numpy()[:, None])
                                    / vae.normalizer.std.cpu().numpy()[:, None])[None].float())
    as_loud = vae.decode(z, to="logmel", speaker="loud")
    as_quiet = vae.decode(z, to="logmel", speaker="quiet")
    diff = float((as_loud - as_quiet).mean())
    assert diff > 0.4 * true_diff, (diff, true_diff)
    # the model also learned the speakers' latent statistics while training (what conversion matches)
    assert bool((vae.model.cond_latent_seen > 0).all())


def test_unconditioned_data_is_refused(feats, tmp_path):
    res = _train(feats, tmp_path / "run", "condition=speaker", steps=2)
    assert res.returncode == 1
    assert "no speaker" in res.stderr and res.stderr.count("\n") == 1, res.stderr


def test_resume_of_a_conditioned_run_is_bit_exact(two_speakers, tmp_path):
    from tests.test_training import _assert_same_run

    # a constant learning rate: the run stopped at step 10 and resumed to 20 is the run of 20 steps
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert _train(two_speakers, ref, "condition=speaker", "lr_schedule=constant", steps=20).returncode == 0
    assert _train(two_speakers, run, "condition=speaker", "lr_schedule=constant", steps=10).returncode == 0
    res = subprocess.run(_cli("train", str(two_speakers), "-o", str(run), "--resume", "--max-steps", "20"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    _assert_same_run(ref, run)
    # the condition is a setting like any other: resume refuses a change
    res = subprocess.run(_cli("train", str(two_speakers), "-o", str(run), "--resume", "condition=label"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "condition" in res.stderr, res.stderr


def test_sampling_per_speaker_is_seeded(speaker_run):
    import audiovae

    vae = audiovae.load(speaker_run)
    a = vae.sample(2, seconds=0.3, seed=3, speaker="loud", to="logmel")
    b = vae.sample(2, seconds=0.3, seed=3, speaker="loud", to="logmel")
    c = vae.sample(2, seconds=0.3, seed=3, speaker="quiet", to="logmel")
    np.testing.assert_array_equal(a, b)
    assert float((a - c).mean()) > 0  # the same latents, the louder voice
    with pytest.raises(ConfigError, match="unknown speaker"):
        vae.sample(1, seconds=0.3, speaker="nobody")


def test_cli_sample_speaker(speaker_run, tmp_path):
    r = CliRunner()
    res = r.invoke(cli, ["sample", str(speaker_run), "-o", str(tmp_path / "a"), "-n", "2", "--seconds", "0.3",
                         "--speaker", "loud", "--seed", "1", "--vocoder-iters", "2"])
    assert res.exit_code == 0, res.output
    res2 = r.invoke(cli, ["sample", str(speaker_run), "-o", str(tmp_path / "b"), "-n", "2", "--seconds", "0.3",
                          "--speaker", "loud", "--seed", "1", "--vocoder-iters", "2"])
    assert res2.exit_code == 0, res2.output
    for i in range(2):
        assert (tmp_path / "a" / f"sample_{i}.wav").read_bytes() == (tmp_path / "b" / f"sample_{i}.wav").read_bytes()
    bad = r.invoke(cli, ["sample", str(speaker_run), "-o", str(tmp_path / "c"), "--speaker", "nobody"])
    assert bad.exit_code == 1
    assert "unknown speaker 'nobody'; this model knows: loud, quiet" in bad.output
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
    lab = r.invoke(cli, ["sample", str(speaker_run), "-o", str(tmp_path / "d"), "--label", "lab0"])
    assert lab.exit_code == 1 and "speaker" in lab.output


def test_label_conditioning_and_unconditioned_models_refuse_speaker(two_speakers, tmp_path):
    import audiovae

    run = tmp_path / "lab"
    res = _train(two_speakers, run, "condition=label", steps=3)
    assert res.returncode == 0, res.stderr[-2000:]
    vae = audiovae.load(run)
    assert vae.conditions == {"key": "label", "names": ["lab0", "lab1"]}
    assert vae.sample(1, seconds=0.2, seed=0, label="lab1", to="logmel").shape[0] == 1
    plain = tmp_path / "plain"
    assert _train(two_speakers, plain, steps=2).returncode == 0
    vae = audiovae.load(plain)
    assert vae.conditions is None
    with pytest.raises(ConfigError, match="not conditioned"):
        vae.condition_index(speaker="loud")


def test_evaluate_passes_the_speaker(speaker_run, two_speakers):
    from audiovae.tasks.evaluate import evaluate

    res = evaluate(speaker_run, two_speakers, k=4, split="test", progress=False)
    assert res["items"] == 2 and np.isfinite(res["iwae"])


def test_convert_keeps_the_length_and_changes_the_voice(speaker_run, two_speakers, tmp_path):
    import audiovae
    from audiovae.data.source import open_data

    vae = audiovae.load(speaker_run)
    rec = [r for r in open_data(two_speakers).utterances("test") if r["speaker"] == "quiet"][0]
    wave, sr = sf.read(rec["source"], dtype="float32")
    wave = wave[: len(wave) - 37]  # not a whole number of hops
    for method in ("knn", "match", "none"):
        out = vae.convert(wave, speaker="loud", sample_rate=sr, method=method, vocoder_iters=4)
        assert out.shape == wave.shape
    # in the log-mel: converted to the loud speaker, louder than the same utterance converted to the quiet one
    lm_loud = vae.convert(wave, speaker="loud", sample_rate=sr, to="logmel")
    lm_quiet = vae.convert(wave, speaker="quiet", sample_rate=sr, to="logmel")
    assert float((lm_loud - lm_quiet).mean()) > 1.0
    # a batch with lengths: each item as alone
    batch = np.stack([wave, np.pad(wave[:-800], (0, 800))])
    out, lens = vae.convert(batch, speaker=["loud", "quiet"], lengths=[len(wave), len(wave) - 800], vocoder_iters=4)
    assert lens.tolist() == [len(wave), len(wave) - 800]
    with pytest.raises(ConfigError, match="unknown speaker 'x'; this model knows: loud, quiet"):
        vae.convert(wave, speaker="x")


def test_knn_conversion_decodes_the_targets_own_frames(speaker_run, two_speakers, tmp_path):
    """method=knn: every latent frame is the mean of its k nearest latent frames of the target's training
    utterances (checked against a brute-force search), taken from the run's cache or from data=."""
    import shutil

    import audiovae
    from audiovae.data.source import open_data

    vae = audiovae.load(speaker_run)
    data = open_data(two_speakers)
    bank = vae.condition_bank(0)  # "loud"
    n_loud = sum(r["frames"] for r in data.utterances("train") if r["speaker"] == "loud")
    assert bank.shape == (n_loud, vae.model.latent_dim)
    z = torch.randn(1, vae.model.latent_dim, 7)
    got = vae._nearest_frames(z, torch.tensor([7]), torch.tensor([0]), None, 3)
    for t in range(7):
        d = ((bank - z[0, :, t]) ** 2).sum(1)
        torch.testing.assert_close(got[0, :, t], bank[d.argsort()[:3]].mean(0))
    # the run's cache moved away: a clear error; data= names where it is now
    moved = tmp_path / "moved"
    shutil.copytree(two_speakers, moved)
    fresh = audiovae.load(speaker_run)
    fresh.config["data"] = str(tmp_path / "gone")
    wave = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    with pytest.raises(ConfigError, match="method='match'"):
        fresh.convert(wave, speaker="loud")
    assert fresh.convert(wave, speaker="loud", data=moved, vocoder_iters=2).shape == wave.shape


def test_cli_convert(speaker_run, two_speakers, tmp_path):
    src = Path(json.loads((two_speakers / "index.json").read_text())[0]["source"])
    r = CliRunner()
    out = tmp_path / "out.wav"
    res = r.invoke(cli, ["convert", str(speaker_run), str(src), "--speaker", "loud", "-o", str(out),
                         "--vocoder-iters", "2"])
    assert res.exit_code == 0, res.output
    assert sf.info(out).frames == sf.info(src).frames
    # several inputs: a folder of outputs, each of its input's length
    res = r.invoke(cli, ["convert", str(speaker_run), str(src), str(src.with_name("u1.wav")), "--speaker", "quiet",
                         "-o", str(tmp_path / "many"), "--vocoder-iters", "2"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["u0.wav", "u1.wav"]
    bad = r.invoke(cli, ["convert", str(speaker_run), str(src), "--speaker", "nobody", "-o", str(tmp_path / "no.wav")])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1
    assert "unknown speaker 'nobody'; this model knows: loud, quiet" in bad.output
    assert not (tmp_path / "no.wav").exists()
    none = r.invoke(cli, ["convert", str(speaker_run), str(src), "-o", str(tmp_path / "no.wav")])
    assert none.exit_code == 1 and "--speaker" in none.output and not (tmp_path / "no.wav").exists()
    assert "--speaker" in r.invoke(cli, ["convert", "--help"]).output


def test_speaker_adversary_reverses_the_encoders_gradient():
    """model_config.adversary=w: a frame-level speaker classifier on z learns normally while the encoder gets its
    gradient times -w (gradient reversal), in training only; the ELBO itself is unchanged."""
    from audiovae.models import build_model
    from audiovae.models.base import reverse_grad

    x = torch.randn(3, requires_grad=True)
    reverse_grad(x, 2.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -2.5))
    cfg = {"n_mels": 8, "channels": 8, "latent_dim": 3, "res_blocks": 1, "condition": "speaker",
           "condition_names": ["a", "b"]}
    torch.manual_seed(0)
    plain = build_model("conv", cfg)
    torch.manual_seed(0)
    adv = build_model("conv", {**cfg, "adversary": 4.0})
    xb, cond, eps = torch.randn(2, 8, 10), torch.tensor([0, 1]), torch.randn(2, 3, 10)
    a, b = plain.elbo(xb, cond=cond, eps=eps), adv.elbo(xb, cond=cond, eps=eps)
    torch.testing.assert_close(a.elbo, b.elbo)
    extra = b.loss - a.loss  # the classifier's cross-entropy: 10 frames of about log 2 nats at the start
    assert 2 < float(extra) < 20, float(extra)
    z = torch.randn(2, 3, 10, requires_grad=True)
    ce = adv._adversary_loss(z, None, cond)
    ce.backward()
    g_rev = z.grad.clone()
    z.grad = None
    logits = adv.adversary_logits(z)
    torch.nn.functional.cross_entropy(logits, cond[:, None].expand(-1, 10), reduction="none").sum(-1).mean().backward()
    torch.testing.assert_close(g_rev, -4.0 * z.grad)
    adv.eval()
    torch.testing.assert_close(adv.elbo(xb, cond=cond, eps=eps).loss, plain.eval().elbo(xb, cond=cond, eps=eps).loss)


def test_a_conditioned_run_with_a_learned_prior_samples_repairs_interpolates_and_reports(speaker_run, two_speakers,
                                                                                         tmp_path):
    """The learned prior of a speaker-conditioned run is conditioned too: sampling per speaker (reproducible and
    different per speaker), the report (reconstructions with each utterance's own speaker, samples, interpolation)
    and interpolate --speaker all work on it."""
    import shutil

    import audiovae
    from audiovae.training.prior import PriorTrainConfig, train_prior

    run = tmp_path / "run"
    shutil.copytree(speaker_run, run)
    train_prior(run, cfg=PriorTrainConfig(hidden=8, components=4, batch_size=4, crop=16, max_steps=3, val_every=2,
                                          checkpoint_every=2), progress=False)
    vae = audiovae.load(run, device="cpu")
    assert vae.has_learned_prior and vae.prior.config.n_conditions == 2
    a = vae.sample(1, seconds=0.5, seed=1, speaker=SPEAKERS[0], to="logmel")
    b = vae.sample(1, seconds=0.5, seed=1, speaker=SPEAKERS[1], to="logmel")
    assert np.array_equal(a, vae.sample(1, seconds=0.5, seed=1, speaker=SPEAKERS[0], to="logmel"))
    assert not np.allclose(a, b)
    res = subprocess.run(_cli("report", str(run), "-o", str(tmp_path / "report"), "--no-scores", "--vocoder-iters", "2"),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    html = (tmp_path / "report" / "index.html").read_text()
    assert "learned prior" in html and "quiet_u" in html and "loud_u" in html
    assert len(list((tmp_path / "report" / "audio").glob("prior_sample_*.wav"))) == 3
    wav = sorted((two_speakers.parent / "wav" / SPEAKERS[0]).glob("*.wav"))
    res = subprocess.run(_cli("interpolate", str(run), str(wav[0]), str(wav[1]), "-o", str(tmp_path / "i.wav"),
                              "--vocoder-iters", "2"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "--speaker" in res.stderr
    res = subprocess.run(_cli("interpolate", str(run), str(wav[0]), str(wav[1]), "-o", str(tmp_path / "i.wav"),
                              "--vocoder-iters", "2", "--speaker", SPEAKERS[1]), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


def test_dense_model_conditioned_end_to_end(two_speakers, tmp_path):
    """The frame model too: every frame's batch carries its utterance's speaker; sample, reconstruct and convert."""
    import audiovae

    run = tmp_path / "dense"
    res = subprocess.run(_cli("train", str(two_speakers), "-o", str(run), "--max-steps", "3", "--model", "dense",
                              "model_config.hidden=[16]", "model_config.latent_dim=3", "batch_size=16",
                              "condition=speaker"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    vae = audiovae.load(run)
    assert vae.conditions == {"key": "speaker", "names": ["loud", "quiet"]}
    ds, collate = __import__("audiovae.data.source", fromlist=["open_data"]).open_data(two_speakers).dataset(
        "train", "dense", condition="speaker", condition_names=["loud", "quiet"])
    batch = collate(ds.__getitems__([0, len(ds) - 1]))
    assert batch.cond.tolist() == [1, 0]  # the quiet speaker's utterances come first in the cache, then the loud
    wave = np.random.default_rng(1).standard_normal(6000).astype(np.float32) * 0.1
    assert vae.convert(wave, speaker="loud", vocoder_iters=2).shape == wave.shape
    assert vae.reconstruct(wave, speaker="quiet", vocoder_iters=2).shape == wave.shape
    a = vae.sample(1, seconds=0.2, seed=0, speaker="loud", to="logmel")
    b = vae.sample(1, seconds=0.2, seed=0, speaker="quiet", to="logmel")
    assert a.shape == b.shape and not np.array_equal(a, b)
