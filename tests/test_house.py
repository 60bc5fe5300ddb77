"""One helper for each job done in several places (issue 17, "the house behind it"): file digests, the torchrun
rank, the device, dotted keys, result JSON, image grids. The source is checked for copies creeping back."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from audiovae.errors import ConfigError
from audiovae.utils import file_digest, flatten_dict, local_rank, pick_device, rank, world_size

PKG = Path(__file__).resolve().parents[1] / "audiovae"


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PKG)): p.read_text(encoding="utf-8") for p in sorted(PKG.rglob("*.py"))}


@pytest.mark.parametrize("what, pattern, home", [
    ("the torchrun rank", r"environ\.get\(\s*[\"'](RANK|WORLD_SIZE|LOCAL_RANK)[\"']", "utils.py"),
    ("a file hasher", r"hashlib\.(new|sha1|sha256|md5)\(\)?\s*$|\.read\(1 << 20\)", "utils.py"),
    ("a dict flattener", r"def _?flat(ten)?(_dict)?\(", "utils.py"),
    ("a device picker", r"torch\.device\(\s*[\"']cuda[\"']|\bdef pick_device\(", "utils.py"),
    ("an image-grid writer", r"def (_grid|image_grid|save_png)\(", "tasks/figures.py"),
    ("a result writer", r"atomic_write_text\(.*\b(json_out|json_path)\b", "tasks/results.py"),
])
def test_one_helper_per_job(what, pattern, home):
    where = sorted(f for f, text in _sources().items()
                   if any(re.search(pattern, line) for line in text.splitlines()))
    assert where == [home], f"{what} in {where}; use the one in {home}"


def test_file_digest_and_flatten_dict(tmp_path):
    p = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000  # more than one 1 MiB block
    p.write_bytes(data)
    for algo in ("sha256", "sha1", "md5"):
        assert file_digest(p, algo) == hashlib.new(algo, data).hexdigest()
    assert flatten_dict({"a": {"b": 1, "c": {"d": [2]}}, "e": {}, "f": None}) == {"a.b": 1, "a.c.d": [2], "e": {},
                                                                                 "f": None}


def test_rank_and_device(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert (rank(), world_size(), local_rank()) == (0, 1, 0)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert (rank(), world_size(), local_rank()) == (5, 8, 5)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_rank() == 1
    assert pick_device("cpu") == torch.device("cpu") == pick_device("cpu", local_rank=3)
    with pytest.raises(ConfigError, match="unknown device 'tpu9'"):
        pick_device("tpu9")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA device"):
        pick_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("cuda:1") == torch.device("cuda:1")
    assert pick_device("auto", local_rank=3) == pick_device("cuda:0", local_rank=3) == torch.device("cuda", 1)


def test_save_result_writes_both_places_with_nan_as_null(tmp_path):
    from audiovae.tasks.results import save_result, write_result

    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "config.yaml").write_text("model: dense\n")  # a run folder: run/best -> run
    res = {"elbo": float("nan"), "n": np.int64(3)}
    written = save_result(res, tmp_path / "out.json", run / "best", "evaluate")
    assert written == [tmp_path / "out.json", run / "results" / "evaluate.json"]
    for p in written:
        assert json.loads(p.read_text()) == {"elbo": None, "n": 3}
    assert write_result(run, "probe", res) == run / "results" / "probe.json"


def test_image_grid_layout(tmp_path):
    from PIL import Image

    from audiovae.tasks.figures import image_grid

    imgs = np.ones((3, 1, 4, 5), np.float32)
    p = image_grid(tmp_path / "g.png", imgs, ncol=2, scale=1, pad=1, background=0.5)
    a = np.asarray(Image.open(p))
    assert a.shape == (2 * (4 + 1) + 1, 2 * (5 + 1) + 1)
    assert a[0, 0] == 128 and a[1, 1] == 255 and a[6, 7] == 128  # the gap, an image, the empty last cell
