"""Speech Commands v0.02: one-second keywords, 16 kHz; official validation/testing lists."""

from __future__ import annotations

from pathlib import Path

from audiovae.data.corpora.manifest import Utterance
from audiovae.data.corpora.registry import Archive, Corpus, find_root, register
from audiovae.errors import DataError


def read_speechcommands(root: Path) -> list[Utterance]:
    """Speech Commands v0.02: ``KEYWORD/HASH_nohash_N.wav``, ``validation_list.txt``, ``testing_list.txt``.

    Label = the keyword folder, speaker = the hash prefix of the file name,
    ``_background_noise_`` left out; split from the two official lists (the rest trains).
    """
    root = find_root(root, "validation_list.txt")
    lists = {}
    for name, split in (("validation_list.txt", "val"), ("testing_list.txt", "test")):
        p = root / name
        if not p.is_file():
            raise DataError(f"not a Speech Commands folder: no {name}", root)
        lists.update({ln.strip(): split for ln in p.read_text().splitlines() if ln.strip()})
    utts = []
    for f in sorted(root.glob("*/*.wav")):
        word = f.parent.name
        if word.startswith("_"):
            continue  # _background_noise_: long noise recordings, not keywords
        rel = f"{word}/{f.name}"
        utts.append(Utterance(f"{word}__{f.stem}", f, speaker=f.stem.split("_nohash_")[0], label=word,
                              split=lists.get(rel, "train")))
    return utts


SPEECHCOMMANDS = register(Corpus(
    "speechcommands", "Speech Commands v0.02", read_speechcommands,
    official="official (validation_list.txt -> val, testing_list.txt -> test, the rest -> train)",
    root="speech_commands_v0.02", subsets={
        "all": (Archive("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz", 2428923189,
                        "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
                        dest="speech_commands_v0.02", marker=("validation_list.txt", "testing_list.txt")),),
        "test_set": (Archive("http://download.tensorflow.org/data/speech_commands_test_set_v0.02.tar.gz", 112563277,
                             "cc2a00c1147c2254e9be3fa0f779d8c17421dc349b86366567a8edfa9acd51df",
                             dest="speech_commands_test_set_v0.02", marker=(".",)),),
    }, default_subsets=("all",), note="Speech Commands v0.02: 105,829 one-second keywords, 16 kHz (2.3 GB)"))
