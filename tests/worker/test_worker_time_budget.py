"""``job_max_seconds`` covers every phase of an attempt (issue 12, B.5), with the issue's
settings (``MMLOP_JOB_MAX_SECONDS=1``, ``MMLOP_VISIBILITY_TIMEOUT=62``) on a real worker.

A 100-class job (one photo per class) spends its budget computing the text features of its
classes, before the first step. Before the fix that phase was outside the budget: the attempt
ran on (a 450-class job past the visibility timeout, so Redis redelivered it to a second
worker). Now it fails at once, in attempt 1, saying why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from utils.factories import image_multipart, make_tenant, photos, read_adaptation
from utils.stack import Stack, own_pg_stack, wait_for_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_broker_url: str) -> Iterator[Stack]:
    """API + worker with a one-second job budget, on a database and queue of their own."""
    with own_pg_stack(tmp_path_factory.mktemp("time_budget"), redis_broker_url,
                      {"MMLOP_JOB_MAX_SECONDS": "1", "MMLOP_VISIBILITY_TIMEOUT": "62"}, worker_concurrency=1) as s:
        yield s


def test_a_budget_spent_on_text_features_fails_attempt_1_saying_why(stack):
    _, key = make_tenant(stack.database_url)
    one_photo = photos("train", 1, ["bag"])[0][1]
    files, data = image_multipart([(f"class {i:03d}", one_photo) for i in range(100)])
    config = {"adapter": {"preset": "ivlp"}, "train": {"epochs": 1}}
    with stack.client(key) as c:
        resp = c.post("/adaptations", files=files, data={**data, "config": json.dumps(config)})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        body = wait_for_status(c, job_id, {"succeeded", "failed", "canceled"}, timeout=120)
    assert body["status"] == "failed" and body["attempt"] == 1, (body, stack.log_tail("worker"))
    assert "time budget" in body["error"] and "100 classes" in body["error"], body["error"]
    row = read_adaptation(stack.database_url, job_id)
    assert (row.finished_at - row.started_at).total_seconds() < 20


def test_a_train_budget_spent_before_the_first_step_fails_the_job_saying_so(stack):
    """``{"epochs":1,"shots":1,"max_seconds":0.01}`` on two classes (one text chunk): the budget
    is gone before step 1, so the job fails saying so instead of training past it."""
    _, key = make_tenant(stack.database_url)
    files, data = image_multipart(photos("train", 1, ["bag", "coat"]))
    config = {"train": {"epochs": 1, "shots": 1, "max_seconds": 0.01}}
    with stack.client(key) as c:
        resp = c.post("/adaptations", files=files, data={**data, "config": json.dumps(config)})
        assert resp.status_code == 202, resp.text
        body = wait_for_status(c, resp.json()["id"], {"succeeded", "failed", "canceled"}, timeout=120)
    assert body["status"] == "failed" and body["attempt"] == 1, (body, stack.log_tail("worker"))
    assert "max_seconds=0.01" in body["error"] and "before training started" in body["error"], body["error"]
