"""Downloads and extraction against a local HTTP server on 127.0.0.1 (nothing leaves the machine).

Expected bytes and checksums are computed here with hashlib from the bytes the
server serves, independently of the code under test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from audiovae.data.download import CORPORA, download, extract_archive, fetch_corpus
from audiovae.errors import DownloadError, UnsafeArchiveError
from tests.httpserver import Files, serve

ROOT = Path(__file__).resolve().parents[1]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(n: int, seed: int = 0) -> bytes:
    """Incompressible-looking deterministic bytes."""
    out, h = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h
    return bytes(out[:n])


# --- archives in each corpus's format ------------------------------------------------------------
def tar_bytes(files: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


LJ = {"LJSpeech-1.1/metadata.csv": b"LJ001-0001|Printing, in the only sense|Printing, in the only sense\n",
      "LJSpeech-1.1/README": b"LJ Speech\n", "LJSpeech-1.1/wavs/LJ001-0001.wav": payload(3000, 1)}
VCTK = {"speaker-info.txt": b"ID  AGE  GENDER  ACCENTS  REGION COMMENTS\np225  23  F    English    Southern  England\n",
        "wav48_silence_trimmed/p225/p225_001_mic1.flac": payload(2000, 2), "txt/p225/p225_001.txt": b"Please call Stella.\n"}
LIBRI = {"LibriSpeech/SPEAKERS.TXT": b";ID  |SEX| SUBSET |MINUTES| NAME\n19 | F | train-clean-100 | 25.19 | Kara\n",
         "LibriSpeech/dev-clean/19/198/19-198.trans.txt": b"19-198-0000 NORTHANGER ABBEY\n",
         "LibriSpeech/dev-clean/19/198/19-198-0000.flac": payload(2500, 3)}
SC = {"validation_list.txt": b"yes/0a7c2a8d_nohash_0.wav\n", "testing_list.txt": b"no/0b09edd3_nohash_0.wav\n",
      "yes/0a7c2a8d_nohash_0.wav": payload(1500, 4), "no/0b09edd3_nohash_0.wav": payload(1500, 5),
      "_background_noise_/white_noise.wav": payload(1000, 6)}


def serve_corpus(state: Files, tmp: Path, archives: dict[str, bytes]) -> Path:
    """Put archives on the server and write a sha256sum file for them (our own hashes)."""
    lines = []
    for name, data in archives.items():
        state.files["/" + name] = data
        lines.append(f"{sha256(data)}  {name}")
    sums = tmp / "SHA256SUMS"
    sums.write_text("\n".join(lines) + "\n")
    return sums


# --- download() ----------------------------------------------------------------------------------
def test_full_download_verified(tmp_path):
    data = payload(200_000)
    with serve() as (url, st):
        st.files["/a.bin"] = data
        out = download(f"{url}/a.bin", tmp_path / "a.bin", sha256=sha256(data), size=len(data), progress=False)
    assert out.read_bytes() == data
    assert not (tmp_path / "a.bin.part").exists()
    assert len(st.gets()) == 1 and "Range" not in st.gets()[0]


def test_dropped_connection_resumes_with_range(tmp_path):
    data = payload(300_000, 7)
    with serve() as (url, st):
        st.files["/big.tar.gz"] = data
        st.drop["/big.tar.gz"] = [120_000]  # the first response stops after 120 kB
        download(f"{url}/big.tar.gz", tmp_path / "big.tar.gz", sha256=sha256(data), retries=2, backoff=0.01,
                 progress=False)
    gets = st.gets("/big.tar.gz")
    assert len(gets) == 2
    assert "Range" not in gets[0]
    assert gets[1]["Range"] == "bytes=120000-"
    assert hashlib.sha256((tmp_path / "big.tar.gz").read_bytes()).hexdigest() == sha256(data)


def test_interrupted_run_leaves_part_and_next_run_resumes(tmp_path):
    data = payload(100_000, 8)
    dest = tmp_path / "c.zip"
    with serve() as (url, st):
        st.files["/c.zip"] = data
        st.drop["/c.zip"] = [30_000]
        with pytest.raises(DownloadError, match="resume"):
            download(f"{url}/c.zip", dest, sha256=sha256(data), retries=0, progress=False)
        assert not dest.exists()
        assert (tmp_path / "c.zip.part").read_bytes() == data[:30_000]
        download(f"{url}/c.zip", dest, sha256=sha256(data), size=len(data), progress=False)
    assert st.gets()[1]["Range"] == "bytes=30000-"
    assert dest.read_bytes() == data


def test_server_ignoring_range_restarts_cleanly(tmp_path):
    data = payload(50_000, 9)
    (tmp_path / "d.bin.part").write_bytes(data[:10_000])
    with serve(Files(ignore_range=True)) as (url, st):
        st.files["/d.bin"] = data
        download(f"{url}/d.bin", tmp_path / "d.bin", sha256=sha256(data), progress=False)
    assert st.gets()[0]["Range"] == "bytes=10000-"
    assert (tmp_path / "d.bin").read_bytes() == data


def test_wrong_checksum_refused_and_kept_aside(tmp_path):
    data = payload(40_000, 10)
    dest = tmp_path / "LJSpeech-1.1.tar.bz2"
    with serve() as (url, st):
        st.files["/LJSpeech-1.1.tar.bz2"] = data
        with pytest.raises(DownloadError) as err:
            download(f"{url}/LJSpeech-1.1.tar.bz2", dest, sha256="0" * 64, progress=False)
    msg = str(err.value)
    assert "sha256 checksum mismatch" in msg and sha256(data) in msg and "bad-checksum" in msg
    assert not dest.exists() and not (tmp_path / "LJSpeech-1.1.tar.bz2.part").exists()
    assert (tmp_path / "LJSpeech-1.1.tar.bz2.bad-checksum").read_bytes() == data


def test_md5_and_size_are_checked(tmp_path):
    data = payload(5_000, 11)
    with serve() as (url, st):
        st.files["/x"] = data
        download(f"{url}/x", tmp_path / "ok", md5=hashlib.md5(data).hexdigest(), progress=False)
        with pytest.raises(DownloadError, match="md5 checksum mismatch"):
            download(f"{url}/x", tmp_path / "bad", md5="f" * 32, progress=False)
        with pytest.raises(DownloadError, match="size 5000 bytes, expected 5001"):
            download(f"{url}/x", tmp_path / "short", size=5001, retries=0, progress=False)
    assert (tmp_path / "ok").read_bytes() == data


def test_http_404_is_not_retried(tmp_path):
    with serve() as (url, st):
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(f"{url}/missing.tar.gz", tmp_path / "m.tar.gz", retries=3, backoff=0.01, progress=False)
    assert len(st.gets()) == 1


def test_existing_file_downloads_nothing(tmp_path):
    (tmp_path / "have.tar.gz").write_bytes(b"x" * 10)
    with serve() as (url, st):
        download(f"{url}/have.tar.gz", tmp_path / "have.tar.gz", size=10, progress=False)
    assert st.requests == []


# --- extraction ----------------------------------------------------------------------------------
def _tar_with(tmp_path: Path, build) -> Path:
    p = tmp_path / "evil.tar.gz"
    with tarfile.open(p, "w:gz") as tf:
        ok = tarfile.TarInfo("top/ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        build(tf)
    return p


def _add_file(tf, name, data=b"pwned"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _add_link(tf, name, target, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tf.addfile(info)


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("build, member, why", [
    (lambda tf: _add_file(tf, "top/../../escape.txt"), "top/../../escape.txt", r"\.\."),
    (lambda tf: _add_file(tf, "/tmp/audiovae-abs-escape.txt"), "/tmp/audiovae-abs-escape.txt", "absolute"),
    (lambda tf: _add_link(tf, "top/link", "../../outside", tarfile.SYMTYPE), "top/link", "symbolic link"),
    (lambda tf: _add_link(tf, "top/abslink", "/etc/passwd", tarfile.SYMTYPE), "top/abslink", "symbolic link"),
    (lambda tf: _add_link(tf, "top/hard", "../x", tarfile.LNKTYPE), "top/hard", "hard link"),
    (lambda tf: _add_link(tf, "top/dev", "", tarfile.CHRTYPE), "top/dev", "device"),
])
def test_unsafe_tar_members_refused(tmp_path, build, member, why):
    archive = _tar_with(tmp_path, build)
    work = tmp_path / "work"
    work.mkdir()
    before = _snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=why) as err:
        extract_archive(archive, work / "corpus", progress=False)
    assert repr(member) in str(err.value) and str(archive) in str(err.value)
    assert _snapshot(tmp_path) == before  # nothing written anywhere, not even inside
    assert not Path("/tmp/audiovae-abs-escape.txt").exists()


def test_symlink_inside_the_archive_is_fine(tmp_path):
    archive = _tar_with(tmp_path, lambda tf: _add_link(tf, "top/alias.txt", "ok.txt", tarfile.SYMTYPE))
    out = extract_archive(archive, tmp_path / "corpus", member_root="top", progress=False)
    assert (out / "alias.txt").read_bytes() == b"ok"


@pytest.mark.parametrize("name", ["../zip-escape.txt", "/abs-zip.txt", "a/../../zip-escape.txt"])
def test_unsafe_zip_members_refused(tmp_path, name):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", b"ok")
        info = zipfile.ZipInfo("placeholder")
        info.filename = name  # ZipInfo() would normalise the name; an attacker's archive would not
        zf.writestr(info, b"pwned")
    before = _snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError) as err:
        extract_archive(archive, tmp_path / "work" / "corpus", progress=False)
    assert repr(name) in str(err.value)
    assert _snapshot(tmp_path) == before


def test_zip_symlink_outside_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("d/link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "../../../etc")
    with pytest.raises(UnsafeArchiveError, match="'d/link' is a link"):
        extract_archive(archive, tmp_path / "corpus", progress=False)
    assert not (tmp_path / "corpus").exists()


# --- whole corpora in their official archive formats ------------------------------------------------
CASES = {
    "ljspeech": ({"LJSpeech-1.1.tar.bz2": tar_bytes(LJ, "w:bz2")}, LJ, "LJSpeech-1.1", "LJSpeech-1.1/"),
    "vctk": ({"VCTK-Corpus-0.92.zip": zip_bytes(VCTK)}, VCTK, "VCTK-Corpus-0.92", ""),
    "librispeech": ({"dev-clean.tar.gz": tar_bytes(LIBRI, "w:gz")}, LIBRI, "LibriSpeech", "LibriSpeech/"),
    "speechcommands": ({"speech_commands_v0.02.tar.gz": tar_bytes(SC, "w:gz")}, SC, "speech_commands_v0.02", ""),
}


@pytest.mark.parametrize("corpus", list(CASES))
def test_fetch_corpus_official_formats(tmp_path, corpus):
    archives, members, root, prefix = CASES[corpus]
    data_dir = tmp_path / "data"
    subsets = ["dev-clean"] if corpus == "librispeech" else None
    with serve() as (url, st):
        sums = serve_corpus(st, tmp_path, archives)
        found = fetch_corpus(corpus, data_dir, subsets, mirror=url, checksums=sums, progress=False, log=lambda m: None)
    assert found == data_dir / root
    for name, data in members.items():  # every member, byte for byte, where the official layout puts it
        assert (data_dir / root / name[len(prefix):]).read_bytes() == data
    assert [p for p in data_dir.iterdir() if p.name.startswith(".")] == []  # no temp folder left
    assert len(st.gets()) == len(archives)
    # already there: a second run (and one pointed at the corpus folder itself) asks the server nothing
    with serve() as (url, st2):
        serve_corpus(st2, tmp_path, archives)
        assert fetch_corpus(corpus, data_dir, subsets, mirror=url, checksums=sums, log=lambda m: None) == found
        assert fetch_corpus(corpus, found, subsets, mirror=url, checksums=sums, log=lambda m: None) == found
    assert st2.requests == []


def test_archive_already_downloaded_is_extracted_without_request(tmp_path):
    archive = tar_bytes(LJ, "w:bz2")
    (tmp_path / "data" / "downloads").mkdir(parents=True)
    (tmp_path / "data" / "downloads" / "LJSpeech-1.1.tar.bz2").write_bytes(archive)
    sums = tmp_path / "sums"
    sums.write_text(f"{sha256(archive)}  LJSpeech-1.1.tar.bz2\n")
    with serve() as (url, st):
        found = fetch_corpus("ljspeech", tmp_path / "data", mirror=url, checksums=sums, log=lambda m: None)
    assert st.requests == []
    assert (found / "metadata.csv").read_bytes() == LJ["LJSpeech-1.1/metadata.csv"]


def test_mnist_files_and_debian_fashion_copy(tmp_path):
    files = {f"{n}.gz": gzip.compress(payload(100 + i, i)) for i, n in enumerate(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])}
    with serve() as (url, st):
        sums = serve_corpus(st, tmp_path, files)
        found = fetch_corpus("mnist", tmp_path / "d", mirror=url, checksums=sums, log=lambda m: None)
        assert sorted(p.name for p in found.iterdir()) == sorted(files)
        assert all((found / n).read_bytes() == b for n, b in files.items())
        n_before = len(st.requests)
        deb = Path("/usr/share/datasets/fashion-mnist")
        if deb.is_dir():  # Debian's dataset-fashion-mnist is an existing copy: nothing to fetch
            assert fetch_corpus("fashion_mnist", deb, mirror=url, checksums=sums, log=lambda m: None) == deb
        assert len(st.requests) == n_before == 4


def test_cifar_md5_from_table_is_used(tmp_path):
    """Without a checksum file the table's published MD5 applies: a foreign archive is refused."""
    fake = tar_bytes({"cifar-10-batches-py/data_batch_1": b"x"}, "w:gz")
    with serve() as (url, st):
        st.files["/cifar-10-python.tar.gz"] = fake
        with pytest.raises(DownloadError, match="size|checksum"):
            fetch_corpus("cifar10", tmp_path, mirror=url, checksums="", log=lambda m: None, retries=0)
    assert (tmp_path / "downloads" / "cifar-10-python.tar.gz.bad-checksum").read_bytes() == fake
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_table_entries_are_complete():
    """Every archive carries a size and a checksum of the right length (no placeholder left)."""
    for c in CORPORA.values():
        for archives in c.subsets.values():
            for a in archives:
                assert a.url.startswith(("http://", "https://")) and a.size and a.size > 1000
                assert (a.sha256 and len(a.sha256) == 64) or (a.md5 and len(a.md5) == 32)


def test_cli_download_prints_folder_and_one_line_error(tmp_path):
    archive = zip_bytes(VCTK)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with serve() as (url, st):
        sums = serve_corpus(st, tmp_path, {"VCTK-Corpus-0.92.zip": archive})
        ok = subprocess.run([sys.executable, "-m", "audiovae", "download", "vctk", str(tmp_path / "d"), "--mirror", url,
                             "--checksums", str(sums)], capture_output=True, text=True, env=env, timeout=120)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == str(tmp_path / "d" / "VCTK-Corpus-0.92")
        sums.write_text(f"{'1' * 64}  VCTK-Corpus-0.92.zip\n")
        bad = subprocess.run([sys.executable, "-m", "audiovae", "download", "vctk", str(tmp_path / "e")],
                             capture_output=True, text=True, env={**env, "AUDIOVAE_MIRROR": url,
                                                                  "AUDIOVAE_CHECKSUMS": str(sums)}, timeout=120)
    assert bad.returncode == 1
    errors = [ln for ln in bad.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "checksum mismatch" in errors[0] and "VCTK-Corpus-0.92.zip" in errors[0]
    assert "Traceback" not in bad.stderr
    assert (tmp_path / "e" / "downloads" / "VCTK-Corpus-0.92.zip.bad-checksum").read_bytes() == archive


# --- issue 16: verification that cannot be skipped, links followed through the archive's own links ----------
def test_same_size_wrong_content_is_refused(tmp_path):
    """Size and checksum both given, size right, content wrong: refused (the checksum is not skipped)."""
    good, bad = payload(8_000, 20), payload(8_000, 21)
    with serve() as (url, st):
        st.files["/s.tar.gz"] = bad
        with pytest.raises(DownloadError, match="sha256 checksum mismatch"):
            download(f"{url}/s.tar.gz", tmp_path / "s.tar.gz", sha256=sha256(good), size=len(good), progress=False)
    assert not (tmp_path / "s.tar.gz").exists()
    assert (tmp_path / "s.tar.gz.bad-checksum").read_bytes() == bad


def test_tampered_archive_in_downloads_is_refused_not_extracted(tmp_path):
    """An archive already in downloads/ is verified before extraction; a bad one is renamed aside, never deleted."""
    archive = tar_bytes(LJ, "w:bz2")
    tampered = tar_bytes({**LJ, "LJSpeech-1.1/metadata.csv": b"TAMPERED\n"}, "w:bz2")
    downloads = tmp_path / "data" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "LJSpeech-1.1.tar.bz2").write_bytes(tampered)
    (downloads / "LJSpeech-1.1.tar.bz2.bad-checksum").write_bytes(b"set aside earlier")
    sums = tmp_path / "sums"
    sums.write_text(f"{sha256(archive)}  LJSpeech-1.1.tar.bz2\n")
    with serve() as (url, st):
        st.files["/LJSpeech-1.1.tar.bz2"] = archive
        with pytest.raises(DownloadError, match="checksum mismatch") as err:
            fetch_corpus("ljspeech", tmp_path / "data", mirror=url, checksums=sums, log=lambda m: None)
        assert st.requests == []
        assert "\n" not in str(err.value)
        assert not (tmp_path / "data" / "LJSpeech-1.1").exists()  # nothing extracted from it
        assert (downloads / "LJSpeech-1.1.tar.bz2.bad-checksum").read_bytes() == b"set aside earlier"
        assert (downloads / "LJSpeech-1.1.tar.bz2.bad-checksum.1").read_bytes() == tampered
        # the next run downloads it afresh
        found = fetch_corpus("ljspeech", tmp_path / "data", mirror=url, checksums=sums, log=lambda m: None)
    assert (found / "metadata.csv").read_bytes() == LJ["LJSpeech-1.1/metadata.csv"]


def test_existing_file_with_right_size_but_wrong_checksum_refused(tmp_path):
    data = payload(1_000, 22)
    (tmp_path / "have.bin").write_bytes(payload(1_000, 23))
    with serve() as (url, st):
        st.files["/have.bin"] = data
        with pytest.raises(DownloadError, match="already there does not match"):
            download(f"{url}/have.bin", tmp_path / "have.bin", sha256=sha256(data), size=len(data), progress=False)
    assert st.requests == []
    assert (tmp_path / "have.bin.bad-checksum").read_bytes() == payload(1_000, 23)


def _chain(tf):
    """top/d -> .  ;  top/d/e -> ..  ;  top/d/e/f -> ..  : each harmless alone, f ends one level above the folder."""
    _add_link(tf, "top/d", ".", tarfile.SYMTYPE)
    _add_link(tf, "top/d/e", "..", tarfile.SYMTYPE)
    _add_link(tf, "top/d/e/f", "..", tarfile.SYMTYPE)
    _add_file(tf, "top/d/e/f/escaped.txt")


def test_symlink_chain_refused_by_check_members_itself(tmp_path):
    """Refused by our own check, not only by tarfile's filter="data" (absent from Python 3.10 < 3.10.12)."""
    from audiovae.data.download import check_members

    archive = _tar_with(tmp_path, _chain)
    with pytest.raises(UnsafeArchiveError, match="'top/d/e/f'"):
        check_members(archive)
    before = _snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, tmp_path / "work" / "corpus", progress=False)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("build", [
    lambda tf: (_add_link(tf, "top/up", "..", tarfile.SYMTYPE), _add_file(tf, "top/up/../x")),
    lambda tf: (_add_link(tf, "top/a", "b", tarfile.SYMTYPE), _add_link(tf, "top/b", "a", tarfile.SYMTYPE),
                _add_file(tf, "top/a/x")),  # a loop
    lambda tf: (_add_link(tf, "top/up", "..", tarfile.SYMTYPE), _add_link(tf, "top/hl", "top/up/../../x",
                                                                       tarfile.LNKTYPE)),
    lambda tf: (_add_link(tf, "top/up", "..", tarfile.SYMTYPE), _add_link(tf, "top/up2", "up/..", tarfile.SYMTYPE)),
])
def test_links_through_links_refused(tmp_path, build):
    from audiovae.data.download import check_members

    with pytest.raises(UnsafeArchiveError):
        check_members(_tar_with(tmp_path, build))


def test_links_that_stay_inside_are_fine(tmp_path):
    from audiovae.data.download import check_members

    def build(tf):
        _add_link(tf, "top/d", ".", tarfile.SYMTYPE)
        _add_link(tf, "top/d/e", "ok.txt", tarfile.SYMTYPE)
        _add_link(tf, "top/up", "..", tarfile.SYMTYPE)
        _add_link(tf, "top/hard", "top/ok.txt", tarfile.LNKTYPE)

    check_members(_tar_with(tmp_path, build))


def test_extraction_applies_the_data_filter(tmp_path):
    """tarfile's filter="data" stays on as a second guard: set-uid bits and group/other write bits are dropped,
    and a chain our check would miss is still stopped (fails if extraction drops filter="data")."""
    from audiovae.data import download as dl

    p = tmp_path / "modes.tar"
    with tarfile.open(p, "w") as tf:
        info = tarfile.TarInfo("top/run.sh")
        info.size, info.mode = 3, 0o6777
        tf.addfile(info, io.BytesIO(b"#!\n"))
    out = extract_archive(p, tmp_path / "corpus", member_root="top", progress=False)
    mode = (out / "run.sh").stat().st_mode
    assert mode & 0o7022 == 0, oct(mode)

    chain = _tar_with(tmp_path, _chain)
    orig = dl.check_members
    dl.check_members = lambda archive: None  # our own check switched off: the filter alone must stop it
    try:
        with pytest.raises((tarfile.TarError, DownloadError)):
            extract_archive(chain, tmp_path / "w2" / "corpus", progress=False)
    finally:
        dl.check_members = orig
    assert not (tmp_path / "w2" / "escaped.txt").exists()


def test_file_written_through_a_link_made_unsafe_later_refused(tmp_path):
    """A file member at a link's name is written through the link: where it points is checked again then."""
    from audiovae.data.download import check_members

    def build(tf):
        _add_link(tf, "top/w", "a/../..", tarfile.SYMTYPE)  # inside while top/a does not exist
        _add_link(tf, "top/a", "d", tarfile.SYMTYPE)
        _add_link(tf, "top/d", ".", tarfile.SYMTYPE)  # now top/a/.. is the folder, top/a/../.. above it
        _add_file(tf, "top/w")

    with pytest.raises(UnsafeArchiveError, match="'top/w' lies outside"):
        check_members(_tar_with(tmp_path, build))


def test_server_sending_too_much_is_cut_at_the_expected_size(tmp_path):
    """A mirror that sends more than the table's size cannot fill the disk: stopped at the size, named."""
    data = payload(300_000, 24)
    with serve() as (url, st):
        st.files["/big.bin"] = data
        with pytest.raises(DownloadError, match="more than the expected 100000 bytes"):
            download(f"{url}/big.bin", tmp_path / "big.bin", size=100_000, retries=0, progress=False)
    part = tmp_path / "big.bin.part"
    assert not (tmp_path / "big.bin").exists() and part.stat().st_size <= 100_000
