"""LJ Speech 1.1: one speaker, 13,100 clips at 22050 Hz; split by file."""

from __future__ import annotations

from pathlib import Path

from audiovae.data.corpora.manifest import Utterance
from audiovae.data.corpora.registry import Archive, Corpus, find_root, register
from audiovae.errors import DataError


def read_ljspeech(root: Path) -> list[Utterance]:
    """LJSpeech-1.1: ``metadata.csv`` (``id|text|normalized text``, no header) + ``wavs/ID.wav``; one speaker."""
    root = find_root(root, "metadata.csv")
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise DataError("not an LJSpeech folder: no metadata.csv", root)
    utts = []
    for no, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 2:
            raise DataError(f"line {no}: expected 'id|text|normalized text'", meta)
        text = parts[2] if len(parts) > 2 and parts[2].strip() else parts[1]
        utts.append(Utterance(parts[0], root / "wavs" / f"{parts[0]}.wav", speaker="LJ", text=text))
    return utts


LJSPEECH = register(Corpus(
    "ljspeech", "LJSpeech-1.1 (metadata.csv, wavs/)", read_ljspeech,
    root="LJSpeech-1.1", subsets={
        "all": (Archive("https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2", 2748572632,
                        "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5",
                        dest="LJSpeech-1.1", member_root="LJSpeech-1.1", marker=("metadata.csv", "wavs")),),
    }, default_subsets=("all",), note="LJ Speech 1.1: 13,100 clips of one speaker, 22050 Hz (2.6 GB)"))
