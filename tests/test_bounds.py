"""Small crafted files must not exhaust memory, and broken ones give one line naming the file (issue 16).

Every file here is tiny; the crafted ones declare sizes (in a .npy header, a zip
member, a model configuration) far beyond what they hold, and must be refused
before anything of that size is allocated.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from click.testing import CliRunner

from audiovae.audio.config import MelConfig
from audiovae.audio.melfile import load_mel, save_mel
from audiovae.cli import cli
from audiovae.errors import CheckpointError, DataError, InvalidFeatureError

N_MELS = 256


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _npy_header(shape, dtype="<f4") -> bytes:
    """A .npy header declaring ``shape`` (the data after it is whatever the caller appends)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _mel_npz(path: Path, **fields) -> Path:
    """A .mel.npz with the given members (raw bytes or arrays); defaults make a valid file."""
    members = {"logmel": np.full((N_MELS, 20), -5.0, np.float32), "config": np.array(json.dumps(MelConfig().to_dict())),
               "num_samples": np.array(19 * 256, np.int64), "source": np.array("a.wav")}
    members.update(fields)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, value in members.items():
            if value is None:
                continue
            zf.writestr(f"{name}.npy", value if isinstance(value, bytes) else _npy_bytes(value))
    return path


def _one_line(exc: BaseException, path: Path) -> None:
    msg = str(exc)
    assert "\n" not in msg and msg.startswith(str(path)), msg


# --- .mel.npz ------------------------------------------------------------------------------------------
def test_valid_crafted_mel_loads(tmp_path):
    logmel, cfg, n = load_mel(_mel_npz(tmp_path / "ok.mel.npz"))
    assert logmel.shape == (N_MELS, 20) and n == 19 * 256


def test_mel_npz_zip_bomb_refused_before_inflating(tmp_path):
    """A logmel member of 200 MB of zeros deflates to ~200 kB: refused from the zip directory alone."""
    path = tmp_path / "bomb.mel.npz"
    frames = (200 << 20) // (4 * N_MELS)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("config.npy", _npy_bytes(np.array(json.dumps(MelConfig().to_dict()))))
        with zf.open("logmel.npy", "w", force_zip64=True) as fh:
            fh.write(_npy_header((N_MELS, frames)))
            zeros = bytes(1 << 22)
            for _ in range(frames * N_MELS * 4 // len(zeros)):
                fh.write(zeros)
    assert path.stat().st_size < 2 << 20
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(InvalidFeatureError, match="zip bomb") as err:
            load_mel(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _one_line(err.value, path)
    assert peak < 8 << 20, peak


def test_mel_npz_header_larger_than_member_refused(tmp_path):
    """A header declaring a terabyte over 80 bytes of data: np.load would allocate the terabyte first."""
    path = _mel_npz(tmp_path / "liar.mel.npz", logmel=_npy_header((N_MELS, 1 << 30)) + bytes(80))
    with pytest.raises(InvalidFeatureError, match="truncated") as err:
        load_mel(path)
    _one_line(err.value, path)


@pytest.mark.parametrize("fields, why", [
    ({"num_samples": np.array(10**15, np.int64)}, "num_samples 1000000000000000 does not fit"),
    ({"num_samples": np.array(-5, np.int64)}, "num_samples should be positive"),
    ({"num_samples": np.arange(3)}, "num_samples should be one integer"),
    ({"num_samples": np.array(1.5)}, "num_samples should be one integer"),
    ({"config": np.array("[1, 2]")}, "config should be a JSON object"),
    ({"config": np.array(["{}", "{}"])}, "config should be one JSON text"),
    ({"config": np.array("{not json")}, "cannot read"),
    ({"config": np.array("[" * 100_000 + "]" * 100_000)}, "cannot read"),  # nested past the recursion limit
    ({"logmel": np.array([object()], dtype=object)}, "Python objects"),
    ({"source": np.zeros(1 << 19, np.float32)}, "at most"),
    ({"logmel": np.full((20, N_MELS), -5.0, np.float32)}, "transposed"),
    ({"logmel": None}, "missing logmel"),
])
def test_mel_npz_bad_fields_one_line(tmp_path, fields, why):
    path = _mel_npz(tmp_path / "bad.mel.npz", **fields)
    with pytest.raises(InvalidFeatureError, match=why) as err:
        load_mel(path)
    _one_line(err.value, path)


def test_empty_and_foreign_files_name_the_file(tmp_path):
    cfg = MelConfig()
    for name, data, why in [("empty.mel.npz", b"", "empty file"), ("empty.npy", b"", "empty file"),
                            ("npz.npy", None, "zip archive"),  # None: a .mel.npz under a .npy name
                            ("npy.mel.npz", _npy_bytes(np.zeros((N_MELS, 3), np.float32)), "single .npy array"),
                            ("short.npy", _npy_header((N_MELS, 100)) + bytes(40), "truncated")]:
        path = tmp_path / name
        if data is None:
            _mel_npz(path)
        else:
            path.write_bytes(data)
        with pytest.raises(InvalidFeatureError, match=why) as err:
            load_mel(path, cfg)
        _one_line(err.value, path)


def test_vocode_cli_one_line_per_crafted_file(tmp_path):
    files = [tmp_path / "empty.mel.npz", _mel_npz(tmp_path / "huge.mel.npz", num_samples=np.array(10**15, np.int64)),
             _mel_npz(tmp_path / "list.mel.npz", config=np.array("[]")), tmp_path / "blank.npy"]
    files[0].write_bytes(b"")
    files[3].write_bytes(b"")
    (tmp_path / "c.yaml").write_text("n_mels: 256\n")
    res = CliRunner().invoke(cli, ["vocode", *map(str, files), "-o", str(tmp_path / "out"), "--vocoder-iters", "1",
                                   "--config", str(tmp_path / "c.yaml")])
    assert isinstance(res.exception, SystemExit) and res.exit_code == 1, res.output
    assert "Aborted" not in res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == len(files), res.output
    for f in files:
        assert sum(str(f) in e for e in errors) == 1, (f, errors)


# --- front end output: audio of absurd amplitude ------------------------------------------------------------
def _loud(tmp_path: Path) -> Path:
    path = tmp_path / "loud.wav"
    t = np.arange(4096) / 22050
    sf.write(path, (1e30 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050, subtype="FLOAT")
    return path


def test_mel_refuses_non_finite_features(tmp_path):
    from audiovae.tasks.signal import mel_files

    loud = _loud(tmp_path)
    ok, bad = mel_files([loud], tmp_path / "m" / "loud.mel.npz", MelConfig())
    assert ok == [] and len(bad) == 1 and bad[0][0] == str(loud) and "infinite" in bad[0][1]
    assert not (tmp_path / "m" / "loud.mel.npz").exists()


def test_extract_skips_non_finite_features(tmp_path):
    from audiovae.data.features import _AudioFiles

    loud = _loud(tmp_path)
    uid, src, res, problem = _AudioFiles([loud], ["loud"], MelConfig())[0]
    assert res is None and src == str(loud) and "infinite" in problem


# --- frame arrays (.npy) -------------------------------------------------------------------------------------
def test_frames_nan_after_row_100k_found(tmp_path):
    from audiovae.data.source import open_data

    frames = np.zeros((150_000, 4), np.float32)
    frames[:, 1] = 1.0
    frames[140_001, 2] = np.nan
    np.save(tmp_path / "x.npy", frames)
    with pytest.raises(DataError, match="row 140001") as err:
        open_data(tmp_path / "x.npy")
    _one_line(err.value, tmp_path / "x.npy")


def test_frames_statistics_unchanged_by_blocks(tmp_path):
    from audiovae.data.source import open_data

    rng = np.random.default_rng(0)
    frames = rng.normal(-5, 2, (20_000, 300)).astype(np.float32)  # several blocks
    np.save(tmp_path / "x.npy", frames)
    src = open_data(tmp_path / "x.npy")
    train = frames[:18_000].astype(np.float64)
    np.testing.assert_allclose(src.stats.mean.numpy(), train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(src.stats.std.numpy(), train.std(0), rtol=1e-4)


@pytest.mark.parametrize("make, why", [
    (lambda p: np.save(p, np.zeros((N_MELS, 3000), np.float32)), "transpose"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: _mel_npz(p), "zip archive"),  # an .npz named x.npy
    (lambda p: p.write_bytes(_npy_header((1 << 40, N_MELS)) + bytes(1000)), "truncated"),
    (lambda p: p.write_bytes(_npy_bytes(np.array([{"a": 1}], dtype=object))), "Python objects"),
])
def test_frames_bad_npy_one_line(tmp_path, make, why):
    path = tmp_path / "x.npy"
    make(path)
    res = CliRunner().invoke(cli, ["train", str(path), "--model", "dense", "-o", str(tmp_path / "run"),
                                   "--max-steps", "1"])
    assert isinstance(res.exception, SystemExit) and res.exit_code == 1, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and why in errors[0], res.output


# --- feature caches ----------------------------------------------------------------------------------------
def _speech(tmp_path: Path) -> Path:
    d = tmp_path / "wavs"
    d.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        t = np.arange(6000) / 22050
        sf.write(d / f"u{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.01 * rng.normal(size=t.size))
                 .astype(np.float32), 22050)
    return d


def test_stats_with_object_array_refused(tmp_path):
    from audiovae.data.features import FeatureCache, extract
    from audiovae.utils import file_digest

    out = tmp_path / "f"
    extract(_speech(tmp_path), out, workers=0, progress=False)
    np.savez(out / "stats.tmp.npz", mean=np.array([object()] * N_MELS, dtype=object), std=np.ones(N_MELS, np.float32))
    (out / "stats.tmp.npz").replace(out / "stats.npz")
    commit = json.loads((out / "cache.json").read_text())
    commit["stats_sha1"] = file_digest(out / "stats.npz", "sha1")  # a consistent-looking set
    (out / "cache.json").write_text(json.dumps(commit))
    with pytest.raises(DataError, match="Python objects") as err:
        FeatureCache(out)
    _one_line(err.value, out / "stats.npz")


def test_truncated_part_is_recomputed(tmp_path):
    from audiovae.data.features import FeatureCache, extract

    src, out = _speech(tmp_path), tmp_path / "f"
    extract(src, out, workers=0, progress=False)
    good = np.load(out / "feats.f32").copy()
    part = sorted((out / "parts").glob("*.npy"))[1]
    whole = part.read_bytes()
    part.write_bytes(whole[: len(whole) // 2])  # an extraction killed while writing it (older, non-atomic writer)
    (out / "cache.json").unlink()
    extract(src, out, workers=0, progress=False)
    assert part.read_bytes() == whole
    np.testing.assert_array_equal(np.asarray(FeatureCache(out).feats), good)


# --- model directories -------------------------------------------------------------------------------------
SMALL = {"n_mels": 8, "hidden": [16], "latent_dim": 2}


def _model_dir(tmp_path: Path) -> Path:
    from audiovae.models.registry import build_model
    from audiovae.training.checkpoint import save_model_dir

    torch.manual_seed(0)
    return save_model_dir(tmp_path / "m", build_model("dense", SMALL), "dense", dict(SMALL), None, None)


def _edit(path: Path, **changes) -> None:
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_edited_model_config_refused_by_its_checksum(tmp_path):
    from audiovae.training.checkpoint import load_model_dir

    m = _model_dir(tmp_path)
    load_model_dir(m)
    _edit(m, model_config={**SMALL, "latent_dim": 3})
    with pytest.raises(CheckpointError, match="config_sha256") as err:
        load_model_dir(m)
    _one_line(err.value, m / "config.yaml")


def test_old_model_dir_without_config_checksum_still_loads(tmp_path):
    from audiovae.training.checkpoint import load_model_dir

    m = _model_dir(tmp_path)
    _edit(m, config_sha256=None)
    assert load_model_dir(m).model.state_dict()["encoder.0.weight"].shape == (16, 8)


def test_oversized_model_config_refused_before_building(tmp_path, monkeypatch):
    """hidden: [25000, 25000] with the weights' checksum intact: refused from the safetensors header, without
    building the model anywhere but on the meta device (the old loader allocated 5.5 GB first)."""
    from audiovae.models import registry
    from audiovae.training.checkpoint import load_model_dir

    m = _model_dir(tmp_path)
    _edit(m, model_config={**SMALL, "hidden": [25000, 25000]}, config_sha256=None)  # as an old run would be
    real, built = registry.build_model, []

    def spy(name, config=None):
        device = torch.get_default_device().type
        built.append(device)
        if device != "meta":
            raise RuntimeError("the oversized model was built for real")
        return real(name, config)

    monkeypatch.setattr(registry, "build_model", spy)
    # refused before anything is built for real: by the config's own size bounds (audiovae/config.py) or, within
    # them, by the weights' shapes read from the safetensors header
    with pytest.raises(CheckpointError, match="weights do not fit|must be a list of 1 to 64 layer widths") as err:
        load_model_dir(m)
    assert "\n" not in str(err.value) and str(m) in str(err.value)
    assert all(device == "meta" for device in built)


# --- IDX images ------------------------------------------------------------------------------------------------
def test_idx_gzip_bomb_refused_before_inflating(tmp_path):
    """60000 x 2000 x 2000 zeros declared in a tiny .gz: refused from the header, nothing inflated."""
    import gzip
    import struct

    from audiovae.data.images import read_idx

    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as fh:
        fh.write(b"\x00\x00\x08\x03" + struct.pack(">III", 60000, 2000, 2000))
        fh.write(bytes(1 << 20))
    with pytest.raises(DataError, match="gzip bomb") as err:
        read_idx(bomb)
    _one_line(err.value, bomb)
    ok = tmp_path / "ok-idx1-ubyte.gz"
    with gzip.open(ok, "wb") as fh:
        fh.write(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + bytes(range(5)))
    assert read_idx(ok).tolist() == [0, 1, 2, 3, 4]
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + bytes(3))
    with pytest.raises(DataError, match="payload is 3 bytes, header says 5"):
        read_idx(short)


def test_empty_feats_file_one_line(tmp_path):
    from audiovae.data.features import extract

    out = tmp_path / "f"
    extract(_speech(tmp_path), out, workers=0, progress=False)
    (out / "feats.f32").write_bytes(b"")
    res = CliRunner().invoke(cli, ["train", str(out), "--model", "dense", "-o", str(tmp_path / "run"),
                                   "--max-steps", "1"])
    assert isinstance(res.exception, SystemExit) and res.exit_code == 1, res.output
    assert "Aborted" not in res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "feats.f32" in errors[0] and "empty file" in errors[0], res.output


@pytest.mark.parametrize("name", ["dense", "conv", "mnist", "cifar"])
def test_every_model_builds_on_the_meta_device_and_loads(tmp_path, name):
    """The shape check builds each registered model on the meta device: none may need real memory to build."""
    from audiovae.models.registry import available, build_model
    from audiovae.training.checkpoint import load_model_dir, save_model_dir

    assert name in available()
    torch.manual_seed(0)
    model = build_model(name, {})
    save_model_dir(tmp_path / name, model, name, {}, None, None)
    loaded = load_model_dir(tmp_path / name)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)
