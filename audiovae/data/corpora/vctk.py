"""CSTR VCTK 0.92: 110 speakers with their accents, 48 kHz FLAC; split by file or speaker."""

from __future__ import annotations

from pathlib import Path

from audiovae.data.corpora.manifest import Utterance
from audiovae.data.corpora.registry import Archive, Corpus, find_root, register
from audiovae.errors import DataError


def read_vctk(root: Path, mic: str = "mic1") -> list[Utterance]:
    """VCTK 0.92: ``wav48_silence_trimmed/pXXX/pXXX_NNN_mic1.flac``, ``txt/pXXX/pXXX_NNN.txt``, ``speaker-info.txt``.

    Speaker = the folder (p225...); label = the speaker's accent from speaker-info.txt;
    text from ``txt/`` when there (a few utterances have none).
    """
    root = find_root(root, "wav48_silence_trimmed")
    wavs = root / "wav48_silence_trimmed"
    if not wavs.is_dir():
        raise DataError("not a VCTK 0.92 folder: no wav48_silence_trimmed/", root)
    accent = {}
    info = root / "speaker-info.txt"
    if info.is_file():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 4:
                accent[cols[0] if cols[0].startswith(("p", "s")) else "p" + cols[0]] = cols[3]
    utts = []
    for f in sorted(wavs.glob(f"*/*_{mic}.flac")):
        spk = f.parent.name
        base = f.name[: -len(f"_{mic}.flac")]
        txt = root / "txt" / spk / f"{base}.txt"
        text = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.is_file() else ""
        utts.append(Utterance(f"{base}_{mic}", f, speaker=spk, label=accent.get(spk, ""), text=text))
    return utts


VCTK = register(Corpus(
    "vctk", "VCTK 0.92 (wav48_silence_trimmed/, txt/, speaker-info.txt)", read_vctk,
    root="VCTK-Corpus-0.92", subsets={
        "all": (Archive("https://datashare.is.ed.ac.uk/bitstream/handle/10283/3443/VCTK-Corpus-0.92.zip", 11747302977,
                        "f96258be9fdc2cbff6559541aae7ea4f59df3fcaf5cf963aae5ca647357e359c",
                        dest="VCTK-Corpus-0.92", marker=("speaker-info.txt", "wav48_silence_trimmed")),),
    }, default_subsets=("all",), note="CSTR VCTK 0.92: 110 speakers, 48 kHz FLAC (10.9 GB)"))
