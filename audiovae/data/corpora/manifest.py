"""The manifest format: one file listing a corpus's utterances and their splits; read and write it.

A manifest lists the utterances of a corpus, one per line, with the split each
belongs to. ``audiovae extract`` takes it as SOURCE and keeps every column but
``duration``/``sample_rate`` in the feature cache's index.

Manifest format (``MANIFEST_DIR/manifest.tsv``, UTF-8, tab-separated)::

    # audiovae manifest 1
    # corpus: librispeech
    # root: /data/LibriSpeech
    # split: official (LibriSpeech subsets: train-* -> train, dev-* -> val, test-* -> test)
    id	path	duration	sample_rate	speaker	label	text	split
    84-121123-0000	/data/LibriSpeech/dev-clean/84/121123/84-121123-0000.flac	1.505	16000	84		GO DO YOU HEAR	val

- leading ``# key: value`` lines say which corpus, root folder and split rule made it;
  then one header line with the column names, then one line per utterance;
- ``id``: unique, file-system safe (no ``/``, tab or space); ``path``: absolute, or relative to
  the manifest's folder (:func:`write_manifest` writes absolute paths, so a manifest means the
  same files from any working directory); ``duration`` in seconds; ``sample_rate`` in Hz (of the file);
- ``speaker``, ``label``, ``text``: may be empty; tabs and newlines inside them are replaced
  by spaces;
- ``split``: ``train``, ``val`` or ``test``.

How the splits are made: :mod:`audiovae.data.corpora.split`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from audiovae.errors import DataError
from audiovae.utils import atomic_write_text

MANIFEST_NAME = "manifest.tsv"
MANIFEST_VERSION = 1
COLUMNS = ("id", "path", "duration", "sample_rate", "speaker", "label", "text", "split")
SPLITS = ("train", "val", "test")


@dataclass
class Utterance:
    """One manifest line. ``duration``/``sample_rate`` are 0 until :func:`prepare` reads the headers."""

    id: str
    path: Path
    speaker: str = ""
    label: str = ""
    text: str = ""
    split: str = ""
    duration: float = 0.0
    sample_rate: int = 0


@dataclass
class Manifest:
    """A corpus's utterances and how they were split (``split_rule``, one line of prose)."""

    utterances: list[Utterance]
    corpus: str = ""
    root: str = ""
    split_rule: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """Utterances, hours and speakers, in total and per split."""
        def line(name: str, utts: list[Utterance]) -> str:
            spk = len({u.speaker for u in utts if u.speaker})
            lab = len({u.label for u in utts if u.label})
            extra = (f", {spk} speakers" if spk else "") + (f", {lab} labels" if lab else "")
            return f"  {name:<6} {len(utts):>8} utterances {sum(u.duration for u in utts) / 3600:9.3f} h{extra}"

        out = [f"{self.corpus or 'corpus'}: split {self.split_rule}", line("all", self.utterances)]
        out += [line(s, [u for u in self.utterances if u.split == s]) for s in SPLITS]
        if self.skipped:
            out.append(f"  skipped {len(self.skipped)} unreadable file(s)")
        return "\n".join(out)


# --- the manifest file ----------------------------------------------------------------------------

def _clean(value: object) -> str:
    return re.sub(r"[\t\r\n]+", " ", str(value)).strip()


def write_manifest(manifest: Manifest, path: str | os.PathLike) -> Path:
    """Write ``manifest`` as TSV (see the module docstring) atomically; ``path`` may be a folder.

    Paths are written absolute (a relative one is taken from the working directory, as the caller meant
    it): read back relative to the manifest's folder, a relative path would name another file.
    """
    path = Path(path)
    if path.suffix != ".tsv":
        path = path / MANIFEST_NAME
    root = os.path.abspath(manifest.root) if manifest.root else ""
    lines = [f"# audiovae manifest {MANIFEST_VERSION}", f"# corpus: {_clean(manifest.corpus)}",
             f"# root: {_clean(root)}", f"# split: {_clean(manifest.split_rule)}", "\t".join(COLUMNS)]
    for u in manifest.utterances:
        lines.append("\t".join([u.id, os.path.abspath(u.path), f"{u.duration:.4f}", str(int(u.sample_rate)),
                                _clean(u.speaker), _clean(u.label), _clean(u.text), u.split]))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def manifest_path(path: str | os.PathLike) -> Path | None:
    """The manifest file ``path`` names (the .tsv itself or a folder holding manifest.tsv), else None."""
    path = Path(path)
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        return path / MANIFEST_NAME
    if path.is_file() and path.suffix == ".tsv":
        return path
    return None


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read a manifest (the .tsv or its folder); raises :class:`DataError` naming the file and line."""
    mpath = manifest_path(path)
    if mpath is None:
        raise DataError(f"no {MANIFEST_NAME} here (make one with `audiovae prepare`)", path)
    meta: dict[str, str] = {}
    utts: list[Utterance] = []
    header = None
    seen: set[str] = set()
    for no, line in enumerate(mpath.read_text(encoding="utf-8").splitlines(), 1):
        if header is None:
            if line.startswith("#"):
                k, _, v = line[1:].partition(":")
                meta[k.strip()] = v.strip()
                continue
            header = line.split("\t")
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise DataError(f"line {no}: the header lacks column(s) {', '.join(missing)} "
                                f"(expected {' '.join(COLUMNS)})", mpath)
            col = {c: header.index(c) for c in COLUMNS}
            continue
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise DataError(f"line {no}: {len(cells)} fields, the header has {len(header)}", mpath)
        get = {c: cells[i] for c, i in col.items()}
        if get["split"] not in SPLITS:
            raise DataError(f"line {no}: split {get['split']!r} is not one of {', '.join(SPLITS)}", mpath)
        if not get["id"] or get["id"] in seen or re.search(r"[/\\\s]", get["id"]) or get["id"] in (".", ".."):
            why = "empty" if not get["id"] else "duplicate" if get["id"] in seen else "unsafe (a file name part)"
            raise DataError(f"line {no}: {why} utterance id {get['id']!r}", mpath)
        seen.add(get["id"])
        try:
            dur, sr = float(get["duration"]), int(get["sample_rate"])
        except ValueError:
            raise DataError(f"line {no}: duration/sample_rate are not numbers ({get['duration']!r}, "
                            f"{get['sample_rate']!r})", mpath) from None
        p = Path(get["path"])
        utts.append(Utterance(get["id"], p if p.is_absolute() else mpath.parent / p, get["speaker"], get["label"],
                              get["text"], get["split"], dur, sr))
    if header is None:
        raise DataError("empty manifest (no header line)", mpath)
    return Manifest(utts, meta.get("corpus", ""), meta.get("root", ""), meta.get("split", ""))


def manifest_splits(path: str | os.PathLike) -> list[str]:
    """The splits the manifest at ``path`` has, in the order train, val, test."""
    have = {u.split for u in read_manifest(path).utterances}
    return [s for s in SPLITS if s in have]


def manifest_utterances(path: str | os.PathLike, split: str, limit: int | None = None) -> list[Utterance]:
    """The first ``limit`` (default all) utterances of ``split`` in the manifest at ``path``, paths absolute."""
    utts = [u for u in read_manifest(path).utterances if u.split == split][:limit]
    for u in utts:
        u.path = Path(os.path.abspath(u.path))
    return utts


def safe_id(s: str) -> str:
    """``s`` as a manifest id: runs of anything but letters, digits, ``.+-`` and ``_`` become one ``_``."""
    return re.sub(r"[^\w.+-]+", "_", s).strip("_")
