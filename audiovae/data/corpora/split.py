"""The split policy: which utterances train, validate and test.

Splits are the corpus's official ones where it has them (LibriSpeech subsets, the
Speech Commands lists); otherwise deterministic: by file (a hash of the id, so adding
files never moves old ones) or by speaker (a hash of the speaker: every utterance of a
speaker lands in one split). A corpus may bring its own policy (asterisk: by prompt).
The rule used is written into the manifest.
"""

from __future__ import annotations

import hashlib

from audiovae.data.corpora.manifest import Utterance
from audiovae.errors import DataError


def _unit(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` (sha1), the same on every machine and Python version."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) / float(1 << 48)


def hash_split(key: str, val_fraction: float, test_fraction: float) -> str:
    """``test`` when ``hash(key) < test_fraction``, ``val`` below ``test + val``, else ``train``."""
    h = _unit(key)
    return "test" if h < test_fraction else "val" if h < test_fraction + val_fraction else "train"


def assign_splits(utts: list[Utterance], by: str, val_fraction: float, test_fraction: float) -> str:
    """Give every utterance without a split one, by ``file`` (hash of the id) or ``speaker``; returns the rule."""
    if by not in ("file", "speaker"):
        raise DataError(f"--split-by must be file or speaker, not {by!r}")
    if by == "speaker":
        speakers = sorted({u.speaker for u in utts if not u.split})
        if "" in speakers:
            raise DataError("--split-by speaker, but some utterances have no speaker")
        if len(speakers) < 3:
            raise DataError(f"--split-by speaker needs at least 3 speakers, this corpus has {len(speakers)}")
        of = {s: hash_split("speaker:" + s, val_fraction, test_fraction) for s in speakers}
        # every split that was asked for gets at least one speaker (small corpora)
        for want, frac in (("train", 1.0), ("val", val_fraction), ("test", test_fraction)):
            if frac > 0 and want not in of.values():
                pool = [s for s in speakers if list(of.values()).count(of[s]) > 1 and of[s] == "train"] or speakers
                of[max(pool, key=lambda s: _unit("pick:" + s))] = want
        for u in utts:
            u.split = u.split or of[u.speaker]
        return f"by speaker (sha1 of the speaker id; val {val_fraction:g}, test {test_fraction:g} of speakers)"
    for u in utts:
        u.split = u.split or hash_split(u.id, val_fraction, test_fraction)
    return f"by file (sha1 of the utterance id; val {val_fraction:g}, test {test_fraction:g} of files)"


def fill_missing_official(utts: list[Utterance], rule: str, split_by: str, val: float, test: float) -> str:
    """Official splits that lack train or val: carve val from train, or resplit when there is no train."""
    have = {u.split for u in utts}
    if "train" not in have:
        for u in utts:
            u.split = ""
        return "no official training subset here, so " + assign_splits(utts, split_by, val, test)
    if "val" not in have and val > 0:
        train = [u for u in utts if u.split == "train"]
        for u in train:
            u.split = ""
        sub = assign_splits(train, split_by, val, 0.0)
        return f"{rule}; no official validation subset here, so val is carved from train {sub}"
    return rule
