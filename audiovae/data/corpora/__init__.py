"""Corpora: readers of each corpus's official layout -> one manifest format, and the registry of corpora.

``audiovae prepare CORPUS DATA_DIR -o MANIFEST_DIR`` = :func:`prepare`. The package, one room per job
(lhotse-style):

- :mod:`~audiovae.data.corpora.manifest`: the manifest format (``manifest.tsv``): :func:`read_manifest`,
  :func:`write_manifest`, :class:`Manifest`, :class:`Utterance`;
- :mod:`~audiovae.data.corpora.split`: the split policy (official, by file, by speaker);
- :mod:`~audiovae.data.corpora.registry`: :class:`Corpus`, :data:`CORPORA`, :func:`register`, :func:`get_corpus`;
- one module per corpus (``ljspeech``, ``vctk``, ``librispeech``, ``speechcommands``, ``folder``, ``wavscp``,
  ``asterisk``, ``mnist``, ``fashion_mnist``, ``cifar10``) with its reader, its split policy where it has
  its own, and the table of its official archives (for :mod:`audiovae.data.download`); each registers
  itself once;
- :mod:`~audiovae.data.corpora.prepare`: a corpus -> a manifest.

A new corpus is one module ending in ``register(Corpus(...))``, imported below.
"""

from __future__ import annotations

from audiovae.data.corpora.manifest import (COLUMNS, MANIFEST_NAME, MANIFEST_VERSION, SPLITS, Manifest, Utterance,
                                            manifest_path, manifest_splits, manifest_utterances, read_manifest,
                                            safe_id, write_manifest)
from audiovae.data.corpora.registry import (CORPORA, Archive, Corpus, CorpusSpec, corpus_names, find_root, get_corpus,
                                            register)
from audiovae.data.corpora.split import assign_splits, fill_missing_official, hash_split

# the corpora, in the order the command line lists them (each module registers its corpus)
from audiovae.data.corpora.ljspeech import read_ljspeech  # noqa: E402
from audiovae.data.corpora.vctk import read_vctk  # noqa: E402
from audiovae.data.corpora.librispeech import LIBRISPEECH_SPLIT, read_librispeech  # noqa: E402
from audiovae.data.corpora.speechcommands import read_speechcommands  # noqa: E402
from audiovae.data.corpora.folder import folder_manifest, read_folder  # noqa: E402
from audiovae.data.corpora.wavscp import read_wav_scp  # noqa: E402
from audiovae.data.corpora.asterisk import ASTERISK_ROOT, asterisk_prompt, read_asterisk  # noqa: E402
from audiovae.data.corpora import mnist, fashion_mnist, cifar10  # noqa: E402,F401

from audiovae.data.corpora.prepare import prepare  # noqa: E402


def __getattr__(name: str):
    if name == "AUDIO_EXTENSIONS":  # numpy and soundfile come with it: imported on first use
        from audiovae.audio.io import AUDIO_EXTENSIONS

        return AUDIO_EXTENSIONS
    raise AttributeError(f"module 'audiovae.data.corpora' has no attribute {name!r}")


__all__ = [
    "Utterance", "Manifest", "COLUMNS", "SPLITS", "MANIFEST_NAME", "CORPORA", "Corpus", "Archive", "register",
    "get_corpus", "corpus_names", "prepare", "read_manifest", "write_manifest", "manifest_path", "folder_manifest",
    "hash_split", "assign_splits", "AUDIO_EXTENSIONS", "read_ljspeech", "read_vctk", "read_librispeech",
    "read_speechcommands", "read_folder", "read_wav_scp", "read_asterisk", "asterisk_prompt", "MANIFEST_VERSION",
    "safe_id", "CorpusSpec", "find_root", "fill_missing_official", "LIBRISPEECH_SPLIT", "ASTERISK_ROOT",
    "manifest_splits", "manifest_utterances",
]
