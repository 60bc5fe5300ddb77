"""Image VAE quality for time: Fashion-MNIST (dynamically binarised), MNIST-style model, fixed wall time.

    python benchmarks/bench_image_quality.py --minutes 20        # the README figure (about 25 min in all)
    python benchmarks/bench_image_quality.py --minutes 2 --test 2000 --k 50   # a quick look

Trains `mnist` for --minutes of wall time on this CPU (the learning-rate schedule
is sized from a short calibration run), then reports the test NLL as the IWAE
bound with k samples on the test images, with its standard error, and the
parameter count. Reference: pythae's VAE with its MNIST benchmark convnets
(17.2 M parameters) reaches 242.7 nats in the same 20 minutes on this machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from audiovae.tasks.evaluate import evaluate
from audiovae.training import TrainConfig, train

PYTHAE_NLL, PYTHAE_PARAMS = 242.7, 17_200_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--test", type=int, default=None, help="evaluate on the first N test images (default: all)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", default=None, help="keep the run here")
    ap.add_argument("--set", nargs="*", default=[], help="model_config overrides, key=value")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model_cfg = {k: int(v) for k, v in (s.split("=") for s in args.set)}
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "run"
    if out.exists():
        shutil.rmtree(out)
    base = dict(model="mnist", model_config=model_cfg, batch_size=args.batch_size, lr=args.lr, kl_warmup="linear",
                lr_warmup_steps=200, checkpoint_every=2000, val_batches=20, num_workers=0)
    # calibrate steps per minute so the cosine schedule ends when the time does
    cal = Path(tempfile.mkdtemp()) / "cal"
    t0 = time.perf_counter()
    train(args.data, cal, TrainConfig(**base, max_steps=60, val_every=10**9), progress=False)
    per_step = (time.perf_counter() - t0) / 60
    steps = int(args.minutes * 60 / per_step * 0.97)
    print(f"calibration: {per_step * 1000:.1f} ms/step -> {steps} steps in {args.minutes:g} min")
    t0 = time.perf_counter()
    summary = train(args.data, out, TrainConfig(**base, max_steps=steps, max_minutes=args.minutes,
                                                kl_warmup_steps=max(1, steps // 10), val_every=max(1, steps // 20)))
    train_min = (time.perf_counter() - t0) / 60
    t0 = time.perf_counter()
    ev = evaluate(out, args.data, k=args.k, split="test", limit=args.test, batch_size=100)
    eval_min = (time.perf_counter() - t0) / 60
    print(json.dumps({k: v for k, v in ev.items()}, indent=2))
    print(f"\ntrained {summary['step']} steps in {train_min:.1f} min; evaluated {ev['items']} test images with k={ev['k']} "
          f"in {eval_min:.1f} min")
    print(f"{'':28}{'audiovae mnist':>18}{'pythae VAE (ref)':>20}")
    print(f"{'test NLL (nats, IWAE)':28}{-ev['iwae']:>12.2f} ± {ev['iwae_stderr']:.2f}{PYTHAE_NLL:>20.1f}")
    print(f"{'parameters':28}{ev['params']:>18,}{PYTHAE_PARAMS:>20,}")
    print(f"{'params ratio':28}{ev['params'] / PYTHAE_PARAMS:>18.3f}{'(target <= 0.1)':>20}")
    print(f"{'below 242.7 nats':28}{str(-ev['iwae'] < PYTHAE_NLL):>18}")
    print(f"run kept in {out}")


if __name__ == "__main__":
    main()
