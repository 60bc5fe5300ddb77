"""Generated speech, measured: the table of issue 15 on the asterisk corpus (4 speakers), every row in one run.

    python benchmarks/bench_generation.py --work WORK [--vae-minutes 20 --prior-minutes 20] [--threads 2]
    python benchmarks/bench_generation.py --work WORK --run RUN [--data CACHE]       # take a trained run

1. Data: ``--data CACHE``, or WORK/cache made from Debian's asterisk-core-sounds-*-g722 prompts
   (``audiovae prepare asterisk /usr/share/asterisk/sounds`` + ``audiovae extract``): four voices (es_MX, fr_CA,
   it_IT, ru_RU), split by prompt, the same prompts held out in every language (the TEST split is unheard in
   training).
2. Model: ``--run RUN``, or WORK/run trained ``audiovae train CACHE --model conv condition=speaker
   max_minutes=--vae-minutes`` (``--vae-set KEY=VALUE`` adds settings); then, unless RUN/prior exists or
   ``--prior-minutes 0``, ``audiovae train-prior RUN max_minutes=--prior-minutes``. A run that exists is reused.
3. Rows, all on the TEST split (``--n-test`` utterances, the speakers in turn), with the [eval] extra:
   originals; copy synthesis (the vocoder on the true log-mel); VAE reconstructions; ``--n-samples`` samples of
   ``--seconds`` from N(0, I); from the learned prior at T = 1 and at each ``--temperatures`` (the best T by
   DNSMOS OVRL reported); samples conditioned on each speaker (``--n-per-speaker`` each: mean speaker-embedding
   cosine to that speaker's centroid of test originals vs to each other speaker's); conversions of
   ``--n-conv`` utterances per speaker to every other speaker (target - source cosine, share closer to the target,
   DNSMOS, length kept); ELBO and IWAE (``--k``) with the learned prior vs N(0, I) (``evaluate(..., prior=)``);
   the real-time factor of ``sample`` (prior + decoder + vocoder) at ``--threads``.
   DNSMOS P.835 on clips brought to one peak level (0.9); PESQ-WB of copy synthesis and reconstructions against
   the originals; speaker embeddings by resemblyzer.
4. Prints the table, the issue's targets with PASS/FAIL, and writes WORK/bench_generation.json (``--json``).

What a run without a learned prior or without speaker conditioning cannot measure is printed as "-" / "n/a".
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402

ASTERISK = Path("/usr/share/asterisk/sounds")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def call(fn, *args, **kw):
    """``fn(*args, **kw)`` without the keywords ``fn`` does not take (a build without learned priors has no
    ``prior=``, one without conditioning no ``speaker=``) and without those that are ``None``."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kw = {k: v for k, v in kw.items() if k in params}
    return fn(*args, **{k: v for k, v in kw.items() if v is not None})


def audiovae_cli(*args: str, threads: int) -> None:
    cmd = [sys.executable, "-m", "audiovae", *map(str, args)]
    say(" ".join(cmd))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env)


# --- data and model ------------------------------------------------------------------------------------------
def prepare_cache(work: Path, threads: int) -> Path:
    cache = work / "cache"
    if (cache / "index.json").is_file():
        return cache
    if not ASTERISK.is_dir():
        raise SystemExit(f"error: {ASTERISK} is missing: apt-get install asterisk-core-sounds-es-g722 "
                         "asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722")
    man = work / "manifest"
    if not (man / "manifest.tsv").is_file():
        try:
            audiovae_cli("prepare", "asterisk", ASTERISK, "-o", man, threads=threads)
        except subprocess.CalledProcessError:  # it lists unreadable prompts (one empty file) and exits 1
            if not (man / "manifest.tsv").is_file():
                raise
    audiovae_cli("extract", man / "manifest.tsv", "-o", cache, "--threads", threads, threads=threads)
    return cache


def train_run(run: Path, cache: Path, minutes: float, sets: list[str], threads: int) -> None:
    if (run / "config.yaml").is_file():
        say(f"{run} exists: taking it as it is")
        return
    audiovae_cli("train", cache, "--model", "conv", "-o", run, "condition=speaker", f"max_minutes={minutes:g}",
                 f"threads={threads}", *sets, threads=threads)


def train_prior(run: Path, minutes: float, sets: list[str], threads: int) -> None:
    if (run / "prior").exists():
        say(f"{run / 'prior'} exists: taking it as it is")
        return
    if minutes <= 0:
        return
    audiovae_cli("train-prior", run, f"max_minutes={minutes:g}", f"threads={threads}", "--no-progress", *sets,
                 threads=threads)


# --- measuring -----------------------------------------------------------------------------------------------
def test_records(src, n: int, split: str) -> list[dict]:
    """Up to ``n`` records of ``split``, the speakers in turn (as many of each as possible)."""
    by: dict = {}
    for r in src.utterances(split):
        by.setdefault(r.get("speaker"), []).append(r)
    out, i = [], 0
    while len(out) < n and any(i < len(v) for v in by.values()):
        out += [v[i] for v in by.values() if i < len(v)][: n - len(out)]
        i += 1
    return out


def dnsmos_row(P, waves, sr) -> dict:
    s = P.dnsmos(list(waves), sr, peak=P.DNSMOS_PEAK)
    return {"n": len(waves), "ovrl": float(np.mean(s["ovrl"])), "sig": float(np.mean(s["sig"])),
            "bak": float(np.mean(s["bak"])), "ovrl_sd": float(np.std(s["ovrl"])), "short_clips": int(s["short"].sum())}


def cos_table(P, emb: np.ndarray, centroids: dict) -> dict:
    return {s: P.cosine(emb, c) for s, c in centroids.items()}  # speaker -> (N,) cosines


def measure(args, run: Path, cache: Path) -> dict:
    import audiovae
    from audiovae.audio import perceptual as P
    from audiovae.audio.io import load_audio
    from audiovae.data.source import open_data
    from audiovae.tasks.evaluate import evaluate

    note = P.missing()
    if note:
        raise SystemExit(f"error: {note}")
    torch.manual_seed(args.seed)
    vae = audiovae.load(run, device=args.device)
    src = open_data(cache)
    sr = vae.sample_rate
    cond = getattr(vae, "conditions", None)
    conditioned = bool(cond) and cond.get("key") == "speaker"
    learned = bool(getattr(vae, "has_learned_prior", False))
    res: dict = {"run": str(run), "data": str(cache), "split": args.split, "conditioned": conditioned,
                 "learned_prior": learned, "threads": torch.get_num_threads(), "seconds": args.seconds,
                 "config": {k: getattr(args, k) for k in ("n_test", "n_samples", "n_per_speaker", "n_conv", "k",
                                                          "eval_limit", "seed", "temperatures")},
                 "rows": {}}
    if getattr(vae, "prior_info", None):
        res["prior_info"] = vae.prior_info

    say("originals, copy synthesis, reconstructions")
    recs = test_records(src, args.n_test, args.split)
    if not recs:
        raise SystemExit(f"error: {cache} has no {args.split!r} utterances")
    speakers = [r.get("speaker") for r in recs]
    originals = [load_audio(r["source"], sr, segment=r.get("segment"))[0] for r in recs]
    copies = [np.asarray(vae.to_audio(src.logmel(r))) for r in recs]
    recons = [np.asarray(call(vae.reconstruct, w, speaker=s if conditioned else None))
              for w, s in zip(originals, speakers)]
    emb_orig = P.speaker_embeddings(originals, sr)
    names = sorted({s for s in speakers if s is not None})
    centroids = {s: P.centroid(emb_orig[[i for i, t in enumerate(speakers) if t == s]]) for s in names}
    # the same centroids from copy synthesis (the vocoder on the true log-mel): every generated clip went through
    # the vocoder too, so these compare voices without the vocoder's own mark on the embeddings
    emb_copy = P.speaker_embeddings(copies, sr)
    centroids_copy = {s: P.centroid(emb_copy[[i for i, t in enumerate(speakers) if t == s]]) for s in names}
    rows = res["rows"]
    rows["originals"] = dnsmos_row(P, originals, sr)
    rows["copy synthesis"] = {**dnsmos_row(P, copies, sr),
                              "pesq_wb": float(np.nanmean(P.pesq(originals, copies, sr, "wb")))}
    rows["VAE reconstruction"] = {**dnsmos_row(P, recons, sr),
                                  "pesq_wb": float(np.nanmean(P.pesq(originals, recons, sr, "wb"))),
                                  "speaker_cos_to_original": float(np.mean(P.speaker_similarity(originals, recons,
                                                                                                 sr)))}

    def samples(n, prior, temperature, spk):
        return list(np.asarray(call(vae.sample, n, seconds=args.seconds, temperature=temperature, seed=args.seed,
                                    prior=prior, speaker=spk)))

    cycle = [names[i % len(names)] for i in range(args.n_samples)] if conditioned else None
    say("samples from N(0, I)")
    rows["samples, N(0, I)"] = dnsmos_row(P, samples(args.n_samples, "standard", 1.0, cycle), sr)
    best_t = 1.0
    if learned:
        by_t = {}
        for t in sorted({1.0, *args.temperatures}, reverse=True):
            say(f"samples from the learned prior, T = {t:g}")
            by_t[t] = dnsmos_row(P, samples(args.n_samples, "learned", t, cycle), sr)
        best_t = max(by_t, key=lambda t: by_t[t]["ovrl"])
        rows["samples, learned prior, T = 1"] = by_t[1.0]
        rows[f"samples, learned prior, best T = {best_t:g}"] = {**by_t[best_t], "temperature": best_t}
        res["learned_by_temperature"] = {f"{t:g}": v for t, v in by_t.items()}

    say("ELBO / IWAE with each prior")
    ev = {}
    for prior in (["standard", "learned"] if learned else ["standard"]):
        e = call(evaluate, vae, src, k=args.k, split=args.split, limit=args.eval_limit, seed=args.seed,
                 progress=False, prior=prior)
        ev[prior] = {k: e.get(k) for k in ("elbo", "iwae", "iwae_stderr", "kl", "items", "k", "prior",
                                           "kl_estimate", "elbo_per_dim")}
    res["bounds"] = ev

    if conditioned:
        say("samples conditioned on each speaker")
        per = {}
        prior = "learned" if learned else "standard"
        for s in names:
            waves = samples(args.n_per_speaker, prior, best_t, [s] * args.n_per_speaker)
            emb = P.speaker_embeddings(waves, sr)
            cos, cosc = cos_table(P, emb, centroids), cos_table(P, emb, centroids_copy)
            per[s] = {"to_own": float(np.mean(cos[s])),
                      "to_others": {o: float(np.mean(cos[o])) for o in names if o != s},
                      "copy_centroids": {"to_own": float(np.mean(cosc[s])),
                                         "to_others": {o: float(np.mean(cosc[o])) for o in names if o != s}},
                      **dnsmos_row(P, waves, sr)}
            per[s]["own_above_every_other"] = all(per[s]["to_own"] > v for v in per[s]["to_others"].values())
            cc = per[s]["copy_centroids"]
            cc["own_above_every_other"] = all(cc["to_own"] > v for v in cc["to_others"].values())
        rows["samples conditioned on each speaker"] = {
            "n": args.n_per_speaker * len(names), "prior": prior, "temperature": best_t,
            "ovrl": float(np.mean([v["ovrl"] for v in per.values()])),
            "sig": float(np.mean([v["sig"] for v in per.values()])),
            "bak": float(np.mean([v["bak"] for v in per.values()])),
            "own_minus_best_other": float(np.mean([v["to_own"] - max(v["to_others"].values()) for v in per.values()])),
            "speakers_own_above_every_other": int(sum(v["own_above_every_other"] for v in per.values())),
            "speakers_own_above_every_other_copy_centroids": int(sum(v["copy_centroids"]["own_above_every_other"]
                                                                     for v in per.values())),
            "speakers": len(names), "per_speaker": per}
    if conditioned and hasattr(vae, "convert"):
        say("conversions between every pair of speakers")
        outs, src_spk, tgt_spk, kept = [], [], [], []
        for s in names:
            mine = [i for i, t in enumerate(speakers) if t == s][: args.n_conv]
            for i in mine:
                for t in names:
                    if t != s:
                        y = np.asarray(call(vae.convert, originals[i], speaker=t))
                        outs.append(y)
                        src_spk.append(s)
                        tgt_spk.append(t)
                        kept.append(len(y) == len(originals[i]))
        if outs:
            emb = P.speaker_embeddings(outs, sr)
            cos, cosc = cos_table(P, emb, centroids), cos_table(P, emb, centroids_copy)
            d = np.array([cos[t][j] - cos[s][j] for j, (s, t) in enumerate(zip(src_spk, tgt_spk))])
            dc = np.array([cosc[t][j] - cosc[s][j] for j, (s, t) in enumerate(zip(src_spk, tgt_spk))])
            rows["conversions, every pair"] = {**dnsmos_row(P, outs, sr), "target_minus_source": float(d.mean()),
                                               "closer_to_target": float((d > 0).mean()), "pairs": len(outs),
                                               "closer_to_target_copy_centroids": float((dc > 0).mean()),
                                               "target_minus_source_copy_centroids": float(dc.mean()),
                                               "length_kept": bool(all(kept))}

    say("real-time factor of sample")
    seconds = args.rtf_seconds
    spk = [names[0]] if conditioned else None
    prior = "learned" if learned else "standard"
    call(vae.sample, 1, seconds=1.0, seed=0, prior=prior, speaker=spk)  # warm-up
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        call(vae.sample, 1, seconds=seconds, seed=1, prior=prior, speaker=spk)
        times.append(time.perf_counter() - t0)
    res["rtf"] = {"prior": prior, "seconds": seconds, "wall_s": min(times), "rtf": min(times) / seconds,
                  "threads": torch.get_num_threads()}
    return res


# --- the table and the targets -------------------------------------------------------------------------------
def _f(v, spec=".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def format_table(res: dict) -> str:
    rows, out = res["rows"], []
    ev = res.get("bounds", {})
    for name, r in rows.items():
        spk, other = "", []
        if "pesq_wb" in r:
            other.append(f"PESQ-WB {_f(r['pesq_wb'])}")
        if "speaker_cos_to_original" in r:
            spk = f"cos to original {_f(r['speaker_cos_to_original'])}"
        if name.startswith("samples, learned") and "learned" in ev and "T = 1" in name:
            other.append(f"IWAE {_f(ev['learned']['iwae'], ',.1f')} vs N(0, I) {_f(ev['standard']['iwae'], ',.1f')}; "
                         f"ELBO {_f(ev['learned']['elbo'], ',.1f')} vs {_f(ev['standard']['elbo'], ',.1f')} nats")
        if name == "samples, N(0, I)" and "learned" not in ev and "standard" in ev:
            other.append(f"IWAE {_f(ev['standard']['iwae'], ',.1f')}, ELBO {_f(ev['standard']['elbo'], ',.1f')} nats")
        if "own_minus_best_other" in r:
            spk = (f"own − best other {_f(r['own_minus_best_other'], '+.3f')}; "
                   f"{r['speakers_own_above_every_other']}/{r['speakers']} speakers own > every other "
                   f"({r.get('speakers_own_above_every_other_copy_centroids', '-')}/{r['speakers']} against "
                   "copy-synthesis centroids)")
            other.append(f"{r['prior']} prior, T = {r['temperature']:g}")
        if "target_minus_source" in r:
            spk = (f"target − source {_f(r['target_minus_source'], '+.3f')}; "
                   f"closer to target {r['closer_to_target']:.0%} "
                   f"({r.get('closer_to_target_copy_centroids', float('nan')):.0%} against copy-synthesis centroids)")
            other.append(f"{r['pairs']} pairs; length {'kept' if r['length_kept'] else 'NOT kept'}")
        out.append((f"{name} (n={r['n']})", _f(r["ovrl"]), _f(r["sig"]), _f(r["bak"]), spk, "; ".join(other)))
    t = table(out, ("", "DNSMOS OVRL", "DNSMOS SIG", "DNSMOS BAK", "speaker", "other"))
    rtf = res.get("rtf")
    if rtf:
        t += (f"\n\nsample RTF ({rtf['prior']} prior + decoder + vocoder, {rtf['seconds']:g} s, {rtf['threads']} "
              f"thread(s)): {rtf['rtf']:.3f}")
    if "learned_by_temperature" in res:
        t += "\nlearned prior by temperature (OVRL / SIG): " + ", ".join(
            f"T={k}: {v['ovrl']:.2f} / {v['sig']:.2f}" for k, v in res["learned_by_temperature"].items())
    return t


def targets(res: dict) -> list[tuple[str, str, str]]:
    """``[(target, measured, PASS | FAIL | n/a)]``: the issue's targets."""
    rows, ev = res["rows"], res.get("bounds", {})
    rec, std = rows.get("VAE reconstruction"), rows.get("samples, N(0, I)")
    out = []
    verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    learned = [(k, v) for k, v in rows.items() if k.startswith("samples, learned prior")]
    if not learned:
        out.append(("learned-prior samples: DNSMOS OVRL and SIG within 0.3 of reconstructions', >= 1.0 above N(0, I)",
                    "no learned prior", "n/a"))
    for name, r in learned:
        for key in ("ovrl", "sig"):
            ok = r[key] >= rec[key] - 0.3 and r[key] >= std[key] + 1.0
            out.append((f"{name}: DNSMOS {key.upper()} within 0.3 of reconstructions' and >= 1.0 above N(0, I)",
                        f"{r[key]:.2f} vs reconstructions {rec[key]:.2f}, N(0, I) {std[key]:.2f}", verdict(ok)))
    if "learned" in ev:
        li, si = ev["learned"]["iwae"], ev["standard"]["iwae"]
        out.append(("IWAE with the learned prior > with N(0, I) (test split)", f"{li:,.1f} vs {si:,.1f} nats",
                    verdict(li is not None and si is not None and li > si)))
    else:
        out.append(("IWAE with the learned prior > with N(0, I) (test split)", "no learned prior", "n/a"))
    per = rows.get("samples conditioned on each speaker")
    if per:
        out.append(("speaker-conditioned samples: each speaker's cosine to own centroid > to every other's",
                    f"{per['speakers_own_above_every_other']}/{per['speakers']} speakers",
                    verdict(per["speakers_own_above_every_other"] == per["speakers"])))
    else:
        out.append(("speaker-conditioned samples: own centroid > every other", "run not speaker-conditioned", "n/a"))
    conv = rows.get("conversions, every pair")
    if conv:
        out.append(("conversions: >= 80% of pairs closer to the target's centroid than the source's",
                    f"{conv['closer_to_target']:.0%} of {conv['pairs']}", verdict(conv["closer_to_target"] >= 0.8)))
        out.append(("conversions: DNSMOS OVRL within 0.5 of reconstructions'",
                    f"{conv['ovrl']:.2f} vs {rec['ovrl']:.2f}", verdict(conv["ovrl"] >= rec["ovrl"] - 0.5)))
        out.append(("conversions keep the input's length", str(conv["length_kept"]), verdict(conv["length_kept"])))
    else:
        out.append(("conversions: >= 80% closer to target, OVRL within 0.5 of reconstructions'", "no convert()",
                    "n/a"))
    rtf = res.get("rtf")
    if rtf:
        out.append((f"sample RTF <= 0.5 ({rtf['threads']} thread(s))", f"{rtf['rtf']:.3f}", verdict(rtf["rtf"] <= 0.5)))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--work", type=Path, required=True, help="Folder for the cache, the run and the results.")
    ap.add_argument("--data", type=Path, help="A feature cache to use (default: WORK/cache of the asterisk prompts).")
    ap.add_argument("--run", type=Path, help="A trained run to measure (default: WORK/run, trained here).")
    ap.add_argument("--vae-minutes", type=float, default=20.0)
    ap.add_argument("--prior-minutes", type=float, default=20.0)
    ap.add_argument("--vae-set", action="append", default=[], metavar="KEY=VALUE",
                    help="More `audiovae train` settings.")
    ap.add_argument("--prior-set", action="append", default=[], metavar="KEY=VALUE",
                    help="More `audiovae train-prior` settings.")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n-test", type=int, default=50, help="Test utterances for the first three rows.")
    ap.add_argument("--n-samples", type=int, default=20, help="Samples per prior and temperature.")
    ap.add_argument("--seconds", type=float, default=3.0, help="Length of each sample.")
    ap.add_argument("--temperatures", default="1.0,0.85,0.7,0.5", help="Learned-prior temperatures tried.")
    ap.add_argument("--n-per-speaker", type=int, default=5, help="Conditioned samples per speaker.")
    ap.add_argument("--n-conv", type=int, default=5, help="Utterances per speaker converted to every other speaker.")
    ap.add_argument("--k", type=int, default=16, help="IWAE samples.")
    ap.add_argument("--eval-limit", type=int, default=None, help="Test utterances for the bounds (default: all).")
    ap.add_argument("--rtf-seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="Results JSON (default: WORK/bench_generation.json).")
    args = ap.parse_args(argv)
    args.temperatures = [float(t) for t in args.temperatures.split(",") if t.strip()]
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cache = args.data or prepare_cache(args.work, args.threads)
    run = args.run or args.work / "run"
    if args.run is None:
        train_run(run, cache, args.vae_minutes, args.vae_set, args.threads)
    train_prior(run, args.prior_minutes, args.prior_set, args.threads)  # RUN/prior unless there is one
    res = measure(args, run, cache)
    res["targets"] = [{"target": t, "measured": m, "verdict": v} for t, m, v in targets(res)]
    res["wall_s"] = time.time() - t0
    print(format_table(res))
    print()
    print(table([(v, t, m) for t, m, v in targets(res)], ("", "target (issue 15)", "measured")))
    out = args.json or args.work / "bench_generation.json"
    from audiovae.utils import atomic_write_text

    atomic_write_text(out, json.dumps(res, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    print(f"\nwrote {out} ({res['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
