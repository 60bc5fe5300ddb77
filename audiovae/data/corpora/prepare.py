"""``prepare``: a corpus in its official layout -> a manifest (every file's duration read, splits assigned)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from audiovae.data.corpora.manifest import Manifest, Utterance, write_manifest
from audiovae.data.corpora.registry import CORPORA, corpus_names
from audiovae.data.corpora.split import assign_splits, fill_missing_official
from audiovae.errors import AudioVAEError, DataError
from audiovae.folders import output_folder
from audiovae.utils import atomic_write_text


def _probe(u: Utterance) -> tuple[Utterance, str | None]:
    from audiovae.audio.io import audio_duration

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
    if corpus not in CORPORA or not CORPORA[corpus].preparable:
        known = f"unknown corpus {corpus!r}" if corpus not in CORPORA else f"{corpus} is read as it is, without a manifest"
        raise DataError(f"{known}; prepare reads {', '.join(corpus_names('prepare'))}")
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
    from tqdm import tqdm

    spec = CORPORA[corpus]
    options = {"subdirs": subdirs}
    utts = spec.reader(root, **{k: options[k] for k in spec.reader_options})
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
    if spec.split is not None:
        rule = spec.split(utts, val_fraction, test_fraction)
    elif spec.official:
        rule = fill_missing_official(utts, spec.official, split_by or spec.default_split_by, val_fraction, test_fraction)
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
