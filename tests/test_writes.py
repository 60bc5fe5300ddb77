"""Nothing lost, nothing leaked: commands never write over their inputs or files they did not write, outputs keep
their names apart, the report copies only the run's own files, and a bad output path is one line, not a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from audiovae.cli import cli
from audiovae.errors import InvalidFeatureError


def _tone(path: Path, seconds: float = 0.3, freq: float = 440.0, sr: int = 22050) -> Path:
    t = np.arange(int(sr * seconds)) / sr
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(os.fsencode(path), (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="WAV"
             if path.suffix == ".wav" else None)
    return path


def _errors(res) -> list[str]:
    return [ln for ln in res.output.splitlines() if ln.startswith("error:")]


def _refused(res) -> str:
    """The one error line of a command that stopped on purpose (exit 1, no traceback)."""
    assert isinstance(res.exception, SystemExit) and res.exit_code == 1, (res.exception, res.output)
    lines = _errors(res)
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


# --- mel / vocode: outputs mirror the inputs' relative paths; collisions and existing files are refused ----------
def test_mel_and_vocode_mirror_relative_paths_and_count_what_they_write(tmp_path):
    d = tmp_path / "D"
    for rel in ("a/x.wav", "b/x.wav", "x.wav"):
        _tone(d / rel)
    res = CliRunner().invoke(cli, ["mel", str(d), "-o", str(tmp_path / "M")])
    assert res.exit_code == 0, res.output
    assert "wrote 3 log-mel file(s)" in res.output
    assert sorted(p.relative_to(tmp_path / "M").as_posix() for p in (tmp_path / "M").rglob("*.npz")) == [
        "a/x.mel.npz", "b/x.mel.npz", "x.mel.npz"]
    res = CliRunner().invoke(cli, ["vocode", str(tmp_path / "M"), "-o", str(tmp_path / "W"), "--vocoder-iters", "1"])
    assert res.exit_code == 0, res.output
    assert "wrote 3 wav file(s)" in res.output
    assert sorted(p.relative_to(tmp_path / "W").as_posix() for p in (tmp_path / "W").rglob("*.wav")) == [
        "a/x.wav", "b/x.wav", "x.wav"]


def test_colliding_outputs_are_refused_naming_both_before_anything_is_written(tmp_path):
    d = tmp_path / "D"
    _tone(d / "a" / "x.wav")
    _tone(d / "a" / "x.flac")
    res = CliRunner().invoke(cli, ["mel", str(d), "-o", str(tmp_path / "M")])
    line = _refused(res)
    assert "a/x.wav" in line and "a/x.flac" in line and "x.mel.npz" in line
    assert not (tmp_path / "M").exists()
    # two files named on the command line with one name
    _tone(tmp_path / "b" / "x.wav")
    res = CliRunner().invoke(cli, ["mel", str(d / "a" / "x.wav"), str(tmp_path / "b" / "x.wav"), "-o", str(tmp_path / "M")])
    line = _refused(res)
    assert str(d / "a" / "x.wav") in line and str(tmp_path / "b" / "x.wav") in line
    assert not (tmp_path / "M").exists()


def test_mel_then_vocode_into_the_same_folder_keeps_the_recordings(tmp_path):
    d = tmp_path / "D"
    rec = _tone(d / "a" / "x.wav", freq=330.0)
    before = rec.read_bytes()
    res = CliRunner().invoke(cli, ["mel", str(d), "-o", str(d)])
    assert res.exit_code == 0 and (d / "a" / "x.mel.npz").is_file(), res.output
    res = CliRunner().invoke(cli, ["vocode", str(d), "-o", str(d), "--vocoder-iters", "1"])
    line = _refused(res)
    assert "x.wav" in line and "--overwrite" in line
    assert rec.read_bytes() == before
    # a second mel run over its own outputs needs --overwrite too, and then works
    assert "--overwrite" in _refused(CliRunner().invoke(cli, ["mel", str(d), "-o", str(d)]))
    res = CliRunner().invoke(cli, ["mel", str(d), "-o", str(d), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert rec.read_bytes() == before


def test_resynth_never_writes_over_its_input_even_with_overwrite(tmp_path):
    x = _tone(tmp_path / "x.wav")
    before = x.read_bytes()
    (tmp_path / "link.wav").symlink_to(x)
    os.link(x, tmp_path / "hard.wav")
    for out in (x, tmp_path / "link.wav", tmp_path / "hard.wav", tmp_path / "sub" / ".." / "x.wav"):
        res = CliRunner().invoke(cli, ["resynth", str(x), "-o", str(out), "--vocoder-iters", "1", "--overwrite"])
        assert "input" in _refused(res)
        assert x.read_bytes() == before
    other = _tone(tmp_path / "y.wav", freq=200.0)
    old = other.read_bytes()
    assert "--overwrite" in _refused(CliRunner().invoke(cli, ["resynth", str(x), "-o", str(other), "--vocoder-iters", "1"]))
    assert other.read_bytes() == old
    res = CliRunner().invoke(cli, ["resynth", str(x), "-o", str(other), "--vocoder-iters", "1", "--overwrite"])
    assert res.exit_code == 0 and other.read_bytes() != old, res.output


def test_model_commands_refuse_to_write_over_their_inputs(tmp_path):
    # checked before the model is loaded: no run is needed to see it
    a, b = _tone(tmp_path / "a.wav"), _tone(tmp_path / "b.wav", freq=300.0)
    before = a.read_bytes()
    run = str(tmp_path / "no_run")
    for args in (["reconstruct", run, str(a), "-o", str(a), "--overwrite"],
                 ["interpolate", run, str(a), str(b), "-o", str(a)],
                 ["repair", run, str(a), "--gap", "0.1:0.2", "-o", str(a)],
                 ["encode", run, str(a), "-o", str(a)]):
        assert "an input is never written over" in _refused(CliRunner().invoke(cli, args)), args
    assert a.read_bytes() == before


def test_vocode_skips_a_file_that_fails_inside_a_batch(tmp_path, monkeypatch):
    from audiovae.tasks import signal

    d = tmp_path / "D"
    for name in ("a", "bad", "c"):
        _tone(d / f"{name}.wav")
    assert CliRunner().invoke(cli, ["mel", str(d), "-o", str(tmp_path / "M")]).exit_code == 0
    real = signal._vocode_batch

    def picky(voc, part, device):
        for p, _, _ in part:
            if p.name == "bad.mel.npz":
                raise InvalidFeatureError("cannot be inverted", p)
        return real(voc, part, device)

    monkeypatch.setattr(signal, "_vocode_batch", picky)
    res = CliRunner().invoke(cli, ["vocode", str(tmp_path / "M"), "-o", str(tmp_path / "W"), "--vocoder-iters", "1"])
    assert isinstance(res.exception, SystemExit) and res.exit_code == 1, res.output
    assert "wrote 2 wav file(s)" in res.output
    assert sorted(p.name for p in (tmp_path / "W").iterdir()) == ["a.wav", "c.wav"]
    (line,) = _errors(res)
    assert "bad.mel.npz" in line and "cannot be inverted" in line


# --- one line for a bad output path, checked before the work starts ------------------------------------------
@pytest.fixture
def blocked(tmp_path):
    """A file where a folder is needed, a folder where a file is needed, and inputs the commands start from."""
    f = tmp_path / "afile"
    f.write_text("mine\n")
    folder = tmp_path / "afolder"
    folder.mkdir()
    wav = _tone(tmp_path / "in.wav")
    return f, folder, wav


def test_output_path_errors_are_one_line_for_every_command(blocked, tmp_path):
    f, folder, wav = blocked
    run, data = tmp_path / "no_run", tmp_path / "no_data"
    cases = {
        # several inputs (here one named twice): -o is a folder
        "mel dir is a file": ["mel", str(wav), str(wav), "-o", str(f)],
        "mel dir under a file": ["mel", str(wav), str(wav), "-o", str(f / "sub")],
        "vocode dir is a file": ["vocode", str(wav), str(wav), "-o", str(f)],
        # one input: -o is a file
        "mel file is a folder": ["mel", str(wav), "-o", str(folder)],
        "vocode file is a folder": ["vocode", str(wav), "-o", str(folder)],
        "resynth file is a folder": ["resynth", str(wav), "-o", str(folder)],
        "resynth under a file": ["resynth", str(wav), "-o", str(f / "y.wav")],
        "reconstruct file is a folder": ["reconstruct", str(run), str(wav), "-o", str(folder)],
        "sample dir is a file": ["sample", str(run), "-o", str(f)],
        "evaluate json under a file": ["evaluate", str(run), str(data), "--json", str(f / "e.json")],
        "extract dir is a file": ["extract", str(wav), "-o", str(f)],
        "train dir is a file": ["train", str(data), "-o", str(f)],
        "prepare dir is a file": ["prepare", "folder", str(tmp_path), "-o", str(f / "x")],
    }
    for name, args in cases.items():
        line = _refused(CliRunner().invoke(cli, args))
        assert str(f) in line or str(folder) in line, (name, line)
        assert "folder" in line, (name, line)
    assert f.read_text() == "mine\n" and list(folder.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_one_line(blocked, tmp_path):
    _, folder, wav = blocked
    folder.chmod(0o555)
    try:
        assert "not writable" in _refused(CliRunner().invoke(cli, ["mel", str(wav), str(wav), "-o", str(folder)]))
        assert "not writable" in _refused(CliRunner().invoke(cli, ["mel", str(wav), "-o", str(folder / "y.mel.npz")]))
        assert "not writable" in _refused(CliRunner().invoke(cli, ["resynth", str(wav), "-o", str(folder / "y.wav")]))
    finally:
        folder.chmod(0o755)


def test_a_write_that_fails_is_one_line_naming_the_file(tmp_path, monkeypatch):
    # what the checks cannot see coming (read-only file system, disk full): the atomic writer says it in one line
    import tempfile

    from audiovae.audio.io import save_audio
    from audiovae.errors import OutputError

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match="cannot write it .Permission denied") as err:
        save_audio(tmp_path / "y.wav", np.ones(100, np.float32) * 0.1, 22050)
    assert str(tmp_path / "y.wav") in str(err.value)


# --- the report writes only its own files and takes only the run's ------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from tests.corpora import tiny_image_run

    return tiny_image_run(tmp_path_factory.mktemp("tiny"))


def _report(run: Path, out: Path):
    return CliRunner().invoke(cli, ["report", str(run), "-o", str(out), "--data", str(run.parent)])


def test_report_refuses_a_folder_with_files_it_did_not_write(tiny_run, tmp_path):
    out = tmp_path / "rep"
    mine = {"audio/take1.wav": b"RIFF my recording", "figures/paper.pdf": b"%PDF my paper", "notes.txt": b"notes"}
    for rel, data in mine.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    line = _refused(_report(tiny_run, out))
    assert str(out) in line and "did not write" in line
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == mine


def test_report_rerun_replaces_only_its_own_files(tiny_run, tmp_path):
    out = tmp_path / "rep"
    res = _report(tiny_run, out)
    assert res.exit_code == 0, res.output
    listed = json.loads((out / ".audiovae-report.json").read_text())["files"]
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert sorted(listed + [".audiovae-report.json", ".audiovae.lock"]) == on_disk and "index.html" in listed
    # a file the last report wrote and this one does not is removed; the rest replaced
    stale = out / "figures" / "old_result.png"
    stale.write_bytes(b"png")
    (out / ".audiovae-report.json").write_text(json.dumps({"files": listed + ["figures/old_result.png"]}))
    assert _report(tiny_run, out).exit_code == 0
    assert not stale.exists() and (out / "index.html").is_file()
    # a file the user put there since: refused, nothing touched
    (out / "audio").mkdir(exist_ok=True)
    (out / "audio" / "mine.wav").write_bytes(b"mine")
    index = (out / "index.html").read_bytes()
    _refused(_report(tiny_run, out))
    assert (out / "audio" / "mine.wav").read_bytes() == b"mine" and (out / "index.html").read_bytes() == index
    # a manifest that names a path outside its folder is not believed
    (out / "audio" / "mine.wav").unlink()
    (out / ".audiovae-report.json").write_text(json.dumps({"files": listed + ["../elsewhere.png"]}))
    _refused(_report(tiny_run, out))


def test_report_takes_only_files_inside_the_run(tiny_run, tmp_path):
    from PIL import Image

    secret = tmp_path / "secret.png"
    Image.new("L", (4, 4), 7).save(secret)
    inside = tiny_run / "results" / "pics" / "inside.png"
    inside.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4), 200).save(inside)
    link = tiny_run / "results" / "pics" / "link.png"
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    result = tiny_run / "results" / "crafted.json"
    result.write_text(json.dumps({"a": str(secret), "b": "pics/link.png", "c": "pics/inside.png", "d": "/etc/passwd.png"}))
    (tmp_path / "secret.json").write_text(json.dumps({"password": "hunter2"}))
    linked = tiny_run / "results" / "linked.json"
    linked.symlink_to(tmp_path / "secret.json")
    try:
        out = tmp_path / "rep"
        res = _report(tiny_run, out)
        assert res.exit_code == 0, res.output
        copied = sorted(out.glob("figures/crafted_*"))
        assert [p.read_bytes() for p in copied] == [inside.read_bytes()]
        page = (out / "index.html").read_text()
        assert "outside the run folder" in page and "hunter2" not in page
    finally:
        result.unlink()
        linked.unlink()
        shutil.rmtree(inside.parent)


# --- ffmpeg gets files, never protocols; names that are not UTF-8 ------------------------------------------
def test_a_file_named_like_an_ffmpeg_protocol_is_read_as_a_file(tmp_path):
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg is not installed")
    wav = _tone(tmp_path / "x.wav", seconds=0.5)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-c:a", "aac",
                    "file:" + str(tmp_path / "pipe:0.m4a")], check=True)
    # with our stdin an open pipe nobody writes to, ffmpeg reading "pipe:0" would wait for ever
    code = ("import sys; from audiovae.audio.io import load_audio, audio_duration; "
            "w, sr = load_audio('pipe:0.m4a'); d, r = audio_duration('pipe:0.m4a'); print(len(w), sr, round(d, 1), r)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        proc.wait(timeout=60)  # stdin stays open: communicate() would close it
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("reading pipe:0.m4a waited on stdin")
    finally:
        proc.stdin.close()
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    assert proc.returncode == 0, err
    n, sr, dur, rate = out.split()
    assert int(sr) == 22050 and abs(int(n) - 11025) < 2048 and float(dur) == 0.5 and int(rate) == 22050


def test_names_that_are_not_utf8_are_read_and_reported(tmp_path):
    d = tmp_path / "D"
    d.mkdir()
    good = _tone(Path(os.fsdecode(os.fsencode(d) + b"/caf\xe9.wav")))
    _tone(d / "plain.wav")
    Path(os.fsdecode(os.fsencode(d) + b"/bad\xe9.wav")).write_bytes(b"junk" * 100)
    res = CliRunner().invoke(cli, ["mel", str(good), str(d / "plain.wav"), "-o", str(tmp_path / "M")])
    assert res.exit_code == 0, res.output
    assert os.fsencode(tmp_path / "M") + b"/caf\xe9.mel.npz" in [os.fsencode(p) for p in (tmp_path / "M").iterdir()]
    for _ in range(2):  # a re-run reads the cache's report and index back
        res = CliRunner().invoke(cli, ["extract", str(d), "-o", str(tmp_path / "C"), "--workers", "0"])
        assert res.exception is None, res.output
        assert "2 utterances" in res.output
        assert b"bad\xe9.wav: not a readable audio file" in (tmp_path / "C" / "report.txt").read_bytes()
