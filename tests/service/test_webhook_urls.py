"""The SSRF rule of callback URLs (service/webhook_urls.py), unit level: every non-public
address in the notations an attacker would try is refused, public ones pass, the operator's
allowlist lifts the rule for what it names, and the pinned target keeps the host name."""

from __future__ import annotations

import ipaddress

import pytest

from service.settings import Settings
from service.webhook_urls import (Allowlist, CallbackURLError, check_callback_url, check_syntax,
                                  is_public)

REFUSED = [
    "http://127.0.0.1/", "http://127.0.0.2:8080/hook", "http://localhost/",
    "http://LOCALHOST:9/x", "http://2130706433/", "http://0x7f.1/", "http://0x7f000001/",
    "http://017700000001/", "http://127.1/", "http://0177.0.0.1/", "http://[::1]/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://[64:ff9b::127.0.0.1]/", "http://[2002:7f00:1::]/", "http://0.0.0.0/", "http://0/",
    "http://[::]/", "http://10.1.2.3/", "http://172.16.0.1/", "http://192.168.1.1/",
    "http://100.64.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/",
    "http://[fc00::1]/", "http://[fd12:3456::1]/", "http://224.0.0.1/", "http://[ff02::1]/",
    "http://240.0.0.1/", "http://255.255.255.255/", "http://192.0.2.1/", "http://[2001:db8::1]/",
    "https://[::ffff:10.0.0.1]:8443/", "http://[::ffff:169.254.169.254]/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_non_public_targets_are_refused(url):
    with pytest.raises(CallbackURLError, match="non-public address"):
        check_callback_url(url, Settings())


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert is_public(ipaddress.ip_address(address))


def test_public_target_is_pinned_to_the_checked_address_keeping_the_host():
    target = check_callback_url("https://[2606:4700:4700::1111]:8443/h?x=1", Settings())
    assert target.pinned_url() == "https://[2606:4700:4700::1111]:8443/h?x=1"
    assert target.host_header() == "[2606:4700:4700::1111]:8443"
    assert check_callback_url("http://8.8.8.8/", Settings()).host_header() == "8.8.8.8"


@pytest.mark.parametrize("url,why", [
    ("ftp://8.8.8.8/", "http"), ("/relative/path", "http"), ("http:///nohost", "no host"),
    ("http://user:pw@8.8.8.8/", "credentials"), ("http://8.8.8.8/a b", "spaces"),
    ("http://8.8.8.8/#frag", "fragment"), ("http://8.8.8.8:99999/", "not a valid URL"),
    ("http://8.8.8.8/" + "a" * 3000, "limit of 2048"), ("", "non-empty"),
    ("http://no-such-host.invalid/", "cannot be resolved"),
])
def test_bad_syntax_is_refused_saying_why(url, why):
    with pytest.raises(CallbackURLError, match=why):
        check_callback_url(url, Settings())


def test_allowlist_names_hosts_and_networks():
    settings = Settings(webhook_allowlist="localhost, 10.0.0.0/8 [::1]")
    assert check_callback_url("http://localhost:8000/x", settings).address in ("127.0.0.1", "::1")
    assert check_callback_url("http://10.9.8.7/", settings).address == "10.9.8.7"
    assert check_callback_url("http://[::1]/", settings).address == "::1"
    with pytest.raises(CallbackURLError):
        check_callback_url("http://127.0.0.1/", settings)  # neither the name nor the network
    allow = Allowlist.parse("127.0.0.1")
    assert allow.allows("x", ipaddress.ip_address("::ffff:127.0.0.1"))  # the embedded IPv4
    assert not allow.allows("x", ipaddress.ip_address("127.0.0.2"))


def test_syntax_gives_default_ports():
    assert check_syntax("https://Example.COM/x", Settings()) == ("https", "example.com", 443)
    assert check_syntax("HTTP://example.com:81", Settings()) == ("http", "example.com", 81)
