"""Shared fixtures. All test data is generated here or comes from Debian packages; nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

torch.set_num_threads(int(os.environ.get("AUDIOVAE_TEST_THREADS", "2")))
# a fixed thread count for the CLI and trainer too (audiovae/threads.py respects it; auto mode may switch between
# 1 and N threads mid-run, and CPU results differ in the last bits between thread counts: bit-exact tests need it)
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("AUDIOVAE_TEST_THREADS", "2"))

from tests.corpora import SENTENCES as _ALL_SENTENCES  # noqa: E402

SENTENCES = _ALL_SENTENCES[:6]
VOICES = ["en", "en-us", "en+f3", "en+m3", "en-gb", "en+f2"]


def on_ci() -> bool:
    """True under continuous integration (``CI`` set, as CI services do, to anything but false/0/no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(present: bool, what: str) -> None:
    """Skip a test whose Debian package (or tool) ``what`` is missing; under CI fail instead, so that a CI
    machine without it cannot pass by skipping. scripts/test.sh installs all of them."""
    if present:
        return
    msg = f"{what} is not installed (scripts/test.sh installs it)"
    if on_ci():
        pytest.fail(msg)
    pytest.skip(msg)


def require_tool(tool: str, package: str | None = None) -> None:
    """:func:`require` a program on the PATH (``package``: the Debian package holding it, if named otherwise)."""
    require(shutil.which(tool) is not None, f"{tool}" + (f" ({package})" if package else ""))


def require_path(path: str | os.PathLike, package: str) -> None:
    """:func:`require` a file or folder that the Debian package ``package`` installs."""
    require(Path(path).exists(), f"{package} ({path})")


def _need(tool: str) -> None:
    require_tool(tool)


def speak(text: str, path: Path, voice: str = "en", speed: int = 160) -> Path:
    """Render ``text`` with espeak-ng to a 22050 Hz wav file."""
    _need("espeak-ng")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    """Six espeak-ng utterances, several voices, 22050 Hz mono wav."""
    d = tmp_path_factory.mktemp("speech")
    for i, (text, voice) in enumerate(zip(SENTENCES, VOICES)):
        speak(text, d / f"utt{i:02d}.wav", voice)
    return d


@pytest.fixture(scope="session")
def feats(speech_dir, tmp_path_factory) -> Path:
    """A feature cache of the six utterances (two held out for validation). Tests copy it before changing it."""
    from audiovae.data.features import extract

    out = tmp_path_factory.mktemp("feats")
    extract(speech_dir, out, workers=0, val_fraction=0.34, progress=False)
    return out


@pytest.fixture(scope="session")
def speech(speech_dir) -> tuple[np.ndarray, int]:
    """The first utterance as a float32 waveform and its sample rate."""
    wave, sr = sf.read(speech_dir / "utt00.wav", dtype="float32")
    return wave, sr


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def fashion_subset(tmp_path_factory) -> Path:
    """A Fashion-MNIST folder in IDX format: 3,000 training images (one epoch at batch 64 is 42 steps), 300 test."""
    require_path(FASHION, "dataset-fashion-mnist")
    import gzip
    import struct

    from audiovae.data.images import read_idx

    out = tmp_path_factory.mktemp("fmnist")
    for name, n in (("train-images-idx3-ubyte", 3000), ("train-labels-idx1-ubyte", 3000),
                    ("t10k-images-idx3-ubyte", 300), ("t10k-labels-idx1-ubyte", 300)):
        arr = read_idx(FASHION / f"{name}.gz")[:n]
        header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
        (out / f"{name}.gz").write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))
    return out
