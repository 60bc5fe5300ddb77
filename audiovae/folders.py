"""Output folders: what kind a folder is, a lock while a command writes it, and its stale temporaries.

Every command that writes an output folder (``prepare``, ``extract``, ``train``) does so inside
:func:`output_folder`, which

- refuses a folder of another kind (a feature cache is not a run, a run is not a cache, a model
  directory or a report): :func:`folder_kind` recognises each kind by the files only it has;
- holds an OS lock (``fcntl.flock`` on ``.audiovae.lock`` inside the folder) while the command
  works, so a second writer is refused at once with a message naming the holder (pid, host,
  command, start time). The operating system drops the lock when the holder exits, however it
  exits (``kill -9`` included), so a dead holder never blocks a later run;
- once it holds the lock exclusively, removes the temporary files the toolkit's own atomic
  writes (:func:`audiovae.utils.atomic_path`) left behind when a process was killed: only names
  of that form, only in the folders the command writes, never while another process holds the lock.

Shards of one ``extract --shard I/N`` share the lock (``shared=True``): they may run together,
while a whole extract, a merge or another command is refused until they finish. Other writers
(``mel``, ``sample``, ``report``...) can use :func:`output_folder` too, with their kind or
``kind=None`` (lock and clean-up only). On a file system without ``flock`` the command works
unlocked and removes nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import Iterable, Iterator

from audiovae.errors import OutputFolderError

LOCK_NAME = ".audiovae.lock"

KINDS = {
    "cache": "a feature cache",
    "run": "a training run",
    "model": "a model directory",
    "manifest": "a manifest folder",
    "report": "a report folder",
    "export": "an exported model",
    "prior": "a learned prior",
}

# flock errors that mean "this file system has no locks", not "someone holds it"
_NO_LOCKS = {getattr(errno, n) for n in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP") if hasattr(errno, n)}

# the temporary names of audiovae.utils.atomic_path: ".<name>.<8 characters of mkstemp>[<suffix>].tmp"
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}(\.[A-Za-z0-9]{1,8})?\.tmp$")


def folder_kind(path: str | os.PathLike) -> str | None:
    """The kind of an existing audiovae folder (a key of :data:`KINDS`), or None (absent, empty, other)."""
    p = Path(path)
    if not p.is_dir():
        return None
    if (p / "train.yaml").exists() or (p / "trainer_state.pt").exists():
        return "run"
    if (p / "prior.yaml").exists() or (p / "prior_state.pt").exists() or (p / "prior.safetensors").exists():
        return "prior"
    if (p / "cache.json").exists() or (p / "feats.f32").exists() or (p / "index.json").exists() \
            or (p / "parts").is_dir() or any(p.glob("parts*.jsonl")):
        return "cache"
    if (p / "export.json").exists():
        return "export"
    cfg = p / "config.yaml"
    if cfg.is_file():
        kind = _config_kind(cfg)
        if kind:
            return kind
    if (p / "model.safetensors").exists():
        return "model"
    if (p / "manifest.tsv").exists():
        return "manifest"
    if (p / "index.html").exists():
        return "report"
    return None


def _config_kind(cfg: Path) -> str | None:
    import yaml

    try:
        data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    if str(data.get("format", "")).startswith("audiovae-model/"):
        return "model"
    if "mel" in data and "version" in data:
        return "cache"  # a cache's config.yaml, written first
    return None


def check_kind(path: str | os.PathLike, kind: str) -> None:
    """Raise :class:`OutputFolderError` when ``path`` is an audiovae folder of a kind other than ``kind``."""
    have = folder_kind(path)
    if have is not None and have != kind:
        raise OutputFolderError(f"is {KINDS[have]}, not {KINDS[kind]}: refusing to write {KINDS[kind]} into it "
                                "(use another output folder)", path)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return (f"pid {info['pid']} on {info['host']}: {info['command']}, since {info['since']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (holder unknown)"


def _describe_self() -> bytes:
    argv = [os.path.basename(sys.argv[0])] + sys.argv[1:] if sys.argv and sys.argv[0] else ["python"]
    if argv[0] == "__main__.py":  # python -m audiovae ...
        argv[0] = f"python -m {os.path.basename(os.path.dirname(sys.argv[0]))}"
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(argv)[:500],
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    return json.dumps(info).encode("utf-8")


def clean_temporaries(folder: str | os.PathLike, subdirs: Iterable[str] = ("",)) -> list[Path]:
    """Remove the toolkit's own leftover temporary files (see :data:`_TEMPORARY`) from ``folder`` and its
    ``subdirs``; returns what was removed. Call only while holding the folder's lock exclusively."""
    removed = []
    for sub in subdirs:
        d = Path(folder) / sub
        if not d.is_dir():
            continue
        with os.scandir(d) as it:
            for entry in it:
                if _TEMPORARY.match(entry.name) and entry.is_file(follow_symlinks=False):
                    try:
                        os.unlink(entry.path)
                        removed.append(Path(entry.path))
                    except FileNotFoundError:
                        pass
    return removed


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, kind: str | None, shared: bool = False,
                  clean: Iterable[str] = ("",)) -> Iterator[Path]:
    """Create ``path`` if needed, refuse it when it is a folder of another kind, lock it, and (exclusive
    lock only) remove the stale temporaries in ``clean`` (sub-folders; ``""`` is the folder itself).
    ``kind=None``: lock and clean only, for output folders that are none of :data:`KINDS`.

    A second process asking for the lock is refused with :class:`OutputFolderError` naming the holder.
    The lock is released when the block ends or the process dies.
    """
    import fcntl

    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown folder kind {kind!r}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputFolderError("is a file, not a folder", path)
    if kind is not None:
        check_kind(path, kind)  # before creating anything
    created = not os.path.lexists(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise OutputFolderError(f"cannot write here ({exc.strerror})", path) from None
    try:
        locked = True
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _NO_LOCKS:
                locked = False  # a file system without flock (some network mounts): work unlocked, clean nothing
            elif exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputFolderError(f"in use by {_holder(fd)}; wait for it to finish or use another output "
                                        "folder", path) from None
            else:
                raise OutputFolderError(f"cannot lock the folder ({exc.strerror})", path) from None
        if kind is not None:
            check_kind(path, kind)  # again under the lock: another process may have written here meanwhile
        me = _describe_self()
        os.ftruncate(fd, 0)
        os.pwrite(fd, me, 0)
        if locked and not shared:
            clean_temporaries(path, clean)
        try:
            yield path
        except BaseException:
            if created and locked and not shared:
                _remove_if_only_lock(path)  # a command refused before writing anything leaves no folder behind
            raise
    finally:
        os.close(fd)  # releases the lock; the lock file stays (removing it could let two processes lock two files)


def _remove_if_only_lock(path: Path) -> None:
    """Remove a folder this process created that holds nothing but its lock file (under the lock)."""
    try:
        if [p.name for p in path.iterdir()] == [LOCK_NAME]:
            (path / LOCK_NAME).unlink()
            path.rmdir()
    except OSError:
        pass


__all__ = ["KINDS", "LOCK_NAME", "folder_kind", "check_kind", "output_folder", "clean_temporaries"]
