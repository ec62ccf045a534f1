"""One delivery attempt (``worker/webhooks.post``) against a real HTTP receiver on 127.0.0.1:
it connects to the address the SSRF check resolved (the host name stays in ``Host``; a name the
system cannot resolve still arrives, so nothing resolved it a second time), it follows no
redirect, and a refused target is never contacted."""

from __future__ import annotations

import socket

import pytest

from service.settings import Settings
from utils.receiver import Receiver
from worker.webhooks import post

BODY = '{"type":"adaptation.succeeded"}'


@pytest.fixture(scope="module")
def receiver():
    with Receiver() as r:
        yield r


def test_the_checked_address_is_pinned_and_the_host_kept(receiver, monkeypatch):
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):  # what a DNS server answers for the name, once
        if host == "hooks.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr("service.webhook_urls.socket.getaddrinfo", resolve)
    settings = Settings(webhook_allowlist="hooks.test")
    status, error = post(f"http://hooks.test:{receiver.port}/pinned", "msg_1", BODY,
                         ["whsec_" + "A" * 43 + "="], settings)
    assert (status, error) == (200, None)
    (got,) = receiver.wait_for("/pinned")
    assert got.headers["Host"] == f"hooks.test:{receiver.port}" and got.body == BODY.encode()
    assert got.headers["webhook-id"] == "msg_1" and got.headers["webhook-signature"].startswith("v1,")


def test_redirects_are_not_followed(receiver):
    settings = Settings(webhook_allowlist="127.0.0.1")
    status, error = post(receiver.url("/redirect/x"), "msg_2", BODY, ["whsec_" + "A" * 43 + "="],
                         settings)
    assert status == 302 and error.startswith("HTTP 302")
    assert len(receiver.wait_for("/redirect/x")) == 1


def test_a_refused_target_is_never_contacted(receiver):
    status, error = post(receiver.url("/never"), "msg_3", BODY, ["whsec_" + "A" * 43 + "="],
                         Settings())
    assert status is None and error.startswith("refused: ") and "127.0.0.1" in error
    assert not [r for r in receiver.requests if r.path == "/never"]
