"""Every recipe's stage chain, end to end, on tiny corpora in their exact official layouts.

The download stage fetches an archive of the fixture corpus, in the corpus's own
archive format, from a local HTTP server on 127.0.0.1 (AUDIOVAE_MIRROR) and checks
it against checksums computed here (AUDIOVAE_CHECKSUMS). Training is a few steps of
a small model. What is checked comes from outside the code under test: the
fixture tables (how many utterances, which splits), soundfile's durations, the
byte sizes of the cache, the server's request log, file modification times.

`audiovae` commands run through tests/avserver.py (the real command line in a
forked child of a process that imported torch once); the MNIST and NPROC tests
use `python -m audiovae` itself. Set AUDIOVAE_TEST_PLAIN=1 to use
`python -m audiovae` everywhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import require_path, require_tool

from tests.httpserver import Files, serve
from tests.corpora import write_idx

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
PLAIN = f"{sys.executable} -m audiovae"

# a few optimiser steps of a small model; everything else as the recipe's conf/ says
TINY_CONV = ["max_steps=3", "batch_size=4", "model_config.channels=16", "model_config.latent_dim=4",
             "model_config.res_blocks=0", "segment_frames=32", "val_every=3", "val_batches=2", "num_workers=0",
             "checkpoint_every=3", "lr_warmup_steps=1", "kl_warmup_steps=2"]
TINY_IMAGE = ["max_steps=3", "batch_size=16", "model_config.channels=4", "model_config.hidden=16",
              "model_config.latent_dim=4", "val_every=3", "val_batches=2", "checkpoint_every=3", "lr_warmup_steps=1"]
QUICK_ENV = {"EVAL_OPTS": "--k 2", "EXTRACT_OPTS": "--workers 0", "N_RECONSTRUCT": "1", "N_SAMPLES": "1",
             "SAMPLE_SECONDS": "0.5", "OMP_NUM_THREADS": "1"}


# --- running recipes ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def audiovae_cmd(tmp_path_factory):
    """The AUDIOVAE command for the recipes: the fork server's client (or plain `python -m audiovae`)."""
    if os.environ.get("AUDIOVAE_TEST_PLAIN"):
        yield PLAIN
        return
    sock = tmp_path_factory.mktemp("avserver") / "s"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "avserver.py"), "serve", str(sock)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield f"{sys.executable} {ROOT / 'tests' / 'avserver.py'} {sock}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_recipe(name: str, *args: str, audiovae: str = PLAIN, env: dict | None = None, timeout: float = 400):
    full_env = {k: v for k, v in os.environ.items() if k != "NPROC"}
    full_env.update({"PYTHONPATH": str(ROOT), "AUDIOVAE": audiovae, **QUICK_ENV, **(env or {})})
    return subprocess.run(["bash", str(RECIPES / name / "run.sh"), *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def ran_stages(out: str) -> list[int]:
    """Stages that ran (not skipped), from the recipe's own headers."""
    return [int(ln.split()[2]) for ln in out.splitlines() if ln.startswith("=== stage ") and "done already" not in ln]


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def manifest_rows(path: Path) -> list[dict]:
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    head = lines[0].split("\t")
    return [dict(zip(head, ln.split("\t"))) for ln in lines[1:]]


# --- official archives of the fixture corpora --------------------------------------------------------
def _tar(out: Path, members: list[tuple[Path, str]], mode: str) -> Path:
    with tarfile.open(out, mode) as tf:
        for src, arcname in members:
            tf.add(src, arcname=arcname)
    return out


def official_archives(corpus: str, src: Path, out: Path) -> list[Path]:
    """The fixture corpus at ``src`` packed as the publisher packs it."""
    out.mkdir(parents=True, exist_ok=True)
    if corpus == "ljspeech":  # LJSpeech-1.1.tar.bz2 holds LJSpeech-1.1/
        return [_tar(out / "LJSpeech-1.1.tar.bz2", [(src, "LJSpeech-1.1")], "w:bz2")]
    if corpus == "vctk":  # VCTK-Corpus-0.92.zip holds wav48_silence_trimmed/, txt/, speaker-info.txt at its top
        z = out / "VCTK-Corpus-0.92.zip"
        with zipfile.ZipFile(z, "w") as zf:
            for p in sorted(src.rglob("*")):
                zf.write(p, str(p.relative_to(src)))
        return [z]
    if corpus == "librispeech":  # one <subset>.tar.gz per subset, each with LibriSpeech/<subset>/ and the .TXT files
        res = []
        for sub in sorted(d for d in src.iterdir() if d.is_dir()):
            txt = [(p, f"LibriSpeech/{p.name}") for p in src.glob("*.TXT")]
            res.append(_tar(out / f"{sub.name}.tar.gz", txt + [(sub, f"LibriSpeech/{sub.name}")], "w:gz"))
        return res
    if corpus == "speechcommands":  # speech_commands_v0.02.tar.gz holds ./yes/, ./validation_list.txt... at its top
        return [_tar(out / "speech_commands_v0.02.tar.gz", [(src, ".")], "w:gz")]
    raise ValueError(corpus)


def publish(state: Files, archives: list[Path], tmp: Path) -> Path:
    """Serve the archives; write their SHA-256 (computed here) in sha256sum format."""
    lines = []
    for a in archives:
        data = a.read_bytes()
        state.files["/" + a.name] = data
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {a.name}")
    sums = tmp / "SHA256SUMS"
    sums.write_text("\n".join(lines) + "\n")
    return sums


# --- the speech recipes ------------------------------------------------------------------------
SPEECH = {
    # corpus: (fixture maker, root folder name, utterances, sample rate of conf/mel.yaml, utterances to reconstruct)
    # (the vocoder costs seconds of CPU per utterance: reconstruction is checked on two corpora, stage 5's
    # prior sample on all)
    "ljspeech": ("make_ljspeech", "LJSpeech-1.1", 6, 22050, 1),
    "vctk": ("make_vctk", "VCTK-Corpus-0.92", 6, 22050, 0),
    "librispeech": ("make_librispeech", "LibriSpeech", 8, 16000, 0),
    "speechcommands": ("make_speechcommands", "speech_commands_v0.02", 9, 16000, 1),
}


def check_speech_outputs(exp: Path, n_utts: int, sample_rate: int, data_root: Path, n_rec: int = 1) -> dict:
    """The real outputs of stages 1-5 exist and agree with each other and with the audio."""
    rows = manifest_rows(exp / "data" / "manifest.tsv")
    assert len(rows) == n_utts
    assert all(Path(r["path"]).resolve().is_relative_to(data_root.resolve()) for r in rows)
    splits = {r["split"] for r in rows}
    assert {"train", "val"} <= splits
    # feature cache: one record per manifest row, frames from the audio's length, (frames, 256) in all
    index = json.loads((exp / "feats" / "index.json").read_text())
    recs = index if isinstance(index, list) else index.get("utterances", index)
    assert sorted(r["id"] for r in recs) == sorted(r["id"] for r in rows)
    mel = yaml.safe_load((exp / "feats" / "config.yaml").read_text())["mel"]
    assert mel["sample_rate"] == sample_rate and mel["n_mels"] == 256
    hop = mel["hop_length"]
    by_id = {r["id"]: r for r in rows}
    for rec in recs:
        seconds = sf.info(by_id[rec["id"]]["path"]).duration
        assert abs(rec["frames"] - (1 + seconds * sample_rate // hop)) <= 2, rec
        assert rec["split"] == by_id[rec["id"]]["split"]
    total = sum(r["frames"] for r in recs)
    assert np.load(exp / "feats" / "feats.f32", mmap_mode="r").shape == (total, 256)
    # the model directory loads, with the data's feature configuration
    from audiovae.training.checkpoint import load_model_dir, resolve_model_dir

    loaded = load_model_dir(resolve_model_dir(exp / "train", "best"), map_location="cpu")
    assert loaded.name == "conv" and loaded.mel.sample_rate == sample_rate and loaded.mel.n_mels == 256
    # evaluation: finite figures on each held-out split, over all its utterances
    for split in splits - {"train"}:
        res = json.loads((exp / "eval" / f"{split}.json").read_text())
        assert res["split"] == split and res["items"] == sum(r["split"] == split for r in rows)
        assert np.isfinite(res["elbo"]) and np.isfinite(res["iwae"]) and res["elbo"] <= res["iwae"] + 1e-3
    # generation: the reconstruction has the source's length, the sample the asked-for length
    rec_wavs = sorted((exp / "generate" / "reconstruct").glob("*.wav"))
    assert len(rec_wavs) == n_rec
    for wav in rec_wavs:
        src = by_id[wav.stem]
        assert src["split"] == ("test" if "test" in splits else "val")
        y, sr = sf.read(wav)
        assert sr == sample_rate and np.isfinite(y).all() and np.abs(y).max() > 0
        assert abs(len(y) / sr - sf.info(src["path"]).duration) < 0.05
    y, sr = sf.read(exp / "generate" / "samples" / "sample_0.wav")
    assert sr == sample_rate and abs(len(y) / sr - 0.5) < 0.05
    return {"rows": rows, "splits": splits}


@pytest.mark.slow
@pytest.mark.parametrize("corpus", list(SPEECH))
def test_speech_recipe_end_to_end(tmp_path, corpus, audiovae_cmd):
    from tests import corpora

    maker, root_name, n_utts, sr, n_rec = SPEECH[corpus]
    src = getattr(corpora, maker)(tmp_path / "src")
    archives = official_archives(corpus, src, tmp_path / "archives")
    data, exp = tmp_path / "data", tmp_path / "exp"
    extra = ["--subsets", "train-clean-100 dev-clean test-clean"] if corpus == "librispeech" else []
    with serve() as (url, st):
        sums = publish(st, archives, tmp_path)
        env = {"AUDIOVAE_MIRROR": url, "AUDIOVAE_CHECKSUMS": str(sums), "N_RECONSTRUCT": str(n_rec),
               **({"PREPARE_OPTS": "--val-fraction 0.3 --test-fraction 0.2"} if corpus == "ljspeech" else {})}
        r = run_recipe(corpus, "--data-dir", data, "--exp-dir", exp, *extra, *TINY_CONV, audiovae=audiovae_cmd, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert ran_stages(r.stdout) == [0, 1, 2, 3, 4, 5]
        assert sorted(p for _, p, _ in st.requests) == sorted("/" + a.name for a in archives)
        # the downloaded corpus is the fixture, file for file
        got = data / root_name
        assert sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file()) == \
            sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
        check_speech_outputs(exp, n_utts, sr, got, n_rec)
        assert sorted(p.name for p in (exp / "stamps").iterdir()) == [f"stage{i}" for i in range(6)]
        # a second run is a no-op: no stage runs, no file changes, no request
        before = mtimes(exp)
        n_req = len(st.requests)
        r2 = run_recipe(corpus, "--data-dir", data, "--exp-dir", exp, *extra, *TINY_CONV, audiovae=audiovae_cmd,
                        env=env)
        assert r2.returncode == 0, r2.stderr[-3000:]
        assert ran_stages(r2.stdout) == [] and r2.stdout.count("done already") == 6
        assert mtimes(exp) == before and len(st.requests) == n_req


@pytest.mark.slow
def test_folder_recipe_with_speaker_subfolders(tmp_path, audiovae_cmd):
    from tests import corpora

    src = corpora.make_folder(tmp_path / "src")
    exp = tmp_path / "exp"
    env = {"PREPARE_OPTS": "--val-fraction 0.3 --test-fraction 0.2", "N_RECONSTRUCT": "0"}
    r = run_recipe("folder", "--data-dir", src, "--exp-dir", exp, "--subdirs", "speaker", *TINY_CONV,
                   audiovae=audiovae_cmd, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "nothing to download" in r.stdout
    out = check_speech_outputs(exp, 6, 22050, src, n_rec=0)
    assert sorted({row["speaker"] for row in out["rows"]}) == ["spk0", "spk1", "spk2"]
    before = mtimes(exp)
    r2 = run_recipe("folder", "--data-dir", src, "--exp-dir", exp, "--subdirs", "speaker", *TINY_CONV,
                    audiovae=audiovae_cmd, env=env)
    assert r2.returncode == 0 and ran_stages(r2.stdout) == [] and mtimes(exp) == before


ASTERISK = Path("/usr/share/asterisk/sounds")


def test_folder_recipe_asterisk_prepare_and_extract(tmp_path, audiovae_cmd):
    """Real recorded speech: a few prompts of each installed voice, in the packages' own layout."""
    require_path(ASTERISK, "asterisk-core-sounds-es-g722")
    require_tool("ffmpeg")
    voices = sorted(d for d in ASTERISK.iterdir() if d.is_dir() and d.name.count("_") >= 3)
    assert voices
    root = tmp_path / "sounds"
    picked = 0
    for v in voices:
        for f in sorted(v.glob("*.g722"))[:3]:
            (root / v.name).mkdir(parents=True, exist_ok=True)
            (root / v.name / f.name).symlink_to(f)
            picked += 1
    exp = tmp_path / "exp"
    r = run_recipe("folder", "--corpus", "asterisk", "--data-dir", root, "--exp-dir", exp, "--stop-stage", "2",
                   audiovae=audiovae_cmd, env={"PREPARE_OPTS": "--val-fraction 0.3 --test-fraction 0.3"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert ran_stages(r.stdout) == [0, 1, 2]
    rows = manifest_rows(exp / "data" / "manifest.tsv")
    assert len(rows) == picked and {row["speaker"] for row in rows} == {v.name for v in voices}
    assert {row["sample_rate"] for row in rows} == {"16000"}
    index = json.loads((exp / "feats" / "index.json").read_text())
    recs = index if isinstance(index, list) else index.get("utterances", index)
    assert len(recs) == picked
    for rec in recs:  # frames from the duration ffmpeg reports in the manifest, at 16 kHz / hop 256
        row = next(x for x in rows if x["id"] == rec["id"])
        assert abs(rec["frames"] - (1 + float(row["duration"]) * 16000 // 256)) <= 2
    assert yaml.safe_load((exp / "feats" / "config.yaml").read_text())["mel"]["sample_rate"] == 16000
    assert not (exp / "train").exists()


# --- the image recipes -------------------------------------------------------------------------
def tiny_idx(folder: Path, n_train: int = 200, n_test: int = 40) -> Path:
    """MNIST-format IDX files (gzipped, official names): a bar whose height is the class."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n)
        x = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):
            x[i, 4 + y[i] : 10 + y[i], 5:20] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder


def tiny_cifar_archive(out: Path, per_batch: int = 20) -> Path:
    """cifar-10-python.tar.gz as published: cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}."""
    rng = np.random.default_rng(1)
    members = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
             b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
             b"filenames": [f"img{i}.png".encode() for i in range(per_batch)]}
        members[f"cifar-10-batches-py/{name}"] = pickle.dumps(d, protocol=2)
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2)
    with tarfile.open(out, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out


def check_image_outputs(exp: Path, model: str, n_test: int) -> None:
    from audiovae.training.checkpoint import load_model_dir, resolve_model_dir

    loaded = load_model_dir(resolve_model_dir(exp / "train", "best"), map_location="cpu")
    assert loaded.name == model
    res = json.loads((exp / "eval" / "test.json").read_text())
    assert res["split"] == "test" and res["items"] == n_test
    assert np.isfinite(res["elbo"]) and res["bits_per_dim"] > 0


@pytest.mark.slow
def test_mnist_recipe_downloads_and_trains(tmp_path):
    """The real entry point (`python -m audiovae`), IDX files fetched from the local server."""
    files = tiny_idx(tmp_path / "published")
    exp = tmp_path / "exp"
    with serve() as (url, st):
        sums = publish(st, sorted(files.iterdir()), tmp_path)
        r = run_recipe("mnist", "--data-dir", tmp_path / "data", "--exp-dir", exp, *TINY_IMAGE,
                       env={"AUDIOVAE_MIRROR": url, "AUDIOVAE_CHECKSUMS": str(sums)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert ran_stages(r.stdout) == [0, 1, 2, 3, 4, 5]
    assert len(st.gets()) == 4
    for f in files.iterdir():
        assert (tmp_path / "data" / "mnist" / f.name).read_bytes() == f.read_bytes()
    check_image_outputs(exp, "mnist", 40)


@pytest.mark.slow
def test_cifar10_recipe_downloads_and_trains(tmp_path, audiovae_cmd):
    archive = tiny_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    exp = tmp_path / "exp"
    with serve() as (url, st):
        sums = publish(st, [archive], tmp_path)
        r = run_recipe("cifar10", "--data-dir", tmp_path / "data", "--exp-dir", exp, *TINY_IMAGE,
                       audiovae=audiovae_cmd, env={"AUDIOVAE_MIRROR": url, "AUDIOVAE_CHECKSUMS": str(sums)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [p for _, p, _ in st.requests] == ["/cifar-10-python.tar.gz"]
    assert (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_5").is_file()
    check_image_outputs(exp, "cifar", 20)


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
def test_fashion_mnist_recipe(tmp_path, audiovae_cmd):
    """Debian's dataset-fashion-mnist is an existing copy (no download, no --data-dir); else the local server."""
    exp = tmp_path / "exp"
    with serve() as (url, st):
        args, n_test = [], 10000
        if not FASHION.is_dir():
            publish(st, sorted(tiny_idx(tmp_path / "published").iterdir()), tmp_path)
            args, n_test = ["--data-dir", tmp_path / "data"], 40
        env = {"AUDIOVAE_MIRROR": url, "AUDIOVAE_CHECKSUMS": str(tmp_path / "SHA256SUMS"),
               "EVAL_OPTS": "--k 1 --limit 200" if FASHION.is_dir() else "--k 1"}
        r = run_recipe("fashion_mnist", "--exp-dir", exp, *args, *TINY_IMAGE, "val_batches=1",
                       audiovae=audiovae_cmd, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    if FASHION.is_dir():
        assert st.requests == [] and f"already in {FASHION}" in r.stdout
        n_test = 200
    check_image_outputs(exp, "mnist", n_test)


# --- failures stop the recipe with their message -------------------------------------------------
def test_failed_stage_stops_with_its_message(tmp_path, audiovae_cmd):
    files = tiny_idx(tmp_path / "published", 50, 10)
    exp = tmp_path / "exp"
    with serve() as (url, st):
        sums = publish(st, sorted(files.iterdir()), tmp_path)
        # a wrong checksum: stage 0 fails, nothing later runs
        bad = tmp_path / "BADSUMS"
        bad.write_text(sums.read_text().replace(sums.read_text()[:8], "00000000", 1))
        r = run_recipe("mnist", "--data-dir", tmp_path / "data", "--exp-dir", exp, *TINY_IMAGE,
                       audiovae=audiovae_cmd, env={"AUDIOVAE_MIRROR": url, "AUDIOVAE_CHECKSUMS": str(bad)})
        assert r.returncode != 0
        assert "checksum mismatch" in r.stderr and "stage 0 (download) failed" in r.stderr
        assert ran_stages(r.stdout) == [0] and not (exp / "stamps" / "stage0").exists()
        # right checksums, an unknown training key: stages 0-2 pass, 3 fails with the trainer's message
        r = run_recipe("mnist", "--data-dir", tmp_path / "data", "--exp-dir", exp, "nosuchkey=1",
                       audiovae=audiovae_cmd, env={"AUDIOVAE_MIRROR": url, "AUDIOVAE_CHECKSUMS": str(sums)})
    assert r.returncode == 1
    assert "error: command line: unknown configuration key 'nosuchkey'" in r.stdout + r.stderr
    assert "stage 3 (train) failed" in r.stderr
    assert ran_stages(r.stdout) == [0, 1, 2, 3]
    assert sorted(p.name for p in (exp / "stamps").iterdir()) == ["stage0", "stage1", "stage2"]
    assert not (exp / "eval").exists()
    # the same stage with other settings than its stamp: refused, saying what to remove
    r = run_recipe("mnist", "--data-dir", tmp_path / "elsewhere", "--exp-dir", exp, "--stop-stage", "0",
                   audiovae=audiovae_cmd)
    assert r.returncode == 1 and "stage 0 (download) was run with other settings" in r.stderr


def test_usage_errors(tmp_path):
    r = run_recipe("ljspeech", "--exp-dir", tmp_path, "--stage", "two")
    assert r.returncode == 1 and "--stage and --stop-stage take numbers" in r.stderr
    r = run_recipe("ljspeech", "--data-dir", tmp_path)
    assert r.returncode == 1 and "--exp-dir is required" in r.stderr
    r = run_recipe("vctk", "--help")
    assert r.returncode == 0 and "--data-dir DIR" in r.stdout and "key=value" in r.stdout


@pytest.mark.slow
def test_nproc_trains_with_torchrun(tmp_path):
    """NPROC=2: two DDP processes share each global batch, so an epoch has half the steps.

    180 training images (200 less the 20 held out for validation), 16 per process:
    one process makes 11 steps per epoch, two make 180 // 32 = 5, so step 6 is in epoch 1.
    """
    tiny_idx(tmp_path / "data" / "mnist")
    exp = tmp_path / "exp"
    args = [a for a in TINY_IMAGE if not a.startswith(("max_steps", "val_every", "checkpoint_every"))]
    r = run_recipe("mnist", "--data-dir", tmp_path / "data", "--exp-dir", exp, "--stop-stage", "3", "max_steps=6",
                   "val_every=6", "checkpoint_every=6", *args, env={"NPROC": "2"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "torch.distributed.run" not in r.stderr  # no launcher error
    rows = [ln.split(",") for ln in (exp / "train" / "metrics.csv").read_text().splitlines()]
    last = dict(zip(rows[0], rows[-1]))
    assert last["step"] == "6" and last["epoch"] == "1", last
    assert "NPROC=2" in (exp / "stamps" / "stage3").read_text()
