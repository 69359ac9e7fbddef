"""T29 address pinning at its edges (tests/mutation-report-edges.md): the exact address tried, the
port resolved, the ``Host`` header and SNI kept, one pool per name, the refusal's text and log
line, and the OS resolvers (RFC 6890 registries; RFC 4291 §2.5.5.2; RFC 6052; RFC 6066 §3;
OWASP SSRF Prevention Cheat Sheet).

Offline: resolvers are fakes or the OS resolver on IP literals and ``localhost``; peers are
``httpx.MockTransport`` handlers.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Sequence

import httpx
import pytest

import teams_ehr.transport
from teams_ehr.errors import TransportError
from teams_ehr.transport import (
    AsyncPinningTransport,
    PinningTransport,
    is_internal_address,
    system_resolver,
    system_resolver_sync,
)

V4_A = "93.184.216.34"
V4_B = "8.8.8.8"
V4_C = "1.1.1.1"
V6_A = "2606:2800:220:1:248:1893:25c8:1946"
NAME = "ehr.example.org"
REFUSAL = "refused to connect: the host name resolves to an internal address"


class Peer:
    """Inner transports that record every attempt (refused ones too) and their own closing."""

    def __init__(self, *, refuse: Sequence[str] = ()) -> None:
        self.refuse = set(refuse)
        self.attempts: list[str] = []
        self.requests: list[httpx.Request] = []
        self.built: list[Closing] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.attempts.append(request.url.host)
        if request.url.host in self.refuse:
            raise httpx.ConnectError("connection refused", request=request)
        request.read()
        self.requests.append(request)
        return httpx.Response(200, text="ok")

    def factory(self) -> Closing:
        built = Closing(self)
        self.built.append(built)
        return built


class Closing(httpx.MockTransport):
    """One inner transport (one pool): the URLs it was given and how often it was closed."""

    def __init__(self, peer: Peer) -> None:
        self.seen: list[str] = []
        self.closed = 0
        self._peer = peer
        super().__init__(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(str(request.url))
        return self._peer.handle(request)

    def close(self) -> None:
        self.closed += 1

    async def aclose(self) -> None:
        self.closed += 1


class Resolver:
    """Fixed answers; records every ``(host, port)`` asked."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    def sync(self, host: str, port: int) -> Sequence[str]:
        self.asked.append((host, port))
        return self.answers

    async def asynchronous(self, host: str, port: int) -> Sequence[str]:
        return self.sync(host, port)


def _sync(resolver: Resolver, peer: Peer, loopback: Sequence[str] = ()) -> PinningTransport:
    return PinningTransport(
        resolver=resolver.sync, transport_factory=peer.factory, loopback_hosts=loopback
    )


def _async(resolver: Resolver, peer: Peer, loopback: Sequence[str] = ()) -> AsyncPinningTransport:
    return AsyncPinningTransport(
        resolver=resolver.asynchronous, transport_factory=peer.factory, loopback_hosts=loopback
    )


# -- address classes ------------------------------------------------------------------------------


def test_a_global_address_with_a_zone_index_is_internal() -> None:
    """A scoped (``%zone``) address only means something on one link (RFC 4007 §11)."""
    assert not is_internal_address(ipaddress.ip_address(V6_A))
    assert is_internal_address(ipaddress.ip_address(f"{V6_A}%eth0"))


def test_reserved_ipv6_outside_the_listed_blocks_is_internal() -> None:
    """``4000::/3`` is IETF-reserved, not assigned unicast: not a peer."""
    address = ipaddress.ip_address("4000::1")
    assert address.is_reserved
    assert is_internal_address(address)


@pytest.mark.parametrize("answer", ["::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1"])
def test_loopback_hidden_in_ipv6_is_loopback_for_an_allow_listed_name(answer: str) -> None:
    peer = Peer()
    with httpx.Client(transport=_sync(Resolver(answer), peer, ["ehr.dev.test"])) as client:
        assert client.get("http://ehr.dev.test/fhir").status_code == 200
    assert peer.attempts == [ipaddress.ip_address(answer).compressed]


@pytest.mark.parametrize("answer", ["::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::1"])
def test_private_v4_hidden_in_ipv6_is_refused_even_for_an_allow_listed_name(answer: str) -> None:
    peer = Peer()
    with (
        httpx.Client(transport=_sync(Resolver(answer), peer, ["ehr.dev.test"])) as client,
        pytest.raises(TransportError),
    ):
        client.get("http://ehr.dev.test/fhir")
    assert peer.attempts == []


@pytest.mark.parametrize("listed", ["ehr.dev.test.", "EHR.Dev.Test", "ehr.dev.test"])
@pytest.mark.parametrize("url_host", ["ehr.dev.test", "EHR.DEV.TEST.", "ehr.dev.test."])
def test_allow_list_matches_names_case_and_trailing_dot_insensitively(
    listed: str, url_host: str
) -> None:
    peer = Peer()
    with httpx.Client(transport=_sync(Resolver("127.0.0.1"), peer, [listed])) as client:
        assert client.get(f"http://{url_host}:8000/fhir").status_code == 200
    assert peer.attempts == ["127.0.0.1"]


@pytest.mark.parametrize("listed", [".ehr.dev.test", "ehr.dev.test.x", " ehr.dev.test"])
def test_allow_list_strips_only_trailing_dots(listed: str) -> None:
    with (
        httpx.Client(transport=_sync(Resolver("127.0.0.1"), Peer(), [listed])) as client,
        pytest.raises(TransportError),
    ):
        client.get("http://ehr.dev.test:8000/fhir")


# -- the refusal ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "logged"), [("10.9.8.7", "10.9.8.7"), ("not-an-address", "(unparseable)")]
)
def test_refusal_text_reason_and_operator_log_line(
    answer: str, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="teams_ehr.transport")
    with (
        httpx.Client(transport=_sync(Resolver(V4_A, answer), Peer())) as client,
        pytest.raises(TransportError) as caught,
    ):
        client.get(f"https://{NAME}/fhir")
    assert str(caught.value) == REFUSAL
    assert caught.value.reason == "internal_address"
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"refused to connect to {NAME}: it resolves to the internal address {logged} (threat T29)"
    )
    assert record.security_event == "internal_address"  # type: ignore[attr-defined]


def test_no_answer_is_a_connect_error_naming_the_host_and_carrying_the_request() -> None:
    request = httpx.Request("GET", f"https://{NAME}/fhir")
    with pytest.raises(httpx.ConnectError) as caught:
        _sync(Resolver(), Peer()).handle_request(request)
    assert str(caught.value) == f"{NAME} has no address"
    assert caught.value.request is request


@pytest.mark.anyio
async def test_no_answer_is_a_connect_error_async() -> None:
    request = httpx.Request("GET", f"https://{NAME}/fhir")
    with pytest.raises(httpx.ConnectError) as caught:
        await _async(Resolver(), Peer()).handle_async_request(request)
    assert str(caught.value) == f"{NAME} has no address"
    assert caught.value.request is request


@pytest.mark.parametrize("failure", [socket.gaierror(-2, "unknown"), UnicodeError("label")])
def test_resolver_failure_is_a_connect_error_naming_the_host(failure: Exception) -> None:
    def resolver(host: str, port: int) -> Sequence[str]:
        raise failure

    request = httpx.Request("GET", f"https://{NAME}/fhir")
    transport = PinningTransport(resolver=resolver, transport_factory=Peer().factory)
    with pytest.raises(httpx.ConnectError) as caught:
        transport.handle_request(request)
    assert str(caught.value) == f"cannot resolve {NAME}"
    assert caught.value.request is request
    assert caught.value.__cause__ is failure


@pytest.mark.anyio
@pytest.mark.parametrize("failure", [socket.gaierror(-2, "unknown"), UnicodeError("label")])
async def test_resolver_failure_is_a_connect_error_async(failure: Exception) -> None:
    async def resolver(host: str, port: int) -> Sequence[str]:
        raise failure

    request = httpx.Request("GET", f"https://{NAME}/fhir")
    transport = AsyncPinningTransport(resolver=resolver, transport_factory=Peer().factory)
    with pytest.raises(httpx.ConnectError) as caught:
        await transport.handle_async_request(request)
    assert str(caught.value) == f"cannot resolve {NAME}"
    assert caught.value.request is request
    assert caught.value.__cause__ is failure


# -- what is resolved and where the request goes ---------------------------------------------------

PORTS = [
    (f"https://{NAME}/fhir", 443),
    (f"http://{NAME}/fhir", 80),
    (f"https://{NAME}:8443/fhir", 8443),
    (f"http://{NAME}:8080/fhir", 8080),
    (f"wss://{NAME}/socket", 443),
]


@pytest.mark.parametrize(("url", "port"), PORTS)
def test_the_name_is_resolved_for_the_url_port(url: str, port: int) -> None:
    resolver = Resolver(V4_A)
    _sync(resolver, Peer()).handle_request(httpx.Request("GET", url))
    assert resolver.asked == [(NAME, port)]


@pytest.mark.anyio
@pytest.mark.parametrize(("url", "port"), PORTS)
async def test_the_name_is_resolved_for_the_url_port_async(url: str, port: int) -> None:
    resolver = Resolver(V4_A)
    await _async(resolver, Peer()).handle_async_request(httpx.Request("GET", url))
    assert resolver.asked == [(NAME, port)]


def _pinned_requests() -> list[httpx.Request]:
    explicit = httpx.Request("GET", f"https://{NAME}/a", headers={"Host": "vhost.example.org"})
    missing = httpx.Request("GET", f"https://{NAME}:8443/b")
    del missing.headers["host"]
    return [explicit, missing]


def test_an_explicit_host_header_is_kept_and_a_missing_one_is_the_url_netloc() -> None:
    peer = Peer()
    transport = _sync(Resolver(V4_A), peer)
    for request in _pinned_requests():
        transport.handle_request(request)
    assert [r.headers["host"] for r in peer.requests] == ["vhost.example.org", f"{NAME}:8443"]
    assert [r.headers.get_list("host") for r in peer.requests] == [
        ["vhost.example.org"],
        [f"{NAME}:8443"],
    ]
    assert [str(r.url) for r in peer.requests] == [
        f"https://{V4_A}/a",
        f"https://{V4_A}:8443/b",
    ]
    assert [r.extensions["sni_hostname"] for r in peer.requests] == [NAME, NAME]


@pytest.mark.anyio
async def test_host_header_and_sni_on_every_attempt_async() -> None:
    """The last address tried (not only the fallbacks) carries the name in SNI."""
    peer = Peer(refuse=[V4_B])
    transport = _async(Resolver(V4_B, V4_A), peer)
    for request in _pinned_requests():
        await transport.handle_async_request(request)
    assert [r.url.host for r in peer.requests] == [V4_A, V4_A]
    assert [r.headers["host"] for r in peer.requests] == ["vhost.example.org", f"{NAME}:8443"]
    assert [r.extensions["sni_hostname"] for r in peer.requests] == [NAME, NAME]


def test_host_header_and_sni_on_every_attempt_sync() -> None:
    peer = Peer(refuse=[V4_B])
    transport = _sync(Resolver(V4_A, V4_B), peer)
    with httpx.Client(transport=transport) as client:
        client.get(f"https://{NAME}/1")
    peer.refuse = {V4_A}
    with httpx.Client(transport=transport) as client:
        client.get(f"https://{NAME}/2")
    assert peer.attempts == [V4_A, V4_A, V4_B]
    assert [r.extensions["sni_hostname"] for r in peer.requests] == [NAME, NAME]


def test_a_refused_address_moves_on_to_the_next_one_not_the_last() -> None:
    peer = Peer(refuse=[V4_A])
    with httpx.Client(transport=_sync(Resolver(V4_A, V4_B, V4_C), peer)) as client:
        client.get(f"https://{NAME}/")
    assert peer.attempts == [V4_A, V4_B]


@pytest.mark.anyio
async def test_a_refused_address_moves_on_to_the_next_one_not_the_last_async() -> None:
    peer = Peer(refuse=[V4_A])
    async with httpx.AsyncClient(transport=_async(Resolver(V4_A, V4_B, V4_C), peer)) as client:
        await client.get(f"https://{NAME}/")
    assert peer.attempts == [V4_A, V4_B]


def test_the_address_that_answered_last_is_tried_first() -> None:
    peer = Peer(refuse=[V4_A])
    transport = _sync(Resolver(V4_A, V4_B, V4_C), peer)
    with httpx.Client(transport=transport) as client:
        client.get(f"https://{NAME}/1")  # A refused, B answers (a fallback)
        peer.refuse = set()
        client.get(f"https://{NAME}/2")  # B first now
        peer.refuse = {V4_B}
        client.get(f"https://{NAME}/3")  # B refused: A, then remembered
        client.get(f"https://{NAME}/4")
        peer.refuse = {V4_A, V4_B}
        client.get(f"https://{NAME}/5")  # C, the final address, answers
        peer.refuse = set()
        client.get(f"https://{NAME}/6")
    assert peer.attempts == [V4_A, V4_B, V4_B, V4_B, V4_A, V4_A, V4_A, V4_B, V4_C, V4_C]


@pytest.mark.anyio
async def test_the_address_that_answered_last_is_tried_first_async() -> None:
    peer = Peer(refuse=[V4_A])
    transport = _async(Resolver(V4_A, V4_B, V4_C), peer)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(f"https://{NAME}/1")
        peer.refuse = set()
        await client.get(f"https://{NAME}/2")
        peer.refuse = {V4_A, V4_B}
        await client.get(f"https://{NAME}/3")
        peer.refuse = set()
        await client.get(f"https://{NAME}/4")
    assert peer.attempts == [V4_A, V4_B, V4_B, V4_B, V4_A, V4_C, V4_C]


def test_the_remembered_address_is_per_name() -> None:
    peer = Peer(refuse=[V4_A])
    transport = _sync(Resolver(V4_A, V4_B), peer)
    with httpx.Client(transport=transport) as client:
        client.get(f"https://{NAME}/")
        peer.refuse = set()
        client.get("https://other.example.org/")
    assert peer.attempts == [V4_A, V4_B, V4_A]


# -- pools ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_each_name_gets_its_own_pool_and_ip_literals_share_one_async() -> None:
    peer = Peer()
    transport = _async(Resolver(V4_A), peer)
    async with httpx.AsyncClient(transport=transport) as client:
        for url in (
            "https://a.example.org/",
            f"https://{V4_A}/",
            "https://b.example.org/",
            "https://a.example.org/again",
            f"https://[{V6_A}]/",
        ):
            await client.get(url)
    assert [b.seen for b in peer.built] == [
        [f"https://{V4_A}/", f"https://{V4_A}/again"],
        [f"https://{V4_A}/", f"https://[{V6_A}]/"],
        [f"https://{V4_A}/"],
    ]
    assert repr(transport) == "<AsyncPinningTransport hosts=0>"  # closed with the client


def test_each_name_gets_its_own_pool_and_ip_literals_share_one_sync() -> None:
    peer = Peer()
    transport = _sync(Resolver(V4_A), peer)
    with httpx.Client(transport=transport) as client:
        for url in ("https://a.example.org/", f"https://{V4_A}/", "https://a.example.org/2"):
            client.get(url)
        assert repr(transport) == "<PinningTransport hosts=1>"
    assert [b.seen for b in peer.built] == [
        [f"https://{V4_A}/", f"https://{V4_A}/2"],
        [f"https://{V4_A}/"],
    ]


@pytest.mark.anyio
async def test_an_ip_literal_request_passes_through_as_is_async() -> None:
    peer = Peer()
    resolver = Resolver(V4_A)
    request = httpx.Request("GET", "https://[2001:db8::5]:8443/fhir", headers={"X-A": "1"})
    await _async(resolver, peer).handle_async_request(request)
    [sent] = peer.requests
    assert sent is request
    assert resolver.asked == []


def test_an_ip_literal_request_passes_through_as_is_sync() -> None:
    peer = Peer()
    request = httpx.Request("GET", "http://127.0.0.1:8080/fhir")
    _sync(Resolver(V4_A), peer).handle_request(request)
    assert peer.requests == [request]


@pytest.mark.anyio
async def test_aclose_closes_every_pool_once_and_starts_afresh() -> None:
    peer = Peer()
    transport = _async(Resolver(V4_A), peer)
    await transport.handle_async_request(httpx.Request("GET", f"https://{V4_A}/"))
    await transport.handle_async_request(httpx.Request("GET", f"https://{NAME}/"))
    await transport.aclose()
    assert [b.closed for b in peer.built] == [1, 1]
    await transport.handle_async_request(httpx.Request("GET", f"https://{V4_A}/"))
    await transport.handle_async_request(httpx.Request("GET", f"https://{NAME}/"))
    assert len(peer.built) == 4
    await transport.aclose()
    assert [b.closed for b in peer.built] == [1, 1, 1, 1]


def test_close_closes_every_pool_once_and_starts_afresh() -> None:
    peer = Peer()
    transport = _sync(Resolver(V4_A), peer)
    transport.handle_request(httpx.Request("GET", f"https://{NAME}/"))
    transport.handle_request(httpx.Request("GET", f"https://{V4_A}/"))
    transport.close()
    assert [b.closed for b in peer.built] == [1, 1]
    transport.handle_request(httpx.Request("GET", f"https://{V4_A}/"))
    transport.handle_request(httpx.Request("GET", f"https://{NAME}/"))
    assert len(peer.built) == 4
    transport.close()
    assert [b.closed for b in peer.built] == [1, 1, 1, 1]


# -- the OS resolvers -----------------------------------------------------------------------------


def test_blocking_transport_defaults_to_the_os_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = Resolver(V4_A)
    monkeypatch.setattr(teams_ehr.transport, "system_resolver_sync", resolver.sync)
    peer = Peer()
    PinningTransport(transport_factory=peer.factory).handle_request(
        httpx.Request("GET", f"https://{NAME}/")
    )
    assert resolver.asked == [(NAME, 443)]
    assert peer.attempts == [V4_A]


@pytest.mark.anyio
async def test_async_transport_defaults_to_the_os_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = Resolver(V4_A)
    monkeypatch.setattr(teams_ehr.transport, "system_resolver", resolver.asynchronous)
    peer = Peer()
    await AsyncPinningTransport(transport_factory=peer.factory).handle_async_request(
        httpx.Request("GET", f"https://{NAME}/")
    )
    assert resolver.asked == [(NAME, 443)]


def _os_answers(host: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, 8443, type=socket.SOCK_STREAM)]


@pytest.mark.parametrize("host", ["127.0.0.2", "localhost"])
def test_system_resolver_sync_lists_each_stream_address_once(host: str) -> None:
    answers = system_resolver_sync(host, 8443)
    assert answers == _os_answers(host)
    assert len(answers) == len(set(answers))
    assert all(ipaddress.ip_address(a) for a in answers)
    if host == "127.0.0.2":
        assert answers == ["127.0.0.2"]


@pytest.mark.anyio
@pytest.mark.parametrize("host", ["127.0.0.2", "localhost"])
async def test_system_resolver_lists_each_stream_address_once(host: str) -> None:
    answers = await system_resolver(host, 8443)
    assert answers == _os_answers(host)
    assert len(answers) == len(set(answers))
    if host == "127.0.0.2":
        assert answers == ["127.0.0.2"]
