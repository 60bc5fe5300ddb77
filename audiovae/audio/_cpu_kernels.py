"""Fused CPU kernels (numba) for the front end and the vocoder.

On a CPU these steps are limited by memory traffic, not arithmetic: computing
``|X|`` and then a (banded) matrix product reads the spectrum twice and writes
an intermediate as large as the spectrum. Here one pass over the FFT output
computes a frame's magnitudes into a buffer that stays in L1 cache and each mel
band from it as one short dot product; Griffin-Lim's elementwise steps are fused
the same way.
The FFTs are torch's own (MKL on x86 wheels). scipy's pocketfft with
``workers=2`` was tried and lost in the Griffin-Lim loop (40 iterations of a
2.8-s clip on 2 cores: 206 ms against 122 ms; see docs/vocoder_perf.md): its
threads compete with the OpenMP pools of torch and numba that spin between the
loop's parallel regions. Other devices use the equivalent torch operations.
"""

from __future__ import annotations

import numba
import numpy as np
import torch


@numba.njit(cache=True, nogil=True, inline="always")
def _band_dot(band_ptr, band_lo, band_w, v, j):
    """Mel band ``j`` of ``v`` (a frame's F values): one dot product over the band's contiguous bins."""
    p0 = band_ptr[j]
    lo = band_lo[j] - p0
    acc = 0.0
    for i in range(p0, band_ptr[j + 1]):
        acc += band_w[i] * v[lo + i]
    return acc


# fastmath: the square roots and the band sums vectorise
@numba.njit(cache=True, parallel=True, nogil=True, fastmath=True)
def _magnitude_mel(spec, band_ptr, band_lo, band_w, power2, out):
    """spec: (N, F, 2) real view of complex frames; out: (N, M). The filterbank by band (see MelCSR).

    Per frame: the magnitudes into a buffer that stays in L1 cache, then each band as one short dot
    product over its contiguous bins (accumulated in float64). Scattering each bin into its bands
    instead (indirect writes that do not vectorise) took 3x as long.
    """
    n, f = spec.shape[0], spec.shape[1]
    m = out.shape[1]
    for t in numba.prange(n):
        mag = np.empty(f, spec.dtype)
        for k in range(f):
            re = spec[t, k, 0]
            im = spec[t, k, 1]
            p = re * re + im * im
            mag[k] = p if power2 else np.sqrt(p)
        for j in range(m):
            out[t, j] = _band_dot(band_ptr, band_lo, band_w, mag, j)


class MelCSR:
    """The mel filterbank ``(M, F)`` stored sparse by frequency bin and by band, for the fused kernels."""

    def __init__(self, fb: torch.Tensor):
        fb_t = fb.detach().cpu().double().numpy().T  # (F, M)
        nz = fb_t != 0
        self.indptr = np.concatenate([[0], np.cumsum(nz.sum(1))]).astype(np.int64)
        rows, cols = np.nonzero(nz)
        self.cols = cols.astype(np.int64)
        self.w64 = fb_t[rows, cols]
        self.n_mels = fb.shape[0]
        # the same non-zeros by band (row-major): a band's bins are contiguous, so fb @ y is one short dot per band
        fb_np = fb_t.T
        nz_r = fb_np != 0
        self.band_ptr = np.concatenate([[0], np.cumsum(nz_r.sum(1))]).astype(np.int64)
        r_rows, r_cols = np.nonzero(nz_r)
        self.band_w64 = fb_np[r_rows, r_cols]
        self.band_w32 = self.band_w64.astype(np.float32)
        self.band_lo = np.array([r_cols[self.band_ptr[j]] if self.band_ptr[j + 1] > self.band_ptr[j] else 0
                                 for j in range(self.n_mels)], np.int64)
        if not all(np.all(np.diff(r_cols[self.band_ptr[j]:self.band_ptr[j + 1]]) == 1) for j in range(self.n_mels)):
            raise ValueError("a mel band's non-zero bins are not contiguous")


def magnitude_mel(spec_frames: torch.Tensor, csr: MelCSR, power: float) -> torch.Tensor:
    """Complex ``(B, T, F)`` frames -> mel ``(B, M, T)`` of ``|X|`` (power 1) or ``|X|^2`` (power 2)."""
    b, t, f = spec_frames.shape
    ri = torch.view_as_real(spec_frames.contiguous()).reshape(b * t, f, 2).numpy()
    w = csr.band_w64 if ri.dtype == np.float64 else csr.band_w32
    out = np.empty((b * t, csr.n_mels), dtype=ri.dtype)
    _magnitude_mel(ri, csr.band_ptr, csr.band_lo, w, power == 2.0, out)
    return torch.from_numpy(out).reshape(b, t, csr.n_mels).transpose(1, 2)


# fastmath: the division and square root vectorise (about 1.5x faster here); alpha and tiny (1e-16) come
# in the arrays' dtype, so float32 spectra are not promoted to float64 arithmetic
@numba.njit(cache=True, parallel=True, nogil=True, fastmath=True)
def _gl_spectral(rebuilt, tprev, mag, alpha, tiny, spec):
    """Fast Griffin-Lim's spectral step, one pass: ``a = R - alpha P``; ``spec = mag * a / |a|``.

    All arrays are ``(B * T, F)``; complex ones as ``(..., 2)`` real views.
    """
    n, f = mag.shape
    for t in numba.prange(n):
        for k in range(f):
            re = rebuilt[t, k, 0] - alpha * tprev[t, k, 0]
            im = rebuilt[t, k, 1] - alpha * tprev[t, k, 1]
            s = mag[t, k] / (np.sqrt(re * re + im * im) + tiny)
            spec[t, k, 0] = re * s
            spec[t, k, 1] = im * s


@numba.njit(cache=True, parallel=True, nogil=True)
def _gl_resynth(frames, window, hop, inv_env, n_valid, buf, y_out):
    """Overlap-add + envelope + length mask, then re-frame and window, one item per thread.

    frames: (B, T, n_fft) inverse FFTs (only the first ``win`` samples are used);
    inv_env: (B, L) 1 / window-square envelope; n_valid: (B,) valid samples;
    buf: (B, T, n_fft) whose first ``win`` columns receive the next windowed frames;
    y_out: (B, L) the signal.
    """
    b_n, t_n = frames.shape[0], frames.shape[1]
    win = window.shape[0]
    half = win // 2
    length = y_out.shape[1]
    for b in numba.prange(b_n):
        total = (t_n - 1) * hop + win
        acc = np.zeros(total, frames.dtype)
        for t in range(t_n):
            base = t * hop
            for i in range(win):
                acc[base + i] += frames[b, t, i] * window[i]
        nv = n_valid[b]
        for i in range(length):
            j = i + half
            v = acc[j] * inv_env[b, i] if (j < total and i < nv) else 0.0
            y_out[b, i] = v
        for t in range(t_n):
            start = t * hop - half
            for i in range(win):
                s = start + i
                buf[b, t, i] = y_out[b, s] * window[i] if 0 <= s < length else 0.0


def gl_spectral(rebuilt: torch.Tensor, tprev: torch.Tensor | None, mag: torch.Tensor, alpha: float) -> torch.Tensor:
    """``mag * a / |a|`` with ``a = rebuilt - alpha * tprev`` for complex ``(B, T, F)`` CPU tensors."""
    b, t, f = rebuilt.shape
    r = torch.view_as_real(rebuilt).reshape(b * t, f, 2).numpy()
    p = r if tprev is None else torch.view_as_real(tprev).reshape(b * t, f, 2).numpy()
    out = torch.empty_like(rebuilt)
    o = torch.view_as_real(out).reshape(b * t, f, 2).numpy()
    m = mag.reshape(b * t, f).numpy()
    _gl_spectral(r, p, m, m.dtype.type(0.0 if tprev is None else alpha), m.dtype.type(1e-16), o)
    return out


def gl_resynth(frames: torch.Tensor, window: torch.Tensor, hop: int, inv_env: torch.Tensor, n_valid: torch.Tensor,
               buf: torch.Tensor, length: int) -> torch.Tensor:
    """Signal ``(B, length)`` from inverse-FFT frames; also fills ``buf`` with its windowed frames."""
    y = torch.empty(frames.shape[0], length, dtype=frames.dtype)
    _gl_resynth(frames.numpy(), window.numpy(), hop, inv_env.numpy(), n_valid.numpy(), buf.numpy(), y.numpy())
    return y


@numba.njit(cache=True, parallel=True, nogil=True, fastmath={"reassoc", "contract"})
def _nnls_frames(u, mel, indptr, cols, weights, band_ptr, band_lo, band_w, step, n_iter, out):
    """Projected accelerated gradient (FISTA) for ``min ||fb s - mel||^2, s >= 0``, one frame per task.

    u, mel: (N, M) start coefficients (``s0 = max(fb^T u, 0)``) and targets; out: (N, F).
    The filterbank is stored by band (``band_*``: ``fb y`` is one short dot product per
    band) and by frequency bin (``indptr``, ``cols``, ``weights``: ``fb^T r`` has at
    most two terms per bin), as :class:`MelCSR`: each is one pass over its ~2F
    non-zeros without scattered writes; a frame's iterates (two F-vectors, one M-vector) stay in L1 cache.
    Accumulates in float64 whatever the output dtype; values below 1e-35 are set to 0
    (no subnormals reach the Griffin-Lim iterations).
    """
    n, f = out.shape
    m = mel.shape[1]
    for t in numba.prange(n):
        s = np.empty(f, np.float64)
        y = np.empty(f, np.float64)
        r = np.empty(m, np.float64)
        for k in range(f):
            acc = 0.0
            for j in range(indptr[k], indptr[k + 1]):
                acc += weights[j] * u[t, cols[j]]
            v = acc if acc > 1e-35 else 0.0
            s[k] = v
            y[k] = v
        tk = 1.0
        for _ in range(n_iter):
            for j in range(m):
                r[j] = _band_dot(band_ptr, band_lo, band_w, y, j) - mel[t, j]
            t_new = (1.0 + np.sqrt(1.0 + 4.0 * tk * tk)) / 2.0
            beta = (tk - 1.0) / t_new
            for k in range(f):
                g = 0.0
                for j in range(indptr[k], indptr[k + 1]):
                    g += weights[j] * r[cols[j]]
                sn = y[k] - step * g
                if sn < 1e-35:
                    sn = 0.0
                y[k] = sn + beta * (sn - s[k])
                s[k] = sn
            tk = t_new
        for k in range(f):
            out[t, k] = s[k]


def nnls_frames(u: torch.Tensor, mel: torch.Tensor, csr: MelCSR, step: float, n_iter: int) -> torch.Tensor:
    """Non-negative ``S`` ``(B, T, F)`` (frame-major) from start coefficients and mel targets ``(B, T, M)`` (CPU)."""
    b, t, m = mel.shape
    un = u.reshape(b * t, m).contiguous().numpy()
    mn = mel.reshape(b * t, m).contiguous().numpy()
    out = np.empty((b * t, csr.indptr.shape[0] - 1), dtype=mn.dtype)
    _nnls_frames(un.astype(np.float64, copy=False), mn.astype(np.float64, copy=False), csr.indptr, csr.cols, csr.w64,
                 csr.band_ptr, csr.band_lo, csr.band_w64, float(step), int(n_iter), out)
    return torch.from_numpy(out).reshape(b, t, -1)


# --- saying so when the kernels are compiled (once after installing or upgrading) -----------------------------
# Kept at the end of the module: numba's cache files are named by each kernel's line number.
COMPILE_NOTE = "compiling the CPU kernels (once after installing, ~10 s)..."
_announced = False


def _cache_is_cold(kernel) -> bool:
    """True when numba has no usable cached machine code for ``kernel`` (nothing compiled in this process, and
    its on-disk index is missing or belongs to another version of this file). Any doubt: False (say nothing)."""
    if kernel.signatures:  # already compiled or loaded in this process
        return False
    try:
        return not kernel._cache._cache_file._load_index()  # {} when missing or stale (numba's own check)
    except Exception:
        return False


def announce_compile(kernel) -> None:
    """Print :data:`COMPILE_NOTE` to stderr, once per process, when ``kernel`` is about to be compiled."""
    global _announced
    if not _announced and _cache_is_cold(kernel):
        import sys

        _announced = True
        print(COMPILE_NOTE, file=sys.stderr, flush=True)


def _announcing(fn, kernel):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not kernel.signatures:
            announce_compile(kernel)
        return fn(*args, **kwargs)

    return wrapper


magnitude_mel = _announcing(magnitude_mel, _magnitude_mel)
gl_spectral = _announcing(gl_spectral, _gl_spectral)
gl_resynth = _announcing(gl_resynth, _gl_resynth)
nnls_frames = _announcing(nnls_frames, _nnls_frames)
