"""Audio I/O, bad inputs with clear errors, and the mel / vocode / resynth commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import torch
import pytest
import soundfile as sf
from click.testing import CliRunner

from audiovae.audio.io import load_audio, save_audio
from audiovae.audio.melfile import load_mel, save_mel
from audiovae.audio.config import MelConfig
from audiovae.cli import cli
from audiovae.errors import InvalidAudioError, InvalidFeatureError


def _tone(sr=22050, seconds=0.5, freq=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("ext,subtype", [(".wav", "PCM_16"), (".flac", "PCM_16"), (".ogg", "VORBIS")])
def test_read_formats(tmp_path, ext, subtype):
    x = _tone()
    p = tmp_path / f"a{ext}"
    sf.write(p, x, 22050, subtype=subtype)
    y, sr = load_audio(p)
    assert sr == 22050 and y.dtype == np.float32
    n = min(len(x), len(y))
    tol = 2e-2 if ext == ".ogg" else 1e-4  # lossy codec
    assert np.sqrt(np.mean((x[:n] - y[:n]) ** 2)) < tol


def test_stereo_mixed_to_mono_and_resampled(tmp_path):
    left, right = _tone(44100, 1.0, 440), _tone(44100, 1.0, 660)
    p = tmp_path / "st.wav"
    sf.write(p, np.stack([left, right], 1), 44100, subtype="FLOAT")
    y, sr = load_audio(p, sample_rate=22050)
    assert sr == 22050
    ref = librosa.resample((left + right) / 2, orig_sr=44100, target_sr=22050, res_type="soxr_hq")
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_save_audio_is_atomic(tmp_path, monkeypatch):
    p = tmp_path / "out.wav"
    save_audio(p, _tone(), 22050)
    before = p.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sf, "write", boom)
    with pytest.raises(KeyboardInterrupt):
        save_audio(p, _tone(freq=100), 22050)
    assert p.read_bytes() == before
    assert [q.name for q in tmp_path.iterdir()] == ["out.wav"]  # no temporary left behind
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask  # the mode an ordinary open() gives, not mkstemp's 0600


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    nan = tmp_path / "nan.wav"
    x = _tone()
    x[100:200] = np.nan
    sf.write(nan, x, 22050, subtype="FLOAT")
    one = tmp_path / "one.wav"
    sf.write(one, np.array([0.5], np.float32), 22050)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(4000, np.float32), 22050)
    return {
        "empty": (empty, "empty"),
        "not audio": (text, "not a readable audio file"),
        "nan": (nan, "NaN"),
        "one sample": (one, "too short"),
        "silent": (silent, "silent"),
        "missing": (tmp_path / "missing.wav", "no such file"),
    }


def test_bad_audio_raises_named_errors(tmp_path):
    for name, (path, problem) in _bad_inputs(tmp_path).items():
        with pytest.raises(InvalidAudioError) as err:
            load_audio(path, min_samples=256)
        assert str(path) in str(err.value), name
        assert problem in str(err.value), (name, str(err.value))


def test_mel_command_skips_bad_and_reports(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, _tone(), 22050)
    bad = _bad_inputs(tmp_path)
    res = CliRunner().invoke(cli, ["mel", str(good), *[str(p) for p, _ in bad.values()], "-o", str(tmp_path / "mels")])
    # CliRunner turns a crash into exit code 1 too: only a deliberate exit is a SystemExit
    assert isinstance(res.exception, SystemExit) and res.exit_code == 1
    assert (tmp_path / "mels" / "good.mel.npz").exists()
    for path, problem in bad.values():
        line = [ln for ln in res.output.splitlines() if str(path) in ln]
        assert len(line) == 1 and problem in line[0] and line[0].startswith("error:")


def test_mel_then_vocode_uses_saved_config(tmp_path, speech_dir):
    runner = CliRunner()
    # a non-default configuration: vocode must pick it up from the file, not from defaults
    res = runner.invoke(cli, ["mel", str(speech_dir / "utt01.wav"), "-o", str(tmp_path / "m" / "utt01.mel.npz"),
                              "--set", "n_mels=80",
                              "--set", "sample_rate=16000", "--set", "n_fft=1024", "--set", "win_length=1024"])
    assert res.exception is None and res.exit_code == 0, res.output
    logmel, cfg, n = load_mel(tmp_path / "m" / "utt01.mel.npz")
    assert logmel.shape[0] == 80 and cfg.sample_rate == 16000
    res = runner.invoke(cli, ["vocode", str(tmp_path / "m"), "-o", str(tmp_path / "w"), "--vocoder-iters", "4"])
    assert res.exit_code == 0, res.output
    y, sr = sf.read(tmp_path / "w" / "utt01.wav")
    assert sr == 16000 and len(y) == n
    # the GPU's initial phase, chosen by hand on the CPU, and a device that is not there
    res = runner.invoke(cli, ["vocode", str(tmp_path / "m"), "-o", str(tmp_path / "wp"), "--vocoder-iters", "4",
                              "--init", "pghi_parallel", "--device", "cpu", "--batch-size", "1"])
    assert res.exit_code == 0, res.output
    assert len(sf.read(tmp_path / "wp" / "utt01.wav")[0]) == n
    if not torch.cuda.is_available():
        res = runner.invoke(cli, ["vocode", str(tmp_path / "m"), "-o", str(tmp_path / "wc"), "--device", "cuda"])
        assert res.exit_code == 1 and "no CUDA device" in res.output and not (tmp_path / "wc").exists()


def test_vocode_rejects_bad_mels(tmp_path):
    cfg = MelConfig()
    save_mel(tmp_path / "ok.mel.npz", np.full((256, 20), -5.0, np.float32), cfg, 19 * 256)
    np.savez(tmp_path / "shape.mel.npz", logmel=np.zeros((80, 20), np.float32), config=np.array('{"n_mels": 256}'))
    save_mel(tmp_path / "nan.mel.npz", np.full((256, 20), np.nan, np.float32), cfg, 100)
    (tmp_path / "junk.mel.npz").write_bytes(b"junk")
    with pytest.raises(InvalidFeatureError, match="NaN"):
        load_mel(tmp_path / "nan.mel.npz")
    res = CliRunner().invoke(cli, ["vocode", *[str(tmp_path / f"{n}.mel.npz") for n in ("ok", "shape", "nan", "junk", "gone")],
                                   "-o", str(tmp_path / "out"), "--vocoder-iters", "2"])
    assert isinstance(res.exception, SystemExit) and res.exit_code == 1
    assert (tmp_path / "out" / "ok.wav").exists()
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 4
    assert any("shape.mel.npz" in e and "shape" in e for e in errors)
    assert any("nan.mel.npz" in e and "NaN" in e for e in errors)
    assert any("junk.mel.npz" in e and "cannot read" in e for e in errors)
    assert any("gone.mel.npz" in e and "no such file" in e for e in errors)


def test_resynth_prints_metrics(tmp_path, speech_dir):
    res = CliRunner().invoke(cli, ["resynth", str(speech_dir / "utt02.wav"), "-o", str(tmp_path / "r.wav")])
    assert res.exit_code == 0, res.output
    values = {ln.rsplit(None, 1)[0].strip(): float(ln.rsplit(None, 1)[1]) for ln in res.output.splitlines()[1:]}
    assert values["spectral convergence"] < 0.2
    assert values["STOI"] > 0.9
    assert 0 < values["mel-cepstral distortion (dB)"] < 15
    assert sf.info(tmp_path / "r.wav").frames == sf.info(speech_dir / "utt02.wav").frames


def test_real_command_line_has_no_traceback(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "audiovae", "resynth", str(tmp_path / "x.wav"), "-o", str(tmp_path / "y.wav")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "x.wav" in proc.stderr and "empty" in proc.stderr
    out = subprocess.run([sys.executable, "-m", "audiovae", "--help"], capture_output=True, text=True).stdout
    for cmd in ("mel", "vocode", "resynth"):
        assert cmd in out
