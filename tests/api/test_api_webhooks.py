"""Webhooks end to end (issue 11 item 3): a real API, training worker and light webhook worker
on PostgreSQL + Redis, and a real HTTP receiver on 127.0.0.1 (allowed by the operator allowlist).

Succeeded, failed and canceled events reach the receiver signed per Standard Webhooks (checked
with the reference ``standardwebhooks`` package), with the previous secret too during a
rotation's overlap and not after it; a receiver failing twice gets 3 attempts with a growing
backoff; each attempt is listed by ``GET /adaptations/{id}/deliveries``; a loopback or private
callback is refused at creation (422) and again at delivery.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import datetime

import pytest
from celery import Celery
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from mmlop_client import Client
from service.jobs import TRAIN_TASK_NAME
from utils.factories import image_multipart, make_adaptation, make_tenant, photos
from utils.receiver import Receiver
from utils.stack import REDIS_TEST_DB, delete_redis_queue, own_pg_stack

pytestmark = pytest.mark.slow

OVERLAP_S = 5.0


@pytest.fixture(scope="module")
def receiver():
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_broker_url):
    queue = f"mmlop-test-hooks-{uuid.uuid4().hex[:10]}"
    extra = {"MMLOP_WEBHOOK_QUEUE": queue, "MMLOP_WEBHOOK_ALLOWLIST": "127.0.0.1",
             "MMLOP_WEBHOOK_BACKOFF_S": "0.6", "MMLOP_WEBHOOK_MAX_ATTEMPTS": "3",
             "MMLOP_WEBHOOK_SECRET_OVERLAP_S": str(OVERLAP_S)}
    try:
        with own_pg_stack(tmp_path_factory.mktemp("webhooks"), redis_broker_url, extra,
                          worker_concurrency=1) as s:
            s.start_webhook_worker()
            yield s
    finally:
        delete_redis_queue(REDIS_TEST_DB, queue)


@pytest.fixture(scope="module")
def tenant(stack):
    """(tenant id, api key)."""
    return make_tenant(stack.database_url)


def _create(client, callback_url: str, epochs: int = 1):
    files, data = image_multipart(photos("train", 2, ["bag", "coat"]))
    return client.post("/adaptations", files=files,
                       data={**data, "callback_url": callback_url,
                             "config": json.dumps({"epochs": epochs})})


def _until(read, count: int, timeout: float = 30) -> list:
    """``read()`` once it returns at least ``count`` items (or after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        items = read()
        if len(items) >= count or time.monotonic() > deadline:
            return items
        time.sleep(0.2)


def _deliveries(client, job_id: str, count: int) -> list[dict]:
    def read() -> list[dict]:
        resp = client.get(f"/adaptations/{job_id}/deliveries")
        assert resp.status_code == 200, resp.text
        return resp.json()["items"]
    return _until(read, count)


def _failing_job(stack, tenant_id: str, callback_url: str) -> str:
    """A job row whose upload is missing (its training fails at once), sent to the worker."""
    job_id = make_adaptation(stack.database_url, tenant_id, callback_url=callback_url,
                             images=[[f"tenants/{tenant_id}/gone/000000.png", 0]], num_images=1)
    Celery("test-producer", broker=stack.env["MMLOP_BROKER_URL"]).send_task(
        TRAIN_TASK_NAME, args=[job_id], queue=stack.env["MMLOP_TASK_QUEUE"])
    return job_id


def test_succeeded_event_is_signed_listed_and_redeliverable(stack, tenant, receiver):
    """Through the Python client: create_adaptation(callback_url=), webhook_secret(),
    deliveries(), redeliver()."""
    _, key = tenant
    with Client(stack.base_url, key, max_retries=0) as c:
        secret = c.webhook_secret().secret
        assert secret.startswith("whsec_") and c.webhook_secret().secret == secret
        pairs = [(path, label) for label, path in photos("train", 2, ["bag", "coat"])]
        job = c.create_adaptation(pairs, config={"epochs": 1},
                                  callback_url=receiver.url("/ok/succeeded"))
        assert job.callback_url == receiver.url("/ok/succeeded")
        c.wait(job.id, progress=False, timeout=180, poll_interval=0.3)
        (got,) = receiver.wait_for("/ok/succeeded")
        event = Webhook(secret).verify(got.body, got.headers)
        assert event["type"] == "adaptation.succeeded" and got.headers["webhook-id"].startswith("msg_")
        assert event["data"]["id"] == job.id and event["data"]["status"] == "succeeded"
        assert event["data"]["metrics"]["train_images"] == 4 and event["data"]["error"] is None
        (attempt,) = _until(lambda: c.deliveries(job.id), 1)
        assert attempt.status_code == 200 and attempt.error is None and attempt.attempt == 1
        assert attempt.event_id == got.headers["webhook-id"] and attempt.duration_ms > 0
        assert attempt.type == "adaptation.succeeded" and attempt.next_retry_s is None

        assert c.redeliver(job.id, attempt.event_id) == 2
        second = receiver.wait_for("/ok/succeeded", 2)[1]
        assert second.headers["webhook-id"] == attempt.event_id and second.body == got.body
        assert [a.attempt for a in _until(lambda: c.deliveries(job.id), 2)] == [1, 2]
    _, other = make_tenant(stack.database_url)
    with stack.client(other) as c:
        assert c.get(f"/adaptations/{job.id}/deliveries").status_code == 404
        assert c.post(f"/adaptations/{job.id}/deliveries/{attempt.event_id}/redeliver"
                      ).status_code == 404


def test_failed_event_is_retried_with_growing_backoff(stack, tenant, receiver):
    tenant_id, key = tenant
    job_id = _failing_job(stack, tenant_id, receiver.url("/fail2/failed"))
    got = receiver.wait_for("/fail2/failed", 3)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    event = json.loads(got[0].body)
    assert event["type"] == "adaptation.failed" and "000000.png" in event["data"]["error"]
    with stack.client(key) as c:
        attempts = _deliveries(c, job_id, 3)
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 500), (2, 500), (3, 200)]
    assert attempts[0]["error"].startswith("HTTP 500") and attempts[2]["error"] is None
    first, second = attempts[0]["next_retry_s"], attempts[1]["next_retry_s"]
    assert 0.3 <= first <= 0.6 <= second <= 1.2 and first < second and attempts[2]["next_retry_s"] is None
    gaps = [b.at - a.at for a, b in zip(got, got[1:])]
    assert gaps[0] >= first - 0.05 and gaps[1] >= second - 0.05 and gaps[1] > gaps[0], gaps


def test_delivery_time_check_refuses_a_non_allowlisted_loopback(stack, tenant, receiver):
    """A row that skipped the creation check (written before a rule or allowlist change) is
    refused again at delivery: nothing is sent, the attempt says why."""
    tenant_id, key = tenant
    job_id = _failing_job(stack, tenant_id, f"http://127.0.0.2:{receiver.port}/ok/refused")
    with stack.client(key) as c:
        attempts = _deliveries(c, job_id, 1)
    assert attempts and attempts[0]["error"].startswith("refused: ") and "127.0.0.2" in attempts[0]["error"]
    assert attempts[0]["status_code"] is None
    assert not [r for r in receiver.requests if r.path == "/ok/refused"]


def test_canceled_events_carry_both_signatures_during_the_overlap_only(stack, tenant, receiver):
    _, key = tenant
    with stack.client(key) as c:
        old = c.get("/webhooks/secret").json()["secret"]
        rotated = c.post("/webhooks/secret/rotate").json()
        new, ends = rotated["secret"], datetime.fromisoformat(rotated["previous_expires_at"])
        assert new != old and c.get("/webhooks/secret").json()["secret"] == new
        again = c.post("/webhooks/secret/rotate")  # would cut the old secret's overlap short
        assert again.status_code == 409 and again.json()["kind"] == "rotation-in-progress"
        assert datetime.fromisoformat(again.json()["previous_expires_at"]) == ends
        assert c.get("/webhooks/secret").json()["secret"] == new

        job = _create(c, receiver.url("/ok/canceled-1"), epochs=200).json()
        assert c.post(f"/adaptations/{job['id']}/cancel").status_code == 200  # keeps the record
        (got,) = receiver.wait_for("/ok/canceled-1")
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        for secret in (new, old):
            event = Webhook(secret).verify(got.body, got.headers)
        assert event["type"] == "adaptation.canceled" and event["data"]["status"] == "canceled"
        assert [a["status_code"] for a in _deliveries(c, job["id"], 1)] == [200]
        assert c.post(f"/adaptations/{job['id']}/cancel").status_code == 200  # idempotent: no
        time.sleep(1)                                                       # second event
        assert len(receiver.wait_for("/ok/canceled-1")) == 1

        time.sleep(max(0.0, ends.timestamp() - time.time()) + 0.5)
        job = _create(c, receiver.url("/ok/canceled-2"), epochs=200).json()
        assert c.delete(f"/adaptations/{job['id']}").status_code == 204  # DELETE cancels too
        (got,) = receiver.wait_for("/ok/canceled-2")
        Webhook(new).verify(got.body, got.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(old).verify(got.body, got.headers)
        assert c.post("/webhooks/secret/rotate").status_code == 200  # overlap over: allowed


def test_callback_url_is_part_of_the_idempotency_request_hash(stack, tenant, receiver):
    _, key = tenant
    files, data = image_multipart(photos("train", 1, ["bag", "coat"]))
    headers = {"Idempotency-Key": f"hook-{uuid.uuid4().hex}"}
    with stack.client(key) as c:
        def post(path: str):
            return c.post("/adaptations", files=files, headers=headers,
                          data={**data, "config": '{"epochs": 200}',
                                "callback_url": receiver.url(path)})
        first = post("/ok/idem-1")
        assert first.status_code == 202, first.text
        other = post("/ok/idem-2")
        assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
        again = post("/ok/idem-1")
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
        assert c.delete(f"/adaptations/{first.json()['id']}").status_code == 204


def test_json_body_takes_a_callback_url_and_refuses_a_private_one(stack, tenant, receiver):
    _, key = tenant
    images = [{"data": base64.b64encode(p.read_bytes()).decode(), "label": label}
              for label, p in photos("train", 1, ["bag", "coat"])]
    with stack.client(key) as c:
        bad = c.post("/adaptations", json={"images": images, "callback_url": "http://10.0.0.1/"})
        assert bad.status_code == 422 and bad.json()["field"] == "callback_url", bad.text
        good = c.post("/adaptations", json={"images": images, "config": {"epochs": 200},
                                            "callback_url": receiver.url("/ok/json")})
        assert good.status_code == 202 and good.json()["callback_url"] == receiver.url("/ok/json")
        assert c.post(f"/adaptations/{good.json()['id']}/cancel").status_code == 200
    assert json.loads(receiver.wait_for("/ok/json")[0].body)["type"] == "adaptation.canceled"


@pytest.mark.parametrize("url", ["http://127.0.0.2:9/", "http://0x7f.2/", "http://[::ffff:10.0.0.1]/",
                                 "http://169.254.169.254/", "ftp://example.com/"])
def test_ssrf_callback_is_refused_at_creation(stack, tenant, url):
    _, key = tenant
    with stack.client(key) as c:
        resp = _create(c, url)
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == "callback_url"
