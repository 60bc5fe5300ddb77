"""Corpus readers and manifests, extract from a manifest, sharded extract + merge, cache integrity, ffmpeg decoding.

Every reader runs on a tiny corpus in its official layout (tests/corpora.py); the
expected ids, speakers, labels, texts and splits are read back from the official
metadata files by the test itself, durations come from soundfile.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import require, require_tool

from audiovae.cli import cli
from audiovae.data.corpora import COLUMNS, prepare, read_manifest
from audiovae.data.features import FeatureCache, extract, merge
from audiovae.data.source import open_data
from audiovae.errors import ConfigError, DataError, InvalidAudioError
from tests import corpora as fx

ASTERISK = Path("/usr/share/asterisk/sounds")


def _need(tool: str) -> None:
    require_tool(tool)


@pytest.fixture(scope="module")
def corpora_root(tmp_path_factory) -> Path:
    _need("espeak-ng")
    return tmp_path_factory.mktemp("corpora")


def _by_id(man):
    return {u.id: u for u in man.utterances}


def _sf_duration(path: Path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


def _hash_split(key: str, val: float, test: float) -> str:
    # the rule the manifest states: sha1 of the key as a fraction of 2^48, test below `test`, val below test+val
    h = int(hashlib.sha1(key.encode()).hexdigest()[:12], 16) / float(1 << 48)
    return "test" if h < test else "val" if h < test + val else "train"


# --- readers ---------------------------------------------------------------------------------------

def test_ljspeech(corpora_root, tmp_path):
    root = fx.make_ljspeech(corpora_root / "lj", n=6)
    man = prepare("ljspeech", root, tmp_path / "m", val_fraction=0.2, test_fraction=0.2, progress=False)
    meta = [ln.split("|") for ln in (root / "metadata.csv").read_text().splitlines()]
    got = _by_id(man)
    assert sorted(got) == sorted(m[0] for m in meta)
    for uid, _raw, normalized in meta:
        u = got[uid]
        assert u.text == normalized and u.speaker == "LJ" and u.sample_rate == 22050
        assert u.path == (root / "wavs" / f"{uid}.wav").resolve()
        assert u.duration == pytest.approx(_sf_duration(u.path), abs=1e-3)
        assert u.split == _hash_split(uid, 0.2, 0.2)
    assert "by file" in man.split_rule
    # the file on disk says the same, header and all
    lines = (tmp_path / "m" / "manifest.tsv").read_text().splitlines()
    assert lines[0] == "# audiovae manifest 1" and "# split: by file" in lines[3]
    assert lines[4].split("\t") == list(COLUMNS)
    back = read_manifest(tmp_path / "m")
    assert [(u.id, u.text, u.split, u.path) for u in back.utterances] == [(u.id, u.text, u.split, u.path)
                                                                           for u in man.utterances]
    # DATA_DIR may be the folder the archive was unpacked into
    assert [u.id for u in prepare("ljspeech", root.parent, progress=False).utterances] == [u.id for u in man.utterances]
    with pytest.raises(DataError, match="at least 3 speakers"):
        prepare("ljspeech", root, split_by="speaker", progress=False)


def test_vctk(corpora_root, tmp_path):
    root = fx.make_vctk(corpora_root / "vctk")
    man = prepare("vctk", root, tmp_path / "m", progress=False)
    got = _by_id(man)
    flacs = sorted((root / "wav48_silence_trimmed").glob("*/*_mic1.flac"))
    assert sorted(got) == sorted(f.stem for f in flacs)  # mic2 copies are not listed twice
    accents = {ln.split()[0]: ln.split()[3] for ln in (root / "speaker-info.txt").read_text().splitlines()[1:]}
    for f in flacs:
        u = got[f.stem]
        spk = f.parent.name
        txt = root / "txt" / spk / f"{f.stem[:-5]}.txt"
        assert u.speaker == spk and u.label == accents[spk] and u.sample_rate == 48000
        assert u.text == (txt.read_text().strip() if txt.exists() else "")
        assert u.duration == pytest.approx(_sf_duration(f), abs=1e-3)
    assert got["p227_002_mic1"].text == "" and got["p225_001_mic1"].text == fx.SENTENCES[0]
    # hold out whole speakers: each speaker in one split, and each split has a speaker
    by_spk = prepare("vctk", root, split_by="speaker", progress=False)
    splits = {}
    for u in by_spk.utterances:
        splits.setdefault(u.speaker, set()).add(u.split)
    assert all(len(s) == 1 for s in splits.values()) and set().union(*splits.values()) == {"train", "val", "test"}
    assert "by speaker" in by_spk.split_rule


def test_librispeech_official_splits(corpora_root, tmp_path):
    root = fx.make_librispeech(corpora_root / "libri")
    man = prepare("librispeech", root, tmp_path / "m", progress=False)
    want = {}
    for trans in root.glob("*/*/*/*.trans.txt"):
        subset = trans.relative_to(root).parts[0]
        for line in trans.read_text().splitlines():
            uid, text = line.split(" ", 1)
            want[uid] = (subset, text, trans.parent / f"{uid}.flac")
    got = _by_id(man)
    assert sorted(got) == sorted(want)
    official = {"train-clean-100": "train", "dev-clean": "val", "test-clean": "test"}
    for uid, (subset, text, path) in want.items():
        u = got[uid]
        assert (u.split, u.text, u.label, u.speaker) == (official[subset], text, subset, uid.split("-")[0])
        assert u.duration == pytest.approx(_sf_duration(path), abs=1e-3) and u.sample_rate == 16000
    assert man.split_rule.startswith("official")
    assert len(prepare("librispeech", root.parent, progress=False).utterances) == len(want)
    # one subset alone has no training part: the rule says so and splits by file instead
    dev = prepare("librispeech", root / "dev-clean", val_fraction=0.5, test_fraction=0.0, progress=False)
    assert "no official training subset" in dev.split_rule and {u.split for u in dev.utterances} <= {"train", "val"}


def test_speechcommands_official_lists(corpora_root, tmp_path):
    root = fx.make_speechcommands(corpora_root / "sc")
    man = prepare("speechcommands", root, tmp_path / "m", progress=False)
    val = set((root / "validation_list.txt").read_text().split())
    test = set((root / "testing_list.txt").read_text().split())
    wavs = [p for p in root.glob("*/*.wav") if p.parent.name != "_background_noise_"]
    assert len(man.utterances) == len(wavs) == 9
    for u in man.utterances:
        rel = f"{u.path.parent.name}/{u.path.name}"
        assert u.label == u.path.parent.name and u.speaker == u.path.name.split("_nohash_")[0]
        assert u.split == ("val" if rel in val else "test" if rel in test else "train")
        assert u.duration == pytest.approx(1.0, abs=1e-4)
    assert not any("noise" in str(u.path) for u in man.utterances)
    assert len(prepare("speechcommands", root.parent, progress=False).utterances) == 9


def test_folder_and_wav_scp(corpora_root, tmp_path):
    root = fx.make_folder(corpora_root / "folder")
    man = prepare("folder", root, subdirs="speaker", split_by="speaker", progress=False)
    assert sorted(u.id for u in man.utterances) == [f"spk{s}__utt{j}" for s in range(3) for j in range(2)]
    assert all(u.speaker == u.path.parent.name and u.label == "" for u in man.utterances)
    labelled = prepare("folder", root, subdirs="label", progress=False)
    assert all(u.label == u.path.parent.name and u.speaker == "" for u in labelled.utterances)

    kaldi = fx.make_wav_scp(corpora_root / "kaldi")
    man = prepare("wav.scp", kaldi, progress=False)
    scp = dict(ln.split(" ", 1) for ln in (kaldi / "wav.scp").read_text().splitlines())
    u2s = dict(ln.split(" ", 1) for ln in (kaldi / "utt2spk").read_text().splitlines())
    text = dict(ln.split(" ", 1) for ln in (kaldi / "text").read_text().splitlines())
    got = _by_id(man)
    assert sorted(got) == sorted(scp)
    for uid, rel in scp.items():
        assert got[uid].path == kaldi / rel and got[uid].speaker == u2s[uid] and got[uid].text == text[uid]
    # the same folder through the wav.scp file itself
    assert sorted(u.id for u in prepare("wav.scp", kaldi / "wav.scp", progress=False).utterances) == sorted(scp)
    (kaldi.parent / "piped").mkdir()
    (kaldi.parent / "piped" / "wav.scp").write_text("u1 sox a.wav -t wav - |\n")
    with pytest.raises(DataError, match="piped"):
        prepare("wav.scp", kaldi.parent / "piped", progress=False)


def test_corrupt_file_named_in_report_and_error(corpora_root, tmp_path):
    src = tmp_path / "c"
    shutil.copytree(fx.make_folder(corpora_root / "folder2", speakers=1, per_speaker=2), src)
    (src / "spk0" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    r = CliRunner().invoke(cli, ["prepare", "folder", str(src), "-o", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert "broken.wav" in r.output and "broken.wav" in (tmp_path / "m" / "report.txt").read_text()
    assert "broken" not in (tmp_path / "m" / "manifest.tsv").read_text()
    r = CliRunner().invoke(cli, ["prepare", "folder", str(src), "-o", str(tmp_path / "m2"), "--strict"])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    assert "broken.wav" in r.output and "readable" in r.output
    # a bad manifest line is named by file and line
    bad = tmp_path / "bad.tsv"
    bad.write_text("\t".join(COLUMNS) + "\nu1\t/x.wav\t1.0\t16000\t\t\t\tdev\n")
    with pytest.raises(DataError, match=r"bad.tsv: line 2: split 'dev'"):
        read_manifest(bad)
    bad.write_text("\t".join(COLUMNS) + "\n../u1\t/x.wav\t1.0\t16000\t\t\t\ttrain\n")
    with pytest.raises(DataError, match=r"bad.tsv: line 2: unsafe"):
        read_manifest(bad)


# --- manifest -> feature cache ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def libri_manifest(corpora_root) -> Path:
    root = fx.make_librispeech(corpora_root / "libri2")
    out = corpora_root / "libri2_manifest"
    prepare("librispeech", root, out, progress=False)
    return out


def test_extract_manifest_keeps_splits_speakers_labels(libri_manifest, tmp_path):
    r = CliRunner().invoke(cli, ["extract", str(libri_manifest), "-o", str(tmp_path / "f"), "--workers", "0"])
    assert r.exit_code == 0, r.output
    man = _by_id(read_manifest(libri_manifest))
    src = open_data(tmp_path / "f")
    assert src.splits() == ["train", "val", "test"]
    for split in ("train", "val", "test"):
        recs = src.utterances(split)
        assert sorted(r["id"] for r in recs) == sorted(u for u in man if man[u].split == split)
        assert list(src.labels(split, "speaker")) == [man[r["id"]].speaker for r in recs]
        assert list(src.labels(split, "label")) == [man[r["id"]].label for r in recs]
        assert all(r["text"] == man[r["id"]].text for r in recs)
    assert list(src.labels("test", "speaker")) == ["1089", "1089"]
    # statistics: the train split's frames only (numpy on the frames, independent of RunningStats)
    train = np.concatenate([src.logmel(r) for r in src.utterances("train")], axis=1)
    np.testing.assert_allclose(src.stats.mean.numpy(), train.mean(1), rtol=1e-4, atol=1e-4)
    allf = np.concatenate([src.logmel(r) for r in src.records], axis=1)
    assert not np.allclose(allf.mean(1), train.mean(1), atol=1e-3)  # so the check above means something
    # the manifest itself opens through the same door, but does not train
    m = open_data(libri_manifest)
    assert m.kind == "manifest" and list(m.labels("val", "speaker")) == ["84", "84"]
    with pytest.raises(ConfigError, match="audiovae extract"):
        m.check_model("dense")


def _cache_bytes(d: Path) -> tuple:
    return tuple((d / n).read_bytes() for n in ("feats.f32", "index.json", "stats.npz", "cache.json"))


def test_sharded_extract_merges_to_the_single_process_cache(libri_manifest, tmp_path):
    single = tmp_path / "single"
    extract(libri_manifest, single, workers=0, progress=False)
    sharded = tmp_path / "sharded"
    run = CliRunner()
    r0 = run.invoke(cli, ["extract", str(libri_manifest), "-o", str(sharded), "--workers", "0", "--shard", "0/3"])
    assert r0.exit_code == 0, r0.output
    assert not (sharded / "feats.f32").exists() and (sharded / "parts-0-of-3.jsonl").exists()
    with pytest.raises(DataError, match="no part yet"):
        merge(libri_manifest, sharded)
    for i in (1, 2):
        r = run.invoke(cli, ["extract", str(libri_manifest), "-o", str(sharded), "--workers", "0", "--shard", f"{i}/3"])
        assert r.exit_code == 0, r.output
    r = run.invoke(cli, ["extract", str(libri_manifest), "-o", str(sharded), "--merge"])
    assert r.exit_code == 0, r.output
    assert _cache_bytes(sharded) == _cache_bytes(single)
    assert run.invoke(cli, ["extract", str(libri_manifest), "-o", str(sharded), "--shard", "3/3"]).exit_code == 1


@pytest.mark.slow
def test_torchrun_extract_rank0_merges(libri_manifest, tmp_path):
    single = tmp_path / "single"
    extract(libri_manifest, single, workers=0, progress=False)
    out = tmp_path / "tr"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "audiovae",
           "extract", str(libri_manifest), "-o", str(out), "--workers", "0"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(x.name for x in out.glob("parts-*.jsonl")) == ["parts-0-of-2.jsonl", "parts-1-of-2.jsonl"]
    assert _cache_bytes(out) == _cache_bytes(single)


# --- integrity: a torn cache is refused by name, and a re-run repairs it ----------------------------------

def test_torn_cache_is_refused_and_repaired(libri_manifest, tmp_path):
    out = tmp_path / "f"
    extract(libri_manifest, out, workers=0, progress=False)
    good = _cache_bytes(out)
    parts = {p: p.stat().st_mtime_ns for p in (out / "parts").glob("*.npy")}
    # a re-run on a complete cache rewrites nothing
    stamp = {n: (out / n).stat().st_mtime_ns for n in ("feats.f32", "index.json", "stats.npz", "cache.json")}
    extract(libri_manifest, out, workers=0, progress=False)
    assert {n: (out / n).stat().st_mtime_ns for n in stamp} == stamp
    # 1. feats.f32 replaced by a shorter array
    feats = np.load(out / "feats.f32")
    with open(out / "feats.f32", "wb") as fh:
        np.save(fh, feats[:-7])
    with pytest.raises(DataError, match=r"feats.f32: holds \(\d+, 256\)"):
        FeatureCache(out)
    r = CliRunner().invoke(cli, ["train", str(out), "--model", "dense", "-o", str(tmp_path / "run"), "--max-steps", "1"])
    assert r.exit_code == 1 and "feats.f32" in r.output and "re-run `audiovae extract`" in r.output
    extract(libri_manifest, out, workers=0, progress=False)
    assert _cache_bytes(out) == good
    assert {p: p.stat().st_mtime_ns for p in parts} == parts  # repaired from the parts, nothing recomputed
    # 2. offsets that do not add up (index.json edited; its checksum no longer matches the commit record)
    index = json.loads((out / "index.json").read_text())
    index[1]["offset"] += 1
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="index.json"):
        FeatureCache(out)
    extract(libri_manifest, out, workers=0, progress=False)
    assert _cache_bytes(out) == good


def test_kill_between_the_writes_leaves_no_openable_mixture(libri_manifest, tmp_path, monkeypatch):
    import audiovae.data.features as features

    man = read_manifest(libri_manifest)
    first = tmp_path / "m1"
    from audiovae.data.corpora import Manifest, write_manifest

    some = [u for u in man.utterances if u.split == "train"][:2] + [u for u in man.utterances if u.split == "val"][:1]
    write_manifest(Manifest(some, "librispeech", "", man.split_rule), first)
    out = tmp_path / "f"
    extract(first, out, workers=0, progress=False)
    old_rows = FeatureCache(out).feats.shape[0]
    # a re-run that adds files dies after feats.f32 and stats.npz are replaced, before index.json
    real = features.atomic_write_text

    def die_on_index(path, text):
        if Path(path).name == "index.json":
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(features, "atomic_write_text", die_on_index)
    with pytest.raises(KeyboardInterrupt):
        extract(libri_manifest, out, workers=0, progress=False)
    monkeypatch.undo()
    assert np.load(out / "feats.f32", mmap_mode="r").shape[0] > old_rows  # new frames, old index on disk
    with pytest.raises(DataError, match="cache.json.*missing"):
        open_data(out)
    (out / "feats.f32").unlink()
    with pytest.raises(DataError, match=r"missing feats.f32"):
        open_data(out)
    extract(libri_manifest, out, workers=0, progress=False)
    cache = FeatureCache(out)
    assert len(cache.index) == len(man.utterances)
    assert sum(r["frames"] for r in cache.index) == cache.feats.shape[0]
    # a cache of another format version is refused, naming cache.json
    commit = json.loads((out / "cache.json").read_text())
    (out / "cache.json").write_text(json.dumps({**commit, "version": 1}))
    with pytest.raises(DataError, match=r"cache.json: cache format version 1"):
        FeatureCache(out)


# --- ffmpeg formats ---------------------------------------------------------------------------------------

def test_m4a_through_ffmpeg_and_missing_ffmpeg(speech_dir, tmp_path, monkeypatch):
    _need("ffmpeg")
    from audiovae.audio import io as aio

    wav = speech_dir / "utt00.wav"
    m4a = tmp_path / "d" / "utt00.m4a"
    m4a.parent.mkdir()
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", "-b:a", "128k", str(m4a)],
                   check=True)
    ref, sr = sf.read(wav, dtype="float32")
    y, ysr = aio.load_audio(m4a)
    assert ysr == sr
    # AAC adds encoder delay; align by cross-correlation, then the waveforms must agree closely
    lag = int(np.argmax(np.correlate(y[:8000], ref[:4000], "valid")))
    n = min(len(ref), len(y) - lag)
    corr = np.corrcoef(ref[:n], y[lag : lag + n])[0, 1]
    assert corr > 0.98 and abs(n - len(ref)) < 2048
    dur, dsr = aio.audio_duration(m4a)
    assert dsr == sr and dur == pytest.approx(len(ref) / sr, abs=0.1)
    assert aio.find_audio_files(m4a.parent) == [m4a]
    monkeypatch.setattr(aio.shutil, "which", lambda name: None)
    with pytest.raises(InvalidAudioError, match=r"utt00.m4a: reading .m4a files needs ffmpeg"):
        aio.load_audio(m4a)
    with pytest.raises(InvalidAudioError, match="needs ffprobe"):
        aio.audio_duration(m4a)


# --- asterisk: real recorded speech from Debian ----------------------------------------------------------

def _need_asterisk() -> None:
    require(ASTERISK.is_dir() and any(ASTERISK.glob("*/*.g722")), "asterisk-core-sounds-es-g722")
    _need("ffmpeg")


def test_asterisk_prepare_full_corpus(tmp_path):
    _need_asterisk()
    man = prepare("asterisk", ASTERISK, tmp_path / "m", progress=False)
    voices = sorted(d.name for d in ASTERISK.iterdir() if d.is_dir() and not d.is_symlink() and list(d.rglob("*.g722")))
    assert sorted({u.speaker for u in man.utterances}) == voices
    assert all(u.label == u.speaker[:5] and u.sample_rate == 16000 for u in man.utterances)
    assert not any("/silence/" in str(u.path) for u in man.utterances)
    # the same prompt is in the same split in every language, and every split has every voice
    split_of = {}
    for u in man.utterances:
        split_of.setdefault(u.id.split("__", 1)[1], set()).add(u.split)
    assert all(len(s) == 1 for s in split_of.values())
    for s in ("train", "val", "test"):
        assert {u.speaker for u in man.utterances if u.split == s} == set(voices)
    empty = [p for p in ASTERISK.rglob("*.g722") if p.stat().st_size == 0 and "silence" not in p.parts]
    assert sorted(p for p, _ in man.skipped) == sorted(map(str, empty))
    # durations from the G.722 bit rate agree with ffprobe on a few files
    for u in man.utterances[:: max(1, len(man.utterances) // 4)]:
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                              str(u.path)], capture_output=True, text=True).stdout
        assert u.duration == pytest.approx(float(out), abs=0.01)
    hours = sum(u.duration for u in man.utterances) / 3600
    assert 0.3 * len(voices) < hours < 1.0 * len(voices)  # about 25-30 minutes per language


def test_asterisk_prepare_extract_few_files(tmp_path):
    _need_asterisk()
    full = prepare("asterisk", ASTERISK, progress=False)
    # two prompts of each split (the rule holds out prompts by name), copied for every voice
    prompts = [p for s in ("train", "val", "test")
               for p in sorted({u.id.split("__", 1)[1] for u in full.utterances if u.split == s})[:2]]
    src = tmp_path / "sounds"
    for u in full.utterances:
        if u.id.split("__", 1)[1] in prompts:
            dest = src / u.path.relative_to(ASTERISK)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(u.path, dest)
    run = CliRunner()
    r = run.invoke(cli, ["prepare", "asterisk", str(src), "-o", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    small = read_manifest(tmp_path / "m")
    whole = {u.id: u.split for u in full.utterances}
    assert {u.split for u in small.utterances} == {"train", "val", "test"}
    assert all(u.split == whole[u.id] for u in small.utterances)  # a fixed rule: a subset keeps its splits
    r = run.invoke(cli, ["extract", str(tmp_path / "m"), "-o", str(tmp_path / "f"), "--workers", "0", "--set",
                         "sample_rate=16000"])
    assert r.exit_code == 0, r.output
    data = open_data(tmp_path / "f")
    man = _by_id(read_manifest(tmp_path / "m"))
    assert sorted(r["id"] for r in data.records) == sorted(man)
    for rec in data.records:
        # the decoded length is the G.722 length: 16000 samples per 8000 bytes
        assert rec["num_samples"] == pytest.approx(man[rec["id"]].duration * 16000, abs=2)
        assert rec["frames"] == 1 + rec["num_samples"] // data.mel.hop_length
        assert rec["speaker"] == man[rec["id"]].speaker and rec["split"] == man[rec["id"]].split
    # load_audio's decode equals ffmpeg's own 16-bit decode of the same file
    from audiovae.audio.io import load_audio

    f = small.utterances[0].path
    pcm = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(f), "-f", "s16le", "-"],
                         capture_output=True, check=True).stdout
    ref = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    y, sr = load_audio(f)
    assert sr == 16000 and len(y) == len(ref) and np.abs(y - ref).max() < 1e-4


# --- the article's data.npy ---------------------------------------------------------------------------

def test_dense_model_trains_and_evaluates_on_a_frame_array(tmp_path):
    # (N, 256) frames near a 4-dimensional subspace: a VAE must beat the best diagonal Gaussian by far
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (4, 256))
    frames = (rng.normal(0, 1, (3000, 4)) @ w + 0.05 * rng.normal(0, 1, (3000, 256)) - 5).astype(np.float32)
    np.save(tmp_path / "data.npy", frames)
    run = CliRunner()
    r = run.invoke(cli, ["train", str(tmp_path / "data.npy"), "--model", "dense", "-o", str(tmp_path / "run"),
                         "--max-steps", "150", "batch_size=128", "val_every=50", "kl_warmup_steps=50",
                         "model_config.latent_dim=8", "model_config.hidden=[128]"])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 0, r.output
    r = run.invoke(cli, ["evaluate", str(tmp_path / "run"), str(tmp_path / "data.npy"), "--k", "8",
                         "--json", str(tmp_path / "ev.json")])
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "ev.json").read_text())
    val = frames[-300:].astype(np.float64)  # the door's frame split: the last 10 % of rows validate
    mean, std = frames[:-300].mean(0), frames[:-300].std(0)
    diag = float(np.mean(np.sum(-0.5 * ((val - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), axis=1)))
    assert ev["items"] == 300 and ev["iwae"] >= ev["elbo"]
    print("ELBO", ev["elbo"], "diagonal Gaussian", diag)
    assert ev["elbo"] > diag + 50, (ev["elbo"], diag)
