"""Corpus readers -> one manifest format; `audiovae prepare CORPUS DATA_DIR -o MANIFEST_DIR`.

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

Splits are the corpus's official ones where it has them (LibriSpeech subsets, the
Speech Commands lists); otherwise deterministic: by file (a hash of the id, so adding
files never moves old ones) or by speaker (a hash of the speaker: every utterance of a
speaker lands in one split). The rule used is written into the manifest.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from tqdm import tqdm

from audiovae.audio.io import AUDIO_EXTENSIONS, audio_duration, find_audio_files
from audiovae.errors import AudioVAEError, DataError
from audiovae.folders import output_folder
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


# --- deterministic splits -------------------------------------------------------------------------

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


# --- readers: each returns utterances (with official splits where the corpus has them) --------------

def _safe_id(s: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", s).strip("_")


def find_root(root: Path, marker: str, depth: int = 2) -> Path:
    """``root`` when it holds ``marker``, else the one folder below it (up to ``depth`` levels) that does —
    so DATA_DIR may be the folder an archive was unpacked into (``D/LJSpeech-1.1/metadata.csv``)."""
    if (root / marker).exists() or not root.is_dir():
        return root
    level = [root]
    for _ in range(depth):
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir()]
        hits = [d for d in level if (d / marker).exists()]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DataError(f"several corpora here ({', '.join(h.name for h in hits)}); give one of them", root)
    return root


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


def read_folder(root: Path, subdirs: str = "none") -> list[Utterance]:
    """Every audio file under ``root``; ``subdirs``: the first folder level names the ``speaker``, the ``label`` or
    ``none``. Id = the relative path with ``/`` as ``__``. A ``NAME.txt`` beside ``NAME.wav`` gives its text."""
    if subdirs not in ("none", "speaker", "label"):
        raise DataError(f"--subdirs must be none, speaker or label, not {subdirs!r}")
    utts = []
    for f in find_audio_files(root):
        rel = f.relative_to(root)
        tag = rel.parts[0] if len(rel.parts) > 1 else ""
        txt = f.with_suffix(".txt")
        text = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.is_file() else ""
        utts.append(Utterance(_safe_id("__".join(rel.with_suffix("").parts)), f, text=text,
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
        utts.append(Utterance(_safe_id(uid), p if p.is_absolute() else scp.parent / p, speaker=spk.get(uid, ""),
                              text=text.get(uid, "")))
    return utts


ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
_ASTERISK_VOICE = re.compile(r"^([a-z]{2}_[A-Z]{2})_[fm]_\w+$")


def read_asterisk(root: Path) -> list[Utterance]:
    """The Debian asterisk-core-sounds-*-g722 prompts: ``LANG_REGION_SEX_NAME/**.g722``, one speaker per language.

    ``root``: the sounds folder (default /usr/share/asterisk/sounds) or one voice folder.
    Speaker = the voice folder (e.g. es_MX_f_Allison), label = the language (es_MX),
    id = ``voice__relative_path``; ``silence/`` (recorded silence) is left out.
    """
    voices = [d for d in sorted(root.iterdir()) if d.is_dir() and _ASTERISK_VOICE.match(d.name)] if root.is_dir() else []
    if not voices and _ASTERISK_VOICE.match(root.name):
        voices = [root]
    if not voices:
        raise DataError("no asterisk voice folders (like es_MX_f_Allison/) here; install asterisk-core-sounds-es-g722 "
                        f"and use {ASTERISK_ROOT}", root)
    utts = []
    for v in voices:
        for f in sorted(v.rglob("*.g722")):
            rel = f.relative_to(v)
            if rel.parts[0] == "silence":
                continue
            utts.append(Utterance(f"{v.name}__{'__'.join(rel.with_suffix('').parts)}", f, speaker=v.name,
                                  label=_ASTERISK_VOICE.match(v.name).group(1)))
    return utts


def asterisk_prompt(u: Utterance) -> str:
    """The prompt's name without the voice (``digits/1``): the same in every language."""
    return u.id.split("__", 1)[1].replace("__", "/")


@dataclass
class CorpusSpec:
    reader: Callable[..., list[Utterance]]
    official: str = ""          # the official split rule, when the reader sets splits
    default_split_by: str = "file"
    description: str = ""


CORPORA: dict[str, CorpusSpec] = {
    "ljspeech": CorpusSpec(read_ljspeech, description="LJSpeech-1.1 (metadata.csv, wavs/)"),
    "vctk": CorpusSpec(read_vctk, description="VCTK 0.92 (wav48_silence_trimmed/, txt/, speaker-info.txt)"),
    "librispeech": CorpusSpec(read_librispeech, "official (LibriSpeech subsets: train-* -> train, dev-* -> val, "
                              "test-* -> test)", description="LibriSpeech (SUBSET/SPEAKER/CHAPTER/*.flac)"),
    "speechcommands": CorpusSpec(read_speechcommands, "official (validation_list.txt -> val, testing_list.txt -> test, "
                                 "the rest -> train)", description="Speech Commands v0.02"),
    "folder": CorpusSpec(read_folder, description="a folder of audio files (--subdirs: speaker or label folders)"),
    "wav.scp": CorpusSpec(read_wav_scp, description="a Kaldi data folder (wav.scp, utt2spk, text)"),
    "asterisk": CorpusSpec(read_asterisk, description="Debian asterisk-core-sounds-*-g722 (4 speakers = languages)"),
}


# --- prepare ----------------------------------------------------------------------------------------

def _split_asterisk(utts: list[Utterance], val_fraction: float, test_fraction: float) -> str:
    # by prompt name: the same prompts are held out in every language, so a test prompt is unheard in training
    for u in utts:
        u.split = hash_split("asterisk:" + asterisk_prompt(u), val_fraction, test_fraction)
    return (f"by file, fixed (sha1 of the prompt name without the voice, so each prompt is in the same split in "
            f"every language; val {val_fraction:g}, test {test_fraction:g})")


def _fill_missing_official(utts: list[Utterance], rule: str, split_by: str, val: float, test: float) -> str:
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


def _probe(u: Utterance) -> tuple[Utterance, str | None]:
    try:
        u.duration, u.sample_rate = audio_duration(u.path)
        return u, None
    except AudioVAEError as exc:
        return u, exc.problem


def prepare(
    corpus: str,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    split_by: str | None = None,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    subdirs: str = "none",
    strict: bool = False,
    threads: int = 8,
    progress: bool = True,
) -> Manifest:
    """Read ``corpus`` at ``data_dir`` into a :class:`Manifest`, read every file's duration, and (with ``out_dir``)
    write ``out_dir/manifest.tsv`` atomically.

    ``split_by``: ``file`` or ``speaker`` for corpora without official splits (default
    ``file``); ignored where the corpus has official splits. ``subdirs``: for ``folder``.
    Unreadable files are left out and listed in ``manifest.skipped`` (and
    ``out_dir/report.txt``); ``strict`` raises on the first one instead.
    """
    if corpus not in CORPORA:
        raise DataError(f"unknown corpus {corpus!r}; choose one of {', '.join(CORPORA)}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"val and test fractions must be in [0, 1) and sum below 1 (got {val_fraction}, {test_fraction})")
    root = Path(data_dir)
    if not root.exists():
        raise DataError("no such file or directory", root)
    if out_dir is None:
        return _prepare(corpus, root, None, split_by, val_fraction, test_fraction, subdirs, strict, threads, progress)
    with output_folder(out_dir, "manifest"):  # refuses a cache, run... and a second prepare into it
        return _prepare(corpus, root, out_dir, split_by, val_fraction, test_fraction, subdirs, strict, threads, progress)


def _prepare(corpus: str, root: Path, out_dir: str | os.PathLike | None, split_by: str | None, val_fraction: float,
             test_fraction: float, subdirs: str, strict: bool, threads: int, progress: bool) -> Manifest:
    spec = CORPORA[corpus]
    utts = spec.reader(root, subdirs) if corpus == "folder" else spec.reader(root)
    if not utts:
        raise DataError(f"no utterances found for corpus {corpus!r}", root)
    ids = [u.id for u in utts]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"two files map to the utterance id {dup!r}", root)
    skipped: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for u, problem in tqdm(pool.map(_probe, utts), total=len(utts), desc="prepare", unit="file",
                               disable=not progress):
            if problem is not None:
                if strict:
                    raise DataError(problem, u.path)
                skipped.append((str(u.path), problem))
    bad = {p for p, _ in skipped}
    utts = [u for u in utts if str(u.path) not in bad]
    if not utts:
        raise DataError(f"no readable audio: all {len(bad)} file(s) were unreadable (e.g. {skipped[0][0]}: "
                        f"{skipped[0][1]})", root)
    if corpus == "asterisk":
        rule = _split_asterisk(utts, val_fraction, test_fraction)
    elif spec.official:
        rule = _fill_missing_official(utts, spec.official, split_by or spec.default_split_by, val_fraction, test_fraction)
    else:
        rule = assign_splits(utts, split_by or spec.default_split_by, val_fraction, test_fraction)
    manifest = Manifest(utts, corpus, str(root.resolve()), rule, skipped)
    if out_dir is not None:
        for u in utts:
            u.path = Path(os.path.abspath(u.path))
        write_manifest(manifest, out_dir)
        lines = [manifest.summary()] + [f"  {p}: {why}" for p, why in skipped]
        atomic_write_text(Path(out_dir) / "report.txt", "\n".join(lines) + "\n", errors="surrogateescape")
    return manifest


def corpus_names() -> Iterable[str]:
    return CORPORA.keys()


__all__ = [
    "Utterance", "Manifest", "COLUMNS", "CORPORA", "prepare", "read_manifest", "write_manifest", "manifest_path",
    "hash_split", "assign_splits", "AUDIO_EXTENSIONS",
]
