"""Small helpers shared by every room: atomic writes, file digests, the torchrun rank, the device, dotted keys."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from audiovae.errors import OutputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    A crash or Ctrl-C inside the block leaves ``path`` as it was (absent, or the
    previous complete version) and removes the temporary file, so a later run
    never trusts a half-written file. ``suffix`` keeps an extension on the
    temporary name for writers that infer the format from it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=(suffix or "") + ".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            # mkstemp creates 0600; give the file the mode an ordinary open() would (or the old file's)
            os.chmod(tmp_path, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, path)
        except OSError as exc:  # disk full, a folder in the way...: one line naming the file, not a traceback
            raise write_error(path, exc) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_error(path: str | os.PathLike, exc: OSError) -> OutputError:
    """The :class:`OutputError` for an ``OSError`` met while writing ``path`` (says what stands in the way)."""
    path = Path(path)
    if exc.errno == errno.EISDIR or path.is_dir():
        return OutputError("is a folder, not a file (an output file is needed here)", path)
    blocker = _file_in_the_way(path.parent)
    if blocker is not None:
        return OutputError(f"cannot write it: {blocker} is a file, not a folder", path)
    return OutputError(f"cannot write it ({exc.strerror or exc.__class__.__name__})", path)


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing ancestor of ``folder`` (itself included) when it is not a folder, else None."""
    for p in (folder, *folder.parents):
        if os.path.lexists(p):
            return None if p.is_dir() else p
    return None


def _check_can_create(path: Path) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a folder we may write into."""
    for parent in path.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise OutputError(f"cannot create it: {parent} is a file, not a folder", path)
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputError(f"cannot create it: the folder {parent} is not writable", path)
            return


def check_output_dir(path: str | os.PathLike) -> Path:
    """Check, before any work starts, that ``path`` is (or can become) a folder we may write into.

    Raises :class:`OutputError` (one line, naming the path) for a file where the
    folder should be, or a folder (or ancestor) that is read-only. Creates nothing.
    """
    path = Path(path)
    if os.path.lexists(path):
        if not path.is_dir():
            raise OutputError("is a file, not a folder (an output folder is needed here)", path)
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError("cannot write into this folder (not writable)", path)
    else:
        _check_can_create(path)
    return path


class InputFiles:
    """The files a command reads, to know an output that is one of them: by resolved path and by inode.

    Built once for a batch, so checking N outputs against N inputs costs N look-ups, not N * N.
    """

    def __init__(self, paths: Iterable[str | os.PathLike] = ()):
        self.by_path: dict[str, str | os.PathLike] = {}
        self.by_inode: dict[tuple[int, int], str | os.PathLike] = {}
        for p in paths:
            self.by_path.setdefault(os.path.realpath(p), p)
            try:
                st = os.stat(p)
            except OSError:
                continue
            self.by_inode.setdefault((st.st_dev, st.st_ino), p)

    def find(self, path: str | os.PathLike) -> str | os.PathLike | None:
        """The input ``path`` names (a link to it, or 'new/../x.wav' for x.wav), else None."""
        src = self.by_path.get(os.path.realpath(path))  # 'new/../x.wav' is x.wav once 'new' is made
        if src is None:
            try:
                st = os.stat(path)
            except OSError:
                return None
            src = self.by_inode.get((st.st_dev, st.st_ino))
        return src


def check_output_file(
    path: str | os.PathLike, inputs: Iterable[str | os.PathLike] | InputFiles = (), overwrite: bool = False
) -> Path:
    """Check, before any work starts, that a command may write the file ``path``.

    Never one of ``inputs`` (refused even with ``overwrite``); an existing file
    only with ``overwrite`` (the command's ``--overwrite``); not a folder; in a
    folder that exists or can be created, and is writable. Raises
    :class:`OutputError` naming the path and the problem.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError("is a folder, not a file (an output file is needed here)", path)
    src = (inputs if isinstance(inputs, InputFiles) else InputFiles(inputs)).find(path)
    if src is not None:
        raise OutputError(f"is an input of this command ({src}); an input is never written over", path)
    if os.path.lexists(path):
        if not overwrite:
            raise OutputError("exists; give --overwrite to replace it", path)
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write it: the folder {path.parent} is not writable", path)
    else:
        _check_can_create(path)
    return path


def _umask() -> int:
    """The process umask, read without changing it where the system allows.

    ``os.umask`` can only be read by setting it, which for a moment changes it for
    every thread of the process (a file another thread creates meanwhile gets the
    wrong mode). Linux >= 4.7 reports it in ``/proc/self/status``; elsewhere the
    set-and-restore fallback is used.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, errors: str = "strict") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    ``errors="surrogateescape"`` writes a file name that is not UTF-8 (read by
    Python as lone surrogates) back as its original bytes instead of failing.
    """
    atomic_write_bytes(path, text.encode("utf-8", errors))


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest (``sha256``, ``sha1``, ``md5``...) of a file, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rank() -> int:
    """This process's rank under ``torchrun`` (``RANK``; 0 when launched alone)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes ``torchrun`` started (``WORLD_SIZE``; 1 when launched alone)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``, else :func:`rank`): which GPU it takes."""
    return int(os.environ.get("LOCAL_RANK", rank()))


def pick_device(device: str = "auto", local_rank: int | None = None):
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N`` as a ``torch.device``; a clear
    :class:`~audiovae.errors.ConfigError` when CUDA is asked for but absent.

    ``local_rank`` (one process per GPU, as under ``torchrun``): a CUDA device is GPU ``local_rank`` (modulo
    the number of GPUs), whatever index ``cuda:N`` names.
    """
    import torch

    from audiovae.errors import ConfigError

    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = "cuda"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but no CUDA device is available")
        if local_rank is not None:
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda") from None


def flatten_dict(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}, "c": {}}`` -> ``{"a.b": 1, "c": {}}``: nested keys dotted (an empty dict stays a value)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
