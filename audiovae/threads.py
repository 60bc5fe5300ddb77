"""How many CPU threads the heavy work uses, on a machine that may be doing something else.

torch's and numba's parallel kernels share one GNU OpenMP pool (numba's ``omp``
threading layer loads the same ``libgomp`` as torch). Its workers wait for each
other at the end of every parallel region, so when another busy process holds
one of the CPUs, a worker the scheduler has parked stalls every region: beside
one busy process at normal priority a 2-thread training step of the conv model
ran 3x slower than with 1 thread (measured on 2 cores, see ISSUE 18 /
``benchmarks/bench_contention.py``), while on an idle machine 2 threads are
10-40% faster than 1. Hence the policy:

* the budget is the CPUs this process may use: ``os.sched_getaffinity`` and the
  cgroup CPU quota (``cpu.max`` of cgroup v2, ``cpu.cfs_quota_us`` of v1);
* ``threads=N`` / ``--threads N`` (N > 0) fixes the count; so does an
  ``OMP_NUM_THREADS`` the user set. Otherwise (auto) a short probe at the start
  times a parallel op at 1 and at N threads and keeps the faster, and long jobs
  (training) repeat that comparison on their own steps every
  ``AdaptiveThreads.interval`` seconds, so a competitor that appears mid-run
  is noticed;
* numba's pool size follows torch's (today numba's first parallel kernel reset
  the shared pool to every core, overriding ``OMP_NUM_THREADS``);
* DataLoader workers compute with 1 thread each (no nested parallelism).

``AUDIOVAE_THREADS_POLICY=off`` switches all of it off (the old behaviour, for
comparisons).

Tried and left out: passive waiting (``OMP_WAIT_POLICY=passive``) and shorter
spinning (``GOMP_SPINCOUNT``) make a parked worker cost less, but every parallel
region then waits for a thread to wake: alone on 2 cores the conv training step
fell from 43 to 17-29 steps/s (passive) and to 31 (spin count 3000).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from audiovae.errors import ConfigError

POLICY_ENV = "AUDIOVAE_THREADS_POLICY"
# a 1-thread window must be this much faster than the N-thread one to be chosen: on an idle machine
# N threads win by 10-40%, beside a busy process 1 thread wins by 2-3x, so noise does not flip the choice
PREFER_ONE = 0.85
# the start-up probe's workload is less sensitive to a parked worker than a training step (1.5-2x instead of 3x
# beside a busy process; on an idle machine N threads run it 1.7x faster), so there the faster one simply wins
PROBE_PREFER_ONE = 1.0


def policy_on() -> bool:
    return os.environ.get(POLICY_ENV, "").strip().lower() not in ("off", "0", "no", "false")


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """CPUs the cgroup quota allows (quota / period), or None when there is no quota."""
    root = Path(root)
    try:  # cgroup v2: "max 100000" or "150000 100000"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max" and float(period) > 0:
            return float(quota) / float(period)
        return None
    except (OSError, ValueError):
        pass
    for sub in ("cpu", "cpu,cpuacct", "."):  # cgroup v1
        try:
            quota = float((root / sub / "cpu.cfs_quota_us").read_text())
            period = float((root / sub / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def cpu_budget(cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup CPU quota (rounded up)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cgroup_cpu_limit(cgroup_root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota - 1e-9)))
    return max(1, n)


def _env_threads() -> int | None:
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        return None
    return n if n > 0 else None


def resolve(threads: int = 0, share: int = 1, cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> tuple[int, bool]:
    """(threads to use, whether to choose adaptively between 1 and that many) for a ``threads`` setting;
    ``share``: processes of the same job on this machine (torchrun's local world size) splitting the budget."""
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise ConfigError(f"threads must be 0 (auto) or a positive number of threads, got {threads!r}")
    if threads > 0:
        return threads, False
    user = _env_threads()
    if user is not None:
        return user, False
    n = max(1, cpu_budget(cgroup_root) // max(1, share))
    return n, n > 1


def _numba_threads(n: int, launch: bool) -> None:
    """Make numba's pool size follow torch's: before numba is imported through the environment; with
    ``launch`` (or once numba is imported) by starting its pool now and setting its size, since starting
    it resets the shared OpenMP thread count to numba's (every core unless told)."""
    if "numba" not in sys.modules and "NUMBA_NUM_THREADS" not in os.environ:
        os.environ["NUMBA_NUM_THREADS"] = str(n)
    if not launch and "numba" not in sys.modules:
        return
    import numba
    import torch

    try:
        from numba.np.ufunc.parallel import _launch_threads

        _launch_threads()
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # a threading layer that cannot start here: numba runs its kernels serially then
        pass
    torch.set_num_threads(n)


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch's and numba's kernels from now on."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if "numba" in sys.modules:
        import numba

        try:
            numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
        except Exception:
            pass


def _probe_op(n: int) -> float:
    """Seconds for a fixed parallel workload at ``n`` threads (elementwise ops and a small matmul,
    many short parallel regions, as in a training step or a Griffin-Lim iteration)."""
    import torch

    set_threads(n)
    if not hasattr(_probe_op, "x"):
        _probe_op.x = torch.rand(1 << 16)
    x = _probe_op.x
    t0 = time.perf_counter()
    for _ in range(60):
        x = torch.tanh(x)
    return time.perf_counter() - t0


def probe(n: int, rounds: int = 7, timer: Callable[[int], float] = _probe_op) -> int:
    """1 or ``n``: whichever runs a short parallel workload faster right now (interleaved rounds, medians)."""
    if n <= 1:
        return n
    timer(n), timer(1)  # warm-up: start the pool, allocate
    many, one = [], []
    for _ in range(rounds):
        many.append(timer(n))
        one.append(timer(1))
    return 1 if statistics.median(one) < PROBE_PREFER_ONE * statistics.median(many) else n


class AdaptiveThreads:
    """Chooses between 1 and ``n`` threads from the job's own units of work (training steps...).

    Call :meth:`tick` after each unit. Every ``interval`` seconds (and once after
    ``warmup`` units at the start) it runs ``window`` units at 1 thread and
    ``window`` at ``n``, and keeps 1 thread only when its median unit time is
    below ``PREFER_ONE`` times that of ``n``. ``clock`` and ``set_threads`` are
    injectable for tests.
    """

    def __init__(self, n: int, interval: float = 20.0, window: int = 6, warmup: int = 3,
                 clock: Callable[[], float] = time.perf_counter, set_threads: Callable[[int], None] = set_threads,
                 current: int | None = None):
        self.n, self.interval, self.window, self.warmup = n, interval, window, warmup
        self.clock, self._set = clock, set_threads
        self.current = n if current is None else current
        self.units = 0
        self.last = clock()
        self.next_probe = None  # the first probe comes after `warmup` units
        self.plan: list[int] = []  # thread counts of the probe units still to run
        self.times: dict[int, list[float]] = {}
        self.choices: list[int] = []  # each probe's outcome (for tests and logs)
        self.fresh = False

    def _start_probe(self) -> None:
        # each half starts with one unit that is not timed (the switch itself, caches)
        self.plan = [1] * (self.window + 1) + [self.n] * (self.window + 1)
        self.times = {1: [], self.n: []}
        self._switch(self.plan[0])
        self.fresh = True

    def _switch(self, k: int) -> None:
        if k != self.current:
            self._set(k)
            self.current = k

    def tick(self) -> None:
        now = self.clock()
        dt, self.last = now - self.last, now
        self.units += 1
        if self.n <= 1:
            return
        if self.plan:
            k = self.plan.pop(0)
            if not self.fresh:
                self.times[k].append(dt)
            if self.plan:
                self.fresh = self.plan[0] != k
                self._switch(self.plan[0])
                return
            one, many = statistics.median(self.times[1]), statistics.median(self.times[self.n])
            best = 1 if one < PREFER_ONE * many else self.n
            self.choices.append(best)
            self._switch(best)
            self.next_probe = now + self.interval
            self.last = self.clock()
            return
        if self.next_probe is None:
            if self.units >= self.warmup:
                self._start_probe()
        elif now >= self.next_probe:
            self._start_probe()


def apply(threads: int = 0, numba: bool = False, adaptive_probe: bool = True, share: int = 1) -> tuple[int, bool]:
    """Apply the policy for a job with the given ``threads`` setting (0 = auto).

    Returns (the most threads it may use, whether to adapt between 1 and that
    many). ``numba=True`` also sizes numba's pool now (commands that run its
    parallel kernels); with ``adaptive_probe`` an auto setting starts at
    whichever of 1 or N threads a short probe finds faster right now.
    """
    n, adaptive = resolve(threads, share)
    if not policy_on():
        if threads > 0:
            set_threads(threads)
        return _current(), False
    _numba_threads(n, launch=numba)
    set_threads(n)
    if adaptive and adaptive_probe:
        set_threads(probe(n))
    return n, adaptive


def _current() -> int:
    import torch

    return torch.get_num_threads()


def worker_init_fn(worker_id: int) -> None:
    """DataLoader workers compute with one thread: the main process and the other workers have the rest."""
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # for anything the worker starts
