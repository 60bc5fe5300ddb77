"""What image and audio repair share: result files, progress, which model a run holds, and which data is images."""

from __future__ import annotations

import os
from pathlib import Path

def looks_like_image_data(path: Path) -> bool:
    from audiovae.data.images import detect_image_folder

    return path.is_dir() and bool(detect_image_folder(path))


def write_results(res: dict, json_path, run, name: str) -> None:
    from audiovae.tasks.results import save_result

    run = Path(run)
    # a run folder (the trainer's output, with its best/ model) gets a copy for `audiovae report`
    is_run = run.is_dir() and ((run / "best").is_dir() or (run / "metrics.csv").exists())
    written = save_result(res, json_path, run if is_run else None, name)
    if is_run:
        res.setdefault("files", {})["results"] = str(written[-1].resolve())


def tqdm_or_plain(it, progress: bool, desc: str):
    if not progress:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="batch")


def load_run_kind(run: str | os.PathLike, checkpoint: str = "best") -> str:
    """The registered model name of a run (``mnist``, ``conv``...), read from its configuration only."""
    from audiovae.training.checkpoint import read_model_config, resolve_model_dir

    return str(read_model_config(resolve_model_dir(run, checkpoint)).get("model"))
