""".npy and .npz files a user did not make: every size is checked before anything is allocated.

``np.load`` trusts a file's header: a ``.npy`` header may declare a shape far
larger than the file, and an ``.npz`` member may inflate a few megabytes into
gigabytes (a zip bomb). The readers here look at the header (and, for an
``.npz``, at each member's sizes in the zip directory) first and refuse, with one
line naming the file:

- an empty file, a file that is not a ``.npy`` / ``.npz`` at all (an ``.npz`` given
  as a ``.npy`` is named as such), a header that does not parse;
- object arrays (pickled Python objects are never loaded);
- a declared shape whose bytes differ from what the file (or member) holds
  (truncated, or padded);
- an ``.npz`` member larger than its bound, or inflating more than
  :data:`MAX_RATIO` times (unless small, :data:`SMALL`).
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from audiovae.errors import AudioVAEError, DataError

MAX_RATIO = 100  # deflate packs real float data under 2x; only constant runs (a bomb) pack far more
SMALL = 64 << 20  # a member this small is allowed any ratio
MAX_MEMBERS = 64
HEADER_LIMIT = 10_000  # numpy's own bound on a header's length

ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"


def _header(fh, error: type[AudioVAEError], path: Path, what: str = "") -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data offset)`` of the .npy stream ``fh`` (positioned at its start)."""
    where = f"member {what}: " if what else ""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=HEADER_LIMIT)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=HEADER_LIMIT)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, zipfile.BadZipFile) as exc:
        raise error(f"{where}not a readable NumPy array ({str(exc).splitlines()[0][:120]})", path) from None
    if dtype.hasobject:
        raise error(f"{where}holds Python objects (dtype {dtype}); pickled data is never loaded", path)
    return tuple(int(n) for n in shape), bool(fortran), dtype, fh.tell()


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def _shape_fits(error, path: Path, shape, dtype, have: int, what: str = "") -> None:
    want = _nbytes(shape, dtype)
    if want != have:
        where = f"member {what} " if what else ""
        kind = "truncated" if want > have else "longer than its header says"
        raise error(f"{where}is {kind} (an interrupted write?): its header declares shape {shape} of "
                                f"{dtype} ({want} bytes), it holds {have} bytes", path)


def npy_info(path: str | os.PathLike, error: type[AudioVAEError] = DataError) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file, checked against its size (nothing is loaded)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(len(NPY_MAGIC))
            if not head:
                raise error("empty file (0 bytes); not a NumPy array", path)
            if head.startswith(ZIP_MAGIC[:2]):
                raise error("is a zip archive (an .npz?), not a .npy array", path)
            fh.seek(0)
            shape, _, dtype, offset = _header(fh, error, path)
    except OSError as exc:
        raise error(f"cannot read ({exc.strerror or exc})", path) from None
    _shape_fits(error, path, shape, dtype, size - offset)
    return shape, dtype


def load_npy(path: str | os.PathLike, error: type[AudioVAEError] = DataError, mmap: bool = False) -> np.ndarray:
    """A ``.npy`` array (memory-mapped read-only with ``mmap``) after :func:`npy_info`'s checks."""
    path = Path(path)
    npy_info(path, error)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise error(f"cannot read NumPy array ({str(exc).splitlines()[0][:120]})", path) from None


def load_npz(
    path: str | os.PathLike,
    limits: dict[str, int] | None = None,
    error: type[AudioVAEError] = DataError,
    default_limit: int = 1 << 20,
) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file as ``{name: array}``, each checked before it is read.

    ``limits``: the most bytes each named array may hold (others: ``default_limit``).
    A member is refused when it exceeds its limit, inflates more than
    :data:`MAX_RATIO` times (when over :data:`SMALL`), holds objects, or has a
    header that does not match its size.
    """
    path = Path(path)
    limits = limits or {}
    try:
        if path.stat().st_size == 0:
            raise error("empty file (0 bytes); not an .npz archive", path)
        with open(path, "rb") as fh:
            if fh.read(len(NPY_MAGIC)) == NPY_MAGIC:
                raise error("is a single .npy array, not an .npz archive", path)
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise error(f"holds {len(infos)} members; an .npz of this toolkit has a few", path)
            out = {}
            for info in infos:
                name, arr = _member(zf, info, path, limits, default_limit, error)
                out[name] = arr
            return out
    except AudioVAEError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError) as exc:
        raise error(f"cannot read .npz archive ({exc.__class__.__name__}: {str(exc)[:120]})", path) from None
    except OSError as exc:
        raise error(f"cannot read ({exc.strerror or exc})", path) from None


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, limits: dict[str, int], default_limit: int,
            error) -> tuple[str, np.ndarray]:
    name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
    limit = limits.get(name, default_limit)
    if info.file_size > limit + HEADER_LIMIT + 128:
        raise error(f"member {name!r} holds {info.file_size} bytes, at most {limit} expected; refusing to "
                                "load it", path)
    if info.file_size > SMALL and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise error(f"member {name!r} would inflate {info.compress_size} bytes into {info.file_size} (more "
                                f"than {MAX_RATIO} times: a zip bomb?); refusing to load it", path)
    with zf.open(info) as fh:
        shape, _, dtype, offset = _header(fh, error, path, repr(name))
    _shape_fits(error, path, shape, dtype, info.file_size - offset, repr(name))
    if _nbytes(shape, dtype) > limit:
        raise error(f"member {name!r} has shape {shape} ({_nbytes(shape, dtype)} bytes), at most {limit} "
                                "expected; refusing to load it", path)
    with zf.open(info) as fh:
        arr = np.lib.format.read_array(fh, allow_pickle=False, max_header_size=HEADER_LIMIT)
    return name, arr
