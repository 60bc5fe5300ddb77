"""lhotse manifests as SOURCE/DATA: a ``CutSet`` or a ``RecordingSet`` (+ its ``SupervisionSet``) in
lhotse's JSON-lines format (``.jsonl`` or ``.jsonl.gz``, as icefall recipes keep them in ``data/manifests``
and ``data/fbank``).

Read here without lhotse (a plain JSON-lines parser; lhotse itself is not needed):

- a **cut** (``MonoCut``, or any cut with a ``recording``) is one utterance: its id, the recording's
  file, ``start`` and ``duration`` inside it (a cut into a longer recording reads only its segment),
  the recording's sampling rate, and speaker and text from its supervisions;
- a **recording** is one utterance: the whole file. Speaker and text come from the supervisions of a
  sibling ``SupervisionSet`` named as lhotse names them (``X_recordings_Y.jsonl.gz`` ->
  ``X_supervisions_Y.jsonl.gz``), when there is one. Given a supervisions file, its sibling
  recordings file is read the same way.

Speaker: the supervisions' speaker when they agree (else empty); text: their texts in time order.
Relative audio paths mean what they mean to lhotse: relative to the working directory; one that is
not found there is looked for next to the manifest. Multi-channel audio is mixed down to mono, as
everywhere in audiovae; ``Resample`` transforms are dropped (audio is resampled to the MelConfig's
rate anyway). Refused with a message naming the line: audio that is not a plain file (URLs, commands,
in-memory or Shar sources), one file per channel, audio perturbations (speed, tempo, volume...),
mixed and padding cuts. Splits are those of a folder: a hash of the utterance id (``val_fraction``).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from audiovae.errors import DataError

SUFFIXES = (".jsonl", ".jsonl.gz")
# keys by which the first line says what a lhotse manifest holds
_RECORDING_KEYS = {"sources", "sampling_rate"}
_SUPERVISION_KEYS = {"recording_id", "start", "duration"}
_DROPPED_TRANSFORMS = {"Resample"}  # audio is resampled to the MelConfig's rate in any case


@dataclass
class LhotseUtterance:
    """One utterance of a lhotse manifest. ``segment``: ``(start, duration)`` in seconds inside ``path``,
    or None for the whole file."""

    id: str
    path: Path
    duration: float
    sample_rate: int
    speaker: str = ""
    text: str = ""
    segment: tuple[float, float] | None = None


def _has_suffix(path: Path) -> bool:
    return path.name.endswith(SUFFIXES)


def _lines(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of each non-empty line; DataError naming the file and line otherwise."""
    opener = gzip.open if path.name.endswith(".gz") else open
    no = 0
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"line {no}: not JSON ({exc.msg})", path) from None
                if not isinstance(obj, dict):
                    raise DataError(f"line {no}: expected a JSON object, got {type(obj).__name__}", path)
                yield no, obj
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable lhotse manifest near line {no + 1} ({exc.__class__.__name__}: {exc})", path) \
            from None


def _kind(obj: dict) -> str | None:
    if "recording" in obj or "tracks" in obj or obj.get("type") in ("MonoCut", "MixedCut", "PaddingCut", "MultiCut"):
        return "cuts"
    if _RECORDING_KEYS <= obj.keys():
        return "recordings"
    if _SUPERVISION_KEYS <= obj.keys():
        return "supervisions"
    return None


def manifest_kind(path: str | os.PathLike, strict: bool = False) -> str | None:
    """``"cuts"``, ``"recordings"`` or ``"supervisions"`` for a lhotse JSON-lines manifest, else None.

    Looks only at the name (``.jsonl``/``.jsonl.gz``) and the first object. ``strict``: a file with such a
    name that cannot be read (a torn gzip, not JSON) raises :class:`DataError` saying why."""
    path = Path(path)
    if not (path.is_file() and _has_suffix(path)):
        return None
    try:
        for _, obj in _lines(path):
            return _kind(obj)
    except DataError:
        if strict:
            raise
    return None


def is_lhotse_manifest(path: str | os.PathLike) -> bool:
    """True for a readable lhotse manifest, and for any file named ``*.jsonl``/``*.jsonl.gz`` (so that
    :func:`read_lhotse` says what is wrong with one that is not)."""
    path = Path(path)
    return path.is_file() and _has_suffix(path)


def _sibling(path: Path, have: str, want: str) -> Path | None:
    if have not in path.name:
        return None
    other = path.with_name(path.name.replace(have, want))
    return other if other.is_file() else None


def read_lhotse(path: str | os.PathLike) -> list[LhotseUtterance]:
    """The utterances of a lhotse cuts, recordings or supervisions manifest (see the module docstring)."""
    path = Path(path)
    kind = manifest_kind(path, strict=True)
    if kind is None:
        raise DataError("not a lhotse manifest (a .jsonl or .jsonl.gz of cuts, recordings or supervisions)", path)
    if kind == "cuts":
        utts = [_cut(obj, no, path) for no, obj in _lines(path)]
    else:
        if kind == "supervisions":
            recordings = _sibling(path, "supervisions", "recordings")
            if recordings is None:
                raise DataError("a lhotse SupervisionSet names no audio; give its RecordingSet (the "
                                "*_recordings_*.jsonl.gz next to it) or a CutSet", path)
            path, sups = recordings, path
        else:
            sups = _sibling(path, "recordings", "supervisions")
        by_rec: dict[str, list[dict]] = {}
        if sups is not None:
            for no, obj in _lines(sups):
                if "recording_id" not in obj:
                    raise DataError(f"line {no}: a supervision without recording_id", sups)
                by_rec.setdefault(str(obj["recording_id"]), []).append(obj)
        utts = []
        for no, obj in _lines(path):
            if _kind(obj) != "recordings":
                raise DataError(f"line {no}: not a recording (no sources/sampling_rate)", path)
            utts.append(_recording(obj, no, path, by_rec.get(str(obj.get("id")), []), None))
    seen: set[str] = set()
    for u in utts:
        if u.id in seen:
            raise DataError(f"two utterances have the id {u.id!r}", path)
        seen.add(u.id)
    return utts


def _safe(uid: object) -> str:
    """An id usable as a file name (lhotse ids may hold '/' or spaces)."""
    s = re.sub(r"[/\\\s]+", "_", str(uid)).strip("_")
    return s if s not in ("", ".", "..") else f"_{s}_"


def _num(obj: dict, key: str, no: int, path: Path, default: float | None = None) -> float:
    v = obj.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0:
        raise DataError(f"line {no}: {key} must be a number >= 0, got {v!r}", path)
    return float(v)


def _cut(obj: dict, no: int, path: Path) -> LhotseUtterance:
    cid = obj.get("id", "?")
    if "tracks" in obj or obj.get("type") in ("MixedCut", "PaddingCut"):
        raise DataError(f"line {no}: cut {cid!r} is a {obj.get('type', 'MixedCut')} (a mixture or padding), which "
                        "audiovae does not read; give the MonoCuts (before mixing/padding) or the RecordingSet", path)
    rec = obj.get("recording")
    if not isinstance(rec, dict):
        raise DataError(f"line {no}: cut {cid!r} has no recording (features only?); audiovae computes its own "
                        "features from audio: give a manifest whose cuts keep their recording", path)
    start, duration = _num(obj, "start", no, path, 0.0), _num(obj, "duration", no, path)
    # supervision times are relative to the cut; only those overlapping it count
    sups = [s for s in obj.get("supervisions") or [] if isinstance(s, dict)]
    u = _recording(rec, no, path, sups, obj.get("id"))
    u.duration = duration
    whole = start == 0 and abs(duration - _num(rec, "duration", no, path)) < 1e-3
    u.segment = None if whole else (start, duration)
    return u


def _recording(rec: dict, no: int, path: Path, sups: list[dict], uid: object | None) -> LhotseUtterance:
    rid = rec.get("id", "?")
    sources = rec.get("sources")
    if not isinstance(sources, list) or not sources:
        raise DataError(f"line {no}: recording {rid!r} has no sources", path)
    if len(sources) > 1:
        raise DataError(f"line {no}: recording {rid!r} has {len(sources)} sources (one file per channel), which "
                        "audiovae does not read; give one file per recording", path)
    src = sources[0] if isinstance(sources[0], dict) else {}
    if src.get("type") != "file" or not isinstance(src.get("source"), str):
        raise DataError(f"line {no}: recording {rid!r} has a source of type {src.get('type')!r}; audiovae reads "
                        "audio files only (type 'file')", path)
    for t in rec.get("transforms") or []:
        name = t.get("name", "?") if isinstance(t, dict) else "?"
        if name not in _DROPPED_TRANSFORMS:
            raise DataError(f"line {no}: recording {rid!r} has a {name} transform (audio perturbation), which "
                            "audiovae does not apply; give the manifest without it", path)
    sr = rec.get("sampling_rate")
    if isinstance(sr, bool) or not isinstance(sr, int) or sr <= 0:
        raise DataError(f"line {no}: recording {rid!r}: sampling_rate must be a positive integer, got {sr!r}", path)
    sups = sorted(sups, key=lambda s: s.get("start", 0) if isinstance(s.get("start", 0), (int, float)) else 0)
    speakers = {str(s["speaker"]) for s in sups if s.get("speaker")}
    text = " ".join(str(s["text"]).strip() for s in sups if s.get("text"))
    return LhotseUtterance(_safe(rid if uid is None else uid), _audio_path(src["source"], path),
                           _num(rec, "duration", no, path), sr, speakers.pop() if len(speakers) == 1 else "", text)


def _audio_path(source: str, manifest: Path) -> Path:
    """Absolute path of a recording's file: as lhotse reads it (relative to the working directory), else
    next to the manifest."""
    p = Path(source)
    if p.is_absolute():
        return p
    if p.exists() or not (manifest.parent / p).exists():
        return Path(os.path.abspath(p))
    return Path(os.path.abspath(manifest.parent / p))
