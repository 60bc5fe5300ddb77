"""Throughput of the heavy commands on a machine that is doing something else (issue 18).

    python benchmarks/bench_contention.py                 # ~10 min on 2 cores (12 s per cell)
    python benchmarks/bench_contention.py --seconds 3     # smoke run
    python benchmarks/bench_contention.py --isolate ...   # shared machine: see below

For each job (train: `audiovae train --model conv` on real speech; extract;
vocode; reconstruct; repair) and each setting (old: the thread policy switched
off with AUDIOVAE_THREADS_POLICY=off, as before issue 18; new: audiovae/threads.py)
it runs the job for --seconds alone, beside a busy process (`python -c 'while
1: pass'`) at nice 0 and beside one at nice 19, all in the same run and
interleaved, and prints units of work per second with the share of the job's own
idle throughput (fair share beside one busy process on 2 cores: 50%).

Each cell is a fresh process that sets up as the command line does (imports,
thread policy, one warm-up unit not timed) and then repeats the unit of work:
a training step (trainer, default conv model and settings), an extract of 16
files (2 DataLoader workers, the CLI default), vocoding 8 log-mel files,
reconstructing one file through a trained model and the vocoder, repairing a
0.25-s gap in one file (25 iterations instead of 100, for more units per cell).
"threads" in the log: the count at the end (train: each probe's choice). Speech: Debian's asterisk prompts (es_MX_f_Allison,
decoded by ffmpeg), else espeak-ng. OMP_NUM_THREADS / NUMBA_NUM_THREADS of the
calling shell are removed for the cells ("today's settings" are the defaults).

--isolate (root, Linux autogroups): runs everything in a new session whose
autogroup has nice -20, so other sessions' load on a shared machine hardly
counts while the competitor (same session) competes as on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
JOBS = ("train", "extract", "vocode", "reconstruct", "repair")
UNITS = {"train": "steps/s", "extract": "files/s", "vocode": "files/s", "reconstruct": "files/s", "repair": "files/s"}
SPEECH = Path("/usr/share/asterisk/sounds/es_MX_f_Allison")


def _env(setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS",
                                                            "AUDIOVAE_THREADS_POLICY", "OMP_WAIT_POLICY")}
    if setting == "old":
        env["AUDIOVAE_THREADS_POLICY"] = "off"
    return env


def setup(work: Path, n_files: int) -> None:
    """Speech files, a feature cache, a trained model and log-mel files under ``work``."""
    import torch

    from audiovae.audio.config import MelConfig
    from audiovae.data.features import extract
    from audiovae.tasks.signal import mel_files
    from audiovae.training import train
    from audiovae.training.config import default_train_config

    speech = work / "speech"
    speech.mkdir(parents=True, exist_ok=True)
    prompts = sorted(SPEECH.glob("*.g722")) if SPEECH.is_dir() and shutil.which("ffmpeg") else []
    prompts = [p for p in prompts if p.stat().st_size > 12000][:n_files]  # > 1.5 s
    if prompts:
        for i, p in enumerate(prompts):
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(p), "-ar", "22050", str(speech / f"{i:03d}.wav")],
                           check=True)
    else:
        import soundfile as sf

        sys.path.insert(0, str(HERE.parent))
        from common import speech_clips

        for i, x in enumerate(speech_clips(n_files, 3.0)):
            sf.write(speech / f"{i:03d}.wav", x, 22050)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    extract(speech, work / "cache", MelConfig(), workers=2, progress=False)
    cfg = default_train_config("conv", device="cpu", max_steps=30, checkpoint_every=10**6)
    train(work / "cache", work / "model", cfg, progress=False)
    mel_files(sorted(speech.glob("*.wav"))[:8], work / "mels", MelConfig())


def _unit(job: str, work: Path, scratch: Path):
    """The job's unit of work as a function of its index (the train job is timed by the trainer instead)."""
    from audiovae.audio.config import MelConfig

    files = sorted((work / "speech").glob("*.wav"))
    if job == "extract":
        from audiovae.data.features import extract

        lst = scratch / "list.txt"
        lst.write_text("".join(f"{p}\n" for p in files[:16]))
        return (lambda i: extract(lst, scratch / f"cache{i}", MelConfig(), workers=2, progress=False)), 16
    if job == "vocode":
        from audiovae.tasks.signal import vocode_files

        mels = sorted((work / "mels").glob("*.mel.npz"))
        return (lambda i: vocode_files(mels, scratch / f"voc{i}", device=__import__("torch").device("cpu"))), len(mels)
    if job == "reconstruct":
        from audiovae.tasks.generate import MelModel, reconstruct_file

        mm = MelModel.load(work / "model", device="cpu")
        return (lambda i: reconstruct_file(mm, files[i % len(files)], scratch / f"rec{i}.wav")), 1
    if job == "repair":
        from audiovae.tasks.repair import repair_audio

        return (lambda i: repair_audio(work / "model", files[i % len(files)], scratch / f"rep{i}.wav",
                                       gaps=[(0.5, 0.75)], iters=25, device="cpu")), 1
    raise SystemExit(f"unknown job {job}")


def run_cell(job: str, work: Path, seconds: float) -> dict:
    """In a fresh process: set up as the CLI does, then count units of work in ``seconds``."""
    from audiovae.threads import apply

    scratch = Path(tempfile.mkdtemp(dir=work, prefix=f"cell-{job}-"))
    try:
        if job == "train":
            from audiovae.training import train
            from audiovae.training.config import default_train_config

            # `audiovae train --model conv`: the default settings, stopped by the clock
            import audiovae.threads as thr

            made = []
            real = thr.AdaptiveThreads
            thr.AdaptiveThreads = lambda *a, **k: made.append(real(*a, **k)) or made[-1]
            cfg = default_train_config("conv", device="cpu", max_minutes=seconds / 60, checkpoint_every=10**6)
            summary = train(work / "cache", scratch / "run", cfg, progress=False)
            return {"units": summary["step"], "seconds": seconds,
                    "threads": "/".join(map(str, made[0].choices)) if made else _threads_now()}
        apply(0, numba=job != "extract")  # what the CLI does first (a no-op with the policy off)
        fn, per = _unit(job, work, scratch)
        fn(-1)  # warm-up: numba caches, filterbanks, the model
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn(n)
            n += 1
        return {"units": n * per, "seconds": time.perf_counter() - t0, "threads": _threads_now()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _threads_now() -> int:
    import torch

    return torch.get_num_threads()


def cell(job: str, setting: str, competitor: int | None, work: Path, seconds: float) -> dict:
    comp = None
    if competitor is not None:
        comp = subprocess.Popen(["nice", "-n", str(competitor), sys.executable, "-c", "while 1: pass"])
    try:
        out = subprocess.run([sys.executable, str(HERE), "--_cell", job, "--work", str(work), "--seconds", str(seconds)],
                             env=_env(setting), capture_output=True, text=True)
    finally:
        if comp is not None:
            comp.kill()
            comp.wait()
    if out.returncode != 0:
        raise SystemExit(f"{job} ({setting}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _isolate(argv: list[str]) -> int:
    def enter():
        os.setsid()
        with open("/proc/self/autogroup", "w") as fh:
            fh.write("-20")

    return subprocess.run([sys.executable, str(HERE), *argv, "--_isolated"], preexec_fn=enter).returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=12.0, help="Seconds per cell (30 cells, each ~6 s more to start).")
    ap.add_argument("--jobs", default=",".join(JOBS), help="Comma-separated subset of " + ",".join(JOBS))
    ap.add_argument("--conditions", default="alone,nice 0,nice 19", help="Comma-separated subset of the columns.")
    ap.add_argument("--files", type=int, default=60, help="Speech files in the corpus.")
    ap.add_argument("--work", type=Path, default=None, help="Folder for the corpus, cache and model (kept).")
    ap.add_argument("--isolate", action="store_true", help="Own session with autogroup nice -20 (root; shared machine).")
    ap.add_argument("--_cell", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_isolated", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._cell:
        print(json.dumps(run_cell(args._cell, args.work, args.seconds)))
        return
    if args.isolate and not args._isolated:
        sys.exit(_isolate([a for a in sys.argv[1:] if a != "--isolate"]))
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_contention-"))
    if not (work / "model").exists():
        t0 = time.perf_counter()
        setup(work, args.files)
        print(f"set up {work} in {time.perf_counter() - t0:.0f} s", flush=True)
    load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
    from audiovae.threads import cpu_budget

    print(f"{os.cpu_count()} CPUs, {cpu_budget()} usable by this process, load average {load}, {args.seconds:g} s per "
          f"cell{', isolated (autogroup nice -20)' if args._isolated else ''}", flush=True)
    want = [c.strip() for c in args.conditions.split(",")]
    conds = tuple(c for c in (("alone", None), ("nice 0", 0), ("nice 19", 19)) if c[0] in want)
    res: dict = {}
    t_all = time.perf_counter()
    for job in jobs:
        for cname, comp in conds:
            for setting in ("old", "new"):
                r = cell(job, setting, comp, work, args.seconds)
                res[job, setting, cname] = r
                print(f"  {job:<12} {setting:<4} {cname:<8} {r['units'] / r['seconds']:8.2f} {UNITS[job]} "
                      f"(threads: {r['threads']})", flush=True)
    print(f"\n{time.perf_counter() - t_all:.0f} s in all")
    head = f"| job | setting | alone | beside nice 0 | beside nice 19 | alone vs old |"
    print(head)
    print("|" + "---|" * 6)
    for job in jobs:
        for setting in ("old", "new"):
            rate = {c: res[job, setting, c]["units"] / res[job, setting, c]["seconds"] for c, _ in conds}
            alone = rate.get("alone")
            cells = [f"{alone:.2f} {UNITS[job]}" if alone else "-"]
            cells += [f"{rate[c]:.2f}" + (f" ({rate[c] / alone:.0%})" if alone else "") if c in rate else "-"
                      for c in ("nice 0", "nice 19")]
            vs_old = (f"{alone / (res[job, 'old', 'alone']['units'] / res[job, 'old', 'alone']['seconds']):.0%}"
                      if alone else "-")
            print(f"| {job} | {setting} | " + " | ".join(cells) + f" | {vs_old} |")


if __name__ == "__main__":
    main()
