"""Who sent a request, and over which scheme, when a reverse proxy stands in front of the host.

Behind a proxy the connection's peer is the proxy and its scheme is the proxy's hop (often plain
http), so the join-link rate limit would count every patient as one client and the session
cookie would lose ``Secure`` and its ``__Host-`` name. The de-facto ``X-Forwarded-For`` and
``X-Forwarded-Proto`` headers (MDN, "X-Forwarded-For"; RFC 7239 §5.2 describes the same model
for ``Forwarded``) carry the original values, but any client can send them: they are believed
only when the peer is one of ``settings.trusted_proxies``. ``X-Forwarded-For`` is read from the
right, skipping trusted proxies, so a value the client prepended is never taken for its address
(docs/guides/integrator.md, "Behind a reverse proxy").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

__all__ = ["RequestOrigin", "request_origin"]

_SCHEMES = ("http", "https")


@dataclass(frozen=True, slots=True)
class RequestOrigin:
    """The client address the rate limits count, and the scheme the browser used."""

    client: str
    scheme: str

    @property
    def secure(self) -> bool:
        """Whether the browser's connection was https (the session cookie is then ``Secure``)."""
        return self.scheme == "https"


def _address(value: str) -> IPv4Address | IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


def _trusted(
    address: IPv4Address | IPv6Address | None, proxies: Sequence[IPv4Network | IPv6Network]
) -> bool:
    return address is not None and any(address in network for network in proxies)


def _values(headers: Sequence[str]) -> list[str]:
    return [part.strip() for header in headers for part in header.split(",") if part.strip()]


def request_origin(
    peer: str | None,
    scheme: str,
    *,
    forwarded_for: Sequence[str] = (),
    forwarded_proto: Sequence[str] = (),
    trusted_proxies: Sequence[IPv4Network | IPv6Network] = (),
) -> RequestOrigin:
    """The request's origin: the connection's own unless ``peer`` is a trusted proxy.

    From a trusted proxy, the client is the right-most ``X-Forwarded-For`` address that is not
    itself a trusted proxy (a malformed entry stops the walk: the last trusted hop is the client)
    and the scheme is the last ``X-Forwarded-Proto`` value when it is ``http`` or ``https``.
    """
    own = RequestOrigin(peer or "unknown", scheme)
    hop = _address(peer) if peer else None
    if not _trusted(hop, trusted_proxies):
        return own
    client = peer or "unknown"
    for value in reversed(_values(forwarded_for)):
        address = _address(value)
        if address is None:
            break
        client = str(address)
        if not _trusted(address, trusted_proxies):
            break
    protos = _values(forwarded_proto)
    proto = protos[-1].lower() if protos else scheme
    return RequestOrigin(client, proto if proto in _SCHEMES else scheme)
