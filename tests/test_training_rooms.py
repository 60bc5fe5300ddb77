"""The trainer loop apart from its rooms (issue 17): metrics, logging and runtime each in their own module,
one definition each; the old import paths through ``audiovae.training.trainer`` still work."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from audiovae.training import logging as tlog, metrics, runtime, trainer

ROOT = Path(__file__).resolve().parents[1]
ROOMS = {
    metrics: ["validate", "log_jacobian", "flatten_latents", "active_units"],
    tlog: ["_CSV", "_LogWindow", "_Progress", "TRAIN_COLUMNS", "VAL_COLUMNS"],
    runtime: ["RESUMABLE_CHANGES", "_dist_info", "_device", "amp_setup", "_graceful_stop", "check_resume_config",
              "_check_resume_data", "_all_reduce_sum"],
}


@pytest.mark.parametrize("room", list(ROOMS), ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_each_name_lives_in_its_room_and_is_still_importable_from_the_trainer(room):
    for name in ROOMS[room]:
        assert getattr(trainer, name) is getattr(room, name), name
    assert trainer._noise is runtime.noise


def test_the_trainer_defines_only_the_loop():
    tree = ast.parse((ROOT / "audiovae" / "training" / "trainer.py").read_text())
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert defined == {"train", "_train", "resolve_config", "Trainer"}
    # evaluation measures with the trainer's metrics, from their own module
    evaluate = (ROOT / "audiovae" / "tasks" / "evaluate.py").read_text()
    assert "from audiovae.training.metrics import" in evaluate and "training.trainer" not in evaluate
