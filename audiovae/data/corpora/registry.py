"""The corpus registry: one :class:`Corpus` per corpus, registered once by the module that defines it.

A corpus module (``ljspeech.py``, ``vctk.py``...) holds everything about its corpus: the reader
that turns its official layout into manifest lines, its split policy where it has one, and the
table of its official archives (URL, size, checksum) that :mod:`audiovae.data.download` fetches.
It ends with ``register(Corpus(...))``. ``audiovae prepare``'s and ``audiovae download``'s
choices and the recipes read :data:`CORPORA`; nothing else keeps a list of corpora.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from audiovae.errors import DataError


@dataclass(frozen=True)
class Archive:
    """One downloadable file.

    ``dest``: the folder (relative to the data directory) its contents end up in;
    ``member_root``: the folder inside the archive that becomes ``dest`` (``None``:
    the archive's top level); ``extract``: ``False`` for files used as they are
    (MNIST's ``.gz`` IDX files). ``marker``: paths under ``dest`` whose presence
    means the archive is already extracted.
    """

    url: str
    size: int | None
    sha256: str | None = None
    md5: str | None = None
    dest: str = "."
    member_root: str | None = None
    extract: bool = True
    marker: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Corpus:
    """A corpus: how to read it into a manifest (``reader``), how to split it, and where to download it from.

    - ``reader(root, **options)``: the utterances of the corpus at ``root`` (official splits set where it has
      them); ``None`` for corpora read as they are, without a manifest (the image corpora).
      ``reader_options``: the :func:`~audiovae.data.corpora.prepare` keyword arguments it takes (``subdirs``).
    - ``official``: the official split rule (one line) when the reader sets splits; ``split(utts, val, test)``:
      the corpus's own split policy (returns the rule), instead of the generic one; ``default_split_by``.
    - ``root``: the corpus folder under a data directory; ``subsets``: its archives per subset
      (empty: nothing to download); ``default_subsets``; ``note``: one line for ``audiovae download --list``.
    - ``extra``: ``{"idx": True}``: an existing copy is the four IDX files, gzipped or not.
    """

    name: str
    description: str = ""
    reader: Callable[..., list] | None = None
    reader_options: tuple[str, ...] = ()
    official: str = ""
    default_split_by: str = "file"
    split: Callable[[list, float, float], str] | None = None
    root: str = ""
    subsets: dict[str, tuple[Archive, ...]] = field(default_factory=dict)
    default_subsets: tuple[str, ...] = ()
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def preparable(self) -> bool:
        """``audiovae prepare`` reads it (it has a reader)."""
        return self.reader is not None

    @property
    def downloadable(self) -> bool:
        """``audiovae download`` fetches it (it has archives)."""
        return bool(self.subsets)


# CorpusSpec: the name this had when it held only the reader
CorpusSpec = Corpus

CORPORA: dict[str, Corpus] = {}


def register(corpus: Corpus) -> Corpus:
    """Add ``corpus`` to :data:`CORPORA` (once: a second corpus of the same name is refused); returns it."""
    if corpus.name in CORPORA and CORPORA[corpus.name] is not corpus:
        raise ValueError(f"a corpus named {corpus.name!r} is registered already")
    CORPORA[corpus.name] = corpus
    return corpus


def get_corpus(name: str) -> Corpus:
    """The registered corpus ``name``; :class:`DataError` naming the choices when there is none."""
    try:
        return CORPORA[name]
    except KeyError:
        raise DataError(f"unknown corpus {name!r}; choose one of {', '.join(CORPORA)}") from None


def corpus_names(kind: str = "all") -> Iterable[str]:
    """Names of the registered corpora: ``all``, ``prepare`` (those with a reader) or ``download`` (with archives)."""
    if kind == "prepare":
        return [n for n, c in CORPORA.items() if c.preparable]
    if kind == "download":
        return [n for n, c in CORPORA.items() if c.downloadable]
    return list(CORPORA)


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
