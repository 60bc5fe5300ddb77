"""`audiovae extract`: audio files -> a memory-mappable log-mel cache with statistics.

Cache layout (FEATS_DIR)::

    config.yaml      the MelConfig (a cache made with another config is never reused)
    parts/<id>.npy   one utterance's log-mel (n_mels, T), written atomically as it is computed
    feats.f32        every utterance's frames, concatenated: (total_frames, n_mels) float32
    index.json       per utterance: id, source, offset, frames, num_samples, split
    stats.npz        per-bin mean and std over the training split, frame count
    report.txt       skipped files and why

An interrupted run leaves finished ``parts/`` behind; running the same command
again computes only what is missing, then assembles the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from audiovae.audio.config import MelConfig
from audiovae.audio.frontend import MelFrontend
from audiovae.audio.io import find_audio_files, load_audio
from audiovae.audio.normalize import RunningStats
from audiovae.config import load_yaml, save_yaml
from audiovae.errors import AudioVAEError, ConfigError, DataError
from audiovae.utils import atomic_path, atomic_write_bytes, atomic_write_text

CACHE_VERSION = 1


def utterance_id(path: Path, root: Path | None) -> str:
    """A file-system-safe id: the path relative to the corpus root, '/' replaced by '__'."""
    rel = path.relative_to(root) if root is not None and root in path.parents else Path(path.name)
    return str(rel.with_suffix("")).replace(os.sep, "__").replace(" ", "_")


def split_of(uid: str, val_fraction: float) -> str:
    """Deterministic train/validation split by file (a hash of the id)."""
    h = int(hashlib.sha1(uid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def list_inputs(source: str | os.PathLike) -> tuple[list[Path], Path | None]:
    """Audio files of a folder (recursively) or of a list file (one path per line)."""
    source = Path(source)
    if source.is_dir():
        return find_audio_files(source), source
    if source.is_file() and source.suffix in (".txt", ".lst", ".list", ".scp"):
        lines = [ln.strip() for ln in source.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        return [Path(ln) if Path(ln).is_absolute() else source.parent / ln for ln in lines], None
    if source.is_file():
        return [source], None
    raise DataError("no such file or directory", source)


class _AudioFiles(Dataset):
    """Loads and featurises one file per item (runs in DataLoader workers)."""

    def __init__(self, files: list[Path], ids: list[str], cfg: MelConfig):
        self.files, self.ids, self.cfg = files, ids, cfg
        self.fe = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        if self.fe is None:
            from torch.utils.data import get_worker_info

            in_worker = get_worker_info() is not None
            if in_worker:
                torch.set_num_threads(1)
            # a forked worker must not start numba's parallel kernels (see MelFrontend's `fused`)
            self.fe = MelFrontend(self.cfg, fused=not in_worker)
        try:
            wave, _ = load_audio(self.files[i], self.cfg.sample_rate, min_samples=self.cfg.win_length)
        except AudioVAEError as exc:
            return self.ids[i], str(self.files[i]), None, exc.problem
        with torch.no_grad():
            logmel = self.fe(torch.from_numpy(wave)[None])[0].numpy()
        return self.ids[i], str(self.files[i]), (logmel, len(wave)), None


@dataclass
class ExtractResult:
    out_dir: Path
    n_utterances: int
    n_frames: int
    skipped: list[tuple[str, str]]


def extract(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: MelConfig | None = None,
    workers: int = 2,
    val_fraction: float = 0.1,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ExtractResult:
    """Build (or finish building) a feature cache; see the module docstring for the layout."""
    cfg = cfg or MelConfig()
    out = Path(out_dir)
    files, root = list_inputs(source)
    if not files:
        raise DataError("no audio files found", source)
    cfg_path = out / "config.yaml"
    wanted = {"version": CACHE_VERSION, "mel": cfg.to_dict(), "val_fraction": val_fraction}
    if cfg_path.exists():
        have = load_yaml(cfg_path)
        if have != wanted:
            if not overwrite:
                raise ConfigError(
                    "this feature cache was made with a different configuration; "
                    "use another output folder or --overwrite to rebuild it", out)
            for p in (out / "parts").glob("*.npy"):
                p.unlink()
            for name in ("feats.f32", "index.json", "stats.npz"):
                (out / name).unlink(missing_ok=True)
    save_yaml(cfg_path, wanted)
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    ids = [utterance_id(f, root) for f in files]
    if len(set(ids)) != len(ids):
        raise DataError("two input files map to the same utterance id; give a folder so ids keep the relative path", source)
    meta_path = out / "parts.jsonl"
    meta = _read_meta(meta_path)
    todo = [(f, u) for f, u in zip(files, ids) if not ((parts / f"{u}.npy").exists() and u in meta)]
    skipped: list[tuple[str, str]] = []
    if todo:
        ds = _AudioFiles([f for f, _ in todo], [u for _, u in todo], cfg)
        loader = DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=_identity)
        with open(meta_path, "a", encoding="utf-8") as meta_fh:
            for uid, src, res, problem in tqdm(loader, total=len(ds), desc="extract", unit="file", disable=not progress):
                if res is None:
                    if strict:
                        raise AudioVAEError(problem, src)
                    skipped.append((src, problem))
                    continue
                logmel, n = res
                _save_npy(parts / f"{uid}.npy", logmel.astype(np.float32))
                rec = {"id": uid, "source": src, "num_samples": int(n), "split": split_of(uid, val_fraction)}
                meta_fh.write(json.dumps(rec) + "\n")
                meta_fh.flush()
                meta[uid] = rec
    return _assemble(out, cfg, ids, meta, skipped, val_fraction)


def _identity(item):
    return item


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _read_meta(path: Path) -> dict[str, dict]:
    meta = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                meta[rec["id"]] = rec
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut short by a crash: that file is simply redone
    return meta


def _assemble(out: Path, cfg: MelConfig, ids: list[str], meta: dict, skipped: list, val_fraction: float) -> ExtractResult:
    done = [u for u in ids if u in meta and (out / "parts" / f"{u}.npy").exists()]
    if not done:
        raise DataError("no usable audio: every input was skipped (see report.txt)", out)
    splits = {meta[u]["split"] for u in done}
    if "val" not in splits and len(done) > 1:
        meta[done[-1]]["split"] = "val"  # at least one validation file
    if "train" not in {meta[u]["split"] for u in done}:
        meta[done[0]]["split"] = "train"
    stats = RunningStats(cfg.n_mels)
    index, offset = [], 0
    arrays = []
    for u in done:
        a = np.load(out / "parts" / f"{u}.npy", allow_pickle=False)
        arrays.append(a)
        index.append({**meta[u], "offset": offset, "frames": int(a.shape[1])})
        offset += a.shape[1]
        if meta[u]["split"] == "train":
            stats.update(a)
    with atomic_path(out / "feats.f32") as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(offset, cfg.n_mels))
        for rec, a in zip(index, arrays):
            mm[rec["offset"] : rec["offset"] + rec["frames"]] = a.T
        mm.flush()
        del mm
    mean, std = stats.finalize()
    buf = io.BytesIO()
    np.savez(buf, mean=mean.astype(np.float32), std=std.astype(np.float32), frames=np.array(stats.count))
    atomic_write_bytes(out / "stats.npz", buf.getvalue())
    atomic_write_text(out / "index.json", json.dumps(index, indent=0))
    lines = [f"{len(done)} utterances, {offset} frames ({offset / cfg.frame_rate:.1f} s)", f"skipped {len(skipped)} file(s)"]
    lines += [f"  {src}: {problem}" for src, problem in skipped]
    atomic_write_text(out / "report.txt", "\n".join(lines) + "\n")
    return ExtractResult(out, len(done), offset, skipped)


class FeatureCache:
    """Read side of a feature cache: memory-mapped frames, index, statistics, MelConfig."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        missing = [n for n in ("config.yaml", "feats.f32", "index.json", "stats.npz") if not (self.path / n).exists()]
        if missing:
            raise DataError(f"not a complete feature cache (missing {', '.join(missing)}); run `audiovae extract`", self.path)
        data = load_yaml(self.path / "config.yaml")
        self.mel_config = MelConfig.from_dict(data.get("mel", {}), str(self.path / "config.yaml"))
        self.feats = np.load(self.path / "feats.f32", mmap_mode="r", allow_pickle=False)
        self.index = json.loads((self.path / "index.json").read_text())
        with np.load(self.path / "stats.npz", allow_pickle=False) as st:
            self.mean, self.std = st["mean"], st["std"]

    def utterances(self, split: str | None = None) -> list[dict]:
        return [r for r in self.index if split is None or r["split"] == split]

    def logmel(self, rec: dict) -> np.ndarray:
        """``(n_mels, T)`` log-mel of one utterance (a copy)."""
        return np.array(self.feats[rec["offset"] : rec["offset"] + rec["frames"]].T)
