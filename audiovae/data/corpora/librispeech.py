"""LibriSpeech (OpenSLR 12): read audiobooks, 16 kHz FLAC; official splits by subset."""

from __future__ import annotations

from pathlib import Path

from audiovae.data.corpora.manifest import Utterance
from audiovae.data.corpora.registry import Archive, Corpus, register
from audiovae.errors import DataError


LIBRISPEECH_SPLIT = {"train": "train", "dev": "val", "test": "test"}


def read_librispeech(root: Path) -> list[Utterance]:
    """LibriSpeech: ``SUBSET/SPEAKER/CHAPTER/SPEAKER-CHAPTER-NNNN.flac`` + ``SPEAKER-CHAPTER.trans.txt``.

    ``root`` is the LibriSpeech folder (holding subsets) or one subset folder. The
    subset gives the official split: train-* -> train, dev-* -> val, test-* -> test.
    Label = the subset name.
    """
    if root.is_dir() and (root / "LibriSpeech").is_dir():
        root = root / "LibriSpeech"  # the folder the archives unpack into
    subsets = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name.split("-")[0] in LIBRISPEECH_SPLIT]
    if not subsets and root.name.split("-")[0] in LIBRISPEECH_SPLIT:
        subsets = [root]
    if not subsets:
        raise DataError("not a LibriSpeech folder: no train-*/dev-*/test-* subset", root)
    utts = []
    for sub in subsets:
        split = LIBRISPEECH_SPLIT[sub.name.split("-")[0]]
        for trans in sorted(sub.glob("*/*/*.trans.txt")):
            for line in trans.read_text(encoding="utf-8").splitlines():
                uid, _, text = line.strip().partition(" ")
                if uid:
                    utts.append(Utterance(uid, trans.parent / f"{uid}.flac", speaker=uid.split("-")[0], label=sub.name,
                                          text=text, split=split))
    return utts


_LIBRI = "http://www.openslr.org/resources/12/"
_LIBRI_SUBSETS = {  # size (bytes) and SHA-256: TFDS url_checksums/librispeech.txt = torchaudio LIBRISPEECH
    "dev-clean": (337926286, "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3"),
    "dev-other": (314305928, "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365"),
    "test-clean": (346663984, "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23"),
    "test-other": (328757843, "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29"),
    "train-clean-100": (6387309499, "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2"),
    "train-clean-360": (23049477885, "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf"),
    "train-other-500": (30593501606, "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2"),
}


LIBRISPEECH = register(Corpus(
    "librispeech", "LibriSpeech (SUBSET/SPEAKER/CHAPTER/*.flac)", read_librispeech,
    official="official (LibriSpeech subsets: train-* -> train, dev-* -> val, test-* -> test)",
    root="LibriSpeech", subsets={
        name: (Archive(f"{_LIBRI}{name}.tar.gz", size, sha, dest=f"LibriSpeech/{name}",
                       member_root=f"LibriSpeech/{name}", marker=(".",)),)
        for name, (size, sha) in _LIBRI_SUBSETS.items()
    }, default_subsets=("dev-clean", "test-clean"),
    note="LibriSpeech (OpenSLR 12): read audiobooks, 16 kHz FLAC, one archive per subset"))
