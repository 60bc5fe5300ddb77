"""Log-mel -> waveform: mel inversion, phase initialisation and fast Griffin-Lim."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Literal

import torch
from torch import nn

from audiovae.audio import functional as AF
from audiovae.audio.config import (
    NNLS_ITERS,
    VOCODER_ITERS,
    VOCODER_ITERS_PARALLEL_PGHI,
    MelConfig,
)
from audiovae.errors import InvalidFeatureError

Init = Literal["pghi", "pghi_heap", "pghi_parallel", "random", "zeros"]
MelInverse = Literal["nnls", "pinv"]


def mel_solver(fb: torch.Tensor, rcond: float = 1e-9) -> tuple[torch.Tensor, float]:
    """What :func:`mel_to_linear` needs from a filterbank ``(M, F)``, computed once.

    Returns the pseudo-inverse of ``fb fb^T`` (float64 ``(M, M)``, from its
    eigendecomposition with eigenvalues below ``rcond`` times the largest dropped)
    and the projected-gradient step ``1 / ||fb||_2^2``. The pseudo-inverse gives the
    minimum-norm least-squares start ``fb^T (fb fb^T)^+ mel`` for every filterbank,
    including rank-deficient ones (e.g. 256 mels with ``n_fft=1024``, rank 218),
    where a Cholesky factorisation fails.
    """
    fb64 = fb.detach().double().cpu()
    evals, evecs = torch.linalg.eigh(fb64 @ fb64.T)
    keep = evals > rcond * evals[-1]
    inv = torch.where(keep, 1.0 / torch.where(keep, evals, torch.ones_like(evals)), torch.zeros_like(evals))
    return (evecs * inv) @ evecs.T, 1.0 / float(evals[-1])


@contextlib.contextmanager
def flush_denormal() -> Iterator[None]:
    """Flush subnormal floats to zero inside the block, then restore the caller's setting.

    torch has no getter for the flag, so the current state is read by a probe: a
    float32 subnormal times one is zero exactly when flushing is on.
    """
    before = flush_denormal_enabled()
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported and not before:
            torch.set_flush_denormal(False)


def flush_denormal_enabled() -> bool:
    """Whether this thread flushes float32 subnormals to zero (``torch.set_flush_denormal``)."""
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    return bool((tiny * torch.tensor([1.0], dtype=torch.float32))[0] == 0)


def mel_to_linear(
    mel: torch.Tensor,
    fb: torch.Tensor,
    blocks: list[AF.Block] | None = None,
    method: MelInverse = "nnls",
    n_iter: int = 20,
    solver: tuple[torch.Tensor, float] | None = None,
    csr=None,
    frame_major: bool = False,
) -> torch.Tensor:
    """Non-negative ``S`` ``(B, F, T)`` with ``fb @ S ~= mel`` for ``mel`` ``(B, M, T)``, on ``mel``'s device.

    ``"nnls"`` solves ``min ||fb S - mel||^2, S >= 0`` per frame: it starts from
    the clamped minimum-norm solution ``max(fb^T (fb fb^T)^+ mel, 0)`` and runs
    ``n_iter`` steps of accelerated projected gradient (FISTA) with the banded
    filterbank: on 16 clips of speech the relative mel residual goes from 1.9e-3
    (the clamped start) to 2e-4 after 20 steps and 6e-5 after 30. ``"pinv"`` is
    the clamped minimum-norm solution alone. ``solver`` is :func:`mel_solver`'s
    result, to avoid recomputing it on every call. ``csr`` (a
    :class:`~audiovae.audio._cpu_kernels.MelCSR`) runs the iterations on a CPU as
    one fused kernel per frame; otherwise they are torch operations (banded
    products on a CPU, dense matrix products elsewhere). With ``frame_major`` the
    result is returned as a ``(B, T, F)`` tensor instead (what Griffin-Lim uses).
    """
    if blocks is None:
        blocks = AF.banded_blocks(fb)
    if method not in ("nnls", "pinv"):
        raise ValueError(f"unknown mel inversion {method!r}; choose nnls or pinv")
    dtype = mel.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    pinv, step = solver if solver is not None else mel_solver(fb)
    lead = mel.shape[:-2]
    mel3 = mel.reshape(-1, *mel.shape[-2:]).to(work).clamp_min(0)
    # u = (fb fb^T)^+ mel, frame-major (B, T, M): one matrix product
    u = torch.matmul(mel3.transpose(1, 2), pinv.to(device=mel.device, dtype=work))
    if mel.device.type == "cpu" and csr is not None and method == "nnls":
        from audiovae.audio import _cpu_kernels as K

        s_tf = K.nnls_frames(u, mel3.transpose(1, 2), csr, step, n_iter)
    else:
        s_tf = _mel_to_linear_torch(u, mel3.transpose(1, 2), fb.to(device=mel.device, dtype=work), blocks, step,
                                    method, n_iter)
    s_tf = s_tf.reshape(*lead, mel.shape[-1], fb.shape[1]).to(dtype)
    return s_tf if frame_major else s_tf.transpose(-1, -2)


def _mel_to_linear_torch(u, mel_tf, fbw, blocks, step, method, n_iter):
    """The iterations as torch operations on frame-major ``(B, T, M)`` arrays -> ``(B, T, F)``."""
    if mel_tf.device.type == "cpu":
        # banded products, a few items at a time so the iterates stay in cache (the loop is memory-bound)
        fwd = lambda v: AF.banded_matmul(fbw, blocks, v.transpose(1, 2)).transpose(1, 2)  # noqa: E731
        bwd = lambda r: AF.banded_matmul(fbw, blocks, r.transpose(1, 2), transpose=True).transpose(1, 2)  # noqa: E731
        chunk = 2
    else:
        fb_t = fbw.T.contiguous()
        fwd = lambda v: torch.matmul(v, fb_t)  # noqa: E731  (B, T, F) @ (F, M): one GEMM
        bwd = lambda r: torch.matmul(r, fbw)  # noqa: E731
        chunk = u.shape[0]
    outs = []
    with flush_denormal():  # silent frames drive iterates to slow subnormals
        for i in range(0, u.shape[0], chunk):
            s = bwd(u[i : i + chunk]).clamp_min_(0)
            if method == "nnls":
                s = _fista(s, mel_tf[i : i + chunk], fwd, bwd, step, n_iter)
            outs.append(s)
    return torch.cat(outs, 0)


def _fista(s, target, fwd, bwd, step, n_iter):
    y = s
    t = 1.0
    for _ in range(n_iter):
        grad = bwd(fwd(y) - target)
        s_new = torch.add(y, grad, alpha=-step).clamp_min_(0)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = torch.add(s_new, s_new - s, alpha=(t - 1) / t_new)
        s, t = s_new, t_new
    return s


def resolve_init(init: Init, device: torch.device) -> Init:
    """The initial phase ``init`` names on ``device``: ``"pghi"`` is the heap on a CPU, the parallel one elsewhere."""
    if init == "pghi":
        return "pghi_heap" if torch.device(device).type == "cpu" else "pghi_parallel"
    return init


def default_iters(init: Init | torch.Tensor, device: torch.device) -> int:
    """Griffin-Lim iterations by default: ``VOCODER_ITERS`` (40), or ``VOCODER_ITERS_PARALLEL_PGHI`` (64)
    from the parallel PGHI, whose start is less consistent than the heap's (docs/vocoder_perf.md)."""
    if isinstance(init, str) and resolve_init(init, device) == "pghi_parallel":
        return VOCODER_ITERS_PARALLEL_PGHI
    return VOCODER_ITERS


# Mel-consistency correction (docs/vocoder_perf.md, "Wideband speech"): before the last MEL_GAIN_ITERS
# iterations, the target magnitude is scaled, per frame and mel band, by how far the mel spectrum of
# the current consistent estimate falls short of (or exceeds) the log-mel's, within 1/MEL_GAIN_MAX..MEL_GAIN_MAX.
MEL_GAIN_ITERS = 4
MEL_GAIN_MAX = 1.1


def mel_gain(
    rebuilt_tf: torch.Tensor,
    mel_tf: torch.Tensor,
    fb: torch.Tensor,
    power: float,
    max_gain: float = MEL_GAIN_MAX,
    blocks: list[AF.Block] | None = None,
) -> torch.Tensor:
    """Per-bin gain ``(B, T, F)`` that moves the mel spectrum of ``rebuilt_tf`` towards ``mel_tf``.

    ``rebuilt_tf``: complex STFT ``(B, T, F)`` of the current signal; ``mel_tf``: the target linear
    mel spectrum ``(B, T, M)`` (of ``|X| ** power``); ``fb``: the filterbank ``(M, F)``. Band ``m``
    of frame ``t`` asks for ``g = (mel / (fb |R| ** power)) ** (1 / power)``, clamped to
    ``[1 / max_gain, max_gain]``; bin ``k`` gets the filterbank-weighted mean of its bands' gains,
    ``sum_m fb[m, k] g_m / sum_m fb[m, k]`` (1 for a bin no band covers). ``blocks``
    (:func:`AF.banded_blocks` of ``fb``) computes the products band by band on a CPU.
    """
    mag = AF.magnitude(rebuilt_tf)
    p = mag if power == 1.0 else mag.pow(power)
    fbw = fb.to(device=p.device, dtype=p.dtype)
    if blocks is not None:
        fwd = AF.banded_matmul(fbw, blocks, p.transpose(1, 2)).transpose(1, 2)
    else:
        fwd = torch.matmul(p, fbw.T)
    g = (mel_tf.to(p.dtype) / fwd.clamp_min(torch.finfo(p.dtype).tiny)).clamp(min=0)
    if power != 1.0:
        g = g.pow(1.0 / power)
    g = g.clamp(1.0 / max_gain, max_gain)
    cover = fbw.sum(0)
    if blocks is not None:
        num = AF.banded_matmul(fbw, blocks, (g - 1).transpose(1, 2), transpose=True).transpose(1, 2)
    else:
        num = torch.matmul(g - 1, fbw)
    # 1 + weighted mean of (g - 1): exactly 1 where no band covers a bin
    return 1 + num / torch.where(cover > 0, cover, torch.ones_like(cover))


def initial_phase(
    mag: torch.Tensor,
    cfg: MelConfig,
    init: Init = "pghi",
    seed: int = 0,
    generator: torch.Generator | None = None,
    n_frames: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unit-modulus complex ``(B, F, T)`` starting phase for :func:`griffin_lim`, on ``mag``'s device.

    - ``"pghi"``: phase-gradient integration from the magnitude: the heap
      integration (:func:`audiovae.audio.pghi.pghi`, numba) for CPU tensors, the
      parallel one (``"pghi_parallel"``) on any other device, with no host copy;
    - ``"pghi_heap"`` / ``"pghi_parallel"``: either of the two explicitly (the heap
      runs on the CPU, its result is copied to ``mag``'s device);
    - ``"random"``: uniform phase, drawn on ``mag``'s device (from ``generator``, or
      a generator on that device seeded with ``seed``);
    - ``"zeros"``: zero phase.

    ``n_frames`` ``(B,)`` keeps each item of a padded batch to its own frames.
    ``known`` (complex ``(B, F, K)``, the convention of :func:`audiovae.audio.functional.stft`):
    the phase of the first ``K`` frames, kept as it is; the PGHI integration continues from
    it (how a chunk of a long signal continues the previous chunk's phase).
    """
    cdtype = torch.complex128 if mag.dtype == torch.float64 else torch.complex64
    if init in ("zeros", "random"):
        if init == "zeros":
            out = torch.ones(mag.shape, dtype=cdtype, device=mag.device)
        else:
            if generator is None:
                generator = torch.Generator(device=mag.device).manual_seed(seed)
            ph = torch.rand(mag.shape, generator=generator, dtype=mag.dtype, device=mag.device) * (2 * math.pi)
            out = torch.polar(torch.ones_like(ph), ph)
        if known is not None:
            out[..., : known.shape[-1]] = _unit(known).to(cdtype)
        return out
    init = resolve_init(init, mag.device)
    # time-invariant phase <-> phase referenced to the start of the window (see functional.stft)
    k = torch.arange(mag.shape[1], device=mag.device, dtype=mag.dtype)[None, :, None]
    shift = (math.pi * cfg.win_length / cfg.n_fft) * k
    known_ti = None if known is None else torch.angle(known).to(mag.dtype) + shift
    if init == "pghi_heap":
        from audiovae.audio.pghi import pghi

        nf = None if n_frames is None else torch.as_tensor(n_frames).cpu().numpy()
        kn = None if known_ti is None else known_ti.detach().cpu().numpy()
        ph = pghi(mag.detach().cpu().numpy(), cfg.n_fft, cfg.hop_length, cfg.win_length, seed=seed, n_frames=nf,
                  known=kn)
        ph = torch.from_numpy(ph).to(device=mag.device, dtype=mag.dtype)
    elif init == "pghi_parallel":
        from audiovae.audio.pghi import pghi_torch

        if known_ti is None or known_ti.shape[-1] == 0:
            ph = pghi_torch(mag, cfg.n_fft, cfg.hop_length, cfg.win_length, n_frames=n_frames)
        else:  # the scan starts at the last known frame
            kk = known_ti.shape[-1]
            ph = torch.cat([known_ti[..., : kk - 1], pghi_torch(mag[..., kk - 1:], cfg.n_fft, cfg.hop_length,
                                                                cfg.win_length, phase0=known_ti[..., kk - 1:])], -1)
    else:
        raise ValueError(f"unknown initial phase {init!r}; choose pghi, pghi_heap, pghi_parallel, random or zeros")
    ph = ph - shift
    return torch.polar(torch.ones_like(ph), ph)


def _unit(c: torch.Tensor) -> torch.Tensor:
    """``c / |c|`` (1 where ``c`` is 0)."""
    m = c.abs()
    return torch.where(m > 0, c / m.clamp_min(torch.finfo(m.dtype).tiny), torch.ones_like(c))


def griffin_lim(
    mag: torch.Tensor,
    cfg: MelConfig,
    n_iter: int | None = None,
    momentum: float = 0.99,
    init: Init | torch.Tensor = "pghi",
    lengths: torch.Tensor | None = None,
    length: int | None = None,
    window: torch.Tensor | None = None,
    seed: int = 0,
    mel: torch.Tensor | None = None,
    fb: torch.Tensor | None = None,
    mel_gain_iters: int = MEL_GAIN_ITERS,
    mel_gain_max: float = MEL_GAIN_MAX,
    fb_blocks: list[AF.Block] | None = None,
) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013): magnitude ``(B, F, T)`` -> waveform ``(B, N)``.

    ``N`` is ``length`` or ``(T - 1) * hop``. With per-item sample ``lengths``
    ``(B,)``, each item of the batch is inverted exactly as it would be alone
    (samples past its length are kept at zero in every iteration) and the output
    is zero past each item's length. ``init`` names a starting phase (see
    :func:`initial_phase`) or is a complex tensor. ``n_iter=None``: 40 iterations, 64 from the
    parallel PGHI (:func:`default_iters`). Runs on ``mag``'s device.

    With the target linear mel spectrum ``mel`` ``(B, M, T)`` and its filterbank ``fb`` ``(M, F)``
    (what :class:`GriffinLimVocoder` passes), the magnitude is corrected once, before the last
    ``mel_gain_iters`` iterations (at the start if there are fewer), by :func:`mel_gain` of
    the current estimate: the mel-consistency correction (docs/vocoder_perf.md).
    """
    if mag.dim() != 3:
        raise InvalidFeatureError(f"expected a magnitude of shape (B, F, T), got {tuple(mag.shape)}")
    if mag.shape[1] != cfg.n_freqs:
        raise InvalidFeatureError(f"expected {cfg.n_freqs} frequency bins for n_fft={cfg.n_fft}, got {mag.shape[1]}")
    device, dtype = mag.device, mag.dtype
    if n_iter is None:
        n_iter = default_iters(init, device)
    t = mag.shape[-1]
    n = length if length is not None else (t - 1) * cfg.hop_length
    n_frames = None
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=device)
        n = max(n, int(lengths.max()))
        sample_mask = (torch.arange(n, device=device)[None, :] < lengths[:, None]).to(dtype)
        n_frames = AF.num_frames(lengths, cfg.hop_length).clamp_max(t)
        frame_mask = torch.arange(t, device=device)[None, :] < n_frames[:, None]
        mag = mag * frame_mask[:, None, :]
    if window is None:
        window = torch.hann_window(cfg.win_length, periodic=True, dtype=dtype, device=device)
    env = AF.window_envelope(window, cfg.hop_length, t, n, None if n_frames is None else frame_mask)
    angles = init if isinstance(init, torch.Tensor) else initial_phase(mag, cfg, init, seed, n_frames=n_frames)
    # Work in the FFT's own (B, T, F) layout; every step below is one pass over contiguous memory.
    mag_tf = mag.transpose(1, 2).contiguous()
    a = angles.transpose(1, 2).contiguous()
    buf = torch.zeros(mag.shape[0], t, cfg.n_fft, dtype=dtype, device=device)
    alpha = momentum / (1 + momentum)
    gain_at, correct = -1, None
    if mel is not None:
        if fb is None:
            raise ValueError("griffin_lim: mel needs its filterbank fb")
        gain_at = max(0, n_iter - mel_gain_iters)
        # banded products for the fused CPU loop (``fb_blocks``: :func:`AF.banded_blocks` of ``fb``, computed
        # once by the vocoder), dense ones on the torch path, which asks the device for nothing
        blocks = None
        if device.type == "cpu" and use_cpu_kernels:
            blocks = fb_blocks if fb_blocks is not None else AF.banded_blocks(fb)
        mel_tf = mel.transpose(1, 2)

        def correct(rebuilt: torch.Tensor, mag_tf: torch.Tensor, items: slice = slice(None)) -> torch.Tensor:
            return mag_tf * mel_gain(rebuilt, mel_tf[items], fb, cfg.power, mel_gain_max, blocks)
    if device.type == "cpu" and use_cpu_kernels:
        return _griffin_lim_cpu(mag_tf, a, cfg, n_iter, alpha, window, env, lengths, n, buf, gain_at, correct)

    def synth(a: torch.Tensor) -> torch.Tensor:
        # mag * a / |a|, as real arithmetic on the complex tensor's (re, im) view
        scale = mag_tf / (AF.magnitude(a) + 1e-16)
        spec = torch.view_as_complex(torch.view_as_real(a) * scale.unsqueeze(-1))
        y = AF.istft_frames(spec, window, cfg.n_fft, cfg.hop_length, n, env)
        return y * sample_mask if lengths is not None else y

    tprev = None
    for i in range(n_iter):
        rebuilt = AF.stft_frames(synth(a), window, cfg.n_fft, cfg.hop_length, buf)
        if i == gain_at:
            mag_tf = correct(rebuilt, mag_tf)
        a = rebuilt if tprev is None else torch.add(rebuilt, tprev, alpha=-alpha)
        tprev = rebuilt
    return synth(a)


use_cpu_kernels = True  # fused numba kernels on CPU; the torch path runs everywhere (tests compare both)


# Bytes of frames per pass of the CPU loop (at least one item per thread). Each pass keeps about five
# arrays of its frames' size (spectra, frames, the previous estimate), so 8 MiB of real frames (1,024
# frames at n_fft=2048 in float32) keep a pass in a 32-MB L3 cache: 16 clips of 10 s on 2 cores took
# 11.6 us per frame and iteration in passes of 1,024 frames, 22 us in one pass (docs/vocoder_perf.md).
# The overlap-add is parallel over items, hence the floor of one item per thread.
CPU_CHUNK_BYTES = 8 << 20


def _chunk_items(t: int, n_fft: int, itemsize: int) -> int:
    """Items per pass of the CPU Griffin-Lim loop for items of ``t`` frames."""
    return max(1, torch.get_num_threads(), CPU_CHUNK_BYTES // max(1, t * n_fft * itemsize))


def _griffin_lim_cpu(mag_tf, angles, cfg, n_iter, alpha, window, env, lengths, n, buf, gain_at=-1, correct=None):
    """The same iteration as the torch path, with the elementwise steps fused (see _cpu_kernels).

    Items are independent, so the batch runs in passes of :func:`_chunk_items` items.
    """
    b, t = mag_tf.shape[0], mag_tf.shape[1]
    inv_env = (1.0 / env).expand(b, n).contiguous() if env.dim() == 1 else (1.0 / env).contiguous()
    n_valid = (lengths.to(torch.int64) if lengths is not None else torch.full((b,), n, dtype=torch.int64)).contiguous()
    window = window.contiguous()
    step = _chunk_items(t, cfg.n_fft, mag_tf.element_size())
    parts = [_griffin_lim_cpu_chunk(mag_tf[i:i + step], angles[i:i + step], cfg, n_iter, alpha, window,
                                    inv_env[i:i + step], n_valid[i:i + step], n, buf[i:i + step], gain_at,
                                    None if correct is None else
                                    (lambda r, m, items=slice(i, i + step): correct(r, m, items)))
             for i in range(0, b, step)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _griffin_lim_cpu_chunk(mag_tf, angles, cfg, n_iter, alpha, window, inv_env, n_valid, n, buf, gain_at=-1,
                           correct=None):
    from audiovae.audio import _cpu_kernels as K

    spec = K.gl_spectral(angles, None, mag_tf, 0.0)  # mag * angles / |angles|
    tprev = None
    for i in range(n_iter):
        frames = torch.fft.irfft(spec, n=cfg.n_fft)
        K.gl_resynth(frames, window, cfg.hop_length, inv_env, n_valid, buf, n)
        rebuilt = torch.fft.rfft(buf)
        if i == gain_at:
            mag_tf = correct(rebuilt, mag_tf).contiguous()
        spec = K.gl_spectral(rebuilt, tprev, mag_tf, alpha)
        tprev = rebuilt
    frames = torch.fft.irfft(spec, n=cfg.n_fft)
    return K.gl_resynth(frames, window, cfg.hop_length, inv_env, n_valid, buf, n)


# A longer log-mel is inverted in chunks of CHUNK_FRAMES frames overlapping by OVERLAP_FRAMES (24 s and
# 1.5 s at 22,050 Hz and hop 256): memory of one chunk, whatever the input's length.
CHUNK_FRAMES = 2048
OVERLAP_FRAMES = 128


class GriffinLimVocoder(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> waveform ``(B, N)``: NNLS mel inversion + PGHI + fast Griffin-Lim.

    Buffers (window, filterbank, the mel solver) follow ``.to(device)``; every step
    runs on the log-mel's device with no host round trip, except the heap PGHI,
    which is used only for CPU tensors. Defaults: momentum 0.99,
    ``init="pghi"``: the heap phase-gradient integration on a CPU (numba), the
    parallel prefix-scan integration (:func:`audiovae.audio.pghi.pghi_torch`) on
    any other device; ``n_iter=None``: 40 iterations from the heap, 64 from the
    parallel integration (each at least as good as torchaudio's 100 on real speech), with the
    mel-consistency correction before the last 4 (``mel_correction``, see :func:`griffin_lim`). On a CPU the NNLS iterations and the Griffin-Lim steps run
    as fused numba kernels; elsewhere as torch operations that compute the same.
    ``forward(logmel, lengths=None, num_samples=None)``: ``lengths`` are valid
    frames per item; the output has ``(frames - 1) * hop`` samples per item
    unless ``num_samples`` ``(B,)`` gives the original lengths. A padded batch
    gives each item what it would get alone.

    A log-mel longer than ``chunk_frames`` (default 2,048 frames: 24 s at 22,050 Hz)
    is inverted in chunks of that many frames that overlap by ``overlap_frames``
    (128: 1.5 s), so memory stays that of one chunk however long the input. Each
    chunk's starting phase continues the previous chunk's result (the STFT phase of
    its output over the overlap, from which the PGHI integration goes on), and the
    chunks are cross-faded in the overlap, away from the chunks' edges. Shorter
    inputs take the one-pass path unchanged.
    """

    def __init__(
        self,
        config: MelConfig | None = None,
        n_iter: int | None = None,
        momentum: float = 0.99,
        init: Init = "pghi",
        mel_inverse: MelInverse = "nnls",
        nnls_iter: int = NNLS_ITERS,
        chunk_frames: int | None = CHUNK_FRAMES,
        overlap_frames: int = OVERLAP_FRAMES,
        mel_correction: bool = True,
    ):
        super().__init__()
        self.config = config or MelConfig()
        self.mel_correction = mel_correction
        self.n_iter, self.momentum, self.init = n_iter, momentum, init
        self.mel_inverse, self.nnls_iter = mel_inverse, nnls_iter
        self.chunk_frames, self.overlap_frames = chunk_frames, overlap_frames
        # called with the number of frames inverted so far in each call (e.g. a tqdm bar's update):
        # once per batch, or once per chunk of a long input
        self.progress = None
        cfg = self.config
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=True), persistent=False)
        fb = AF.mel_filterbank(cfg, torch.float64)
        self.blocks = AF.banded_blocks(fb)
        self.register_buffer("fb", fb.float(), persistent=False)
        pinv, self._step = mel_solver(fb)
        self.register_buffer("pinv", pinv, persistent=False)
        self._csr = None

    @property
    def csr(self):
        """The filterbank by frequency bin, for the fused CPU kernels (built on first use)."""
        if self._csr is None:
            from audiovae.audio._cpu_kernels import MelCSR

            self._csr = MelCSR(self.fb)
        return self._csr

    def magnitude(self, logmel: torch.Tensor) -> torch.Tensor:
        """Linear STFT magnitude ``(B, F, T)`` estimated from log-mel ``(B, n_mels, T)``."""
        check_logmel(logmel, self.config)
        mel = torch.exp(logmel)
        csr = self.csr if (logmel.device.type == "cpu" and use_cpu_kernels) else None
        # computed frame-major (B, T, F), the layout Griffin-Lim works in; returned as a (B, F, T) view
        s = mel_to_linear(mel, self.fb.to(logmel.dtype), self.blocks, self.mel_inverse, self.nnls_iter,
                          (self.pinv, self._step), csr=csr, frame_major=True)
        return (s.sqrt() if self.config.power == 2.0 else s).transpose(-1, -2)

    def forward(
        self, logmel: torch.Tensor, lengths: torch.Tensor | None = None, num_samples: torch.Tensor | None = None
    ) -> torch.Tensor:
        squeeze = logmel.dim() == 2
        if squeeze:
            logmel = logmel[None]
        if self.chunk_frames is not None and logmel.shape[-1] > self.chunk_frames:
            wave = self._forward_long(logmel, lengths, num_samples)
        else:
            wave = self._forward_once(logmel, lengths, num_samples)
            if self.progress is not None:
                self.progress(int(torch.as_tensor(lengths).sum()) if lengths is not None else logmel.shape[0] * logmel.shape[-1])
        return wave[0] if squeeze else wave

    def _forward_once(self, logmel, lengths, num_samples) -> torch.Tensor:
        mag = self.magnitude(logmel)
        hop = self.config.hop_length
        sample_lengths = None
        if num_samples is not None:
            sample_lengths = torch.as_tensor(num_samples, device=logmel.device).reshape(-1)
        elif lengths is not None:
            sample_lengths = (torch.as_tensor(lengths, device=logmel.device).reshape(-1) - 1) * hop
        length = int(sample_lengths.max()) if sample_lengths is not None else None
        return griffin_lim(
            mag, self.config, self.n_iter, self.momentum, self.init, sample_lengths, length, self.window.to(mag.dtype),
            mel=self._mel_target(logmel, mag.dtype), fb=self.fb, fb_blocks=self.blocks,
        )

    def _mel_target(self, logmel: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """The mel spectrum the last iterations' mel-consistency correction aims at (None: no correction)."""
        return torch.exp(logmel).to(dtype) if self.mel_correction else None

    def _forward_long(self, logmel, lengths, num_samples) -> torch.Tensor:
        """A batch with an item longer than ``chunk_frames``: item by item, the long ones in chunks."""
        check_logmel(logmel, self.config)
        b, _, t = logmel.shape
        hop = self.config.hop_length
        frames = [t] * b if lengths is None else [min(t, int(v)) for v in torch.as_tensor(lengths).reshape(-1)]
        if num_samples is not None:
            samples = [int(v) for v in torch.as_tensor(num_samples).reshape(-1)]
        else:
            samples = [(f - 1) * hop for f in frames]
        out = logmel.new_zeros(b, max(samples))
        for j in range(b):
            item = logmel[j, :, : frames[j]]
            if frames[j] > self.chunk_frames:
                y = self._invert_long(item, samples[j])
            else:
                y = self._forward_once(item[None], None, [samples[j]])[0]
                if self.progress is not None:
                    self.progress(frames[j])
            out[j, : samples[j]] = y[: samples[j]]
        return out

    def _invert_long(self, logmel: torch.Tensor, n: int) -> torch.Tensor:
        """Log-mel ``(n_mels, T)`` -> ``n`` samples, in overlapping chunks (see the class docstring)."""
        cfg = self.config
        hop, win, n_fft = cfg.hop_length, cfg.win_length, cfg.n_fft
        t = logmel.shape[-1]
        window = self.window.to(logmel.dtype)
        # frames within `edge` of a chunk's end see samples the chunk does not have: the cross-fade keeps
        # clear of them, and only the previous chunk's frames clear of them give the next one its phase
        edge = 2 + math.ceil(win / (2 * hop))
        overlap = max(self.overlap_frames, 4 * edge)
        size = max(self.chunk_frames, 2 * overlap)
        n_iter = self.n_iter if self.n_iter is not None else default_iters(self.init, logmel.device)
        out = logmel.new_zeros(n)
        prev, prev_a, a = None, 0, 0
        while True:
            e = t if t - (a + size) < overlap else a + size  # no short last chunk
            mag = self.magnitude(logmel[None, :, a:e])
            last = e == t
            length = max(1, n - a * hop) if last else (e - a - 1) * hop
            init: Init | torch.Tensor = self.init
            if prev is not None:
                f0 = a - prev_a
                known = torch.fft.rfft(AF.frame_range(prev[None], win, hop, f0, f0 + overlap - 2 * edge) * window,
                                       n=n_fft).transpose(1, 2)
                init = initial_phase(mag, cfg, self.init, known=known)
            y = griffin_lim(mag, cfg, n_iter, self.momentum, init, None, length, window,
                            mel=self._mel_target(logmel[None, :, a:e], mag.dtype), fb=self.fb, fb_blocks=self.blocks)[0]
            if prev is None:
                out[: min(n, len(y))] = y[: n]
            else:
                s0, s1 = (a + edge) * hop, min(n, (a + overlap - edge) * hop)
                ramp = torch.sin(0.5 * math.pi * (torch.arange(s1 - s0, device=y.device, dtype=y.dtype) + 0.5)
                                 / (s1 - s0)).square()
                out[s0:s1] = out[s0:s1] * (1 - ramp) + y[s0 - a * hop : s1 - a * hop] * ramp
                end = min(n, a * hop + len(y))
                out[s1:end] = y[s1 - a * hop : end - a * hop]
            if self.progress is not None:
                self.progress(e - (a + overlap if prev is not None else 0))
            if last:
                return out
            prev, prev_a, a = y, a, e - overlap


def check_logmel(logmel: torch.Tensor, cfg: MelConfig, source: str | None = None) -> None:
    """Raise :class:`InvalidFeatureError` unless ``logmel`` is a finite ``(..., n_mels, T)`` array."""
    if logmel.dim() not in (2, 3):
        raise InvalidFeatureError(f"expected log-mel of shape (n_mels, T) or (B, n_mels, T), got {tuple(logmel.shape)}", source)
    if logmel.shape[-2] != cfg.n_mels:
        raise InvalidFeatureError(
            f"expected {cfg.n_mels} mel bins, got array of shape {tuple(logmel.shape)}", source
        )
    if logmel.shape[-1] < 1:
        raise InvalidFeatureError("log-mel has no frames", source)
    if not torch.isfinite(logmel).all():
        raise InvalidFeatureError("log-mel contains NaN or infinite values", source)
