"""The CPU thread policy (audiovae/threads.py, issue 18): budget, overrides, numba, workers, the adaptive choice.

No timed assertions: timings are faked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audiovae import threads as T
from audiovae.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def auto_env(monkeypatch):
    """No user thread settings, the policy on, and torch's thread count restored afterwards."""
    for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", T.POLICY_ENV):
        monkeypatch.setenv(k, "")  # recorded, so that what the policy writes into os.environ is undone too
        monkeypatch.delenv(k)
    before = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(before)


def _cgroup_v2(tmp_path, text):
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def test_budget_is_affinity_capped_by_cgroup_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    empty = tmp_path / "none"
    empty.mkdir()
    assert T.cpu_budget(empty) == 8  # no cgroup files: the affinity mask
    (tmp_path / "a").mkdir()
    assert T.cpu_budget(_cgroup_v2(tmp_path / "a", "max 100000\n")) == 8  # v2 without a quota
    (tmp_path / "b").mkdir()
    assert T.cpu_budget(_cgroup_v2(tmp_path / "b", "150000 100000\n")) == 2  # 1.5 CPUs: rounded up
    (tmp_path / "c").mkdir()
    assert T.cpu_budget(_cgroup_v2(tmp_path / "c", "50000 100000\n")) == 1
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert T.cpu_budget(tmp_path / "v1") == 3
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no quota"
    assert T.cpu_budget(tmp_path / "v1") == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})  # taskset -c 3
    assert T.cpu_budget(tmp_path / "b") == 1


def test_override_and_user_env_win_over_auto(auto_env, tmp_path):
    auto_env.setattr(T, "cpu_budget", lambda root="/sys/fs/cgroup": 4)
    assert T.resolve(0) == (4, True)  # auto: every usable CPU, adaptively 1 or 4
    assert T.resolve(0, share=2) == (2, True)  # two torchrun processes on this machine
    assert T.resolve(3) == (3, False)  # threads=3 / --threads 3
    auto_env.setenv("OMP_NUM_THREADS", "1")
    assert T.resolve(0) == (1, False)  # the user's environment
    assert T.resolve(2) == (2, False)  # an explicit setting still wins
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ConfigError, match="threads must be"):
            T.resolve(bad)


def test_apply_sets_torch_and_respects_a_users_numba_setting(auto_env):
    auto_env.setenv("NUMBA_NUM_THREADS", "1")
    assert T.apply(1) == (1, False) and torch.get_num_threads() == 1
    assert os.environ["NUMBA_NUM_THREADS"] == "1"
    auto_env.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(2)
    T.apply(0)
    assert torch.get_num_threads() == 1  # OMP_NUM_THREADS=1 holds even where torch was told otherwise


def test_policy_off_changes_nothing(auto_env):
    auto_env.setenv(T.POLICY_ENV, "off")
    auto_env.setattr(T, "probe", lambda n, **kw: pytest.fail("probed with the policy off"))
    torch.set_num_threads(2)
    assert T.apply(0) == (2, False) and torch.get_num_threads() == 2


def test_probe_keeps_the_faster_setting_with_fake_timings():
    assert T.probe(4, timer=lambda n: 1.0 if n == 1 else 3.0) == 1  # a parked worker stalls every region
    assert T.probe(4, timer=lambda n: 2.0 if n == 1 else 1.0) == 4  # idle: the pool pays off
    assert T.probe(1, timer=lambda n: pytest.fail("nothing to choose")) == 1


class _FakeJob:
    """Units of work whose duration depends on the thread count in use; a fake clock that advances by them."""

    def __init__(self, cost):
        self.cost, self.now, self.threads = cost, 0.0, 2

    def clock(self):
        return self.now

    def set_threads(self, n):
        self.threads = n

    def run(self, ad, units):
        for _ in range(units):
            self.now += self.cost(self.threads)
            ad.tick()


def test_adaptive_switcher_follows_a_competitor_that_comes_and_goes():
    busy = {"on": False}
    # alone: 2 threads 20 ms, 1 thread 26 ms; beside a busy process: 2 threads 75 ms, 1 thread 26 ms
    job = _FakeJob(lambda n: (0.075 if busy["on"] else 0.020) if n == 2 else 0.026)
    ad = T.AdaptiveThreads(2, interval=5.0, window=4, warmup=3, clock=job.clock, set_threads=job.set_threads)
    job.run(ad, 20)
    assert ad.choices == [2] and job.threads == 2  # probed once at the start: keeps both threads
    busy["on"] = True
    job.run(ad, 300)  # the next probe (after 5 s) sees the competitor
    assert ad.choices[1] == 1 and job.threads == 1
    busy["on"] = False
    job.run(ad, 600)
    assert ad.choices[-1] == 2 and job.threads == 2  # and the one after it sees it gone
    # a 1-thread window only wins by a clear margin (noise on an idle machine does not flip it)
    job = _FakeJob(lambda n: 0.020 if n == 2 else 0.019)
    ad = T.AdaptiveThreads(2, window=4, clock=job.clock, set_threads=job.set_threads)
    job.run(ad, 30)
    assert ad.choices == [2]


def test_adaptive_switcher_drops_the_first_unit_after_each_switch():
    # the unit right after a switch to N threads pays for waking the pool (a slow outlier): it must not count
    state = {"since": 0}
    job = _FakeJob(None)

    def set_threads(n):
        job.threads, state["since"] = n, 0

    def cost(n):
        state["since"] += 1
        if n == 2:
            return 1.0 if state["since"] == 1 else 0.010
        return 0.030

    job.cost, job.set_threads = cost, set_threads
    ad = T.AdaptiveThreads(2, window=1, warmup=1, clock=job.clock, set_threads=set_threads)
    job.run(ad, 8)
    assert ad.choices == [2] and job.threads == 2


def test_dataloader_workers_compute_with_one_thread(auto_env):
    from torch.utils.data import DataLoader, Dataset

    class Report(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.tensor([torch.get_num_threads(), int(os.environ.get("OMP_NUM_THREADS", "0"))])

    torch.set_num_threads(2)
    got = list(DataLoader(Report(), batch_size=None, num_workers=1, worker_init_fn=T.worker_init_fn))
    assert all(r.tolist() == [1, 1] for r in got)


def test_trainer_uses_the_threads_setting_and_restores_torchs(auto_env, feats, tmp_path):
    from audiovae.training import TrainConfig, train

    seen = []
    auto_env.setattr(T, "set_threads", lambda n: (seen.append(n), torch.set_num_threads(n)))
    torch.set_num_threads(2)
    cfg = TrainConfig(model="dense", model_config={"hidden": [16], "latent_dim": 4}, batch_size=16, max_steps=2,
                      threads=1, device="cpu")
    train(feats, tmp_path / "run", cfg, progress=False)
    assert seen == [1] and torch.get_num_threads() == 2
    with pytest.raises(ConfigError, match=r"threads=-2: must be an integer in 0\.\.4096"):
        train(feats, tmp_path / "bad", TrainConfig(model="dense", max_steps=1, threads=-2, device="cpu"), progress=False)
    # how many threads a run uses may change when it is resumed
    from audiovae.training.trainer import RESUMABLE_CHANGES

    assert "threads" in RESUMABLE_CHANGES


@pytest.mark.skipif(T.cpu_budget() < 2, reason="needs 2 usable CPUs (numba's pool defaults to all of them)")
@pytest.mark.parametrize("cmd,how", [("vocode", "env"), ("extract", "env")])
def test_cli_keeps_the_thread_count_after_numba_starts(tmp_path, cmd, how):
    """numba's parallel kernels share torch's OpenMP pool; starting numba's pool used to reset it to every CPU,
    so `OMP_NUM_THREADS=1 audiovae vocode` (or --threads 1) ran on 2 threads after the first kernel."""
    import soundfile as sf

    from audiovae.audio.config import MelConfig
    from audiovae.audio.melfile import save_mel

    if cmd == "vocode":
        save_mel(tmp_path / "a.mel.npz", np.full((256, 30), -5.0, np.float32), MelConfig(), 29 * 256)
        args = ["vocode", str(tmp_path / "a.mel.npz"), "-o", str(tmp_path / "a.wav"), "--vocoder-iters", "2", "--device", "cpu"]
    else:  # the fused (numba) front end runs in the main process without workers
        (tmp_path / "audio").mkdir()
        t = np.arange(22050) / 22050
        for i in range(2):
            sf.write(tmp_path / "audio" / f"{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32),
                     22050)
        args = ["extract", str(tmp_path / "audio"), "-o", str(tmp_path / "cache"), "--workers", "0"]
    if how == "option":
        args += ["--threads", "1"]
    code = ("import atexit, sys, torch\n"
            "atexit.register(lambda: print('THREADS', torch.get_num_threads()))\n"
            f"sys.argv = ['audiovae'] + {args!r}\n"
            "from audiovae.cli import main\nmain()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", T.POLICY_ENV)}
    env["PYTHONPATH"] = str(ROOT)
    if how == "env":
        env["OMP_NUM_THREADS"] = "1"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "THREADS 1" in res.stdout, res.stdout + res.stderr[-2000:]


@pytest.mark.parametrize("args", [["mel", "a.wav", "-o", "m"], ["vocode", "a.mel.npz", "-o", "w"],
                                  ["resynth", "a.wav", "-o", "b.wav"], ["extract", "a", "-o", "c"],
                                  ["reconstruct", "run", "a.wav", "-o", "b.wav"], ["repair", "run", "a.wav", "-o", "b.wav"]])
def test_heavy_commands_take_threads_first(monkeypatch, args):
    from click.testing import CliRunner

    from audiovae.cli import cli
    from audiovae.errors import AudioVAEError

    seen = []

    def fake_apply(threads=0, numba=False, adaptive_probe=True, share=1):
        seen.append(threads)
        raise AudioVAEError("stop here")

    monkeypatch.setattr(T, "apply", fake_apply)
    res = CliRunner().invoke(cli, [*args, "--threads", "3"])
    assert seen == [3] and "stop here" in res.output  # before any work
    res = CliRunner().invoke(cli, [*args, "--threads", "-1"])
    assert res.exit_code == 2 and seen == [3]
