"""A built-in speech-like corpus: a source-filter synthesiser, so the demo needs no download.

Glottal pulses (Rosenberg shape, with a pitch contour: declination, accents and
jitter) go through a cascade of time-varying formant resonators; vowels and
nasals are voiced, fricatives are shaped noise, plosives a closure and a burst.
Voices differ in pitch, vocal-tract length (formant scale) and breathiness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from audiovae.audio.io import save_audio

VOWELS = {  # F1, F2, F3 (Hz), adult male (Peterson & Barney)
    "a": (730, 1090, 2440), "i": (270, 2290, 3010), "u": (300, 870, 2240),
    "e": (530, 1840, 2480), "o": (570, 840, 2410), "ae": (660, 1720, 2410), "er": (490, 1350, 1690),
}
NASALS = {"m": (250, 1200, 2200), "n": (250, 1600, 2600)}
FRICATIVES = {"s": (5500, 2000), "sh": (3200, 1500), "f": (4500, 4000), "h": (1500, 2500)}  # centre, bandwidth
PLOSIVES = {"p": 1200, "t": 4000, "k": 2500}  # burst centre frequency


@dataclass(frozen=True)
class Voice:
    f0: float  # mean pitch, Hz
    formant_scale: float  # >1: shorter vocal tract
    breath: float  # aspiration noise level
    name: str = ""


VOICES = [
    Voice(105, 1.00, 0.02, "low"), Voice(125, 1.04, 0.03, "mid"), Voice(185, 1.15, 0.04, "high"),
    Voice(220, 1.20, 0.05, "bright"), Voice(150, 1.08, 0.06, "breathy"), Voice(95, 0.96, 0.02, "deep"),
]


def _resonator(freq: float, bw: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    r = math.exp(-math.pi * bw / sr)
    theta = 2 * math.pi * freq / sr
    a = np.array([1.0, -2 * r * math.cos(theta), r * r])
    b = np.array([a.sum()])  # unity gain at DC
    return b, a


def _glottal(phase: np.ndarray) -> np.ndarray:
    """Rosenberg glottal flow as a function of cycle phase in [0, 1)."""
    p = phase % 1.0
    up, down = 0.4, 0.16
    flow = np.where(p < up, 0.5 * (1 - np.cos(np.pi * p / up)), 0.0)
    closing = (p >= up) & (p < up + down)
    return np.where(closing, np.cos(np.pi * (p - up) / (2 * down)), flow)


def synthesize_utterance(rng: np.random.Generator, voice: Voice, sr: int = 22050, n_syllables: int | None = None) -> np.ndarray:
    """One utterance of CV(C) syllables as a float32 waveform."""
    n_syllables = n_syllables or int(rng.integers(3, 7))
    segs: list[tuple[str, str, float]] = []  # (kind, symbol, seconds)
    for _ in range(n_syllables):
        kind = rng.choice(["plosive", "fricative", "nasal", "none"], p=[0.3, 0.3, 0.25, 0.15])
        if kind == "plosive":
            segs.append(("closure", rng.choice(list(PLOSIVES)), rng.uniform(0.03, 0.06)))
            segs.append(("burst", segs[-1][1], 0.015))
        elif kind == "fricative":
            segs.append(("fricative", rng.choice(list(FRICATIVES)), rng.uniform(0.06, 0.12)))
        elif kind == "nasal":
            segs.append(("nasal", rng.choice(list(NASALS)), rng.uniform(0.05, 0.09)))
        segs.append(("vowel", rng.choice(list(VOWELS)), rng.uniform(0.09, 0.22)))
    segs.append(("silence", "", 0.08))
    segs.insert(0, ("silence", "", 0.06))
    n = int(sum(s for _, _, s in segs) * sr)
    hop = int(0.005 * sr)
    n_blocks = n // hop + 1
    n = n_blocks * hop
    # per-block targets
    formants = np.zeros((n_blocks, 3))
    voiced_amp = np.zeros(n_blocks)
    noise_amp = np.zeros(n_blocks)
    noise_band = np.zeros((n_blocks, 2))
    pos = 0
    last_f = np.array(VOWELS["er"], float)
    for kind, sym, sec in segs:
        nb = max(1, int(sec * sr) // hop)
        sl = slice(pos, min(n_blocks, pos + nb))
        if kind == "vowel":
            target = np.array(VOWELS[sym], float) * voice.formant_scale
            ramp = np.linspace(0, 1, sl.stop - sl.start)[:, None]
            glide = np.minimum(1.0, ramp * 3)  # coarticulation: glide from the previous formants
            formants[sl] = last_f * (1 - glide) + target * glide
            voiced_amp[sl] = 1.0
            last_f = target
        elif kind == "nasal":
            formants[sl] = np.array(NASALS[sym], float) * voice.formant_scale
            voiced_amp[sl] = 0.35
            last_f = formants[sl.start]
        else:
            formants[sl] = last_f
            if kind == "fricative":
                c, bw = FRICATIVES[sym]
                noise_amp[sl], noise_band[sl] = 0.25, (c, bw)
            elif kind == "burst":
                noise_amp[sl], noise_band[sl] = 0.6, (PLOSIVES[sym], 2000)
        pos = sl.stop
    formants[pos:] = last_f
    # smooth amplitude steps (10 ms)
    k = np.ones(3) / 3
    voiced_amp = np.convolve(voiced_amp, k, mode="same")
    noise_amp = np.convolve(noise_amp, k, mode="same")
    # pitch: declination, one or two accents, jitter
    t = np.arange(n) / sr
    dur = n / sr
    f0 = voice.f0 * (1.1 - 0.25 * t / dur)
    for _ in range(int(rng.integers(1, 3))):
        c = rng.uniform(0.2, 0.8) * dur
        f0 = f0 * (1 + rng.uniform(0.1, 0.25) * np.exp(-0.5 * ((t - c) / 0.08) ** 2))
    f0 = f0 * (1 + 0.01 * np.convolve(rng.standard_normal(n), np.ones(200) / 200, mode="same") * 10)
    phase = np.cumsum(f0) / sr
    source = np.diff(_glottal(phase), prepend=0.0) * 20.0  # lip radiation: derivative of the flow
    source += voice.breath * rng.standard_normal(n)
    noise = rng.standard_normal(n)
    out = np.zeros(n)
    zi_v = [np.zeros(2) for _ in range(3)]
    zi_n = [np.zeros(2), np.zeros(2)]
    bws = (80.0, 110.0, 160.0)
    for bi in range(n_blocks):
        sl = slice(bi * hop, (bi + 1) * hop)
        v = source[sl] * voiced_amp[bi]
        for j in range(3):
            b, a = _resonator(formants[bi, j], bws[j], sr)
            v, zi_v[j] = lfilter(b, a, v, zi=zi_v[j])
        z = noise[sl] * noise_amp[bi]
        if noise_amp[bi] > 0:
            c, bw = noise_band[bi]
            b, a = _resonator(min(c, sr / 2 - 500), bw, sr)
            z, zi_n[0] = lfilter(b, a, z, zi=zi_n[0])
            z = z * 0.3
        out[sl] = v + z
    out -= out.mean()
    peak = np.abs(out).max()
    fade = int(0.01 * sr)
    out[:fade] *= np.linspace(0, 1, fade)
    out[-fade:] *= np.linspace(1, 0, fade)
    return (0.5 * out / max(peak, 1e-9)).astype(np.float32)


def make_corpus(out_dir: str | Path, n_utterances: int = 60, sr: int = 22050, seed: int = 0, progress: bool = False) -> list[Path]:
    """Write ``n_utterances`` synthetic utterances (cycling through the voices) as wav files."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in tqdm(range(n_utterances), desc="synthesise", unit="utt", disable=not progress):
        voice = VOICES[i % len(VOICES)]
        wave = synthesize_utterance(rng, voice, sr)
        paths.append(save_audio(out / f"{voice.name}_{i:03d}.wav", wave, sr))
    return paths
