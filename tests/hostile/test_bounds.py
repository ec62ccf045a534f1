"""Issue 12 A.4: every integer a user sends is bounded before use, on SQLite and PostgreSQL.

``GET /adaptations?offset=370192444712082079744&limit=3`` answered 500 (SQLite: "Python int too
large to convert to SQLite INTEGER"). The kind: query, form and config integers (offset, limit,
top_k, epochs, shots, seed, sizes, and numbers given where floats are expected) are refused with
a 422 problem+json naming the field, on both databases, before they reach the database or torch.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from service.jobs import JobStatus
from utils.factories import make_adaptation, make_tenant
from utils.hostile import assert_problem, encode

HUGE = 370192444712082079744  # the input schemathesis found
INT32_MAX = 2**31 - 1


def _pair() -> list:
    return [("images", (f"{c}.png", encode(Image.new("RGB", (8, 8), c), "PNG"), "image/png"))
            for c in ("red", "blue")]


def test_huge_offset_found_by_schemathesis_is_422(any_db_stack):
    _, key = make_tenant(any_db_stack.database_url)
    with any_db_stack.client(key) as c:
        resp = c.get(f"/adaptations?offset={HUGE}&limit=3")
        body = assert_problem(resp, 422, "offset")
        assert "Traceback" not in resp.text and "OverflowError" not in resp.text, body
        assert c.get("/healthz").status_code == 200


@pytest.mark.parametrize("query,field", [
    (f"offset={INT32_MAX + 1}", "offset"), (f"offset={2**63}", "offset"),
    (f"offset={2**64 + 5}", "offset"), ("offset=" + "9" * 5000, "offset"),
    (f"limit={HUGE}", "limit"), (f"limit={-2**63 - 1}", "limit"), ("offset=-1", "offset"),
])
def test_list_integers_out_of_range_are_422(any_db_stack, query, field):
    _, key = make_tenant(any_db_stack.database_url)
    with any_db_stack.client(key) as c:
        assert_problem(c.get(f"/adaptations?{query}"), 422, field)


def test_list_largest_accepted_offset_answers_an_empty_page(any_db_stack):
    tenant_id, key = make_tenant(any_db_stack.database_url)
    make_adaptation(any_db_stack.database_url, tenant_id)
    with any_db_stack.client(key) as c:
        resp = c.get(f"/adaptations?offset={INT32_MAX}&limit=200")
        assert resp.status_code == 200, resp.text
        assert resp.json()["items"] == [] and resp.json()["total"] == 1


@pytest.mark.parametrize("top_k", [HUGE, 2**63, -(2**63) - 1, 1001, "9" * 5000])
def test_classify_top_k_out_of_range_is_422_in_query_form_and_json(any_db_stack, top_k):
    tenant_id, key = make_tenant(any_db_stack.database_url)
    job = make_adaptation(any_db_stack.database_url, tenant_id, JobStatus.succeeded)
    png = encode(Image.new("RGB", (8, 8), "red"), "PNG")
    with any_db_stack.client(key) as c:
        files = [("images", ("a.png", png, "image/png"))]
        assert_problem(c.post(f"/classify/{job}?top_k={top_k}", files=files), 422, "top_k")
        assert_problem(c.post(f"/classify/{job}", files=files, data={"top_k": str(top_k)}),
                       422, "top_k")
        body = '{"images": ["AAAA"], "top_k": %s}' % top_k
        resp = c.post(f"/classify/{job}", content=body,
                      headers={"Content-Type": "application/json"})
        assert_problem(resp, 422, "top_k")


@pytest.mark.parametrize("config,field", [
    ({"train": {"epochs": HUGE}}, "config.train.epochs"),
    ({"epochs": 2**63}, "config.epochs"),
    ({"train": {"shots": HUGE}}, "config.train.shots"),
    ({"train": {"batch_size": 2**64}}, "config.train.batch_size"),
    ({"seed": INT32_MAX + 1}, "config.seed"),
    ({"train": {"max_steps": HUGE}}, "config.train.max_steps"),
    ({"train": {"max_seconds": 10**400}}, "config.train.max_seconds"),
    ({"train": {"lr": 10**400}}, "config.train.lr"),
    ({"warmup_lr": -(10**400)}, "config.warmup_lr"),
    ({"adapter": {"init_std": 10**400}}, "config.adapter.init_std"),
    ({"lambda_kl": 10**400}, "config.lambda_kl"),
    ({"adapter": {"n_ctx": HUGE}}, "config.adapter.n_ctx"),
    ({"rank": 2**63}, "config.rank"),
    ({"adapter": {"text_depth": -HUGE}}, "config.adapter.text_depth"),
])
def test_config_integers_out_of_range_are_422_naming_the_key(any_db_stack, config, field):
    _, key = make_tenant(any_db_stack.database_url)
    with any_db_stack.client(key) as c:
        resp = c.post("/adaptations", files=_pair(),
                      data={"labels": ["a", "b"], "config": json.dumps(config)})
        body = assert_problem(resp, 422, field)
        assert body["field"] == field, body
        assert c.get("/adaptations").json()["total"] == 0


@pytest.mark.parametrize("raw,field", [
    ('{"train": {"epochs": %s}}' % ("9" * 5000), "config.train.epochs"),
    ('{"seed": %s}' % ("1" * 4301), "config.seed"),
    ('{"adapter": {"lambda_text": -%s}}' % ("7" * 10000), "config.adapter.lambda_text"),
])
def test_config_integers_longer_than_python_parses_are_422(any_db_stack, raw, field):
    _, key = make_tenant(any_db_stack.database_url)
    with any_db_stack.client(key) as c:
        resp = c.post("/adaptations", files=_pair(), data={"labels": ["a", "b"], "config": raw})
        body = assert_problem(resp, 422, field)
        assert body["field"] == field, body
