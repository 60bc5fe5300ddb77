"""Results a task computed for a run live in ``RUN/results/<name>.json``; the report shows whatever is there.

Contract between the tasks: ``probe.json``, ``analysis.json``, ``evaluate.json``
(written by probe, analyze, evaluate/demo), ``repair_images.json`` /
``repair_audio.json`` (written by repair; paths of the pictures and wavs it
made, relative to the JSON file or absolute).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from audiovae.utils import atomic_write_text


def run_root(path: str | os.PathLike) -> Path:
    """The run folder of a model path: ``run/best`` -> ``run``; a run folder or bare model directory -> itself."""
    path = Path(path)
    if path.name == "best" and (path.parent / "config.yaml").is_file():
        return path.parent
    return path


def _clean(obj):
    """JSON-safe copy: NaN/inf become null, numpy scalars and arrays plain Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(obj) -> str:
    return json.dumps(_clean(obj), indent=2)


def save_result(obj: dict, json_out: str | os.PathLike | None = None, run: str | os.PathLike | None = None,
                name: str = "result") -> list[Path]:
    """Write a task's result as JSON (NaN/inf as null; atomic) to ``json_out`` and, with ``run``, to
    ``RUN/results/<name>.json`` (which ``audiovae report`` shows); returns the paths written, in that order."""
    text = to_json(obj)
    written = []
    if json_out is not None:
        atomic_write_text(json_out, text)
        written.append(Path(json_out))
    if run is not None:
        path = run_root(run) / "results" / f"{name}.json"
        atomic_write_text(path, text)
        written.append(path)
    return written


def write_result(run: str | os.PathLike, name: str, obj: dict) -> Path:
    """Write ``obj`` to ``RUN/results/<name>.json`` (atomic) and return the path."""
    return save_result(obj, run=run, name=name)[0]


def read_results(run: str | os.PathLike) -> dict[str, dict]:
    """Every ``RUN/results/*.json`` that parses, by name (a broken file is reported under its name as an error)."""
    out: dict[str, dict] = {}
    folder = run_root(run) / "results"
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if not p.resolve().is_relative_to(folder.resolve()):  # a link out of the run is not the run's result
            out[p.stem] = {"error": f"{p}: a link to a file outside {folder}, not read"}
            continue
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            out[p.stem] = {"error": f"{p}: unreadable ({exc})"}
    return out
