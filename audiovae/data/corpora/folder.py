"""Any folder of audio files (the first level of sub-folders may name speakers or labels); split by file
or speaker. :func:`folder_manifest` writes a manifest for a folder made by a program (the demo's, tests')."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from audiovae.data.corpora.manifest import Manifest, Utterance, safe_id, write_manifest
from audiovae.data.corpora.registry import Corpus, register
from audiovae.data.corpora.split import assign_splits
from audiovae.errors import DataError


def read_folder(root: Path, subdirs: str = "none") -> list[Utterance]:
    """Every audio file under ``root``; ``subdirs``: the first folder level names the ``speaker``, the ``label`` or
    ``none``. Id = the relative path with ``/`` as ``__``. A ``NAME.txt`` beside ``NAME.wav`` gives its text."""
    if subdirs not in ("none", "speaker", "label"):
        raise DataError(f"--subdirs must be none, speaker or label, not {subdirs!r}")
    from audiovae.audio.io import find_audio_files  # numpy, soundfile: on first use

    utts = []
    for f in find_audio_files(root):
        rel = f.relative_to(root)
        tag = rel.parts[0] if len(rel.parts) > 1 else ""
        txt = f.with_suffix(".txt")
        text = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.is_file() else ""
        utts.append(Utterance(safe_id("__".join(rel.with_suffix("").parts)), f, text=text,
                              speaker=tag if subdirs == "speaker" else "", label=tag if subdirs == "label" else ""))
    return utts


def folder_manifest(root: str | os.PathLike, out: str | os.PathLike, speaker_of: Callable[[Path], str] | None = None,
                    split_of: Callable[[str], str] | None = None, val_fraction: float = 0.1,
                    corpus: str = "folder") -> Path:
    """Write a manifest for a plain folder of audio files, with a speaker per file (``speaker_of(path)``) and a
    split per id (``split_of(id)``, default a hash of the id); returns the manifest's path. For corpora made by
    a program (the demo's, tests'), whose speakers are known but not laid out as folders."""
    utts = read_folder(Path(root))
    for u in utts:
        u.speaker = speaker_of(u.path) if speaker_of else u.speaker
        u.split = split_of(u.id) if split_of else u.split
    rule = "given by the program that made the corpus" if split_of else assign_splits(utts, "file", val_fraction, 0.0)
    return write_manifest(Manifest(utts, corpus, str(root), rule), out)


FOLDER = register(Corpus("folder", "a folder of audio files (--subdirs: speaker or label folders)", read_folder,
                         reader_options=("subdirs",)))
