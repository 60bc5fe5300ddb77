"""MNIST handwritten digits (28x28, 10 labels), as the four IDX files; read as they are (no manifest)."""

from __future__ import annotations

from pathlib import Path

from audiovae.data.corpora.registry import Archive, Corpus, register

_MNIST = "https://storage.googleapis.com/cvdf-datasets/mnist/"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_archives(base: str, sums: dict[str, tuple[int, str]]) -> tuple[Archive, ...]:
    """The four gzipped IDX files under ``base``, used as they are (not extracted)."""
    return tuple(Archive(base + f"{n}.gz", *sums[n], extract=False) for n in IDX_FILES)


def idx_copy(folder: Path) -> bool:
    """``folder`` holds the four IDX files (gzipped or not): an existing copy of an IDX corpus."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return all(n in names or f"{n}.gz" in names for n in IDX_FILES)


MNIST = register(Corpus(
    "mnist", "MNIST handwritten digits (IDX files)", root="mnist", subsets={"all": idx_archives(_MNIST, {
        "train-images-idx3-ubyte": (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte": (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte": (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte": (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    })}, default_subsets=("all",), note="MNIST handwritten digits, IDX files (11 MB)",
    extra={"idx": True}))
