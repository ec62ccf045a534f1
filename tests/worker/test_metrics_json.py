"""A job's metrics reach the database as JSON with their structure kept (issue 12 E.22)."""
from __future__ import annotations

import json
import math

import torch

from worker.tasks import _jsonable


def test_nested_metrics_keep_their_structure_and_non_finite_floats_become_null():
    metrics = {"val_images": 12, "val_accuracy": 0.75, "val_recall": {"bag": 1.0, "coat": None, "t_shirt": 0.5},
               "loss": torch.tensor(0.25), "history": [1, torch.tensor(2.0), math.nan], "lr": math.inf,
               "stopped": "max_seconds"}
    out = _jsonable(metrics)
    assert out["val_recall"] == {"bag": 1.0, "coat": None, "t_shirt": 0.5}  # was the string "{'bag': 1.0, ...}"
    assert out["loss"] == 0.25 and out["history"] == [1, 2.0, None] and out["lr"] is None
    assert out["val_images"] == 12 and out["stopped"] == "max_seconds"
    json.dumps(out, allow_nan=False)  # storable in PostgreSQL's json and SQLite alike
