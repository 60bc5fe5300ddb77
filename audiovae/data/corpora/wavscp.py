"""A Kaldi data folder: ``wav.scp`` with optional ``utt2spk`` and ``text``; split by file or speaker."""

from __future__ import annotations

from pathlib import Path

from audiovae.data.corpora.manifest import Utterance, safe_id
from audiovae.data.corpora.registry import Corpus, register
from audiovae.errors import DataError


def _kaldi_table(path: Path) -> dict[str, str]:
    out = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            key, _, value = line.strip().partition(" ")
            if key:
                out[key] = value.strip()
    return out


def read_wav_scp(root: Path) -> list[Utterance]:
    """A Kaldi data folder: ``wav.scp`` (``UTT PATH``), optional ``utt2spk`` and ``text`` beside it.

    ``root`` is the folder or the wav.scp itself. Relative paths are taken from
    the folder holding wav.scp. Piped commands (``UTT sox ... |``) are refused.
    """
    scp = root if root.is_file() else root / "wav.scp"
    if not scp.is_file():
        raise DataError("not a Kaldi data folder: no wav.scp", root)
    if (scp.parent / "segments").is_file():
        raise DataError("a Kaldi 'segments' file is not supported (give one file per utterance)", scp.parent / "segments")
    spk, text = _kaldi_table(scp.parent / "utt2spk"), _kaldi_table(scp.parent / "text")
    utts = []
    for no, line in enumerate(scp.read_text(encoding="utf-8").splitlines(), 1):
        uid, _, target = line.strip().partition(" ")
        if not uid:
            continue
        target = target.strip()
        if not target or target.endswith("|"):
            raise DataError(f"line {no}: {'no path' if not target else 'piped commands are not supported'} "
                            f"for utterance {uid!r}", scp)
        p = Path(target)
        utts.append(Utterance(safe_id(uid), p if p.is_absolute() else scp.parent / p, speaker=spk.get(uid, ""),
                              text=text.get(uid, "")))
    return utts


WAV_SCP = register(Corpus("wav.scp", "a Kaldi data folder (wav.scp, utt2spk, text)", read_wav_scp))
