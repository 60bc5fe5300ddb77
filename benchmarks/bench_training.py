"""Training throughput, the trainer's overhead against a bare PyTorch loop, loader vs step time.

    python benchmarks/bench_training.py            # README table
    python benchmarks/bench_training.py --steps 30 # quicker

For the dense and conv mel VAEs (on the built-in synthetic corpus) the same
model, batches, noise and optimiser run (a) through `audiovae.training.train`
(CSV logging included; warm-up steps, validation and checkpoints excluded)
and (b) through a hand-written loop measured in the same run. ``bare_loop`` and
``trainer_per_step`` also serve ``bench_gpu.py`` (CUDA, bf16, torch.compile). Also: parameters and training throughput of every
registered model.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402

from audiovae.data.datasets import SeededBatchSampler  # noqa: E402
from audiovae.data.features import extract  # noqa: E402
from audiovae.data.synth import make_corpus  # noqa: E402
from audiovae.models import build_model  # noqa: E402
from audiovae.training import TrainConfig, train  # noqa: E402
from audiovae.data.source import open_data  # noqa: E402
from audiovae.training.schedules import kl_weight, learning_rate  # noqa: E402
from audiovae.training.trainer import _noise, resolve_config  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(data_path: Path, cfg: TrainConfig, warmup: int = 5) -> float:
    """The same training, hand-written: seconds per step (after ``warmup`` steps) on ``cfg.device``,
    with ``cfg.amp`` (bf16 autocast) and ``cfg.compile`` as the trainer uses them."""
    data = open_data(data_path)
    cfg = resolve_config(cfg, data)
    device = torch.device("cuda" if cfg.device in ("cuda", "auto") and torch.cuda.is_available() else "cpu")
    train_set, collate = data.dataset("train", cfg.model, context=cfg.context, segment=cfg.segment_frames, train=True)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.model_config).to(device)
    if cfg.compile:  # as the trainer does: the encoder and decoder stacks, in place
        model.encoder.compile()
        model.decoder.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if cfg.amp else contextlib.nullcontext
    step, epoch, t0 = 0, 0, None
    total = cfg.max_steps + warmup
    while step < total:
        loader = DataLoader(train_set, batch_sampler=SeededBatchSampler(len(train_set), cfg.batch_size, cfg.seed, epoch),
                            collate_fn=collate, pin_memory=device.type == "cuda")
        for batch in loader:
            if step == warmup:
                _sync(device)
                t0 = time.perf_counter()
            batch = batch.to(device)
            for g in opt.param_groups:
                g["lr"] = learning_rate(step, cfg.lr, cfg.lr_schedule, cfg.lr_warmup_steps, cfg.max_steps)
            with amp():
                out = model(batch.x, kl_weight(step, cfg.beta, cfg.kl_warmup, cfg.kl_warmup_steps), 0.0, batch.lengths,
                          _noise(cfg.seed, step, 0, 1))
            opt.zero_grad(set_to_none=True)
            out.loss.float().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            if step >= total:
                break
        epoch += 1
    _sync(device)
    return (time.perf_counter() - t0) / cfg.max_steps


def trainer_per_step(data_path: Path, cfg: TrainConfig, out: Path, warmup: int = 5) -> float:
    """Seconds per step through ``train()``, after ``warmup`` steps (compilation, caches): metrics.csv
    rows cover ``warmup`` steps each (``log_every``), and each row ends with the one host sync the
    trainer makes, so a row's loader + step time is the wall time of its steps, on a GPU too."""
    import csv
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    steps = -(-cfg.max_steps // warmup) * warmup
    train(data_path, out, TrainConfig(**{**cfg.__dict__, "max_steps": warmup + steps, "log_every": warmup}),
          progress=False)
    rows = list(csv.DictReader(open(out / "metrics.csv")))[1:]  # the first row is the warm-up
    return sum(float(r["data_s"]) + float(r["step_s"]) for r in rows) / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    make_corpus(tmp / "corpus", 96)
    extract(tmp / "corpus", tmp / "feats", workers=0, progress=False)
    hop_s = 256 / 22050
    rows = []
    for name, cfg in (
        ("dense", TrainConfig(model="dense", batch_size=256, max_steps=args.steps, val_every=10**9, val_batches=1,
                              checkpoint_every=10**9, device="cpu")),
        ("conv", TrainConfig(model="conv", batch_size=16, segment_frames=128, max_steps=args.steps, val_every=10**9,
                             val_batches=1, checkpoint_every=10**9, device="cpu")),
    ):
        bare = bare_loop(tmp / "feats", cfg)
        trainer = trainer_per_step(tmp / "feats", cfg, tmp / f"run_{name}")
        frames = cfg.batch_size * (1 if name == "dense" else cfg.segment_frames)
        unit = f"{frames / trainer:,.0f} frames/s" if name == "dense" else f"{frames * hop_s / trainer:,.1f} audio s/s"
        rows.append((name, f"{bare * 1000:.1f} ms", f"{trainer * 1000:.1f} ms", f"{(trainer / bare - 1) * 100:+.1f}%",
                     unit))
    print(table(rows, ("model", "bare loop/step", "trainer/step", "overhead", "throughput")))

    # every registered model: parameters and training throughput on random data of its shape
    prow = []
    for name, x, unit in (
        ("dense", torch.randn(256, 256), ("frames/s", 1)),
        ("conv", torch.randn(16, 256, 128), ("audio s/s", 128 * hop_s)),
        ("mnist", torch.bernoulli(torch.rand(128, 1, 28, 28)), ("images/s", 1)),
        ("cifar", torch.rand(64, 3, 32, 32) * 2 - 1, ("images/s", 1)),
    ):
        model = build_model(name)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        n = 10
        for i in range(n + 2):
            if i == 2:
                t0 = time.perf_counter()
            loss = model.elbo(x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        dt = (time.perf_counter() - t0) / n
        prow.append((name, f"{model.num_params():,}", f"{x.shape[0]}", f"{dt * 1000:.0f} ms",
                     f"{x.shape[0] * unit[1] / dt:,.1f} {unit[0]}"))
    print()
    print(table(prow, ("model", "parameters", "batch", "train step", "training throughput")))


if __name__ == "__main__":
    main()
