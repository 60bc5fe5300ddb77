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

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "A variational autoencoder learns a latent space of speech.",
    "Griffin and Lim turned magnitudes back into sound.",
    "Every frame has two hundred and fifty six mel bins.",
    "Please call Stella and ask her to bring these things.",
]
VOICES = ["en", "en-us", "en+f3", "en+m3", "en-gb", "en+f2"]


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        msg = f"{tool} is not installed (the README's test command installs it: apt-get install espeak-ng)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


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
def speech(speech_dir) -> tuple[np.ndarray, int]:
    """The first utterance as a float32 waveform and its sample rate."""
    wave, sr = sf.read(speech_dir / "utt00.wav", dtype="float32")
    return wave, sr
