"""Issue 12 D.10: error bodies never leak server internals; ``/metrics`` can require a token and
never exposes per-tenant data.

The API here runs its backbone from a local weights file (``MMLOP_PRETRAINED=<path>``) and an
adapter trained on another backbone is put in its blob store, so the 409 ``backbone-mismatch``
would have the two server paths to leak (it used to show both). The details go to the log.
"""

from __future__ import annotations

import shutil
import uuid

import pytest
from PIL import Image

from mmlop_core.shipped import SHIPPED, WEIGHTS_DIR
from service.jobs import JobStatus, checkpoint_prefix
from utils.factories import make_adaptation, make_tenant
from utils.hostile import assert_problem, encode
from utils.stack import Stack, base_env

METRICS_TOKEN = "metrics-token-0123456789"


@pytest.fixture(scope="module")
def file_weights_api(tmp_path_factory):
    """API only, SQLite, backbone weights from a file under the stack's folder, metrics token set."""
    cwd = tmp_path_factory.mktemp("file_weights_api")
    weights = cwd / "weights" / "tiny-backbone.safetensors"
    weights.parent.mkdir()
    shutil.copy(WEIGHTS_DIR / SHIPPED[("mmlop-tiny", "fmnist")].filename, weights)
    env = base_env({"MMLOP_PRETRAINED": str(weights), "MMLOP_METRICS_TOKEN": METRICS_TOKEN})
    stack = Stack(env=env, cwd=cwd, database_url=f"sqlite:///{cwd}/var/mmlop.db",
                  blob_root=cwd / "var" / "blobs")
    try:
        stack.migrate()
        stack.start_api()
        stack.wait_ready()
        stack.weights = weights  # type: ignore[attr-defined]
        yield stack
    finally:
        stack.stop()


def _foreign_adapter_job(stack) -> tuple[str, str, str]:
    """A succeeded job whose checkpoint was trained on random tiny weights: (tenant, key, job).

    The tenant's name starts with ``acme-leak-check``."""
    from mmlop_core import save_adapter
    from utils.core import quick_adapter

    tenant_id, key = make_tenant(stack.database_url, f"acme-leak-check-{uuid.uuid4().hex[:8]}")
    job = make_adaptation(stack.database_url, tenant_id, JobStatus.succeeded,
                          class_names=["t-shirt", "trouser", "pullover"])
    save_adapter(quick_adapter(steps=1), stack.blob_root / checkpoint_prefix(tenant_id, job) / "adapter")
    return tenant_id, key, job


def test_backbone_mismatch_names_no_server_path(file_weights_api):
    stack = file_weights_api
    _, key, job = _foreign_adapter_job(stack)
    png = encode(Image.new("RGB", (8, 8), "red"), "PNG")
    with stack.client(key) as c:
        resp = c.post(f"/classify/{job}", files=[("images", ("a.png", png, "image/png"))])
    body = assert_problem(resp, 409)
    assert body["type"].endswith("backbone-mismatch")
    for secret in (str(stack.cwd), str(stack.blob_root), str(stack.weights), "tiny-backbone",
                   "/tmp", "/work"):
        assert secret not in resp.text, (secret, body)
    assert "backbone" in body["detail"] and "train" in body["detail"], body
    log = stack.log_tail("api", chars=1_000_000)
    assert str(stack.blob_root) in log and job in log, log[-2000:]


def test_metrics_requires_the_bearer_token_when_set(file_weights_api):
    with file_weights_api.client() as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": METRICS_TOKEN},
                        {"Authorization": f"Basic {METRICS_TOKEN}"},
                        {"Authorization": f"Bearer {METRICS_TOKEN}x"}):
            resp = c.get("/metrics", headers=headers)
            body = assert_problem(resp, 401)
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert METRICS_TOKEN not in resp.text and "mmlop_http_requests" not in resp.text, body
        ok = c.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert ok.status_code == 200 and "mmlop_http_requests_total" in ok.text
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def test_wrong_metrics_tokens_count_as_failed_authentication(file_weights_api):
    """Wrong /metrics tokens were unlimited (35 in a row all 401): they count per client address
    like bad API keys, and past ``auth_failure_limit`` (30 per window) the address gets 429."""
    guesser = {"X-Forwarded-For": "203.0.113.7"}  # uvicorn trusts the header from 127.0.0.1
    with file_weights_api.client() as c:
        codes = []
        for n in range(61):  # windows are fixed: one boundary may reset the count once
            codes.append(c.get("/metrics", headers={**guesser, "Authorization": f"Bearer guess-{n}"}).status_code)
            if codes[-1] == 429:
                break
        assert codes[-1] == 429 and len(codes) >= 31 and set(codes[:-1]) == {401}, codes
        limited = c.get("/metrics", headers={**guesser, "Authorization": f"Bearer {METRICS_TOKEN}"})
        body = assert_problem(limited, 429)
        assert body["type"].endswith("/auth-rate-limited") and limited.headers["retry-after"]
        other = c.get("/metrics", headers={"X-Forwarded-For": "203.0.113.8",
                                           "Authorization": f"Bearer {METRICS_TOKEN}"})
        assert other.status_code == 200


def test_metrics_expose_no_tenant_data(file_weights_api):
    stack = file_weights_api
    tenant_id, key, job = _foreign_adapter_job(stack)
    with stack.client(key) as c:
        c.get("/adaptations")
        c.get(f"/adaptations/{job}")
        c.get(f"/adaptations/{tenant_id}")
        c.get(f"/adaptations?status=succeeded&offset=1&limit=2")
        c.get(f"/{tenant_id}/{job}")  # unmatched route carrying ids
        c.get(f"/adaptations/{job}/checkpoint")
    with stack.client(key + "x") as c:
        c.get("/adaptations")
    with stack.client() as c:
        text = c.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    assert "mmlop_http_requests_total" in text and 'route="/adaptations/{adaptation_id}"' in text
    for secret in (tenant_id, job, key, key[6:20], "acme-leak-check"):
        assert secret not in text, secret
