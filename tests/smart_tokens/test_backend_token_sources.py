"""Backend-services tokens per organization: one token request however many write-backs race.

The race this guards against: each concurrent write-back for one organization looked up its
token source, awaited the organization's registry (cache miss), then built and stored a source of
its own — so every caller requested its own token from the EHR (SMART Backend Services asks
clients to reuse an access token until it expires).
"""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import httpx
import pytest

from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import UsageError
from teams_ehr.keys import LocalSigner
from teams_ehr.smart.client_auth import PrivateKeyJwt
from teams_ehr.smart.tokens import BackendServicesTokenSource, BackendTokenSources
from teams_ehr.testing import FakeEhr

pytestmark = pytest.mark.anyio
BASE = "https://ehr.test/fhir/r4"
SCOPES = ["system/DocumentReference.c"]
CALLERS = 25


def backend_ehr(clock: Clock = utc_now) -> tuple[FakeEhr, PrivateKeyJwt]:
    ehr = FakeEhr(BASE, clock=clock)
    signer = LocalSigner.generate("RS384")
    ehr.register_client("backend-app", redirect_uris=[], jwks={"keys": [signer.public_jwk()]})
    return ehr, PrivateKeyJwt("backend-app", signer)


def slow_transport(ehr: FakeEhr) -> httpx.MockTransport:
    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.01)  # the token endpoint takes a while: callers overlap
        return ehr.handler(request)

    return httpx.MockTransport(handler)


async def test_concurrent_write_backs_for_one_org_request_one_token() -> None:
    ehr, auth = backend_ehr()
    sources = BackendTokenSources()
    created: list[int] = []

    async def create() -> BackendServicesTokenSource:
        await anyio.sleep(0.01)  # e.g. reading the organization's approved token endpoint
        created.append(1)
        return BackendServicesTokenSource(ehr.token_url, auth, SCOPES)

    tokens: set[str] = set()
    async with httpx.AsyncClient(transport=slow_transport(ehr)) as http:

        async def write_back() -> None:
            source = await sources.get(("org-1", "config-a"), create)
            tokens.add((await source.get_token(http)).get_secret_value())

        async with anyio.create_task_group() as tg:
            for _ in range(CALLERS):
                tg.start_soon(write_back)

    assert len(ehr.calls("token")) == 1
    assert len(created) == 1
    assert len(tokens) == 1
    assert len(sources) == 1


async def test_keys_are_independent_and_forget_rebuilds() -> None:
    ehr, auth = backend_ehr()
    sources = BackendTokenSources()

    async def create() -> BackendServicesTokenSource:
        return BackendServicesTokenSource(ehr.token_url, auth, SCOPES)

    async with httpx.AsyncClient(transport=httpx.MockTransport(ehr.handler)) as http:
        first = await sources.get("org-1", create)
        assert await sources.get("org-1", create) is first
        second = await sources.get("org-2", create)
        assert second is not first
        sources.forget("org-1")
        assert await sources.get("org-1", create) is not first
        await first.get_token(http)
        await second.get_token(http)
    assert len(ehr.calls("token")) == 2
    assert "org-" not in repr(sources)


async def test_a_failed_create_is_not_cached() -> None:
    sources = BackendTokenSources()
    ehr, auth = backend_ehr()

    async def broken() -> BackendServicesTokenSource:
        raise UsageError("no backend client", reason="no_backend_client")

    async def working() -> BackendServicesTokenSource:
        return BackendServicesTokenSource(ehr.token_url, auth, SCOPES)

    with pytest.raises(UsageError):
        await sources.get("org-1", broken)
    assert isinstance(await sources.get("org-1", working), BackendServicesTokenSource)


async def test_client_and_clock_are_given_like_the_graph_token_provider() -> None:
    """``http=`` and ``clock=`` at construction, as ClientCredentialsProvider takes them."""
    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    ehr, auth = backend_ehr(lambda: now)
    async with httpx.AsyncClient(transport=httpx.MockTransport(ehr.handler)) as http:
        source = BackendServicesTokenSource(
            ehr.token_url, auth, SCOPES, http=http, clock=lambda: now
        )
        token = await source.get_token()
        assert await source.get_token() == token
    assert len(ehr.calls("token")) == 1


async def test_no_client_at_all_is_a_usage_error() -> None:
    _, auth = backend_ehr()
    source = BackendServicesTokenSource("https://ehr.test/oauth2/token", auth, SCOPES)
    with pytest.raises(UsageError) as caught:
        await source.get_token()
    assert "http=" in str(caught.value)
