"""The [eval] extra's perceptual scores (audiovae/audio/perceptual.py), each against an independent check."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import require, require_path, speak

PSDATA = Path("/usr/share/pocketsphinx/test/data")


def _need_extra():
    from audiovae.audio import perceptual

    require(perceptual.available(), f"the [eval] extra ({perceptual.missing()})")
    return perceptual


def _said(tmp_path, text, voice="en", speed=160):
    w, sr = sf.read(speak(text, tmp_path / f"{abs(hash((text, voice)))}.wav", voice, speed))
    return w, sr


def _noisy(w, snr_db, seed=0):
    noise = np.random.default_rng(seed).standard_normal(len(w))
    noise *= np.sqrt(np.mean(w ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    out = w + noise
    return out / max(1.0, np.abs(out).max())


def test_dnsmos_equals_speechmos_reference(tmp_path):
    """The batched DNSMOS (all windows of all clips in one pass, thread-limited sessions) gives what
    speechmos.dnsmos.run gives clip by clip: a 2-s clip (repeated to 9.01 s) and an 11-s one (3 windows)."""
    P = _need_extra()
    from speechmos import dnsmos as ref

    w, sr = _said(tmp_path, "The birch canoe slid on the smooth planks.")
    from audiovae.audio.io import resample

    w16 = np.clip(resample(w, sr, 16000), -1, 1).astype(np.float32)
    long16 = np.tile(w16, int(np.ceil(11 * 16000 / len(w16))))[: 11 * 16000]
    got = P.dnsmos([w16, long16], 16000)
    for i, clip in enumerate([w16, long16]):
        want = ref.run(clip, 16000)
        for k, rk in (("ovrl", "ovrl_mos"), ("sig", "sig_mos"), ("bak", "bak_mos"), ("p808", "p808_mos")):
            assert got[k][i] == pytest.approx(float(want[rk]), abs=2e-3), (k, i)
    one = P.dnsmos(w, sr)  # one clip at its own rate -> floats
    assert isinstance(one["ovrl"], float) and one["short"] is False
    assert one["ovrl"] == pytest.approx(got["ovrl"][0], abs=0.05)  # resampled by us from 22050 Hz, same clip


@pytest.mark.slow
def test_dnsmos_clean_speech_above_noise(tmp_path):
    """Clean espeak-ng speech scores well above white noise and above the same speech buried in noise (0 dB)."""
    P = _need_extra()
    w, sr = _said(tmp_path, "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background.")
    white = np.random.default_rng(1).standard_normal(len(w)) * 0.1
    s = P.dnsmos([w, white, _noisy(w, 0.0)], sr)
    clean, noise, noisy = s["ovrl"]
    assert clean > 2.5, s
    assert clean > noise + 1.0 and clean > noisy + 0.7, s
    assert s["bak"][0] > s["bak"][2] + 1.0, s  # the noise is what BAK rates
    assert all(1.0 <= v <= 5.0 for k in ("ovrl", "sig", "bak") for v in s[k])


def test_dnsmos_flags_short_clips():
    P = _need_extra()
    t = np.arange(8000) / 16000
    s = P.dnsmos([np.sin(2 * np.pi * 200 * t) * 0.3, np.tile(np.sin(2 * np.pi * 200 * t) * 0.3, 4)], 16000)
    assert s["short"].tolist() == [True, False]
    assert np.isfinite(s["ovrl"]).all()


def test_dnsmos_level(tmp_path):
    """``peak`` brings clips to one level (a quiet copy then scores as the loud one); a clip over full scale is
    scaled down to it, not clipped."""
    P = _need_extra()
    w, sr = _said(tmp_path, "Glue the sheet to the dark blue background.")
    w = w / np.abs(w).max()
    s = P.dnsmos([w * 0.9, w * 0.2, w * 0.2, w * 3.0, w], sr, peak=None)
    assert abs(s["ovrl"][0] - s["ovrl"][1]) > 1e-3  # level matters to DNSMOS...
    p = P.dnsmos([w * 0.2], sr, peak=0.9)
    assert p["ovrl"][0] == pytest.approx(s["ovrl"][0], abs=1e-4)  # ...so peak= brings them to one level
    assert s["ovrl"][3] == pytest.approx(s["ovrl"][4], abs=1e-4)  # 3x over full scale = full scale, not clipped


@pytest.mark.slow
def test_speaker_similarity_same_voice_above_other_voice(tmp_path):
    """Two sentences of one espeak-ng voice are more alike than the same sentences in a different voice (male
    en vs female en+f3); two utterances of one real reader (pocketsphinx-testdata's LibriVox) more alike than
    that reader and another real speaker."""
    P = _need_extra()
    texts = ["The quick brown fox jumps over the lazy dog.", "She sells sea shells by the sea shore every morning."]
    clips, sr = [], None
    for voice in ("en", "en+f3"):
        for text in texts:
            w, sr = _said(tmp_path, text, voice)
            clips.append(w)
    e = P.speaker_embeddings(clips, sr)
    assert e.shape == (4, 256)
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    c = P.cosine(e, e)
    same = min(c[0, 1], c[2, 3])
    other = max(c[0, 2], c[0, 3], c[1, 2], c[1, 3])
    assert same > other + 0.05, c
    assert P.speaker_similarity(clips[0], clips[1], sr) == pytest.approx(c[0, 1], abs=1e-5)

    require_path(PSDATA, "pocketsphinx-testdata")
    lv = [sf.read(PSDATA / f"librivox/sense_and_sensibility_01_austen_64kb-{n}.wav")[0] for n in ("0880", "0930")]
    go = np.fromfile(PSDATA / "goforward.raw", dtype="<i2") / 32768.0
    e = P.speaker_embeddings([lv[0], lv[1], go], 16000)
    assert P.cosine(e[0], e[1]) > max(P.cosine(e[0], e[2]), P.cosine(e[1], e[2])) + 0.1
    cen = P.centroid(e[:2])
    assert np.linalg.norm(cen) == pytest.approx(1, abs=1e-5)


def test_transcribe_real_speech():
    """pocketsphinx's bundled en-us model transcribes pocketsphinx-testdata's "go forward ten meters"; white noise
    does not come out as those words."""
    P = _need_extra()
    require_path(PSDATA / "goforward.raw", "pocketsphinx-testdata")
    go = np.fromfile(PSDATA / "goforward.raw", dtype="<i2") / 32768.0
    text = P.transcribe(go, 16000)
    assert "forward" in text.split() and "ten" in text.split(), text
    assert P.word_error_rate("go forward ten meters", text) <= 0.25, text
    noise = np.random.default_rng(0).standard_normal(16000 * 2) * 0.05
    both = P.transcribe([np.concatenate([np.zeros(8000), go]), noise], 16000)  # a list -> a list
    assert "forward" in both[0].split()
    assert "forward" not in both[1].split()


def test_word_error_rate():
    from audiovae.audio import perceptual as P  # pure Python: no extra needed
    assert P.word_error_rate("go forward ten meters", "go forward ten meters") == 0
    assert P.word_error_rate("go forward ten meters", "go forward tin meters") == 0.25  # one substitution
    assert P.word_error_rate("go forward ten meters", "go ten meters") == 0.25  # one deletion
    assert P.word_error_rate("Go forward, ten meters.", "go go forward ten meters now") == 0.5  # two insertions
    assert P.word_error_rate("a b c", "") == 1.0


def test_pesq_self_is_maximal_and_drops_with_noise(tmp_path):
    P = _need_extra()
    w, sr = _said(tmp_path, "The birch canoe slid on the smooth planks.")
    for mode in ("wb", "nb"):
        top = P.pesq(w, w, sr, mode)
        assert top == pytest.approx(P.PESQ_MAX[mode], abs=0.02), (mode, top)
        s = P.pesq([w, w], [_noisy(w, 25.0), _noisy(w, 5.0)], sr, mode)
        assert top > s[0] + 0.3 and s[0] > s[1] + 0.5, (mode, top, s)


@pytest.mark.parametrize("module,call", [
    ("speechmos", lambda P, w: P.dnsmos(w, 16000)),
    ("onnxruntime", lambda P, w: P.dnsmos(w, 16000)),
    ("resemblyzer", lambda P, w: P.speaker_embeddings(w, 16000)),
    ("pocketsphinx", lambda P, w: P.transcribe(w, 16000)),
    ("pesq", lambda P, w: P.pesq(w, w, 16000)),
    ("pkg_resources", lambda P, w: P.speaker_embeddings(w, 16000)),  # webrtcvad under setuptools >= 81
])
def test_missing_extra_says_how_to_install(monkeypatch, module, call):
    """Without the extra's packages (an import that fails), each score raises the package's own error with one
    line naming the extra, also after the models were loaded once; missing() returns that line."""
    from audiovae.audio import perceptual as P
    from audiovae.errors import AudioVAEError, MissingExtraError

    if P.available():  # models loaded (and cached) before the packages go missing: still refused
        {"speechmos": lambda: P._dnsmos_sessions(P._threads()), "onnxruntime": lambda: P._dnsmos_sessions(P._threads()),
         "resemblyzer": P._voice_encoder, "pocketsphinx": P._decoder, "pesq": lambda: None,
         "pkg_resources": P._voice_encoder}[module]()
    if module == "pkg_resources":
        monkeypatch.delitem(sys.modules, "webrtcvad", raising=False)  # imported afresh, it needs pkg_resources
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    w = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    with pytest.raises(MissingExtraError) as err:
        call(P, w)
    msg = str(err.value)
    assert isinstance(err.value, AudioVAEError)
    assert "needs the optional scores: pip install 'audiovae[eval]'" in msg and module in msg and "\n" not in msg
    if module == "pkg_resources":
        assert "setuptools<81" in msg
    assert P.missing() is not None and "audiovae[eval]" in P.missing()
    assert not P.available()
