"""The same flow on the embedded defaults: SQLite + kombu's server-less filesystem broker
(no MMLOP_DATABASE_URL / MMLOP_BROKER_URL / MMLOP_BLOB_ROOT set), real uvicorn + celery worker.
Training data goes up as one class-folder zip archive.

This test is about the embedded stack; the accuracy of the default preset with the default
settings (no config, 20 epochs) is asserted on the production stack by tests/api/test_api_e2e.py.
Here the default preset trains for EPOCHS epochs only (a second full-length copy of that training
took about two of the suite's minutes), and the adapter the embedded stack serves must still reach
E2E_MIN_ACCURACY on 200 held-out photos (chance 0.10)."""

from __future__ import annotations

import json
import logging

import pytest

from utils.factories import E2E_MIN_ACCURACY, class_zip, classify_accuracy, make_tenant, photos
from utils.stack import wait_for_status

pytestmark = pytest.mark.slow

EPOCHS = 3


def test_embedded_end_to_end(embedded_stack):
    stack = embedded_stack
    assert (stack.cwd / "var" / "mmlop.db").is_file()
    _, key = make_tenant(stack.database_url)
    archive = class_zip(photos("train", 16), top="fashion")
    with stack.client(key) as c:
        resp = c.post("/adaptations", files={"archive": ("train.zip", archive, "application/zip")},
                      data={"config": json.dumps({"train": {"epochs": EPOCHS}})})  # the default preset
        assert resp.status_code == 202, resp.text
        job = resp.json()
        assert job["num_images"] == 160 and len(job["class_names"]) == 10
        body = wait_for_status(c, job["id"], {"succeeded", "failed", "canceled"}, timeout=300)
        assert body["status"] == "succeeded", (body, stack.log_tail("worker"))
        acc = classify_accuracy(c, job["id"], photos("test", 20))
        logging.getLogger(__name__).info("held-out accuracy %.3f", acc)
        assert acc >= E2E_MIN_ACCURACY, f"accuracy {acc:.3f} is below {E2E_MIN_ACCURACY}"
        ckpt = c.get(f"/adaptations/{job['id']}/checkpoint")
        assert ckpt.status_code == 200 and ckpt.content[:2] == b"PK"
        assert list((stack.cwd / "var" / "broker" / "queue").glob("*.msg")) == []
