"""T29 DNS rebinding: host names are resolved once per request, every answer is vetted, and the
request goes to the vetted address with the name kept in ``Host`` and TLS SNI (security.md T29;
RFC 6890 special-purpose registries; OWASP SSRF Prevention Cheat Sheet; RFC 6066 §3).

Offline throughout: resolvers are fakes (or ``localhost`` from the hosts file), peers are
``httpx.MockTransport`` handlers or servers on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

import teams_ehr.transport
from leaks import assert_no_leak
from teams_ehr.app import TeamsEhr
from teams_ehr.errors import TransportError
from teams_ehr.testing.asgi import ASGIApp, asgi_app_from_handler
from teams_ehr.testing.loopback import serve_on_loopback, serve_on_loopback_async
from teams_ehr.testing.sandbox import Sandbox
from teams_ehr.transport import AsyncPinningTransport, PinningTransport, is_internal_address

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

# RFC 6890 and its updates (the IANA special-purpose registries): nothing here is a peer.
INTERNAL_V4 = [
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
]
INTERNAL_V6 = [
    "::1/128",
    "::/128",
    "::/96",  # IPv4-compatible (deprecated)
    "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
    "100::/64",
    "2001::/32",  # Teredo
    "2001:db8::/32",
    "3fff::/20",
    "5f00::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
]
NETWORKS = [ipaddress.ip_network(n) for n in INTERNAL_V4 + INTERNAL_V6]


def _v4_wrapped(address: ipaddress.IPv4Address) -> list[str]:
    """The IPv6 forms that carry ``address``: IPv4-mapped, NAT64 (RFC 6052), 6to4."""
    value = int(address)
    return [
        f"::ffff:{address}",
        str(ipaddress.IPv6Address((0x64FF9B << 96) | value)),
        str(ipaddress.IPv6Address((0x2002 << 112) | (value << 80) | 1)),
    ]


class Peer:
    """The inner transport: records what it was asked to send."""

    def __init__(self, *, refuse: Sequence[str] = ()) -> None:
        self.requests: list[httpx.Request] = []
        self.built = 0
        self._refuse = set(refuse)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host in self._refuse:
            raise httpx.ConnectError("connection refused", request=request)
        request.read()
        self.requests.append(request)
        return httpx.Response(200, text="ok")

    def sync(self) -> httpx.BaseTransport:
        self.built += 1
        return httpx.MockTransport(self.handle)

    def asynchronous(self) -> httpx.AsyncBaseTransport:
        self.built += 1
        return httpx.MockTransport(self.handle)


class Rebinding:
    """A resolver whose answers change between calls, as an attacker's DNS server's do."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self._answers = list(answers)
        self.lookups: list[str] = []

    def sync(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append(host)
        return self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]

    async def asynchronous(self, host: str, port: int) -> Sequence[str]:
        return self.sync(host, port)


def _sync_client(
    resolver: Rebinding, peer: Peer, *, loopback_hosts: Sequence[str] = ()
) -> httpx.Client:
    transport = PinningTransport(
        resolver=resolver.sync, transport_factory=peer.sync, loopback_hosts=loopback_hosts
    )
    return httpx.Client(transport=transport)


def _refused(caught: pytest.ExceptionInfo[TransportError]) -> None:
    assert caught.value.reason == "internal_address"


# -- rebinding ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rebind_to_loopback_is_refused_with_nothing_sent() -> None:
    resolver = Rebinding([PUBLIC_V4], ["127.0.0.1"])
    peer = Peer()
    transport = AsyncPinningTransport(
        resolver=resolver.asynchronous, transport_factory=peer.asynchronous
    )
    async with httpx.AsyncClient(transport=transport) as client:
        first = await client.post("https://ehr.example.org/fhir/Observation", content=b"{}")
        assert first.status_code == 200
        with pytest.raises(TransportError) as caught:
            await client.post("https://ehr.example.org/fhir/Observation", content=b"{}")
    _refused(caught)
    assert resolver.lookups == ["ehr.example.org", "ehr.example.org"]  # once per request
    assert [str(r.url) for r in peer.requests] == [f"https://{PUBLIC_V4}/fhir/Observation"]


def test_rebind_is_refused_by_the_blocking_transport_too() -> None:
    resolver, peer = Rebinding([PUBLIC_V4], ["10.0.0.8"]), Peer()
    with _sync_client(resolver, peer) as client:
        assert client.get("https://ehr.example.org/fhir").status_code == 200
        with pytest.raises(TransportError) as caught:
            client.get("https://ehr.example.org/fhir")
    _refused(caught)
    assert len(peer.requests) == 1


@settings(max_examples=200)
@given(
    network=st.sampled_from(NETWORKS),
    fraction=st.floats(0, 1, exclude_max=True),
    wrapped=st.booleans(),
)
def test_every_internal_range_is_refused(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network, fraction: float, wrapped: bool
) -> None:
    address = network[int(fraction * network.num_addresses)]
    forms = [str(address)]
    if wrapped and isinstance(address, ipaddress.IPv4Address):
        forms = _v4_wrapped(address)
    peer = Peer()
    for form in forms:
        assert is_internal_address(ipaddress.ip_address(form)), form
        with _sync_client(Rebinding([form]), peer) as client, pytest.raises(TransportError) as c:
            client.get("https://ehr.example.org/fhir")
        _refused(c)
    assert peer.requests == []


def test_one_internal_answer_among_public_ones_refuses() -> None:
    peer = Peer()
    resolver = Rebinding([PUBLIC_V4, PUBLIC_V6, "169.254.169.254"])
    with _sync_client(resolver, peer) as client, pytest.raises(TransportError) as caught:
        client.get("https://ehr.example.org/fhir")
    _refused(caught)
    assert peer.requests == []


@pytest.mark.parametrize(
    "address", [PUBLIC_V4, PUBLIC_V6, "8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_global_addresses_are_not_internal(address: str) -> None:
    assert not is_internal_address(ipaddress.ip_address(address))


# -- the pinned request -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_inner_transport_gets_the_ip_url_the_host_header_and_sni() -> None:
    peer = Peer()
    transport = AsyncPinningTransport(
        resolver=Rebinding([PUBLIC_V6, PUBLIC_V4]).asynchronous,
        transport_factory=peer.asynchronous,
    )
    async with httpx.AsyncClient(transport=transport, timeout=7.0) as client:
        response = await client.post(
            "https://EHR.example.org:8443/fhir/Patient?_id=1", json={"resourceType": "Bundle"}
        )
    assert str(response.request.url) == "https://ehr.example.org:8443/fhir/Patient?_id=1"
    [sent] = peer.requests
    assert str(sent.url) == f"https://[{PUBLIC_V6}]:8443/fhir/Patient?_id=1"
    assert sent.headers["Host"] == "ehr.example.org:8443"
    assert sent.extensions["sni_hostname"] == "ehr.example.org"
    assert sent.extensions["timeout"]["read"] == 7.0
    assert sent.content == b'{"resourceType":"Bundle"}'


def test_ip_literal_hosts_pass_through_without_a_lookup() -> None:
    resolver, peer = Rebinding(["10.0.0.1"]), Peer()
    with _sync_client(resolver, peer) as client:
        client.get("http://127.0.0.1:8080/fhir")
        client.get("https://[2001:db8::5]/fhir")
    assert resolver.lookups == []
    assert [str(r.url) for r in peer.requests] == [
        "http://127.0.0.1:8080/fhir",
        "https://[2001:db8::5]/fhir",
    ]
    assert all("sni_hostname" not in r.extensions for r in peer.requests)


def test_each_host_name_gets_its_own_connection_pool() -> None:
    """Two names on one address must not share a TLS connection checked for only one of them."""
    peer = Peer()
    with _sync_client(Rebinding([PUBLIC_V4]), peer) as client:
        client.get("https://a.example.org/")
        client.get("https://b.example.org/")
        client.get("https://a.example.org/again")
        client.get(f"https://{PUBLIC_V4}/")
    assert peer.built == 3  # a, b and the IP literals


def test_refused_connection_falls_back_to_the_next_vetted_address() -> None:
    peer = Peer(refuse=[PUBLIC_V6])
    resolver = Rebinding([PUBLIC_V6, PUBLIC_V4])
    with _sync_client(resolver, peer) as client:
        client.get("https://ehr.example.org/1")
        client.get("https://ehr.example.org/2")
    # the address that worked is tried first next time, so keep-alive connections are reused
    assert [r.url.host for r in peer.requests] == [PUBLIC_V4, PUBLIC_V4]


def test_every_address_refusing_raises_httpx_connect_error() -> None:
    peer = Peer(refuse=[PUBLIC_V4])
    with _sync_client(Rebinding([PUBLIC_V4]), peer) as client, pytest.raises(httpx.ConnectError):
        client.get("https://ehr.example.org/")


@pytest.mark.parametrize("failure", [socket.gaierror(-2, "Name or service not known"), []])
def test_unresolvable_names_are_httpx_connect_errors(failure: object) -> None:
    def resolver(host: str, port: int) -> Sequence[str]:
        if isinstance(failure, Exception):
            raise failure
        return []

    transport = PinningTransport(resolver=resolver, transport_factory=Peer().sync)
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError):
        client.get("https://nowhere.example.org/")


def test_refusal_is_one_security_event_and_the_error_names_no_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="teams_ehr.transport")
    with (
        _sync_client(Rebinding(["169.254.169.254"]), Peer()) as client,
        pytest.raises(TransportError) as caught,
    ):
        client.get("https://ehr.example.org/")
    [event] = [r for r in caplog.records if getattr(r, "security_event", None)]
    assert event.security_event == "internal_address"  # type: ignore[attr-defined]
    assert_no_leak(["169.254", "ehr.example.org"], caught.value)


# -- the loopback allow-list (development organizations) ------------------------------------------


def test_allow_listed_name_may_resolve_to_loopback_and_nothing_else_internal() -> None:
    peer = Peer()
    allowed = ["EHR.dev.test"]
    with _sync_client(Rebinding(["127.0.0.1", "::1"]), peer, loopback_hosts=allowed) as client:
        assert client.get("http://ehr.dev.test:8000/fhir").status_code == 200
    for answers, host in ((["10.1.2.3"], "ehr.dev.test"), (["127.0.0.1"], "other.dev.test")):
        with (
            _sync_client(Rebinding(answers), peer, loopback_hosts=allowed) as client,
            pytest.raises(TransportError),
        ):
            client.get(f"http://{host}:8000/fhir")
    assert len(peer.requests) == 1


def _echo_host_app() -> ASGIApp:
    """Answers with the ``Host`` header the server received."""
    return asgi_app_from_handler(lambda request: httpx.Response(200, text=request.headers["host"]))


def test_real_server_sees_the_original_host_header() -> None:
    resolver = Rebinding(["127.0.0.1"])
    transport = PinningTransport(resolver=resolver.sync, loopback_hosts=["ehr.dev.test"])
    with serve_on_loopback(_echo_host_app()) as url, httpx.Client(transport=transport) as client:
        port = httpx.URL(url).port
        response = client.get(f"http://ehr.dev.test:{port}/fhir/metadata")
        assert response.text == f"ehr.dev.test:{port}"
        with pytest.raises(TransportError):
            client.get(f"http://unlisted.dev.test:{port}/fhir/metadata")


# -- TLS: SNI and certificate checks use the name, not the address --------------------------------


def _certificate_authority(tmp_path: Path, name: str) -> tuple[Path, Path, bytes]:
    """A CA and a leaf for ``name``: (leaf cert file, leaf key file, CA PEM)."""
    now = datetime.now(UTC)

    def build(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        signer: ec.EllipticCurvePrivateKey,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
        )
        if subject == issuer:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name)]), False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("Test CA", ca_key, "Test CA", ca_key)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = build(name, leaf_key, "Test CA", ca_key)
    cert_file, key_file = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, ca.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, list[str | None], bytes]]:
    """A one-connection HTTPS server on 127.0.0.1 whose certificate names ehr.pinned.test;
    yields (port, the SNI names it saw, the CA to trust)."""
    cert_file, key_file, ca_pem = _certificate_authority(tmp_path, "ehr.pinned.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    seen: list[str | None] = []

    def record_sni(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        seen.append(name)

    context.sni_callback = record_sni
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            with context.wrap_socket(connection, server_side=True) as tls:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += tls.recv(4096)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except (OSError, ssl.SSLError):
            pass  # the client refused our certificate, or never came

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen, ca_pem
    finally:
        listener.close()
        thread.join(timeout=10)


def _tls_client(ca_pem: bytes, name: str) -> httpx.Client:
    verify = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    transport = PinningTransport(
        resolver=Rebinding(["127.0.0.1"]).sync,
        transport_factory=lambda: httpx.HTTPTransport(verify=verify),
        loopback_hosts=[name],
    )
    return httpx.Client(transport=transport)


def test_tls_sends_the_name_in_sni_and_checks_the_certificate_against_it(
    tls_server: tuple[int, list[str | None], bytes],
) -> None:
    port, seen, ca_pem = tls_server
    with _tls_client(ca_pem, "ehr.pinned.test") as client:
        assert client.get(f"https://ehr.pinned.test:{port}/fhir").text == "ok"
    assert seen == ["ehr.pinned.test"]


def test_tls_refuses_a_certificate_for_another_name_at_the_same_address(
    tls_server: tuple[int, list[str | None], bytes],
) -> None:
    port, seen, ca_pem = tls_server
    with _tls_client(ca_pem, "evil.pinned.test") as client, pytest.raises(httpx.ConnectError):
        client.get(f"https://evil.pinned.test:{port}/fhir")
    assert seen == ["evil.pinned.test"]


# -- the runtime's own client -------------------------------------------------------------------


@pytest.fixture
def private_ehr_dns(monkeypatch: pytest.MonkeyPatch) -> Rebinding:
    """The system resolver, as the runtime sees it, maps the sandbox EHR's name to 10.20.30.40."""
    resolver = Rebinding(["10.20.30.40"])
    monkeypatch.setattr(teams_ehr.transport, "system_resolver", resolver.asynchronous)
    return resolver


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_runtime_refuses_discovery_of_an_ehr_that_resolves_privately(
    anyio_backend: str, private_ehr_dns: Rebinding
) -> None:
    """The client :class:`TeamsEhr` builds for itself pins; a client the host injects (the
    sandbox's, here unused) is used as given."""
    sandbox = Sandbox()
    async with TeamsEhr(sandbox.settings, signers={"test": sandbox.signer}) as app:
        with pytest.raises(TransportError) as caught:
            await sandbox.seed_organization(app)
    _refused(caught)
    assert private_ehr_dns.lookups == ["ehr.test"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("allow_http", [True, False])
async def test_runtime_lets_localhost_through_only_for_a_loopback_dev_deployment(
    anyio_backend: str, allow_http: bool
) -> None:
    sandbox = Sandbox()
    settings = sandbox.settings.model_copy(update={"allow_http": allow_http})
    async with (
        serve_on_loopback_async(_echo_host_app()) as url,
        TeamsEhr(settings, signers={"test": sandbox.signer}) as app,
    ):
        target = f"http://localhost:{httpx.URL(url).port}/fhir/metadata"
        if allow_http:
            assert (await app.http.get(target)).text == f"localhost:{httpx.URL(url).port}"
        else:
            with pytest.raises(TransportError) as caught:
                await app.http.get(target)
            _refused(caught)
