"""Callback URLs: syntax, and the SSRF rule (which addresses a webhook may reach).

A callback URL is an absolute ``http``/``https`` URL without credentials, at most
``callback_url_max_length`` characters. Its host is resolved with the system resolver (the one
an HTTP client would use, so odd notations such as ``2130706433``, ``0x7f.1`` or
``[::ffff:127.0.0.1]`` resolve to the address they really name) and every address it resolves
to must be public: loopback, private, link-local, unique-local, shared (CGNAT), multicast,
reserved and unspecified addresses are refused, IPv4-mapped, 6to4 and NAT64 IPv6 addresses by
the IPv4 address they embed. The operator's ``webhook_allowlist`` (hostnames, IPs, CIDRs) lifts
the rule for what it names. The check runs when an adaptation is created and again before each
delivery, and the delivery connects to the address that was checked (``Target.address``), so a
DNS answer that changes in between (rebinding) cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class CallbackURLError(ValueError):
    """A callback URL that may not be used; the message says why (shown to the client)."""


@dataclass(frozen=True)
class Target:
    """Where a checked callback URL is delivered: the URL, its host name (for the ``Host``
    header and TLS SNI/certificate check), port, and the checked address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address (IPv6 in brackets)."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if ":" in self.address else self.address
        netloc = f"{literal}:{self.port}"
        path = parts.path or "/"
        return f"{self.scheme}://{netloc}{path}" + (f"?{parts.query}" if parts.query else "")

    def host_header(self) -> str:
        """``Host`` header value: the host name, with the port unless it is the default."""
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, 6to4, NAT64), else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def is_public(ip: IPAddress) -> bool:
    """True if ``ip`` (after :func:`embedded_ipv4`) is a global unicast address.

    False for loopback, private (RFC 1918), shared (100.64/10), link-local, unique-local
    (fc00::/7), multicast, reserved, unspecified and documentation addresses.
    """
    ip = embedded_ipv4(ip)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified
                                 or ip.is_loopback or ip.is_link_local or ip.is_private)


@dataclass(frozen=True)
class Allowlist:
    """The operator's ``webhook_allowlist``: host names (exact, case-insensitive) and networks."""

    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, text: str) -> "Allowlist":
        """From a comma/space separated list; an entry that parses as an IP or CIDR is a
        network, anything else a host name."""
        hosts, networks = set(), []
        for entry in text.replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, host: str, ip: IPAddress) -> bool:
        """Whether ``host`` is named, or ``ip`` (or the IPv4 it embeds) is in a network."""
        if host.lower().rstrip(".") in self.hosts:
            return True
        return any(addr in net for addr in {ip, embedded_ipv4(ip)} for net in self.networks
                   if addr.version == net.version)


def check_syntax(url: str, settings: Settings) -> tuple[str, str, int]:
    """Scheme, host and port of ``url``; ``CallbackURLError`` if it is not an absolute
    http(s) URL without credentials and within the length limit."""
    if not isinstance(url, str) or not url.strip():
        raise CallbackURLError("callback_url must be a non-empty string")
    if len(url) > settings.callback_url_max_length:
        raise CallbackURLError(f"callback_url is {len(url)} characters long, more than the "
                               f"limit of {settings.callback_url_max_length}")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise CallbackURLError("callback_url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackURLError(f"callback_url is not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise CallbackURLError("callback_url must be an absolute http:// or https:// URL")
    if not parts.hostname:
        raise CallbackURLError("callback_url has no host")
    if parts.username is not None or parts.password is not None:
        raise CallbackURLError("callback_url must not contain credentials (user:password@)")
    if parts.fragment:
        raise CallbackURLError("callback_url must not contain a #fragment")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for ``host`` (IP literals in any notation it
    accepts included); ``CallbackURLError`` if it gives none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise CallbackURLError(f"callback_url host {host!r} cannot be resolved") from exc
    addresses = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise CallbackURLError(f"callback_url host {host!r} cannot be resolved")
    return addresses


def check_callback_url(url: str, settings: Settings) -> Target:
    """Check ``url`` against the syntax and SSRF rules; the target to deliver to.

    Every resolved address must be public or allowlisted (one refused address refuses the
    URL: a client cannot know which one a delivery would use).

    Raises:
        CallbackURLError: bad syntax, unresolvable host, or a refused address.
    """
    scheme, host, port = check_syntax(url, settings)
    allow = Allowlist.parse(settings.webhook_allowlist)
    addresses = resolve(host, port)
    for ip in addresses:
        if not (is_public(ip) or allow.allows(host, ip)):
            raise CallbackURLError(
                f"callback_url host {host!r} resolves to {ip}, a loopback, private, link-local "
                "or otherwise non-public address; webhooks are only sent to public addresses "
                "unless the operator's webhook_allowlist names the host")
    return Target(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))
