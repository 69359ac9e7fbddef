"""Shared helpers for the Teams/Graph tests: fake clock and sleep, static tokens, test certificates,
clients wired to FakeGraph (lean GraphClient and msgraph-sdk)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from teams_ehr.teams.credentials import AccessToken
from teams_ehr.teams.graph_client import GraphClient
from teams_ehr.teams.retry import RetryPolicy
from teams_ehr.testing.fake_graph import FakeGraph

TENANT = "11111111-2222-3333-4444-555555555555"
ORGANIZER = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
TOKEN_CANARY = "tok-CANARY-7f3a9c"
START = datetime(2030, 5, 1, 15, 0, tzinfo=UTC)


@dataclass
class FakeTime:
    """A clock and an async sleep that advances it and records every wait (no real sleeping)."""

    now: datetime = START - timedelta(days=1)
    waits: list[float] = field(default_factory=list)

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += timedelta(seconds=seconds)


class StaticTokens:
    """An AccessTokenProvider handing out one fixed token; counts calls."""

    def __init__(self, token: str = TOKEN_CANARY) -> None:
        self.token = token
        self.calls = 0
        self.invalidated = 0

    async def get_token(self, *scopes: str) -> AccessToken:
        self.calls += 1
        return AccessToken(self.token, 2_000_000_000)

    def invalidate(self, *scopes: str) -> None:
        self.invalidated += 1


def make_graph_client(
    fake: FakeGraph, time: FakeTime, *, retry: RetryPolicy | None = None
) -> tuple[GraphClient, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))
    client = GraphClient(
        http,
        StaticTokens(),
        clock=time.clock,
        sleep=time.sleep,
        retry=retry or RetryPolicy(rng=random.Random(0)),
    )
    return client, http


def make_msgraph_client(fake: FakeGraph) -> tuple[Any, httpx.AsyncClient]:
    """A GraphServiceClient pointed at FakeGraph (reference/graph.md §2.3). msgraph's RetryHandler
    sleeps with real asyncio.sleep, so it is switched off here; the contract tests retry themselves."""
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from kiota_http.middleware.options import RetryHandlerOption
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.graph_request_adapter import options as msgraph_options
    from msgraph_core import GraphClientFactory

    class Provider(AccessTokenProvider):  # type: ignore[misc]
        async def get_authorization_token(
            self, uri: str, additional_authentication_context: Any = None
        ) -> str:
            return TOKEN_CANARY

        def get_allowed_hosts_validator(self) -> Any:
            return AllowedHostsValidator(["graph.microsoft.com"])

    http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))
    options = {
        **msgraph_options,
        RetryHandlerOption.get_key(): RetryHandlerOption(should_retry=False),
    }
    wrapped = GraphClientFactory.create_with_default_middleware(client=http, options=options)
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(Provider()), client=wrapped)
    adapter.base_url = "https://graph.microsoft.com/v1.0"
    return GraphServiceClient(request_adapter=adapter), http


def self_signed_certificate() -> tuple[bytes, bytes, rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "teams-ehr test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM), key, cert
