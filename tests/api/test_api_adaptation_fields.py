"""``name`` and ``metadata`` of adaptations on the real stack (PostgreSQL): given at creation
(multipart text fields), returned, filtered in ``GET /adaptations`` (``?name=``,
``?metadata=key:value``), changed with ``PATCH``, part of the Idempotency-Key's request hash, and
every bad value is a 422 naming its field."""

from __future__ import annotations

import json

import pytest

from utils.factories import image_multipart, make_adaptation, photos

pytestmark = pytest.mark.slow

LONG = "x" * 101


@pytest.fixture(scope="module")
def body():
    """(files, data) of a small request that the tests cancel at once."""
    files, data = image_multipart(photos("train", 2, ["bag", "coat"]))
    return files, {**data, "config": json.dumps({"train": {"epochs": 1}})}


def create(c, body, headers=None, **fields):
    files, data = body
    return c.post("/adaptations", files=files, data={**data, **fields}, headers=headers or {})


def test_create_returns_and_lists_name_and_metadata(pg_stack, tenant_factory, body):
    _, key = tenant_factory()
    with pg_stack.client(key) as c:
        resp = create(c, body, name="  shoes v1 ", metadata='{"project": "shoes", "run": "7"}')
        assert resp.status_code == 202, resp.text
        job = resp.json()
        assert job["name"] == "shoes v1" and job["metadata"] == {"project": "shoes", "run": "7"}
        c.post(f"/adaptations/{job['id']}/cancel")
        got = c.get(f"/adaptations/{job['id']}").json()
        assert (got["name"], got["metadata"]) == ("shoes v1", {"project": "shoes", "run": "7"})
        plain = create(c, body).json()  # neither: both null
        c.post(f"/adaptations/{plain['id']}/cancel")
        assert plain["name"] is None and plain["metadata"] is None


def test_list_filters_by_name_and_metadata(pg_stack, tenant_factory):
    tenant, key = tenant_factory()
    rows = {
        "a": make_adaptation(pg_stack.database_url, tenant, name="alpha",
                             user_metadata={"project": "shoes", "stage": "dev"}),
        "b": make_adaptation(pg_stack.database_url, tenant, name="beta",
                             user_metadata={"project": "shoes", "stage": "prod"}),
        "c": make_adaptation(pg_stack.database_url, tenant, name="alpha",
                             user_metadata={"project": "bags"}),
        "d": make_adaptation(pg_stack.database_url, tenant),
    }
    other, _ = tenant_factory()
    make_adaptation(pg_stack.database_url, other, name="alpha", user_metadata={"project": "shoes"})

    def ids(**params):
        resp = c.get("/adaptations", params=params)
        assert resp.status_code == 200, resp.text
        assert resp.json()["total"] == len(resp.json()["items"])
        return {i["id"] for i in resp.json()["items"]}

    with pg_stack.client(key) as c:
        assert ids(name="alpha") == {rows["a"], rows["c"]}
        assert ids(metadata="project:shoes") == {rows["a"], rows["b"]}
        assert ids(metadata=["project:shoes", "stage:prod"]) == {rows["b"]}
        assert ids(name="alpha", metadata="project:bags") == {rows["c"]}
        assert ids(metadata="stage:") == set() and ids(name="ALPHA") == set()
        assert ids(metadata="missing:x") == set()
        assert len(ids()) == 4


def test_patch_changes_and_clears(pg_stack, tenant_factory):
    tenant, key = tenant_factory()
    job_id = make_adaptation(pg_stack.database_url, tenant, name="old", user_metadata={"k": "v"})
    with pg_stack.client(key) as c:
        resp = c.patch(f"/adaptations/{job_id}", json={"name": "new"})
        assert resp.status_code == 200, resp.text
        assert (resp.json()["name"], resp.json()["metadata"]) == ("new", {"k": "v"})
        resp = c.patch(f"/adaptations/{job_id}", json={"metadata": {"a": "1"}, "name": None})
        assert (resp.json()["name"], resp.json()["metadata"]) == (None, {"a": "1"})
        assert c.patch(f"/adaptations/{job_id}", json={"metadata": {}}).json()["metadata"] is None
        for patch, field in (({"name": ""}, "name"), ({"name": 5}, "name"),
                             ({"metadata": {"a": 1}}, "metadata.a"),
                             ({"metadata": [1]}, "metadata"), ({"colour": "red"}, "colour")):
            resp = c.patch(f"/adaptations/{job_id}", json=patch)
            assert resp.status_code == 422 and resp.json()["field"] == field, (patch, resp.text)
    _, key_b = tenant_factory()
    with pg_stack.client(key_b) as c:
        assert c.patch(f"/adaptations/{job_id}", json={"name": "x"}).status_code == 404


def test_name_and_metadata_are_part_of_the_request_hash(pg_stack, tenant_factory, body):
    _, key = tenant_factory()
    headers = {"Idempotency-Key": "fields-1"}
    with pg_stack.client(key) as c:
        first = create(c, body, name="a", metadata='{"k": "v"}', headers=headers)
        assert first.status_code == 202, first.text
        c.post(f"/adaptations/{first.json()['id']}/cancel")
        same = create(c, body, name="a", metadata='{"k":"v"}', headers=headers)
        assert same.status_code == 202 and same.json()["id"] == first.json()["id"]
        for fields in ({"name": "b", "metadata": '{"k": "v"}'}, {"name": "a"},
                       {"name": "a", "metadata": '{"k": "w"}'}):
            clash = create(c, body, headers=headers, **fields)
            assert clash.status_code == 422 and clash.json()["field"] == "Idempotency-Key"


BAD_FIELDS = [
    ({"name": LONG}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "a\x07b"}, "name"),
    ({"name": ["a", "b"]}, "name"),
    ({"metadata": "{not json"}, "metadata"),
    ({"metadata": "[1, 2]"}, "metadata"),
    ({"metadata": '{"k": {"nested": "x"}}'}, "metadata.k"),
    ({"metadata": '{"k": 3}'}, "metadata.k"),
    ({"metadata": '{"k": true}'}, "metadata.k"),
    ({"metadata": '{"k": null}'}, "metadata.k"),
    ({"metadata": json.dumps({"k": "v" * 501})}, "metadata.k"),
    ({"metadata": json.dumps({"k": "a\nb"})}, "metadata.k"),
    ({"metadata": json.dumps({f"k{n}": "v" for n in range(51)})}, "metadata"),
    ({"metadata": '{"bad key": "v"}'}, "metadata"),
    ({"metadata": json.dumps({"k" * 41: "v"})}, "metadata"),
    ({"metadata": " " * 70_000}, "metadata"),
    # text without a UTF-8 form (a JSON escape of a lone surrogate), given twice, or invisible
    ({"metadata": '{"k": "\\ud800"}'}, "metadata.k"),
    ({"metadata": '{"k": "a\\udfffb"}'}, "metadata.k"),
    ({"metadata": '{"a": "1", "a": "2"}'}, "metadata.a"),
    ({"metadata": json.dumps({"k": "a\u202eb"})}, "metadata.k"),
    ({"metadata": json.dumps({"k": "\ufeffb"})}, "metadata.k"),
    ({"name": "a\u202eb"}, "name"),
    ({"name": "a\u200bb"}, "name"),
    ({"name": "a\u2066b"}, "name"),
    ({"config": '{"train": {"epochs": 1}, "train": {"epochs": 2}}'}, "config.train"),
    ({"class_names": '["bag", "\\ud800"]'}, "class_names[1]"),
]


@pytest.mark.parametrize("fields,field", BAD_FIELDS)
def test_bad_name_or_metadata_is_422_naming_the_field(pg_stack, tenant_factory, body, fields,
                                                      field):
    _, key = tenant_factory()
    with pg_stack.client(key) as c:
        resp = create(c, body, **fields)
        assert resp.status_code == 422, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.json()["field"] == field, resp.text
        assert c.get("/adaptations").json()["total"] == 0  # nothing stored


@pytest.mark.parametrize("params,field", [
    ({"metadata": "no-colon"}, "metadata"), ({"metadata": "bad key:v"}, "metadata"),
    ({"name": LONG}, "name"), ({"metadata": [f"k{n}:v" for n in range(51)]}, "metadata"),
])
def test_bad_list_filters_are_422(pg_stack, tenant_factory, params, field):
    _, key = tenant_factory()
    with pg_stack.client(key) as c:
        resp = c.get("/adaptations", params=params)
        assert resp.status_code == 422 and resp.json()["field"] == field, resp.text
