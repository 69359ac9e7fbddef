"""An httpx transport that resolves each host name once, refuses internal addresses and connects
to the address it vetted (threat T29: SSRF and DNS rebinding, docs/security.md).

Canonicalization (:func:`~teams_ehr.smart.canonical.canonical_fhir_base`) refuses IP literals of
internal ranges and ``localhost``, but a host *name* can resolve, or later re-resolve ("rebind"),
to a loopback, private or cloud-metadata address. Following the OWASP Server-Side Request Forgery
Prevention Cheat Sheet (resolve, validate every answer, then use the validated address), for each
request to a host name the transport:

1. resolves the name once (no cache: a rebind is seen by the very next request);
2. refuses the request when *any* answer is not globally reachable (the RFC 6890 special-purpose
   registries: loopback, RFC 1918 private, link-local, shared CGNAT space, unique-local,
   multicast, documentation and reserved blocks), also when an IPv4 address hides in an IPv6
   one (IPv4-mapped, RFC 4291 §2.5.5.2; NAT64, RFC 6052; 6to4, RFC 3056), raising
   :class:`~teams_ehr.errors.TransportError` with ``reason="internal_address"`` before a byte is
   sent;
3. sends the request to the vetted address: the URL's host becomes the IP, the ``Host`` header
   stays the name, and the ``sni_hostname`` request extension carries the name, so TLS sends the
   name in SNI (RFC 6066 §3) and checks the certificate against the name, never the IP.

IP-literal hosts pass through untouched (canonicalization vetted them). Names on the
``loopback_hosts`` allow-list (empty by default; the runtime puts ``localhost`` on it only when
``settings.allow_http`` marks a loopback development deployment) may resolve to loopback
addresses, and to nothing else internal.

Each host name gets its own inner transport (its own connection pool): a pool keyed by IP alone
would hand a connection whose certificate was checked for one name to a request for another name
on the same address. Behind an outbound proxy (``HTTPS_PROXY``; httpx mounts a proxy transport
ahead of this one) the proxy resolves names, and its egress rules must refuse internal addresses.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence

import anyio
import httpx

from teams_ehr.errors import TransportError

__all__ = [
    "AsyncPinningTransport",
    "PinningTransport",
    "is_internal_address",
    "system_resolver",
    "system_resolver_sync",
]

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host name, port) → the addresses it resolves to, as strings, in the order to try them.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
SyncResolver = Callable[[str, int], Sequence[str]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 §2.1 well-known prefix
# The IANA special-purpose registries (RFC 6890 and later) entries that are not globally
# reachable, written out because ``ipaddress.is_global`` differs between Python releases; whole
# blocks are refused even where the registry marks an anycast address in them reachable.
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "100:0:0:1::/64",
        "2001::/23",
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_DEFAULT_PORTS = {"https": 443, "http": 80}


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answers for ``host`` (``getaddrinfo`` in a worker thread)."""
    answers = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]) for *_, sockaddr in answers]


def system_resolver_sync(host: str, port: int) -> list[str]:
    """The operating system's answers for ``host`` (blocking ``getaddrinfo``)."""
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]) for *_, sockaddr in answers]


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.sixtofour


def _is_loopback(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return embedded.is_loopback
    return address.is_loopback


def is_internal_address(address: IPAddress) -> bool:
    """``True`` unless ``address`` is globally reachable unicast (RFC 6890 registries).

    An IPv4 address embedded in IPv6 (mapped, NAT64, 6to4) is judged by the IPv4 address.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_internal_address(embedded)
        if address.scope_id:
            return True
    if any(address in network for network in _NOT_GLOBAL):
        return True
    return not address.is_global or address.is_multicast or address.is_reserved


def _refused(host: str, address: str) -> TransportError:
    log.warning(
        "refused to connect to %s: it resolves to the internal address %s (threat T29)",
        host,
        address,
        extra={"security_event": "internal_address"},
    )
    return TransportError(
        "refused to connect: the host name resolves to an internal address",
        reason="internal_address",
    )


class _Pinning:
    """What both transports share: vetting the answers and choosing the address to try first."""

    def __init__(self, loopback_hosts: Iterable[str]) -> None:
        self._loopback_hosts = frozenset(_normalized(host) for host in loopback_hosts)
        self._last_address: dict[str, IPAddress] = {}

    def vet(self, host: str, answers: Sequence[str], request: httpx.Request) -> list[IPAddress]:
        """Every answer parsed and vetted, the one used last for ``host`` first (so keep-alive
        connections survive round-robin DNS); refused if any answer is internal."""
        if not answers:
            raise httpx.ConnectError(f"{host} has no address", request=request)
        loopback_allowed = _normalized(host) in self._loopback_hosts
        addresses: list[IPAddress] = []
        for answer in answers:
            try:
                address = ipaddress.ip_address(answer)
            except ValueError:
                raise _refused(host, "(unparseable)") from None
            if is_internal_address(address) and not (loopback_allowed and _is_loopback(address)):
                raise _refused(host, answer)
            if address not in addresses:
                addresses.append(address)
        last = self._last_address.get(host)
        if last in addresses:
            addresses.remove(last)
            addresses.insert(0, last)
        return addresses

    def used(self, host: str, address: IPAddress) -> None:
        self._last_address[host] = address


def _normalized(host: str) -> str:
    return host.lower().rstrip(".")


def _name_of(request: httpx.Request) -> str | None:
    """The URL's host name, or ``None`` for an IP literal."""
    host = request.url.raw_host.decode("ascii")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


def _port_of(request: httpx.Request) -> int:
    return request.url.port or _DEFAULT_PORTS.get(request.url.scheme, 443)


def _pinned(request: httpx.Request, host: str, address: IPAddress) -> httpx.Request:
    """``request`` sent to ``address``, with the ``Host`` header and TLS SNI still ``host``."""
    headers = request.headers.copy()
    if "host" not in headers:
        headers["Host"] = request.url.netloc.decode("ascii")
    return httpx.Request(
        request.method,
        request.url.copy_with(host=address.compressed),
        headers=headers,
        stream=request.stream,
        extensions={**request.extensions, "sni_hostname": host},
    )


class AsyncPinningTransport(httpx.AsyncBaseTransport):
    """Resolve, vet and pin every request to a host name (module docstring; threat T29).

    ``resolver(host, port)`` returns address strings (default: :func:`system_resolver`, the
    operating system's ``getaddrinfo``); ``transport_factory()`` builds the inner transport that
    sends the pinned request, one per host name (default: :class:`httpx.AsyncHTTPTransport`);
    ``loopback_hosts`` are the exact names that may resolve to loopback (development only).
    Addresses are tried in order while the connection is refused (``httpx.ConnectError``).
    """

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        transport_factory: Callable[[], httpx.AsyncBaseTransport] = httpx.AsyncHTTPTransport,
        loopback_hosts: Iterable[str] = (),
    ) -> None:
        self._resolver = resolver if resolver is not None else system_resolver
        self._factory = transport_factory
        self._pinning = _Pinning(loopback_hosts)
        self._passthrough: httpx.AsyncBaseTransport | None = None
        self._inner: dict[str, httpx.AsyncBaseTransport] = {}

    def __repr__(self) -> str:
        return f"<AsyncPinningTransport hosts={len(self._inner)}>"

    def _transport_for(self, host: str | None) -> httpx.AsyncBaseTransport:
        if host is None:
            if self._passthrough is None:
                self._passthrough = self._factory()
            return self._passthrough
        inner = self._inner.get(host)
        if inner is None:
            inner = self._inner[host] = self._factory()
        return inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = _name_of(request)
        if host is None:
            return await self._transport_for(None).handle_async_request(request)
        try:
            answers = await self._resolver(host, _port_of(request))
        except (OSError, UnicodeError) as exc:
            raise httpx.ConnectError(f"cannot resolve {host}", request=request) from exc
        addresses = self._pinning.vet(host, answers, request)
        inner = self._transport_for(host)
        *fallbacks, final = addresses
        for address in fallbacks:
            try:
                response = await inner.handle_async_request(_pinned(request, host, address))
            except httpx.ConnectError:
                continue  # refused before a byte of the request was sent: try the next one
            self._pinning.used(host, address)
            return response
        response = await inner.handle_async_request(_pinned(request, host, final))
        self._pinning.used(host, final)
        return response

    async def aclose(self) -> None:
        transports = [*self._inner.values()]
        if self._passthrough is not None:
            transports.append(self._passthrough)
        self._inner.clear()
        self._passthrough = None
        for transport in transports:
            await transport.aclose()


class PinningTransport(httpx.BaseTransport):
    """The blocking twin of :class:`AsyncPinningTransport`, for :class:`httpx.Client`
    (default resolver :func:`system_resolver_sync`, inner :class:`httpx.HTTPTransport`)."""

    def __init__(
        self,
        *,
        resolver: SyncResolver | None = None,
        transport_factory: Callable[[], httpx.BaseTransport] = httpx.HTTPTransport,
        loopback_hosts: Iterable[str] = (),
    ) -> None:
        self._resolver = resolver if resolver is not None else system_resolver_sync
        self._factory = transport_factory
        self._pinning = _Pinning(loopback_hosts)
        self._lock = threading.Lock()
        self._passthrough: httpx.BaseTransport | None = None
        self._inner: dict[str, httpx.BaseTransport] = {}

    def __repr__(self) -> str:
        return f"<PinningTransport hosts={len(self._inner)}>"

    def _transport_for(self, host: str | None) -> httpx.BaseTransport:
        with self._lock:
            if host is None:
                if self._passthrough is None:
                    self._passthrough = self._factory()
                return self._passthrough
            inner = self._inner.get(host)
            if inner is None:
                inner = self._inner[host] = self._factory()
            return inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = _name_of(request)
        if host is None:
            return self._transport_for(None).handle_request(request)
        try:
            answers = self._resolver(host, _port_of(request))
        except (OSError, UnicodeError) as exc:
            raise httpx.ConnectError(f"cannot resolve {host}", request=request) from exc
        addresses = self._pinning.vet(host, answers, request)
        inner = self._transport_for(host)
        *fallbacks, final = addresses
        for address in fallbacks:
            try:
                response = inner.handle_request(_pinned(request, host, address))
            except httpx.ConnectError:
                continue  # refused before a byte of the request was sent: try the next one
            self._pinning.used(host, address)
            return response
        response = inner.handle_request(_pinned(request, host, final))
        self._pinning.used(host, final)
        return response

    def close(self) -> None:
        with self._lock:
            transports = [*self._inner.values()]
            if self._passthrough is not None:
                transports.append(self._passthrough)
            self._inner.clear()
            self._passthrough = None
        for transport in transports:
            transport.close()
