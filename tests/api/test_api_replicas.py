"""Two API replicas on different ports (own working and temp dirs) and one Celery worker sharing
only PostgreSQL, Redis and an S3 URL (moto_server on 127.0.0.1): an adapter trained by the
worker classifies on both, and a DELETE through one makes the other answer 404 at once, never a
stale prediction from its resident adapter or its checkpoint cache."""

from __future__ import annotations

import pytest

from utils.factories import make_tenant
from utils.s3 import classify, s3_service, submit_small
from utils.stack import wait_for_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, s3_endpoint, redis_broker_url):
    """Replicas api1 and api2 and one worker."""
    with s3_service(tmp_path_factory.mktemp("replicas"), s3_endpoint, redis_broker_url,
                    apis=("api1", "api2")) as s:
        yield s


def test_trained_once_served_by_both_deleted_via_one(replicas):
    s = replicas
    api1, api2 = s.apis["api1"], s.apis["api2"]
    assert api1.port != api2.port
    _, key = make_tenant(s.database_url)
    with api1.client(key) as c1, api2.client(key) as c2:
        job = submit_small(c1)
        assert wait_for_status(c2, job, {"succeeded", "failed"})["status"] == "succeeded"
        answers = [classify(c, job) for c in (c1, c2, c1, c2)]
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        assert answers[0].json()["results"] == answers[1].json()["results"]
        assert c2.get(f"/adaptations/{job}/checkpoint").status_code == 200
        assert c1.delete(f"/adaptations/{job}").status_code == 204
        # No wait: api2 holds the adapter resident and its checkpoint cached, and still says 404.
        gone = classify(c2, job)
        assert gone.status_code == 404, gone.text
        assert gone.headers["content-type"].startswith("application/problem+json")
        assert c2.get(f"/adaptations/{job}").status_code == 404
        assert c2.get(f"/adaptations/{job}/checkpoint").status_code == 404
        assert classify(c1, job).status_code == 404
