"""Standard Webhooks signatures (service/webhook_secrets.py) checked with the reference
implementation (the ``standardwebhooks`` package): one secret, both secrets during a rotation's
overlap, only the new one after it."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from service.models import utcnow
from service.webhook_secrets import SigningSecrets, new_secret, signature_headers

BODY = '{"type":"adaptation.succeeded","timestamp":"2026-11-29T00:00:00Z","data":{"id":"x"}}'


def test_a_new_secret_is_whsec_base64_of_32_bytes():
    import base64

    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert new_secret() != secret


def test_signature_verifies_with_the_reference_algorithm():
    secret = new_secret()
    headers = signature_headers([secret], "msg_1", int(time.time()), BODY)
    assert Webhook(secret).verify(BODY, headers)["data"]["id"] == "x"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace("x", "y"), headers)


def test_both_secrets_sign_during_the_overlap_and_only_the_new_one_after():
    old, new = new_secret(), new_secret()
    now = utcnow()
    secrets = SigningSecrets(new, now, old, now + timedelta(seconds=60))
    during = signature_headers(secrets.active(now), "msg_2", int(time.time()), BODY)
    assert len(during["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(BODY, during)
    Webhook(old).verify(BODY, during)
    after = signature_headers(secrets.active(now + timedelta(seconds=61)), "msg_2",
                              int(time.time()), BODY)
    Webhook(new).verify(BODY, after)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(BODY, after)


def test_a_second_rotation_during_the_overlap_is_refused_and_the_first_secret_keeps_signing(
        tmp_path):
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from service.models import Base
    from service.webhook_secrets import RotationInProgress, get_or_create, rotate

    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        first = get_or_create(session, "t1").current
        second = rotate(session, "t1", overlap_s=60).current
        with pytest.raises(RotationInProgress) as refused:
            rotate(session, "t1", overlap_s=60)
        assert refused.value.ends_at > utcnow() + timedelta(seconds=50)
        found = get_or_create(session, "t1")
        assert found.current == second  # nothing changed
        headers = signature_headers(found.active(), "msg_3", int(time.time()), BODY)
        Webhook(first).verify(BODY, headers)  # the promised overlap still holds
        Webhook(second).verify(BODY, headers)
        assert rotate(session, "t1", overlap_s=0).active() != [second]  # no overlap: allowed
    engine.dispose()
