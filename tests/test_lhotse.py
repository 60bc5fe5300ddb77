"""lhotse manifests (CutSet, RecordingSet + SupervisionSet) written by lhotse itself, read without lhotse by
audiovae.data.lhotse: `audiovae extract cuts.jsonl.gz` and open_data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from audiovae.cli import cli
from audiovae.data.lhotse import read_lhotse
from audiovae.data.source import open_data
from audiovae.errors import DataError
from tests.conftest import require, speak

SR = 22050


@pytest.fixture(scope="module")
def lhotse():
    try:
        import lhotse as lh
    except ImportError:
        require(False, "lhotse (in the dev extra)")
    return lh


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, lhotse):
    """Two short espeak-ng recordings and a long one (two sentences 1 s apart) with supervisions, as lhotse
    writes them: recordings/supervisions manifests, cuts from them, and a cut into the long recording."""
    d = tmp_path_factory.mktemp("lhotse")
    a = speak("The quick brown fox.", d / "a.wav", "en")
    b = speak("She sells sea shells.", d / "b.wav", "en+f3")
    w1, sr = sf.read(speak("A variational autoencoder.", d / "p1.wav", "en-us"), dtype="float32")
    w2, _ = sf.read(speak("Griffin and Lim.", d / "p2.wav", "en-us"), dtype="float32")
    assert sr == SR
    long = d / "long.wav"
    sf.write(long, np.concatenate([w1, np.zeros(SR, np.float32), w2]), SR)
    recs = lhotse.RecordingSet.from_recordings(
        [lhotse.Recording.from_file(p, recording_id=p.stem) for p in (a, b, long)])
    S = lhotse.SupervisionSegment
    sups = lhotse.SupervisionSet.from_segments([
        S(id="a-s", recording_id="a", start=0, duration=recs["a"].duration, text="the quick brown fox", speaker="spk1"),
        S(id="b-s", recording_id="b", start=0, duration=recs["b"].duration, text="she sells sea shells", speaker="spk2"),
        S(id="l-1", recording_id="long", start=0, duration=len(w1) / SR, text="a variational autoencoder",
          speaker="spk3"),
        S(id="l-2", recording_id="long", start=len(w1) / SR + 1, duration=len(w2) / SR, text="griffin and lim",
          speaker="spk3")])
    recs.to_file(d / "demo_recordings_all.jsonl.gz")
    sups.to_file(d / "demo_supervisions_all.jsonl.gz")
    cuts = lhotse.CutSet.from_manifests(recordings=recs, supervisions=sups)
    # the second sentence of the long recording alone: a cut with an offset into it
    seg_start = len(w1) / SR + 1
    second = dataclasses.replace(cuts.filter(lambda c: c.recording_id == "long")[0]
                                 .truncate(offset=seg_start, duration=len(w2) / SR), id="long-second")
    whole = [dataclasses.replace(c, id=f"cut-{c.recording_id}") for c in cuts]
    lhotse.CutSet.from_cuts(whole + [second]).to_file(d / "cuts.jsonl.gz")
    return {"dir": d, "w2": w2, "seg_start": seg_start, "long_samples": len(w1) + SR + len(w2)}


def test_extract_reads_a_cutset_written_by_lhotse(corpus, tmp_path):
    d = corpus["dir"]
    res = CliRunner().invoke(cli, ["extract", str(d / "cuts.jsonl.gz"), "-o", str(tmp_path / "feats"), "--workers", "0"])
    assert res.exit_code == 0, res.output
    index = {r["id"]: r for r in json.loads((tmp_path / "feats" / "index.json").read_text())}
    assert set(index) == {"cut-a", "cut-b", "cut-long", "long-second"}
    assert {k: r.get("speaker") for k, r in index.items()} == {"cut-a": "spk1", "cut-b": "spk2", "cut-long": "spk3",
                                                              "long-second": "spk3"}
    assert index["cut-a"]["text"] == "the quick brown fox"
    assert index["cut-long"]["text"] == "a variational autoencoder griffin and lim"
    assert index["cut-a"]["num_samples"] == sf.info(d / "a.wav").frames  # whole recordings: every sample
    assert index["cut-long"]["num_samples"] == corpus["long_samples"]
    # the cut with an offset: only its segment, the second sentence, was read
    seg = index["long-second"]
    assert seg["source"] == str(d / "long.wav")
    assert seg["segment"] == pytest.approx([corpus["seg_start"], len(corpus["w2"]) / SR])
    assert seg["num_samples"] == len(corpus["w2"])
    from audiovae.audio.config import MelConfig
    from audiovae.audio.frontend import MelFrontend
    from audiovae.data.features import FeatureCache

    import torch

    cache = FeatureCache(tmp_path / "feats")
    want = MelFrontend(MelConfig())(torch.from_numpy(corpus["w2"])[None])[0].numpy()
    np.testing.assert_allclose(cache.logmel(seg), want, atol=1e-3)
    # run again: nothing to redo, the same cache
    res = CliRunner().invoke(cli, ["extract", str(d / "cuts.jsonl.gz"), "-o", str(tmp_path / "feats"), "--workers", "0"])
    assert res.exit_code == 0 and "4 utterances" in res.output, res.output


def test_open_data_and_recordings_with_sibling_supervisions(corpus):
    d = corpus["dir"]
    src = open_data(d / "cuts.jsonl.gz")
    assert src.kind == "manifest" and len(src.records) == 4
    durations = {r["id"]: r["duration"] for r in src.records}
    assert durations["long-second"] == pytest.approx(len(corpus["w2"]) / SR)
    assert durations["cut-long"] == pytest.approx(corpus["long_samples"] / SR)
    for name in ("demo_recordings_all.jsonl.gz", "demo_supervisions_all.jsonl.gz"):
        utts = {u.id: u for u in read_lhotse(d / name)}
        assert set(utts) == {"a", "b", "long"}
        assert (utts["b"].speaker, utts["b"].text, utts["b"].sample_rate) == ("spk2", "she sells sea shells", SR)
        assert utts["long"].segment is None and utts["long"].path == d / "long.wav"
    with pytest.raises(Exception, match="is a manifest"):
        open_data(d / "demo_recordings_all.jsonl.gz").check_model("conv")


def test_refused_lhotse_manifests_name_the_line(corpus, tmp_path, lhotse):
    d = corpus["dir"]
    cuts = lhotse.CutSet.from_file(d / "cuts.jsonl.gz").to_eager()
    mixed = cuts["cut-a"].mix(cuts["cut-b"], offset_other_by=0.2)
    lhotse.CutSet.from_cuts([cuts["cut-a"], dataclasses.replace(mixed, id="mix")]).to_file(tmp_path / "mixed.jsonl.gz")
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "mixed.jsonl.gz"), "-o", str(tmp_path / "f")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "mixed.jsonl.gz: line 2: cut 'mix' is a MixedCut" in res.output, res.output
    perturbed = lhotse.CutSet.from_cuts([cuts["cut-a"].perturb_speed(1.1)])
    perturbed.to_file(tmp_path / "sp.jsonl")
    with pytest.raises(DataError, match="line 1: .*Speed transform"):
        read_lhotse(tmp_path / "sp.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"some": "other json lines"}\n')
    with pytest.raises(DataError, match="bad.jsonl: not a lhotse manifest"):
        open_data(tmp_path / "bad.jsonl")
    torn = (d / "cuts.jsonl.gz").read_bytes()
    (tmp_path / "torn.jsonl.gz").write_bytes(torn[: len(torn) // 2])
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "torn.jsonl.gz"), "-o", str(tmp_path / "g")])
    assert res.exit_code == 1 and "torn.jsonl.gz: unreadable lhotse manifest" in res.output, res.output


def test_relative_paths_and_segments_outside_the_file(corpus, tmp_path, monkeypatch, lhotse):
    d = corpus["dir"]
    from audiovae.audio.io import load_audio
    from audiovae.errors import InvalidAudioError

    monkeypatch.chdir(d)  # lhotse writes a relative path as given: relative to the working directory
    lhotse.RecordingSet.from_recordings([lhotse.Recording.from_file("a.wav")]).to_file(tmp_path / "rel.jsonl")
    assert json.loads((tmp_path / "rel.jsonl").read_text())["sources"][0]["source"] == "a.wav"
    assert read_lhotse(tmp_path / "rel.jsonl")[0].path == d / "a.wav"
    (tmp_path / "a.wav").symlink_to(d / "a.wav")
    monkeypatch.chdir(tmp_path.parent)  # from elsewhere: the file next to the manifest
    assert read_lhotse(tmp_path / "rel.jsonl")[0].path == tmp_path / "a.wav"
    n = sf.info(d / "a.wav").frames
    assert len(load_audio(d / "a.wav", segment=(0.5, 0.25))[0]) == round(0.75 * SR) - round(0.5 * SR)
    assert len(load_audio(d / "a.wav", segment=(0.0, n / SR + 0.005))[0]) == n  # rounding past the end: clamped
    with pytest.raises(InvalidAudioError, match="segment 0.5 s \\+ 100 s does not lie inside the file"):
        load_audio(d / "a.wav", segment=(0.5, 100.0))
