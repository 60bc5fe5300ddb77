"""Tiny speech corpora in the exact official layouts, spoken by espeak-ng in several voices.

Each ``make_*(root, ...)`` writes one corpus under ``root`` and returns the corpus root
(the folder ``audiovae prepare CORPUS`` takes). File names, folder layout, sample rates,
audio formats and metadata files follow the published corpora; the words come from
:data:`SENTENCES`. Used by tests/test_corpora.py and by the recipe end-to-end tests.
The module-level tables (VCTK_SPEAKERS, LIBRI_LAYOUT, SC_*) say what each fixture holds.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "A variational autoencoder learns a latent space of speech.",
    "Griffin and Lim turned magnitudes back into sound.",
    "Every frame has two hundred and fifty six mel bins.",
    "Please call Stella and ask her to bring these things.",
    "Six spoons of fresh snow peas for her brother Bob.",
    "We also need a small plastic snake and a big toy frog.",
]
VOICES = ["en", "en-us", "en+f3", "en+m3", "en-gb", "en+f2", "en+m2", "en+f4"]


def espeak(text: str, voice: str = "en", sample_rate: int = 22050, speed: int = 170) -> np.ndarray:
    """``text`` spoken by espeak-ng as float32 ``(N,)`` at ``sample_rate`` (espeak-ng speaks at 22050 Hz)."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(p), text], check=True, capture_output=True)
        wave, sr = sf.read(p, dtype="float32")
    if sr != sample_rate:
        import librosa

        wave = librosa.resample(wave, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq").astype(np.float32)
    return wave


def _write(path: Path, wave: np.ndarray, sr: int, fmt: str = "WAV") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(wave, -1, 1), sr, format=fmt, subtype="PCM_16")
    return path


def make_ljspeech(root: Path, n: int = 6) -> Path:
    """LJSpeech-1.1: ``LJSpeech-1.1/metadata.csv`` (``id|text|normalized text``, no header, no quoting) and
    ``wavs/LJ001-NNNN.wav`` (22050 Hz, 16-bit mono), one speaker."""
    corpus = Path(root) / "LJSpeech-1.1"
    lines = []
    for i in range(n):
        uid = f"LJ001-{i + 1:04d}"
        text = SENTENCES[i % len(SENTENCES)]
        # the raw text keeps numerals, the normalised one spells them (as in the real corpus)
        raw = text.replace("two hundred and fifty six", "256")
        _write(corpus / "wavs" / f"{uid}.wav", espeak(text, "en+f3"), 22050)
        lines.append(f"{uid}|{raw}|{text}")
    (corpus / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (corpus / "README").write_text("LJ Speech Dataset (fixture)\n")
    return corpus


VCTK_SPEAKERS = {"p225": ("23", "F", "English", "Southern England", "en+f3"),
                 "p226": ("22", "M", "English", "Surrey", "en+m3"),
                 "p227": ("38", "M", "Scottish", "Cumbria", "en-gb")}


def make_vctk(root: Path, per_speaker: int = 2) -> Path:
    """VCTK-Corpus-0.92: ``wav48_silence_trimmed/pXXX/pXXX_NNN_mic{1,2}.flac`` (48 kHz FLAC), ``txt/pXXX/pXXX_NNN.txt``,
    ``speaker-info.txt``. Like the real corpus, one utterance (p227's last) has no transcript."""
    corpus = Path(root) / "VCTK-Corpus-0.92"
    info = ["ID  AGE  GENDER  ACCENTS  REGION COMMENTS "]
    k = 0
    for spk, (age, sex, accent, region, voice) in VCTK_SPEAKERS.items():
        info.append(f"{spk}  {age}  {sex}    {accent}    {region}")
        for j in range(per_speaker):
            text = SENTENCES[k % len(SENTENCES)]
            k += 1
            wave = espeak(text, voice, 48000)
            for mic in ("mic1", "mic2"):
                _write(corpus / "wav48_silence_trimmed" / spk / f"{spk}_{j + 1:03d}_{mic}.flac", wave, 48000, "FLAC")
            if not (spk == "p227" and j == per_speaker - 1):
                (corpus / "txt" / spk).mkdir(parents=True, exist_ok=True)
                (corpus / "txt" / spk / f"{spk}_{j + 1:03d}.txt").write_text(text + "\n")
    (corpus / "speaker-info.txt").write_text("\n".join(info) + "\n")
    (corpus / "README.txt").write_text("CSTR VCTK Corpus (fixture)\n")
    return corpus


LIBRI_LAYOUT = {"train-clean-100": [("19", "198"), ("26", "495")], "dev-clean": [("84", "121123")],
                "test-clean": [("1089", "134686")]}


def make_librispeech(root: Path, per_chapter: int = 2) -> Path:
    """LibriSpeech: ``LibriSpeech/SUBSET/SPEAKER/CHAPTER/SPEAKER-CHAPTER-NNNN.flac`` (16 kHz FLAC) and
    ``SPEAKER-CHAPTER.trans.txt`` (``ID UPPER CASE TEXT``), subsets train-clean-100, dev-clean, test-clean."""
    corpus = Path(root) / "LibriSpeech"
    k = 0
    for subset, chapters in LIBRI_LAYOUT.items():
        for spk, chap in chapters:
            d = corpus / subset / spk / chap
            lines = []
            for j in range(per_chapter):
                uid = f"{spk}-{chap}-{j:04d}"
                text = SENTENCES[k % len(SENTENCES)]
                _write(d / f"{uid}.flac", espeak(text, VOICES[k % len(VOICES)], 16000), 16000, "FLAC")
                lines.append(f"{uid} {text.upper().rstrip('.').replace(',', '')}")
                k += 1
            (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    (corpus / "SPEAKERS.TXT").write_text(";ID  |SEX| SUBSET           |MINUTES| NAME\n")
    return corpus


SC_WORDS = {"yes": ["0a7c2a8d", "0b09edd3", "0c2ca723"], "no": ["0a7c2a8d", "1b4c9b89", "0c2ca723"],
            "up": ["0b09edd3", "1b4c9b89", "0a7c2a8d"]}
SC_VALIDATION = ["no/1b4c9b89_nohash_0.wav", "up/1b4c9b89_nohash_0.wav"]
SC_TESTING = ["yes/0c2ca723_nohash_0.wav", "no/0c2ca723_nohash_0.wav"]


def make_speechcommands(root: Path) -> Path:
    """Speech Commands v0.02: ``KEYWORD/HASH_nohash_N.wav`` (16 kHz, 1 s, 16-bit), ``validation_list.txt``,
    ``testing_list.txt``, ``_background_noise_/*.wav``, LICENSE. Speaker hash -> voice."""
    corpus = Path(root) / "speech_commands_v0.02"
    voice_of = {h: VOICES[i] for i, h in enumerate(sorted({h for hs in SC_WORDS.values() for h in hs}))}
    for word, hashes in SC_WORDS.items():
        for h in hashes:
            w = espeak(word, voice_of[h], 16000)[:16000]
            clip = np.zeros(16000, np.float32)
            clip[: len(w)] = w
            _write(corpus / word / f"{h}_nohash_0.wav", clip, 16000)
    noise = np.random.default_rng(0).normal(0, 0.1, 16000 * 3).astype(np.float32)
    _write(corpus / "_background_noise_" / "white_noise.wav", noise, 16000)
    (corpus / "_background_noise_" / "README.md").write_text("noise\n")
    (corpus / "validation_list.txt").write_text("\n".join(SC_VALIDATION) + "\n")
    (corpus / "testing_list.txt").write_text("\n".join(SC_TESTING) + "\n")
    (corpus / "LICENSE").write_text("CC BY 4.0\n")
    return corpus


def make_folder(root: Path, speakers: int = 3, per_speaker: int = 2) -> Path:
    """A plain folder with one sub-folder per speaker: ``corpus/spkK/uttJ.wav`` (22050 Hz)."""
    corpus = Path(root) / "folder_corpus"
    k = 0
    for s in range(speakers):
        for j in range(per_speaker):
            _write(corpus / f"spk{s}" / f"utt{j}.wav", espeak(SENTENCES[k % len(SENTENCES)], VOICES[s % len(VOICES)]),
                   22050)
            k += 1
    return corpus


def make_wav_scp(root: Path, n: int = 4) -> Path:
    """A Kaldi data folder ``data/train`` with ``wav.scp`` (relative paths to ``wavs/``), ``utt2spk`` and ``text``."""
    corpus = Path(root) / "kaldi" / "data" / "train"
    scp, u2s, txt = [], [], []
    for i in range(n):
        spk = f"spk{i % 2}"
        uid = f"{spk}-utt{i}"
        text = SENTENCES[i % len(SENTENCES)]
        _write(corpus / "wavs" / f"{uid}.wav", espeak(text, VOICES[i % 2]), 22050)
        scp.append(f"{uid} wavs/{uid}.wav")
        u2s.append(f"{uid} {spk}")
        txt.append(f"{uid} {text}")
    for name, lines in (("wav.scp", scp), ("utt2spk", u2s), ("text", txt)):
        (corpus / name).write_text("\n".join(lines) + "\n")
    return corpus


def write_idx(path: Path, arr: np.ndarray) -> Path:
    """An MNIST-style IDX file (gzip, unsigned bytes) holding ``arr``."""
    arr = np.asarray(arr).astype(np.uint8)
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(gzip.compress(header + arr.tobytes()))
    return path


def tiny_image_run(root: Path) -> Path:
    """A random 28x28 IDX folder in ``root`` (64 train, 16 test images) and a tiny `mnist` run on it, 2 steps."""
    from audiovae.training import TrainConfig, train

    rng = np.random.default_rng(0)
    for stem, n in (("train", 64), ("t10k", 16)):
        write_idx(root / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(root / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    run = root / "run"
    train(root, run, TrainConfig(model="mnist", model_config={"channels": 4, "latent_dim": 2, "hidden": 8},
                                 batch_size=16, max_steps=2, kl_warmup="none", lr_warmup_steps=0,
                                 checkpoint_every=1000, val_every=2, val_batches=1), progress=False)
    return run


def tiny_conv_run(feats: Path, run: Path) -> Path:
    """A tiny conv run (8 channels, 4 latent channels at 1/4 of the frame rate) trained 2 steps on ``feats``."""
    from audiovae.training import TrainConfig, train

    cfg = TrainConfig(model="conv", model_config={"channels": 8, "latent_dim": 4, "downsample": 4, "res_blocks": 1},
                      batch_size=4, max_steps=2, segment_frames=32, lr_warmup_steps=0, checkpoint_every=1000,
                      val_batches=1)
    train(feats, run, cfg, progress=False)
    return run
