"""T29 (and T01) SSRF through the admin-entered FHIR base URL or a launch ``iss``, and through the
endpoints an EHR's metadata names (security.md T29; ASVS 1.3.6, 13.2.4; RFC 8725 §3.10).

Internal addresses are refused in every spelling a resolver accepts — dotted, integer, octal, hex,
short (``127.1``), hex-dotted (``0x7f.1``), IPv4-mapped IPv6 — before any DNS lookup, by the one
canonicalization routine used for approval and launch, by the organization model, and for the
authorization, token and JWKS endpoints that discovery returns.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from teams_ehr.errors import DiscoveryError, LaunchParameterError
from teams_ehr.orgs.models import EnvironmentConfig
from teams_ehr.sansio import run_sync
from teams_ehr.smart.canonical import canonical_fhir_base
from teams_ehr.smart.discovery import discovery_flow

INTERNAL_NETWORKS = [
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "0.0.0.0/8",
    )
]


@st.composite
def internal_ipv4(draw: st.DrawFn) -> ipaddress.IPv4Address:
    network = draw(st.sampled_from(INTERNAL_NETWORKS))
    offset = draw(st.integers(0, network.num_addresses - 1))
    return ipaddress.IPv4Address(int(network.network_address) + offset)


def _spellings(address: ipaddress.IPv4Address) -> list[str]:
    """Every host spelling of ``address`` that inet_aton / WHATWG URL parsers accept."""
    a, b, c, d = address.packed
    value = int(address)
    return [
        str(address),
        str(value),
        hex(value),
        "0" + oct(value)[2:],
        f"0{a:o}.0{b:o}.0{c:o}.0{d:o}",
        f"0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}",
        f"{a}.{(b << 16) | (c << 8) | d}",
        f"0x{a:x}.{(b << 16) | (c << 8) | d}",
        f"{a}.{b}.{(c << 8) | d}",
        f"[::ffff:{address}]",
        f"[::{address}]",
        f"[::ffff:{(a << 8) | b:x}:{(c << 8) | d:x}]",
        f"{address}.",
    ]


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("DNS lookup of an attacker-supplied host")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "gethostbyname", refuse)


def _config(base: str) -> EnvironmentConfig:
    return EnvironmentConfig(
        fhir_base=base,
        client_id="c",
        redirect_uri="https://app.test/callback",
        jwks_url="https://app.test/.well-known/jwks.json",
    )


@settings(max_examples=60)
@given(address=internal_ipv4(), path=st.sampled_from(["", "/fhir", "/api/FHIR/R4/"]))
def test_internal_address_in_any_spelling_refused(
    address: ipaddress.IPv4Address, path: str
) -> None:
    for host in _spellings(address):
        url = f"https://{host}{path}"
        with pytest.raises(LaunchParameterError):
            canonical_fhir_base(url)
        with pytest.raises(ValidationError):
            _config(url)


@pytest.mark.usefixtures("no_dns")
@pytest.mark.parametrize(
    "host",
    [
        "0x7f.1",
        "0x7f000001",
        "0x7F.0.0.1",
        "ehr.0x7f",
        "169.254.169.254",
        "2852039166",
        "[fd00:ec2::254]",
        "[::1]",
        "localhost",
        "LOCALHOST",
        "metadata.localhost",
        "ehr.example.org.123",
    ],
)
def test_internal_hosts_refused_before_dns(host: str) -> None:
    with pytest.raises(LaunchParameterError):
        canonical_fhir_base(f"https://{host}/fhir")


@pytest.mark.usefixtures("no_dns")
def test_public_names_still_canonical() -> None:
    """The refusal is about numeric hosts, not digits in names."""
    assert canonical_fhir_base("https://EHR1.Example.org/fhir") == "https://ehr1.example.org/fhir"
    assert canonical_fhir_base("https://1e100.net/fhir") == "https://1e100.net/fhir"
    assert canonical_fhir_base("https://x.0xcafe.org/fhir") == "https://x.0xcafe.org/fhir"


BASE = "https://ehr.example.org/fhir"


def _metadata(**endpoints: str) -> httpx.MockTransport:
    document = {
        "issuer": "https://ehr.example.org/oauth2",
        "authorization_endpoint": "https://ehr.example.org/oauth2/authorize",
        "token_endpoint": "https://ehr.example.org/oauth2/token",
        "jwks_uri": "https://ehr.example.org/oauth2/jwks",
        "code_challenge_methods_supported": ["S256"],
        "capabilities": ["launch-ehr", "client-confidential-asymmetric"],
        **endpoints,
    }

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "ehr.example.org", f"fetched {request.url.host}"
        return httpx.Response(200, json=document)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("field", ["token_endpoint", "authorization_endpoint", "jwks_uri"])
@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://0x7f.1/oauth2/token",
        "https://10.0.0.8/oauth2/token",
        "https://[::ffff:127.0.0.1]/token",
        "https://localhost/token",
    ],
)
def test_metadata_endpoints_on_internal_hosts_refused(field: str, url: str) -> None:
    """A compromised EHR's metadata cannot point the client assertion or the key fetch at an
    internal service (the endpoints get the same host rules as the base)."""
    with (
        httpx.Client(transport=_metadata(**{field: url})) as client,
        pytest.raises(DiscoveryError) as caught,
    ):
        run_sync(discovery_flow(BASE), client)
    assert caught.value.reason == "internal_endpoint"
    assert "169.254" not in str(caught.value)


def test_metadata_on_other_public_host_accepted() -> None:
    """Authorization servers on another public host (e.g. a separate OAuth domain) are legal;
    the approval snapshot pins them (T03)."""
    transport = _metadata(token_endpoint="https://auth.example.net/token")
    with httpx.Client(transport=transport) as client:
        configuration = run_sync(discovery_flow(BASE), client)
    assert configuration.token_endpoint == "https://auth.example.net/token"
