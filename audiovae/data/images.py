"""Image readers that need no download: MNIST's IDX format and CIFAR-10's python batches.

CIFAR-10 batches are Python pickles. They are read with an unpickler that
allows nothing but the few NumPy constructors an array needs, so a doctored
file cannot run code.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiovae.errors import DataError

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or not) into an array.

    The header's dimensions are checked against the file before the payload is
    read: an uncompressed file must hold exactly that many bytes, a gzipped one may
    not inflate more than :data:`audiovae.npfile.MAX_RATIO` times (a gzip bomb).
    """
    from audiovae.npfile import MAX_RATIO, SMALL

    path = Path(path)
    gz = path.suffix == ".gz"
    try:
        size = path.stat().st_size
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
            head = fh.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
                raise DataError("not an IDX file (bad magic number)", path)
            ndim = head[3]
            raw_dims = fh.read(4 * ndim)
            if len(raw_dims) != 4 * ndim:
                raise DataError("IDX header cut short", path)
            dims = struct.unpack(">" + "I" * ndim, raw_dims)
            dtype = np.dtype(_IDX_TYPES[head[2]])
            need = math.prod(dims) * dtype.itemsize
            if not gz and need != size - 4 - 4 * ndim:
                raise DataError(f"IDX payload is {size - 4 - 4 * ndim} bytes, header says {need}", path)
            if gz and need > max(SMALL, MAX_RATIO * size):
                raise DataError(f"header says {need} bytes, from {size} gzipped bytes (more than {MAX_RATIO} times: "
                                "a gzip bomb?); refusing to read it", path)
            body = fh.read(need)
            rest = len(fh.read(1 << 16))
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"cannot read IDX file ({exc})", path) from None
    if len(body) != need or rest:
        raise DataError(f"IDX payload is {len(body) + rest}{'+' if rest else ''} bytes, header says {need}", path)
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


class _ArrayOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            d = _ArrayOnlyUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as exc:
        raise DataError(f"not a CIFAR-10 python batch ({exc})", path) from None
    if not isinstance(d, dict):
        raise DataError("not a CIFAR-10 python batch (no dict inside)", path)
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise DataError("CIFAR-10 batch without data/labels", path)
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"CIFAR-10 data should be (N, 3072), got {data.shape}", path)
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


@dataclass
class ImageSet:
    kind: str  # "mnist" or "cifar"
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def detect_image_folder(path: str | os.PathLike) -> str | None:
    """``"mnist"`` for a folder of IDX files, ``"cifar"`` for CIFAR-10 batches, else ``None``."""
    path = Path(path)
    if not path.is_dir():
        return None
    names = {p.name for p in path.iterdir()}
    if any(n.startswith("train-images-idx3-ubyte") for n in names):
        return "mnist"
    if "data_batch_1" in names or (path / "cifar-10-batches-py").is_dir():
        return "cifar"
    return None


def _find(path: Path, stem: str) -> Path:
    for cand in (path / stem, path / f"{stem}.gz"):
        if cand.exists():
            return cand
    raise DataError(f"missing {stem}[.gz]", path)


def load_image_folder(path: str | os.PathLike) -> ImageSet:
    """Read a folder of MNIST-format IDX files or CIFAR-10 python batches."""
    path = Path(path)
    kind = detect_image_folder(path)
    if kind == "mnist":
        return ImageSet(
            "mnist",
            read_idx(_find(path, "train-images-idx3-ubyte")), read_idx(_find(path, "train-labels-idx1-ubyte")).astype(np.int64),
            read_idx(_find(path, "t10k-images-idx3-ubyte")), read_idx(_find(path, "t10k-labels-idx1-ubyte")).astype(np.int64),
        )
    if kind == "cifar":
        root = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
        parts = [read_cifar_batch(p) for p in sorted(root.glob("data_batch_*"))]
        tx, ty = read_cifar_batch(root / "test_batch") if (root / "test_batch").exists() else parts.pop()
        return ImageSet("cifar", np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), tx, ty)
    raise DataError("not an image folder (expected MNIST IDX files or CIFAR-10 python batches)", path)


