"""`audiovae extract`: audio files -> a memory-mappable log-mel cache with statistics.

SOURCE is a folder of audio files, a list file (one path per line), a single file,
a manifest from ``audiovae prepare`` (``manifest.tsv`` or its folder), or a lhotse
CutSet/RecordingSet (``.jsonl``/``.jsonl.gz``, see :mod:`audiovae.data.lhotse`). From a
manifest the cache keeps each utterance's split (train/val/test), speaker, label and
text; from a folder or a lhotse manifest the split is a hash of the utterance id
(``val_fraction``), and a lhotse cut into a longer recording gets only its segment.

Cache layout (FEATS_DIR)::

    config.yaml      format version and the MelConfig (a cache made with another config is never reused)
    parts/<id>.npy   one utterance's log-mel (n_mels, T), written atomically as it is computed
    parts*.jsonl     what each part is: id, source file, samples (or why the file was skipped);
                     parts.jsonl for a single process, parts-I-of-N.jsonl for shard I of N
    feats.f32        every utterance's frames, concatenated: (total_frames, n_mels) float32 (.npy format)
    index.json       per utterance: id, source (absolute), num_samples, split, [speaker, label, text],
                     [segment: start and duration in seconds inside source, for a lhotse cut], offset, frames
    stats.npz        per-bin mean and std over the training split, frame count
    cache.json       the commit record, written last: version, n_mels, utterances, frames, size of
                     feats.f32, sha1 of index.json and stats.npz
    report.txt       skipped files and why
    .audiovae.lock   held (flock) while a command writes here; see :mod:`audiovae.folders`

The three assembled files are one set: assembling first deletes ``cache.json`` and
writes it again only after the other three are in place, and :class:`FeatureCache`
checks the set on open (version, n_mels, frame count and size of feats.f32, contiguous
offsets, checksums). A run killed at any instant therefore leaves either the old
consistent set or one that refuses to open with a :class:`DataError` naming the file;
running the same command again computes only the missing parts and re-assembles.

Sharding (``shard=(i, n)``, ``--shard i/N``, or under ``torchrun`` from RANK/WORLD_SIZE):
rank ``i`` featurises utterances ``i, i+n, i+2n, ...`` of SOURCE into ``parts/`` and
``parts-i-of-n.jsonl`` and does not assemble. Then :func:`merge` (``--merge``, the
same SOURCE) assembles the cache; under torchrun rank 0 does so itself after a
barrier (all ranks must share FEATS_DIR; without a shared file system, copy every
rank's ``parts/`` and ``parts-*.jsonl`` into one folder and run ``--merge`` there).
Assembly follows SOURCE's order, so a merged cache is byte-for-byte the cache one
process makes from the same parts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from audiovae.audio.config import MelConfig
from audiovae.audio.frontend import MelFrontend
from audiovae.audio.io import find_audio_files, load_audio, note_resampled
from audiovae.audio.melfile import check_finite
from audiovae.audio.normalize import RunningStats
from audiovae.config import load_yaml, save_yaml
from audiovae.data.corpora import manifest_path, read_manifest
from audiovae.data.lhotse import is_lhotse_manifest, read_lhotse
from audiovae.errors import AudioVAEError, ConfigError, DataError
from audiovae.folders import output_folder
from audiovae.npfile import load_npy, load_npz, npy_info
from audiovae.utils import atomic_path, atomic_write_bytes, atomic_write_text, file_digest, world_size
from audiovae.utils import rank as dist_rank

CACHE_VERSION = 2
SET_FILES = ("feats.f32", "index.json", "stats.npz")


def utterance_id(path: Path, root: Path | None) -> str:
    """A file-system-safe id: the path relative to the corpus root, '/' replaced by '__'."""
    rel = path.relative_to(root) if root is not None and root in path.parents else Path(path.name)
    return str(rel.with_suffix("")).replace(os.sep, "__").replace(" ", "_")


def split_of(uid: str, val_fraction: float) -> str:
    """Deterministic train/validation split by file (a hash of the id)."""
    h = int(hashlib.sha1(uid.encode("utf-8", "surrogateescape")).hexdigest()[:8], 16) / 0xFFFFFFFF  # any file name
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


@dataclass
class InputItem:
    """One utterance to featurise: its file, id, split (None: decided by ``val_fraction``) and labels."""

    path: Path
    id: str
    split: str | None = None
    extra: dict = field(default_factory=dict)  # speaker / label / text, only the non-empty ones
    segment: tuple[float, float] | None = None  # (start, duration) in seconds inside the file; None: all of it


def list_items(source: str | os.PathLike) -> tuple[list[InputItem], bool]:
    """The utterances of SOURCE and whether they come from a manifest (with fixed splits).

    Paths are absolute, so the cache's records (parts*.jsonl, index.json ``source``) name the same files
    from any working directory."""
    if is_lhotse_manifest(source):  # a lhotse CutSet / RecordingSet: splits by id, as for a folder
        return [InputItem(u.path, u.id, None, {k: v for k, v in (("speaker", u.speaker), ("text", u.text)) if v},
                          u.segment) for u in read_lhotse(source)], False
    mpath = manifest_path(source)
    if mpath is not None:
        man = read_manifest(mpath)
        items = [InputItem(Path(os.path.abspath(u.path)), u.id, u.split,
                           {k: v for k, v in (("speaker", u.speaker), ("label", u.label), ("text", u.text)) if v})
                 for u in man.utterances]
        return items, True
    files, root = list_inputs(source)
    items = [InputItem(Path(os.path.abspath(f)), utterance_id(f, root)) for f in files]
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise DataError("two input files map to the same utterance id; give a folder so ids keep the relative path",
                        source)
    return items, False


class _AudioFiles(Dataset):
    """Loads and featurises one file per item (runs in DataLoader workers)."""

    def __init__(self, files: list[Path], ids: list[str], cfg: MelConfig, segments: list | None = None):
        self.files, self.ids, self.cfg = files, ids, cfg
        self.segments = segments or [None] * len(files)
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
            # counted by the parent (a worker's count would be lost): the command says once what was resampled up
            wave, _, source_sr = load_audio(self.files[i], self.cfg.sample_rate, min_samples=self.cfg.win_length,
                                            segment=self.segments[i], return_source_rate=True, note=False)
        except AudioVAEError as exc:
            return self.ids[i], str(self.files[i]), None, exc.problem
        with torch.no_grad():
            logmel = self.fe(torch.from_numpy(wave)[None])[0].numpy()
        try:
            check_finite(logmel, self.files[i])
        except AudioVAEError as exc:
            return self.ids[i], str(self.files[i]), None, exc.problem
        return self.ids[i], str(self.files[i]), (logmel, len(wave), source_sr), None


@dataclass
class ExtractResult:
    out_dir: Path
    n_utterances: int
    n_frames: int
    skipped: list[tuple[str, str]]
    assembled: bool = True  # False for one shard of a sharded run (merge assembles)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard wants I/N (e.g. 0/4), not {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text}: need 0 <= I < N")
    return i, n


def _prepare_out(out: Path, cfg: MelConfig, overwrite: bool) -> None:
    """Check (or write) config.yaml; with ``overwrite`` clear a cache made with another MelConfig."""
    cfg_path = out / "config.yaml"
    wanted = {"version": CACHE_VERSION, "mel": cfg.to_dict()}
    if cfg_path.exists():
        have = load_yaml(cfg_path)
        if have.get("mel") != wanted["mel"]:
            if not overwrite:
                raise ConfigError(
                    "this feature cache was made with a different configuration; "
                    "use another output folder or --overwrite to rebuild it", out)
            for p in (out / "parts").glob("*.npy"):
                p.unlink()
            for p in out.glob("parts*.jsonl"):
                p.unlink()
            for name in ("cache.json", *SET_FILES):
                (out / name).unlink(missing_ok=True)
        if have == wanted:
            return
    save_yaml(cfg_path, wanted)


def extract(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: MelConfig | None = None,
    workers: int = 2,
    val_fraction: float = 0.1,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> ExtractResult:
    """Build (or finish, or repair) a feature cache; see the module docstring for the layout.

    ``val_fraction``: share of files held out for validation when SOURCE is not a
    manifest (a manifest's own splits are kept). ``shard=(i, n)``: featurise only
    this rank's utterances and leave assembly to :func:`merge`. Under torchrun
    (WORLD_SIZE > 1) with no ``shard``, the rank's shard is done and rank 0 merges
    after a barrier. Returns counts and the skipped files ``(path, problem)``.
    """
    cfg = cfg or MelConfig()
    world = world_size()
    if shard is None and world > 1:
        return _extract_torchrun(source, out_dir, cfg, workers, val_fraction, strict, progress, world)
    if shard is not None and overwrite:
        raise ConfigError("--overwrite cannot be combined with sharding (shards share the folder); empty it first")
    out = Path(out_dir)
    items, _ = list_items(source)
    if not items:
        raise DataError("no audio files found", source)
    # shards of one sharded extract share the folder; anything else has it to itself
    with output_folder(out, "cache", shared=shard is not None, clean=("", "parts")):
        return _extract_into(out, items, cfg, workers, val_fraction, strict, overwrite, progress, shard)


def _extract_into(out: Path, items: list[InputItem], cfg: MelConfig, workers: int, val_fraction: float, strict: bool,
                  overwrite: bool, progress: bool, shard: tuple[int, int] | None) -> ExtractResult:
    _prepare_out(out, cfg, overwrite)
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    mine = items if shard is None else items[shard[0] :: shard[1]]
    meta_path = out / ("parts.jsonl" if shard is None else f"parts-{shard[0]}-of-{shard[1]}.jsonl")
    meta = _read_meta(out)
    todo = [it for it in mine if not _have_part(out, meta, it)]
    if todo:
        ds = _AudioFiles([it.path for it in todo], [it.id for it in todo], cfg, [it.segment for it in todo])
        loader = DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=_identity)
        desc = "extract" if shard is None else f"extract {shard[0]}/{shard[1]}"
        by_id = {it.id: it for it in todo}
        with open(meta_path, "a", encoding="utf-8") as meta_fh:
            for uid, src, res, problem in tqdm(loader, total=len(ds), desc=desc, unit="file", disable=not progress):
                if res is None:
                    if strict:
                        raise AudioVAEError(problem, src)
                    rec = {"id": uid, "source": src, "skipped": problem}
                else:
                    logmel, n, source_sr = res
                    note_resampled(source_sr, cfg.sample_rate)
                    _save_npy(parts / f"{uid}.npy", logmel.astype(np.float32))
                    rec = {"id": uid, "source": src, "num_samples": int(n)}
                if by_id[uid].segment is not None:
                    rec["segment"] = list(by_id[uid].segment)
                meta_fh.write(json.dumps(rec) + "\n")
                meta_fh.flush()
                meta[uid] = rec
    if shard is not None:
        done = [it for it in mine if _have_part(out, meta, it)]
        bad = [(str(it.path), meta[it.id]["skipped"]) for it in mine if "skipped" in meta.get(it.id, {})]
        frames = sum(_part_frames(out, it.id) for it in done)
        return ExtractResult(out, len(done), frames, bad, assembled=False)
    return _assemble(out, cfg, items, meta, val_fraction)


def merge(source: str | os.PathLike, out_dir: str | os.PathLike, val_fraction: float = 0.1) -> ExtractResult:
    """Assemble the cache from the parts every shard wrote (same SOURCE as the shards; nothing is computed).

    Raises :class:`DataError` when an utterance of SOURCE has neither a part nor a
    skip record (a shard has not run or did not finish).
    """
    out = Path(out_dir)
    if not (out / "config.yaml").is_file():
        raise DataError("no config.yaml: no shard has written here yet", out)
    items, _ = list_items(source)
    with output_folder(out, "cache", clean=("", "parts")):
        return _merge_into(out, items, val_fraction)


def _merge_into(out: Path, items: list[InputItem], val_fraction: float) -> ExtractResult:
    cfg = MelConfig.from_dict(load_yaml(out / "config.yaml").get("mel", {}), str(out / "config.yaml"))
    meta = _read_meta(out)
    missing = [it for it in items if not _have_part(out, meta, it) and "skipped" not in meta.get(it.id, {})]
    if missing:
        shards = sorted(p.name for p in out.glob("parts-*.jsonl"))
        raise DataError(f"{len(missing)} of {len(items)} utterance(s) have no part yet (e.g. {missing[0].path}); run the "
                        f"missing shards first (found: {', '.join(shards) or 'no shard records'})", out)
    return _assemble(out, cfg, items, meta, val_fraction)


def _extract_torchrun(source, out_dir, cfg, workers, val_fraction, strict, progress, world) -> ExtractResult:
    """One rank of ``torchrun ... -m audiovae extract``: its shard, a barrier, then rank 0 merges."""
    import datetime

    import torch.distributed as dist

    rank = dist_rank()
    own = not dist.is_initialized()
    if own:  # ranks may finish their shards far apart: a long barrier timeout
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=48))
    try:
        if rank == 0:
            with output_folder(Path(out_dir), "cache", shared=True):
                _prepare_out(Path(out_dir), cfg, overwrite=False)  # one writer of config.yaml
        dist.barrier()
        res = extract(source, out_dir, cfg, workers, val_fraction, strict, False, progress and rank == 0,
                      shard=(rank, world))
        dist.barrier()
        if rank == 0:
            res = merge(source, out_dir, val_fraction)
        dist.barrier()
        return res
    finally:
        if own:
            dist.destroy_process_group()


def _identity(item):
    return item


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _read_meta(out: Path) -> dict[str, dict]:
    """Part records of every process (parts.jsonl, parts-I-of-N.jsonl); the last record of an id wins."""
    meta = {}
    for path in sorted(out.glob("parts*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                meta[rec["id"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a crash: that file is simply redone
    return meta


def _have_part(out: Path, meta: dict, it: InputItem) -> bool:
    rec = meta.get(it.id)
    return (rec is not None and "skipped" not in rec and rec.get("source") == str(it.path)
            and rec.get("segment") == (list(it.segment) if it.segment is not None else None) and _part_ok(out / "parts" / f"{it.id}.npy"))


def _part_ok(path: Path) -> bool:
    """A part that exists and is whole (a truncated or foreign one is computed again)."""
    try:
        shape, _ = npy_info(path)
    except (AudioVAEError, OSError):
        return False
    return len(shape) == 2


def _part_frames(out: Path, uid: str) -> int:
    return int(npy_info(out / "parts" / f"{uid}.npy")[0][1])


def _assemble(out: Path, cfg: MelConfig, items: list[InputItem], meta: dict, val_fraction: float) -> ExtractResult:
    done = [it for it in items if _have_part(out, meta, it)]
    skipped = [(str(it.path), meta[it.id]["skipped"]) for it in items if "skipped" in meta.get(it.id, {})]
    if not done:
        _write_report(out, [], 0, cfg, skipped)
        raise DataError("no usable audio: every input was skipped (see report.txt)", out)
    split = {it.id: it.split or split_of(it.id, val_fraction) for it in done}
    if not any(it.split for it in done):  # a folder: at least one train and one validation file
        if "val" not in split.values() and len(done) > 1:
            split[done[-1].id] = "val"
        if "train" not in split.values():
            split[done[0].id] = "train"
    if "train" not in split.values():
        raise DataError("no usable utterance in the train split (the statistics come from it)", out)
    index, offset = [], 0
    for it in done:
        n = _part_frames(out, it.id)
        index.append({"id": it.id, "source": str(it.path), "num_samples": int(meta[it.id]["num_samples"]),
                      "split": split[it.id], **it.extra, **({"segment": list(it.segment)} if it.segment else {}),
                      "offset": offset, "frames": n})
        offset += n
    if _up_to_date(out, index, cfg):
        return ExtractResult(out, len(done), offset, skipped)
    # the set is rewritten: withdraw the commit record first, so no moment has a mixed set that opens
    (out / "cache.json").unlink(missing_ok=True)
    stats = RunningStats(cfg.n_mels)
    with atomic_path(out / "feats.f32") as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(offset, cfg.n_mels))
        for rec in index:
            a = load_npy(out / "parts" / f"{rec['id']}.npy", DataError)
            if a.shape != (cfg.n_mels, rec["frames"]):
                raise DataError(f"part has shape {a.shape}, expected ({cfg.n_mels}, {rec['frames']})",
                                out / "parts" / f"{rec['id']}.npy")
            mm[rec["offset"] : rec["offset"] + rec["frames"]] = a.T
            if rec["split"] == "train":
                stats.update(a)
        mm.flush()
        del mm
    mean, std = stats.finalize()
    buf = io.BytesIO()
    np.savez(buf, mean=mean.astype(np.float32), std=std.astype(np.float32), frames=np.array(stats.count))
    atomic_write_bytes(out / "stats.npz", buf.getvalue())
    atomic_write_text(out / "index.json", json.dumps(index, indent=0))
    commit = {"version": CACHE_VERSION, "n_mels": cfg.n_mels, "utterances": len(index), "frames": offset,
              "feats_bytes": (out / "feats.f32").stat().st_size, "index_sha1": file_digest(out / "index.json", "sha1"),
              "stats_sha1": file_digest(out / "stats.npz", "sha1")}
    atomic_write_text(out / "cache.json", json.dumps(commit, indent=1))
    _write_report(out, done, offset, cfg, skipped)
    return ExtractResult(out, len(done), offset, skipped)


def _up_to_date(out: Path, index: list[dict], cfg: MelConfig) -> bool:
    """True when the cache on disk is a consistent set with exactly this index (nothing to rewrite)."""
    try:
        cache = FeatureCache(out)
    except AudioVAEError:
        return False
    return cache.index == index and cache.mel_config == cfg


def _write_report(out: Path, done: list, frames: int, cfg: MelConfig, skipped: list) -> None:
    lines = [f"{len(done)} utterances, {frames} frames ({frames / cfg.frame_rate:.1f} s)", f"skipped {len(skipped)} file(s)"]
    lines += [f"  {src}: {problem}" for src, problem in skipped]
    atomic_write_text(out / "report.txt", "\n".join(lines) + "\n", errors="surrogateescape")  # names as on disk


class FeatureCache:
    """Read side of a feature cache: memory-mapped frames, index, statistics, MelConfig.

    Opening checks that feats.f32, index.json and stats.npz are one consistent set
    (see the module docstring) and raises :class:`DataError` naming the file that
    does not fit; re-running ``audiovae extract`` repairs such a cache.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = p = Path(path)
        missing = [n for n in ("config.yaml", *SET_FILES) if not (p / n).exists()]
        if missing:
            raise DataError(f"not a complete feature cache (missing {', '.join(missing)}); run `audiovae extract`", p)
        repair = "; re-run `audiovae extract` with the same SOURCE and -o to repair it"
        if not (p / "cache.json").exists():
            raise DataError("torn or unfinished feature cache: cache.json, written after the other files, is missing "
                            "(an interrupted extract, or a cache from an older audiovae)" + repair, p / "cache.json")
        try:
            commit = json.loads((p / "cache.json").read_text())
            commit["version"], commit["frames"], commit["n_mels"]  # noqa: B018
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError("unreadable commit record" + repair, p / "cache.json") from None
        if commit["version"] != CACHE_VERSION:
            raise DataError(f"cache format version {commit['version']}, this audiovae reads {CACHE_VERSION}" + repair,
                            p / "cache.json")
        data = load_yaml(p / "config.yaml")
        self.mel_config = MelConfig.from_dict(data.get("mel", {}), str(p / "config.yaml"))
        n_mels = self.mel_config.n_mels
        if commit["n_mels"] != n_mels:
            raise DataError(f"made with {commit['n_mels']} mel bins but config.yaml says {n_mels}" + repair, p / "cache.json")
        if file_digest(p / "index.json", "sha1") != commit.get("index_sha1"):
            raise DataError("does not belong with feats.f32 (checksum differs from cache.json)" + repair, p / "index.json")
        if file_digest(p / "stats.npz", "sha1") != commit.get("stats_sha1"):
            raise DataError("does not belong with feats.f32 (checksum differs from cache.json)" + repair, p / "stats.npz")
        try:
            self.feats = load_npy(p / "feats.f32", DataError, mmap=True)  # empty, truncated, objects: one line
        except DataError as exc:
            raise DataError(f"unreadable frame array ({exc.problem})" + repair, p / "feats.f32") from None
        size = (p / "feats.f32").stat().st_size
        if self.feats.ndim != 2 or self.feats.shape[1] != n_mels or self.feats.shape[0] != commit["frames"] \
                or size != commit.get("feats_bytes"):
            raise DataError(f"holds {self.feats.shape} frames in {size} bytes, the cache was assembled with "
                            f"({commit['frames']}, {n_mels}) in {commit.get('feats_bytes')} bytes" + repair, p / "feats.f32")
        self.index = json.loads((p / "index.json").read_text())
        expect = 0
        for rec in self.index:
            if rec.get("offset") != expect or int(rec.get("frames", 0)) < 1:
                raise DataError(f"utterance {rec.get('id')!r} has offset {rec.get('offset')} and {rec.get('frames')} "
                                f"frames; offsets must be contiguous from 0 (expected {expect})" + repair, p / "index.json")
            expect += rec["frames"]
        if expect != self.feats.shape[0]:
            raise DataError(f"the utterances add up to {expect} frames, feats.f32 has {self.feats.shape[0]}" + repair,
                            p / "index.json")
        st = load_npz(p / "stats.npz", error=DataError)  # bounded, and never an object array
        if "mean" not in st or "std" not in st:
            raise DataError("holds no mean and std" + repair, p / "stats.npz")
        self.mean, self.std = st["mean"], st["std"]
        if self.mean.dtype.kind != "f" or self.std.dtype.kind != "f":
            raise DataError(f"statistics of dtype {self.mean.dtype}/{self.std.dtype}, expected floats" + repair,
                            p / "stats.npz")
        if self.mean.shape != (n_mels,) or self.std.shape != (n_mels,):
            raise DataError(f"statistics of shape {self.mean.shape}, expected ({n_mels},)" + repair, p / "stats.npz")

    def utterances(self, split: str | None = None) -> list[dict]:
        return [r for r in self.index if split is None or r["split"] == split]

    def logmel(self, rec: dict) -> np.ndarray:
        """``(n_mels, T)`` log-mel of one utterance (a copy)."""
        return np.array(self.feats[rec["offset"] : rec["offset"] + rec["frames"]].T)
