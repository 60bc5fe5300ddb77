"""Checksum-verified, resumable downloads of each corpus's official archives, and safe extraction.

Each corpus's module in :mod:`audiovae.data.corpora` lists its archives with URL, size
and checksum (:data:`CORPORA` here: the registered corpora that have archives), taken
from the publisher or from a well-known loader: torchaudio's dataset classes
(LJSPEECH, VCTK_092, LIBRISPEECH, SPEECHCOMMANDS: SHA-256), TensorFlow Datasets'
``url_checksums`` (sizes; MNIST and Fashion-MNIST SHA-256) and torchvision (CIFAR-10 MD5).

:func:`download` fetches one URL into a ``.part`` file beside its destination,
resumes it with an HTTP ``Range`` request after a dropped connection (retrying
with exponential backoff), checks size and checksum, and only then renames it
into place, so a file under the final name is always complete and verified. A
file whose checksum is wrong is refused and kept aside as ``<name>.bad-checksum``.

:func:`extract_archive` unpacks tar.gz / tar.bz2 / zip archives after checking
every member first: absolute paths, ``..``, links pointing outside and device
files are refused, naming the member, and nothing is written. It extracts into a
temporary folder and renames the result into place.

:func:`fetch_corpus` puts both together for one corpus of :data:`CORPORA` and does
nothing when the corpus (or its archive) is already in ``data_dir``.

Tests (and users with a local mirror) point it elsewhere: ``mirror`` (or the
``AUDIOVAE_MIRROR`` environment variable) replaces each URL's directory, keeping
the file name; ``checksums`` (or ``AUDIOVAE_CHECKSUMS``) names a ``sha256sum``-style
file (``<sha256>  <file name>`` per line) whose entries replace the table's checksums.
"""

from __future__ import annotations

import http.client
import os
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Callable

from tqdm import tqdm

from audiovae.data.corpora import CORPORA as _REGISTRY
from audiovae.data.corpora.mnist import idx_copy as _idx_copy
from audiovae.data.corpora.registry import Archive, Corpus
from audiovae.errors import DownloadError, UnsafeArchiveError
from audiovae.utils import file_digest

MIRROR_ENV = "AUDIOVAE_MIRROR"
CHECKSUMS_ENV = "AUDIOVAE_CHECKSUMS"
CHUNK = 1 << 16


class _Downloadable(Mapping):
    """The registry's corpora that have archives, by name (a live view: a corpus registered later is in it)."""

    def __getitem__(self, name: str) -> Corpus:
        c = _REGISTRY[name]
        if not c.downloadable:
            raise KeyError(name)
        return c

    def __iter__(self) -> Iterator[str]:
        return (n for n, c in _REGISTRY.items() if c.downloadable)

    def __len__(self) -> int:
        return sum(1 for c in _REGISTRY.values() if c.downloadable)


CORPORA: Mapping[str, Corpus] = _Downloadable()


# --------------------------------------------------------------------------------------------
# downloading one file
# --------------------------------------------------------------------------------------------
class _Retryable(Exception):
    """A transient failure (connection dropped, timeout, 5xx): try again, resuming."""


def _verify(path: Path, size: int | None, sha256: str | None, md5: str | None, url: str) -> None:
    """Raise :class:`DownloadError` when ``path`` has the wrong size or checksum (and set it aside).

    Both are checked when both are known: a file of the right size with other
    content is refused too. The refused file is renamed (``<name>.bad-checksum``,
    or ``.bad-checksum.N`` when that name is taken), never deleted.
    """
    got_size = path.stat().st_size
    problem = None
    if size is not None and got_size != size:
        problem = f"size {got_size} bytes, expected {size}"
    else:
        for algo, want in (("sha256", sha256), ("md5", md5)):
            if want:
                got = file_digest(path, algo)
                if got != want.lower():
                    problem = f"{algo} checksum mismatch: expected {want.lower()}, got {got}"
                break
    if problem:
        final = Path(str(path)[: -len(".part")]) if str(path).endswith(".part") else path
        bad = _aside_name(final.with_name(final.name + ".bad-checksum"))
        os.replace(path, bad)
        raise DownloadError(f"{problem} (from {url}); refused and kept aside as {bad}", final)


def _aside_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``... : the first name not taken (a file set aside earlier stays)."""
    n, cand = 0, path
    while cand.exists() or cand.is_symlink():
        n += 1
        cand = path.with_name(f"{path.name}.{n}")
    return cand


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, resumably, and verify it before it gets its final name.

    Bytes go to ``dest + ".part"``; a later call (or a retry after a dropped
    connection) continues it with ``Range: bytes=N-``. Transient failures
    (connection reset, timeout, HTTP 5xx/408/429) are retried ``retries`` times,
    waiting ``backoff * 2**i`` seconds. When complete, the size (if given) and the
    SHA-256 or MD5 (if given) are checked; a mismatch renames the file to
    ``dest + ".bad-checksum"`` and raises :class:`DownloadError`. On success the
    file is fsynced and renamed to ``dest``. An existing ``dest`` is verified the
    same way (it may have been put there by hand, or changed since) and nothing
    is fetched; one that fails is renamed aside and refused, so the next call
    downloads it afresh.
    """
    dest = Path(dest)
    if dest.exists():
        try:
            _verify(dest, size, sha256, md5, url)
        except DownloadError as exc:
            raise DownloadError(f"the file already there does not match: {exc.problem}; run again to download it "
                                "afresh", dest) from None
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _fetch(url, part, size, timeout, progress)
            break
        except _Retryable as exc:
            attempt += 1
            if attempt > retries:
                raise DownloadError(f"download failed after {retries} retries: {exc.args[0]} (from {url}); "
                                    f"run again to resume from {part}", dest) from None
            wait = backoff * 2 ** (attempt - 1)
            tqdm.write(f"{dest.name}: {exc.args[0]}; retrying in {wait:.1f} s ({attempt}/{retries})")
            time.sleep(wait)
    _verify(part, size, sha256, md5, url)
    with open(part, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, size: int | None, timeout: float, progress: bool) -> None:
    """One attempt: append the missing bytes of ``url`` to ``part`` (raises _Retryable on transient trouble)."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have == size:
        return  # complete already; the caller verifies it
    if size is not None and have > size:
        part.unlink()
        have = 0
    req = urllib.request.Request(url, headers={"User-Agent": "audiovae-download"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the caller verifies what we have
            return
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}", part.with_name(part.name[:-5])) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Retryable(f"cannot connect ({reason})") from None
    with resp:
        if have and resp.status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != have:
                raise _Retryable(f"server resumed at byte {start}, expected {have}")
            mode = "ab"
        else:  # 200: the server ignored the Range header, start again
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        total = size if size is not None else (have + int(length) if length and length.isdigit() else None)
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name[:-5], disable=not progress, leave=False)
        try:
            with open(part, mode) as out:
                while True:
                    try:
                        block = resp.read(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Retryable(f"connection lost at byte {out.tell()} ({exc.__class__.__name__})") from None
                    if not block:
                        break
                    if size is not None and out.tell() + len(block) > size:  # never more than the table's size on disk
                        raise DownloadError(f"the server sent more than the expected {size} bytes (from {url})",
                                            part.with_name(part.name[:-5]))
                    out.write(block)
                    bar.update(len(block))
                got = out.tell()
        finally:
            bar.close()
    expected = have + int(length) if length and length.isdigit() else size
    if expected is not None and got < expected:
        raise _Retryable(f"connection closed at byte {got} of {expected}")


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0]) if value else None
    except (IndexError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# extracting one archive
# --------------------------------------------------------------------------------------------
def _check_name(archive: Path, name: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or p.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"member {name!r} has an absolute path; refusing to extract", archive)
    if ".." in p.parts:
        raise UnsafeArchiveError(f"member {name!r} points outside the archive ('..'); refusing to extract", archive)


def _resolve(links: dict[str, str], parts: list[str], follow_last: bool) -> list[str] | None:
    """Where a path inside the archive lands once the archive's own symbolic links are followed.

    ``links`` maps the real location of each link met so far to its target.
    Returns the path's components under the extraction folder, or ``None`` when
    it climbs above it, meets an absolute link, or loops.
    """
    out: list[str] = []
    todo = list(parts)
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                return None
            out.pop()
            continue
        here = "/".join(out + [part])
        if here in links and (todo or follow_last):
            hops += 1
            target = links[here]
            if hops > 64 or target.startswith("/"):
                return None
            todo = target.split("/") + todo
            continue
        out.append(part)
    return out


class _LinkCheck:
    """Follows the links an archive makes, member by member, as extraction would create them.

    A link that looks harmless on its own can point outside once the links
    before it are followed: ``top/d -> .``, ``top/d/e -> ..``, ``top/d/e/f -> ..``
    puts ``f`` one level above the extraction folder. Each member's own path and
    each link's target are resolved through the links made before it.
    """

    def __init__(self, archive: Path):
        self.archive = archive
        self.links: dict[str, str] = {}

    def member(self, name: str, link: str | None = None, kind: str = "symbolic") -> None:
        """Check one member (``link``: its target when it is a link; ``kind``: symbolic, hard, or "" for zip's)."""
        hard = kind == "hard"
        parts = name.replace("\\", "/").split("/")
        # a link replaces what is at its name; a file or folder is written through a link already there
        where = _resolve(self.links, parts, follow_last=link is None)
        if where is None:
            raise UnsafeArchiveError(f"member {name!r} lies outside the archive once the archive's own links are "
                                     "followed; refusing to extract", self.archive)
        if link is None:
            return
        target = _resolve(self.links, (link.split("/") if hard else where[:-1] + link.split("/")), follow_last=True)
        if link.startswith("/") or target is None:
            kind = f"{kind} link" if kind else "link"
            raise UnsafeArchiveError(f"member {name!r} is a {kind} to {link!r} outside the archive; refusing to "
                                     "extract", self.archive)
        if not hard:
            self.links["/".join(where)] = link


def check_members(archive: str | os.PathLike) -> None:
    """Raise :class:`UnsafeArchiveError`, naming the member, when the archive holds an unsafe one.

    Unsafe: an absolute path, a ``..`` component, a symbolic or hard link whose
    target falls outside the extraction folder (following the links the archive
    makes before it, see :class:`_LinkCheck`), a member whose path leaves the
    folder through such links, a device file or FIFO. This check stands on its
    own: it does not lean on ``tarfile``'s ``filter="data"`` (absent from Python
    3.10 before 3.10.12), which extraction applies as well.
    """
    archive = Path(archive)
    links = _LinkCheck(archive)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_name(archive, info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    if info.file_size > 4096:
                        raise UnsafeArchiveError(f"member {info.filename!r} is a link with a {info.file_size}-byte "
                                                 "target; refusing to extract", archive)
                    target = zf.read(info).decode("utf-8", "replace")
                    links.member(info.filename.rstrip("/"), target, "")
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                    raise UnsafeArchiveError(f"member {info.filename!r} is a device file; refusing to extract", archive)
                else:
                    links.member(info.filename.rstrip("/"))
        return
    try:
        tf = tarfile.open(archive)
    except (tarfile.TarError, OSError) as exc:
        raise DownloadError(f"not a tar or zip archive ({exc})", archive) from None
    with tf:
        for m in tf:
            _check_name(archive, m.name)
            if m.isdev():
                raise UnsafeArchiveError(f"member {m.name!r} is a device file; refusing to extract", archive)
            if m.issym() or m.islnk():
                # a symlink resolves from its own folder, a hard link from the archive's top
                links.member(m.name.rstrip("/"), m.linkname, "hard" if m.islnk() else "symbolic")
            else:
                links.member(m.name.rstrip("/"))


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike, member_root: str | None = None,
                    progress: bool = True) -> Path:
    """Extract a tar.gz / tar.bz2 / tar / zip archive so that ``dest`` holds its contents.

    Every member is checked first (:func:`check_members`); nothing is written
    when one is unsafe. The archive is unpacked into a temporary folder beside
    ``dest``, then ``member_root`` inside it (default: its top level) is renamed
    to ``dest``; files beside ``member_root`` (LibriSpeech's SPEAKERS.TXT...) are
    moved beside ``dest`` unless already there. ``dest`` must not exist yet.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise DownloadError("already exists; not extracting over it", dest)
    check_members(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extracting", dir=dest.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in tqdm(zf.infolist(), desc=f"extract {archive.name}", unit="file", disable=not progress,
                                 leave=False):
                    zf.extract(info, tmp)
        else:
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress, leave=False):
                    tf.extract(m, tmp, filter="data")
        src = tmp / member_root if member_root else tmp
        if not src.is_dir():
            raise DownloadError(f"archive has no folder {member_root!r} (is it the right archive?)", archive)
        if member_root:
            for sib in src.parent.iterdir():
                if sib != src and not (dest.parent / sib.name).exists():
                    os.replace(sib, dest.parent / sib.name)
        os.replace(src, dest)
    except tarfile.TarError as exc:
        raise DownloadError(f"cannot extract ({exc})", archive) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# --------------------------------------------------------------------------------------------
# a whole corpus
# --------------------------------------------------------------------------------------------
def read_checksums(path: str | os.PathLike) -> dict[str, str]:
    """A ``sha256sum``-style file (``<hex>  <file name>`` per line) as {file name: hex}."""
    out = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise DownloadError(f"cannot read checksum file ({exc.strerror})", path) from None
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DownloadError(f"line {n}: expected '<sha256>  <file name>'", path)
        out[parts[1].lstrip("*").rsplit("/", 1)[-1]] = parts[0].lower()
    return out


def resolve_archive(a: Archive, mirror: str | None = None, checksums: dict[str, str] | None = None) -> Archive:
    """``a`` with its URL moved to ``mirror`` and its checksum replaced from ``checksums`` (size then unknown)."""
    if mirror:
        a = replace(a, url=mirror.rstrip("/") + "/" + a.filename)
    if checksums and a.filename in checksums:
        a = replace(a, sha256=checksums[a.filename], md5=None, size=None)
    return a


def _extracted(base: Path, a: Archive) -> bool:
    d = base / a.dest
    return d.is_dir() and all((d / m).exists() for m in a.marker)


def locate(corpus: str, data_dir: str | os.PathLike, subsets: list[str] | tuple[str, ...] | None = None) -> Path | None:
    """The corpus folder when ``data_dir`` holds the corpus (or is it), else ``None``.

    ``data_dir/<root>`` is looked at first, then ``data_dir`` itself (a
    ``--data-dir`` pointing straight at an existing copy).
    """
    c = get_corpus(corpus)
    data_dir = Path(data_dir)
    subsets = _subsets(c, subsets)
    if c.extra.get("idx"):
        for cand in (data_dir / c.root, data_dir):
            if _idx_copy(cand):
                return cand
        return None
    archives = [a for s in subsets for a in c.subsets[s]]
    if all(_extracted(data_dir, a) for a in archives):
        return data_dir / c.root
    # data_dir is the corpus folder itself: its archives' dest are relative to its parent
    here = [replace(a, dest=os.path.relpath(a.dest, c.root)) for a in archives]
    if all(_extracted(data_dir, a) for a in here):
        return data_dir
    return None


def get_corpus(name: str) -> Corpus:
    try:
        return CORPORA[name]
    except KeyError:
        raise DownloadError(f"no download for corpus {name!r}; downloadable: {', '.join(CORPORA)}") from None


def _subsets(c: Corpus, subsets) -> list[str]:
    subsets = list(subsets) if subsets else list(c.default_subsets)
    unknown = [s for s in subsets if s not in c.subsets]
    if unknown:
        raise DownloadError(f"{c.name} has no subset {', '.join(map(repr, unknown))}; subsets: {', '.join(c.subsets)}")
    return subsets


def fetch_corpus(
    corpus: str,
    data_dir: str | os.PathLike,
    subsets: list[str] | tuple[str, ...] | None = None,
    *,
    mirror: str | None = None,
    checksums: str | os.PathLike | None = None,
    keep_archives: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    **download_kw,
) -> Path:
    """Download and extract ``corpus`` into ``data_dir`` unless it is there already; return its folder.

    ``subsets``: e.g. ``["dev-clean", "train-clean-100"]`` for LibriSpeech
    (default: the corpus's ``default_subsets``). ``mirror`` / ``checksums``
    default to the ``AUDIOVAE_MIRROR`` / ``AUDIOVAE_CHECKSUMS`` environment
    variables. An archive already in ``data_dir`` is extracted without a download.
    """
    c = get_corpus(corpus)
    data_dir = Path(data_dir)
    subsets = _subsets(c, subsets)
    found = locate(corpus, data_dir, subsets)
    if found is not None:
        log(f"{c.name}: already in {found}; nothing to download")
        return found
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    checksums = checksums if checksums is not None else os.environ.get(CHECKSUMS_ENV) or None
    sums = read_checksums(checksums) if checksums else None
    for s in subsets:
        for a in c.subsets[s]:
            a = resolve_archive(a, mirror, sums)
            if not a.extract:
                target = data_dir / c.root / a.filename
                if not target.exists() and not target.with_suffix("").exists():
                    log(f"downloading {a.url}")
                    download(a.url, target, a.sha256, a.md5, a.size, progress=progress, **download_kw)
                    log(f"{a.filename}: {target.stat().st_size:,} bytes, {'sha256' if a.sha256 else 'md5'} verified")
                continue
            if _extracted(data_dir, a):
                continue
            archive = data_dir / "downloads" / a.filename
            if not archive.exists():
                log(f"downloading {a.url}" + (f" ({a.size / 1e6:.0f} MB)" if a.size else ""))
            # an archive already there is verified like a fresh one before anything is extracted from it
            download(a.url, archive, a.sha256, a.md5, a.size, progress=progress, **download_kw)
            log(f"{a.filename}: {archive.stat().st_size:,} bytes, {'sha256' if a.sha256 else 'md5'} verified")
            log(f"extracting {archive} -> {data_dir / a.dest}")
            if (data_dir / a.dest).exists():  # not ours (ours appear whole, by rename): leave it to the user
                missing = [m for m in a.marker if not (data_dir / a.dest / m).exists()]
                raise DownloadError(f"exists but lacks {', '.join(missing)}: an incomplete copy? Remove it, or point "
                                    "--data-dir at a complete one", data_dir / a.dest)
            extract_archive(archive, data_dir / a.dest, a.member_root, progress=progress)
            if not _extracted(data_dir, a):
                missing = [m for m in a.marker if not (data_dir / a.dest / m).exists()]
                raise DownloadError(f"extracted, but {', '.join(missing)} is missing (is it the right archive?)",
                                    archive)
            if not keep_archives:
                archive.unlink()
    found = locate(corpus, data_dir, subsets)
    if found is None:  # pragma: no cover - every archive was checked above
        raise DownloadError(f"{c.name} is still incomplete after the download", data_dir)
    return found
