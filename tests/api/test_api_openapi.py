"""The served OpenAPI document and reference pages (issue 11 item 6): a valid document with the
bearer scheme, the Idempotency-Key header, problem+json errors with their kinds, examples; and
``/``, ``/docs`` working offline (Swagger UI 5 assets from the fastapi-offline package)."""

from __future__ import annotations

import re

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

PROBLEM = "application/problem+json"
UNAUTHENTICATED = {"/healthz", "/readyz", "/metrics"}


@pytest.fixture(scope="module")
def doc(pg_stack) -> dict:
    return httpx.get(pg_stack.base_url + "/openapi.json", timeout=30).json()


def _operations(doc: dict):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def test_the_document_is_valid_openapi(doc):
    validate(doc)  # openapi-spec-validator: raises on any violation
    assert "HTTPValidationError" not in str(doc) and "ValidationError" not in doc["components"]["schemas"]


def test_every_authenticated_operation_uses_the_bearer_scheme(doc):
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, op in _operations(doc):
        if path in UNAUTHENTICATED:
            assert "security" not in op, path
        else:
            assert op.get("security") == [{"bearerAuth": []}], (method, path)
            assert "unauthorized" in op["responses"]["401"]["description"], (method, path)
            assert "rate-limited" in op["responses"]["429"]["description"]


def test_every_error_answer_is_a_documented_problem(doc):
    statuses = {}
    for method, path, op in _operations(doc):
        for code, response in op["responses"].items():
            if int(code) >= 400:
                content = response["content"]
                assert list(content) == [PROBLEM], (method, path, code)
                assert content[PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}
                statuses.setdefault((method, path), set()).add(int(code))
    assert {401, 409, 413, 415, 422, 429, 503} <= statuses[("post", "/adaptations")]
    assert {401, 404, 409, 413, 415, 422, 429, 503} <= statuses[("post", "/classify/{adapter_id}")]
    assert {401, 404, 429} <= statuses[("get", "/adaptations/{adaptation_id}")]
    create = doc["paths"]["/adaptations"]["post"]["responses"]
    for code, kind in [(409, "quota-exceeded"), (422, "idempotency-key-reused"),
                       (422, "invalid-image"), (503, "queue-unavailable"), (413, "too-large")]:
        assert f"`{kind}`" in create[str(code)]["description"], (code, kind)
        assert kind in create[str(code)]["content"][PROBLEM]["examples"]
    assert "Retry-After" in create["429"]["headers"]
    # Kinds a route declares itself (openapi_extra x-problems), merged with its traits' ones.
    revoke = doc["paths"]["/keys/{key_id}"]["delete"]
    assert "x-problems" not in revoke
    assert {"current-key", "last-key"} <= set(revoke["responses"]["409"]["content"][PROBLEM]["examples"])
    assert "`not-found`" in revoke["responses"]["404"]["description"]


def test_real_problem_bodies_match_the_schema_and_a_documented_kind(pg_stack, doc, tenant_factory):
    schema = {**doc["components"]["schemas"]["Problem"], "components": doc["components"]}
    _, key = tenant_factory()
    with pg_stack.client(key) as c:
        answers = [("get", "/adaptations/{adaptation_id}", c.get("/adaptations/nope")),
                   ("post", "/adaptations", c.post("/adaptations", json={})),
                   ("get", "/adaptations", c.get("/adaptations", params={"limit": 0})),
                   ("delete", "/keys/{key_id}", c.delete("/keys/nope"))]
    with pg_stack.client() as anonymous:
        answers.append(("get", "/adaptations", anonymous.get("/adaptations")))
    for method, path, resp in answers:
        assert resp.headers["content-type"].startswith(PROBLEM), resp.text
        body = resp.json()
        jsonschema.validate(body, schema)
        documented = doc["paths"][path][method]["responses"][str(resp.status_code)]
        assert f"`{body['kind']}`" in documented["description"], (path, body)
        assert body["type"].endswith("/" + body["kind"])


def test_idempotency_key_and_examples_are_documented(doc):
    create = doc["paths"]["/adaptations"]["post"]
    header = [p for p in create["parameters"] if p["name"] == "Idempotency-Key"]
    assert header and header[0]["in"] == "header" and not header[0]["required"]
    for words in ("same body", "idempotency-key-reused", "422"):
        assert words in header[0]["description"]
    assert create["responses"]["202"]["content"]["application/json"]["example"]["status"] == "queued"
    assert create["requestBody"]["content"]["multipart/form-data"]["example"]["config"]
    status = doc["paths"]["/adaptations/{adaptation_id}"]["get"]["responses"]["200"]
    assert status["content"]["application/json"]["example"]["progress"]["eta_s"]
    for path in ("/classify/{adapter_id}", "/classify/zeroshot"):
        op = doc["paths"][path]["post"]
        assert op["requestBody"]["content"]["application/json"]["example"]["images"]
        assert op["responses"]["200"]["content"]["application/json"]["example"]["results"]


def test_docs_work_offline_and_root_leads_to_ui_and_docs(pg_stack):
    with pg_stack.client() as c:
        page = c.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
        assert urls and not [u for u in urls if "//" in u], urls  # nothing from another host
        assert "validatorUrl" in page.text and "cdn" not in page.text.lower()
        for url in urls:
            asset = c.get(url)
            assert asset.status_code == 200 and asset.content, url
        assert len(c.get("/docs/assets/swagger-ui-bundle.js").content) > 100_000
        root = c.get("/")
        assert root.status_code == 200 and 'href="/ui"' in root.text and 'href="/docs"' in root.text
        assert "/" not in {p for p in c.get("/openapi.json").json()["paths"]}
