"""Perceptual scores that run offline: DNSMOS P.835, speaker similarity, an English transcript, PESQ.

The optional extra ``pip install 'audiovae[eval]'`` brings the packages; each ships its model in its wheel
(nothing is downloaded at run time):

- :func:`dnsmos`: DNSMOS P.835 (``speechmos``'s ONNX models, run with ``onnxruntime``): OVRL, SIG, BAK and
  P.808 MOS, 1 (bad) .. 5 (excellent), no reference needed. Computed as Microsoft's reference code and
  ``speechmos.dnsmos.run`` do (9.01-s windows with a 1-s hop, averaged; a clip shorter than 9.01 s is repeated
  end to end until it is long enough), but all the windows of all the clips go through the networks in one batch.
  Clips under :data:`DNSMOS_MIN_SECONDS` are scored all the same (as repeats of themselves) and flagged in
  ``"short"``: DNSMOS was not made for them.
- :func:`speaker_embeddings` / :func:`speaker_similarity`: ``resemblyzer``'s bundled speaker encoder (a 3-layer
  LSTM, 256-dim L2-normalised utterance embeddings, on the CPU, loaded once); similarity is the cosine.
- :func:`transcribe`: ``pocketsphinx``'s bundled US-English model (English only), with :func:`word_error_rate`.
- :func:`pesq`: PESQ (ITU-T P.862) wide band (P.862.2, ``"wb"``) or narrow band (``"nb"``) of a degraded clip
  against its reference (``pesq`` package): MOS-LQO, at most 4.64 (WB) / 4.55 (NB).

Every function takes numpy waveforms (one ``(N,)`` array or a list of them) and their sample rate, and resamples
to the 16 kHz the models need. Without the extra, each raises :class:`~audiovae.errors.MissingExtraError` with a
one-line message; :func:`missing` says so without raising (for reports).
"""

from __future__ import annotations

import importlib
import os
import re
import warnings
from functools import lru_cache

import numpy as np

from audiovae.errors import InvalidAudioError, MissingExtraError

SR = 16000
INSTALL = "pip install 'audiovae[eval]'"
PACKAGES = {"DNSMOS": ("speechmos", "onnxruntime", "requests"), "speaker similarity": ("resemblyzer", "webrtcvad"),
            "ASR": ("pocketsphinx",), "PESQ": ("pesq",)}
DNSMOS_WINDOW = 9.01  # seconds, the networks' input
DNSMOS_MIN_SECONDS = 1.0
DNSMOS_PEAK = 0.9  # the level analyze, the report and the benchmark bring every clip to before DNSMOS
PESQ_MAX = {"wb": 4.644, "nb": 4.549}


def _import(module: str, what: str):
    try:
        with warnings.catch_warnings():  # webrtcvad imports pkg_resources (deprecated)
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except ImportError as exc:
        why = f"{module} is not installed"
        if exc.name == "pkg_resources":  # webrtcvad under setuptools >= 81
            why = f"{module} imports pkg_resources, which setuptools 81 removed: pip install 'setuptools<81'"
        elif exc.name and exc.name != module and not exc.name.startswith(module + "."):
            why = f"{module} needs {exc.name}, which is not installed"
        raise MissingExtraError(f"{what} needs the optional scores: {INSTALL} ({why})") from None


def _need(what: str) -> None:
    """Raise :class:`MissingExtraError` unless every package of score ``what`` imports (checked at each call, not
    only when the models are first loaded and cached)."""
    for module in PACKAGES[what]:
        _import(module, what)


def missing(what: str | None = None) -> str | None:
    """``None`` when the packages of score ``what`` (a key of :data:`PACKAGES`; all of them when ``None``) import,
    else the one-line message saying how to install them."""
    for name, modules in PACKAGES.items():
        if what is not None and name != what:
            continue
        for module in modules:
            try:
                _import(module, name)
            except MissingExtraError as exc:
                return str(exc)
    return None


def available(what: str | None = None) -> bool:
    """Whether the scores (or score ``what``) can run."""
    return missing(what) is None


def _clips(waves, sample_rate: int) -> tuple[list[np.ndarray], bool]:
    """``waves`` (one ``(N,)`` array or a sequence of them) -> float32 16-kHz clips in [-1, 1], and whether one."""
    from audiovae.audio.io import resample, validate_waveform

    single = isinstance(waves, np.ndarray) and waves.ndim == 1
    out = []
    for w in ([waves] if single else waves):
        w = np.asarray(w, dtype=np.float64)
        w = validate_waveform(w.reshape(-1) if w.ndim == 2 and 1 in w.shape else w, int(sample_rate),
                              allow_silent=True)
        out.append(np.clip(resample(w.astype(np.float64), int(sample_rate), SR), -1.0, 1.0).astype(np.float32))
    return out, single


def _threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


# ---------------------------------------------------------------------------------------------------- DNSMOS

@lru_cache(maxsize=4)
def _dnsmos_sessions(threads: int):
    _import("speechmos", "DNSMOS")
    ort = _import("onnxruntime", "DNSMOS")
    import speechmos.dnsmos as sd

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    root = os.path.dirname(os.path.abspath(sd.__file__))
    mk = lambda name: ort.InferenceSession(os.path.join(root, "dnsmos_models", name), sess_options=opts,
                                           providers=["CPUExecutionProvider"])
    return mk("sig_bak_ovr.onnx"), mk("model_v8.onnx"), sd.DNSMOS


def _dnsmos_windows(clip: np.ndarray) -> list[np.ndarray]:
    n = int(DNSMOS_WINDOW * SR)
    audio = clip
    while len(audio) < n:  # as the reference code: repeat the clip end to end
        audio = np.append(audio, audio)
    hops = int(np.floor(len(audio) / SR) - DNSMOS_WINDOW) + 1
    wins = [audio[i * SR: i * SR + n] for i in range(hops)]
    return [w for w in wins if len(w) == n]


def dnsmos(waves, sample_rate: int, batch: int = 16, peak: float | None = None) -> dict:
    """DNSMOS P.835 of one clip or a list of clips: ``{"ovrl", "sig", "bak", "p808": float or (N,) array,
    "short": bool or (N,) bool array}`` (``short``: under :data:`DNSMOS_MIN_SECONDS`, scored as repeats).

    ``peak``: scale each clip to this peak first (the same level for every clip compared: DNSMOS hears level);
    ``None``: as given, a clip louder than full scale scaled down to it (not clipped)."""
    _need("DNSMOS")
    single = isinstance(waves, np.ndarray) and waves.ndim == 1
    waves = [waves] if single else list(waves)
    scaled = []
    for w in waves:
        w = np.asarray(w, dtype=np.float64)
        top = float(np.abs(w).max()) if w.size else 0.0
        if top > 0 and (peak is not None or top > 1.0):
            w = w * ((peak if peak is not None else 1.0) / top)
        scaled.append(w)
    clips, _ = _clips(scaled, sample_rate)
    sess, p808, ref = _dnsmos_sessions(_threads())
    melspec = lambda a: ref.audio_melspec(None, audio=a)  # speechmos's own features and polynomial fits
    owner, wins = [], []
    for i, c in enumerate(clips):
        w = _dnsmos_windows(c)
        owner += [i] * len(w)
        wins += w
    raw = np.zeros((len(wins), 4))
    for s in range(0, len(wins), batch):
        part = wins[s:s + batch]
        x = np.stack(part).astype(np.float32)
        m = np.stack([melspec(w[:-160]) for w in part]).astype(np.float32)
        raw[s:s + batch, :3] = sess.run(None, {"input_1": x})[0]
        raw[s:s + batch, 3] = p808.run(None, {"input_1": m})[0][:, 0]
    sig, bak, ovr = ref.get_polyfit_val(None, raw[:, 0], raw[:, 1], raw[:, 2], False)
    per = np.stack([ovr, sig, bak, raw[:, 3]], 1)
    owner = np.array(owner)
    scores = np.stack([per[owner == i].mean(0) for i in range(len(clips))]) if clips else np.zeros((0, 4))
    short = np.array([len(c) < DNSMOS_MIN_SECONDS * SR for c in clips], dtype=bool)
    out = {k: scores[:, j] for j, k in enumerate(("ovrl", "sig", "bak", "p808"))}
    out["short"] = short
    if single:
        out = {k: (bool(v[0]) if k == "short" else float(v[0])) for k, v in out.items()}
    return out


# ---------------------------------------------------------------------------------------------------- speaker

@lru_cache(maxsize=1)
def _voice_encoder():
    _import("webrtcvad", "speaker similarity")
    resemblyzer = _import("resemblyzer", "speaker similarity")
    return resemblyzer.VoiceEncoder(device="cpu", verbose=False)


def speaker_embeddings(waves, sample_rate: int) -> np.ndarray:
    """Resemblyzer utterance embeddings, ``(256,)`` for one clip or ``(N, 256)`` for a list (L2-normalised).

    Each clip is preprocessed as resemblyzer does (volume normalised, long silences trimmed by a VAD); a clip
    the VAD finds no speech in is embedded untrimmed."""
    _need("speaker similarity")
    clips, single = _clips(waves, sample_rate)
    enc = _voice_encoder()
    from resemblyzer.audio import normalize_volume, trim_long_silences
    from resemblyzer.hparams import audio_norm_target_dBFS

    import torch

    out = []
    with torch.inference_mode():
        for c in clips:
            w = normalize_volume(c.astype(np.float64), audio_norm_target_dBFS, increase_only=True)
            t = trim_long_silences(w)
            out.append(enc.embed_utterance((t if len(t) >= SR // 4 else w).astype(np.float32)))
    e = np.stack(out).astype(np.float32) if out else np.zeros((0, 256), np.float32)
    return e[0] if single else e


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity of embeddings ``(D,)`` or rows ``(N, D)`` (pairwise ``(N, M)`` when both are 2-D)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    an = a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)
    bn = b / np.linalg.norm(b, axis=-1, keepdims=True).clip(1e-12)
    r = an @ bn.T
    return float(r) if r.ndim == 0 else r


def speaker_similarity(a, b, sample_rate: int) -> float | np.ndarray:
    """Cosine between the speaker embeddings of clip ``a`` and clip ``b`` (or of lists of clips, pairwise
    item by item: ``(N,)``)."""
    ea, eb = speaker_embeddings(a, sample_rate), speaker_embeddings(b, sample_rate)
    if ea.ndim == 1:
        return cosine(ea, eb)
    return np.einsum("nd,nd->n", ea, eb) / (np.linalg.norm(ea, axis=1) * np.linalg.norm(eb, axis=1)).clip(1e-12)


def centroid(embeddings: np.ndarray) -> np.ndarray:
    """The L2-normalised mean of embeddings ``(N, D)`` (a speaker's voice from several utterances)."""
    m = np.asarray(embeddings, np.float64).mean(0)
    return (m / max(np.linalg.norm(m), 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- ASR

@lru_cache(maxsize=1)
def _decoder():
    ps = _import("pocketsphinx", "ASR")
    return ps.Decoder(samprate=SR, loglevel="FATAL")


def transcribe(waves, sample_rate: int) -> str | list[str]:
    """English transcript(s) by pocketsphinx's bundled en-us acoustic and language model (lower case words)."""
    _need("ASR")
    clips, single = _clips(waves, sample_rate)
    dec = _decoder()
    out = []
    for c in clips:
        dec.start_utt()
        dec.process_raw((c * 32767).astype("<i2").tobytes(), full_utt=True)
        dec.end_utt()
        hyp = dec.hyp()
        out.append(re.sub(r"\s+", " ", hyp.hypstr).strip().lower() if hyp is not None else "")
    return out[0] if single else out


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate (substitutions + deletions + insertions) / reference words, case and punctuation folded."""
    norm = lambda s: re.sub(r"[^\w' ]+", " ", s.lower()).split()
    r, h = norm(reference), norm(hypothesis)
    if not r:
        return float(len(h) > 0)
    d = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, d[0] = d[0], i
        for j, hw in enumerate(h, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (rw != hw))
    return d[len(h)] / len(r)


# ---------------------------------------------------------------------------------------------------- PESQ

def pesq(reference, degraded, sample_rate: int, mode: str = "wb") -> float | np.ndarray:
    """PESQ MOS-LQO of ``degraded`` against ``reference`` (one clip each, or lists of equal length), both at
    ``sample_rate``, scored at 16 kHz; ``mode`` ``"wb"`` (P.862.2) or ``"nb"`` (P.862). The clips are cut to the
    shorter one (they must be time-aligned, as resynthesis is). NaN where PESQ finds no speech."""
    if mode not in PESQ_MAX:
        raise ValueError(f"PESQ mode must be 'wb' or 'nb', not {mode!r}")
    lib = _import("pesq", "PESQ")
    refs, single = _clips(reference, sample_rate)
    degs, _ = _clips(degraded, sample_rate)
    if len(refs) != len(degs):
        raise InvalidAudioError(f"PESQ needs as many degraded clips as references ({len(degs)} vs {len(refs)})")
    out = []
    for r, d in zip(refs, degs):
        n = min(len(r), len(d))
        v = lib.pesq(SR, r[:n], d[:n], mode, on_error=lib.PesqError.RETURN_VALUES)
        out.append(float(v) if v >= 0 else float("nan"))  # PesqError codes are negative
    return out[0] if single else np.array(out)
