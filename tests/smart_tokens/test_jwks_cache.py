"""The JWKS cache: TTL, single-flight, rate-limited refetch, stale serving (SPEC A7, T12)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from functools import cache

import anyio
import httpx
import pytest
from smart_tokens_fakes import FakeClock, JwksEndpoint

from teams_ehr.errors import ConfigurationError, RemoteError, TokenInvalidError
from teams_ehr.keys import LocalSigner
from teams_ehr.smart.jwks import JWKS_UNAVAILABLE, JwksCache

URL = "https://ehr.test/oauth2/jwks"


@cache
def signer(alg: str, n: int = 0) -> LocalSigner:
    return LocalSigner.generate(alg)


def sync_client(endpoint: JwksEndpoint) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(endpoint))


def async_transport(endpoint: JwksEndpoint) -> httpx.MockTransport:
    """A transport that yields to the event loop, so concurrent callers really overlap."""

    async def handler(request: httpx.Request) -> httpx.Response:
        for _ in range(3):
            await anyio.sleep(0)
        return endpoint(request)

    return httpx.MockTransport(handler)


def setup(
    *keys: LocalSigner, cache_control: str | None = "max-age=3600"
) -> tuple[JwksEndpoint, JwksCache, FakeClock]:
    endpoint = JwksEndpoint([k.public_jwk() for k in keys], cache_control=cache_control)
    clock = FakeClock()
    return endpoint, JwksCache(clock=clock), clock


def test_cached_key_served_without_refetch() -> None:
    s = signer("RS256")
    endpoint, jwks, _ = setup(s)
    with sync_client(endpoint) as client:
        for _ in range(5):
            key = jwks.get_key_sync(client, URL, s.kid, "RS256")
    assert key.key_id == s.kid
    assert endpoint.gets == 1
    flow = jwks.key_flow(URL, s.kid, "RS256")  # sans-IO: a hit yields nothing
    with pytest.raises(StopIteration):
        next(flow)


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [
        ("max-age=10", 300),
        ("public, max-age=7200", 7200),
        ("max-age=999999", 86400),
        ("no-store", 300),
        (None, 300),
        ("max-age=abc", 300),
    ],
)
def test_ttl_from_cache_control_clamped(cache_control: str | None, ttl: int) -> None:
    s = signer("RS256")
    endpoint, jwks, clock = setup(s, cache_control=cache_control)
    with sync_client(endpoint) as client:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        clock.advance(ttl - 1)
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert endpoint.gets == 1
        clock.advance(1)
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert endpoint.gets == 2


@pytest.mark.anyio
async def test_unknown_kid_flood_single_fetch() -> None:
    s = signer("RS256")
    endpoint, jwks, clock = setup(s)
    results: list[str] = []

    async def lookup(client: httpx.AsyncClient) -> None:
        try:
            await jwks.get_key(client, URL, secrets.token_hex(8), "RS256")
        except TokenInvalidError as exc:
            results.append(exc.reason)

    async with httpx.AsyncClient(transport=async_transport(endpoint)) as client:
        await jwks.get_key(client, URL, s.kid, "RS256")
        clock.advance(61)  # past the refetch interval: exactly one refetch is allowed
        async with anyio.create_task_group() as tg:
            for _ in range(1000):
                tg.start_soon(lookup, client)
        assert endpoint.gets == 2
        assert results == ["unknown_kid"] * 1000
        clock.advance(30)
        await lookup(client)
        assert endpoint.gets == 2  # within 60 s of the last fetch: no GET
        clock.advance(31)
        await lookup(client)
        assert endpoint.gets == 3


@pytest.mark.anyio
async def test_cold_cache_concurrent_callers_share_one_fetch() -> None:
    s = signer("RS256")
    endpoint, jwks, _ = setup(s)
    kids: list[str | None] = []

    async def lookup(client: httpx.AsyncClient) -> None:
        kids.append((await jwks.get_key(client, URL, s.kid, "RS256")).key_id)

    async with (
        httpx.AsyncClient(transport=async_transport(endpoint)) as client,
        anyio.create_task_group() as tg,
    ):
        for _ in range(200):
            tg.start_soon(lookup, client)
    assert endpoint.gets == 1
    assert kids == [s.kid] * 200


def test_rotation_new_kid_one_refresh_then_ok() -> None:
    old, new = signer("RS256", 1), signer("RS256", 2)
    endpoint, jwks, clock = setup(old)
    with sync_client(endpoint) as client:
        jwks.get_key_sync(client, URL, old.kid, "RS256")
        endpoint.keys = [old.public_jwk(), new.public_jwk()]
        clock.advance(120)
        assert jwks.get_key_sync(client, URL, new.kid, "RS256").key_id == new.kid
        assert endpoint.gets == 2
        for kid in (new.kid, old.kid):
            jwks.get_key_sync(client, URL, kid, "RS256")
        assert endpoint.gets == 2


@pytest.mark.parametrize("failure", ["down", "refuse"])
def test_jwks_down_serves_stale_then_fails_closed(failure: str) -> None:
    s = signer("RS256")
    endpoint, jwks, clock = setup(s)
    with sync_client(endpoint) as client:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        endpoint.mode = failure
        clock.advance(3600)  # expired: refetch fails, the stale key is served
        assert jwks.get_key_sync(client, URL, s.kid, "RS256").key_id == s.kid
        assert endpoint.gets == 2
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert endpoint.gets == 2  # failed fetches are rate limited too
        clock.advance(24 * 3600 - 1)
        assert jwks.get_key_sync(client, URL, s.kid, "RS256").key_id == s.kid
        clock.advance(1)
        with pytest.raises(RemoteError) as info:
            jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert info.value.reason == JWKS_UNAVAILABLE
        endpoint.mode = "ok"
        clock.advance(60)
        assert jwks.get_key_sync(client, URL, s.kid, "RS256").key_id == s.kid


@pytest.mark.parametrize("mode", ["redirect", "huge", "down", "refuse"])
def test_jwks_oversized_or_redirect_rejected(mode: str) -> None:
    s = signer("RS256")
    endpoint, jwks, _ = setup(s)
    endpoint.mode = mode
    with sync_client(endpoint) as client, pytest.raises(RemoteError) as info:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
    assert info.value.reason == JWKS_UNAVAILABLE
    with sync_client(endpoint) as client, pytest.raises(RemoteError):
        jwks.get_key_sync(client, URL, s.kid, "RS256")
    assert endpoint.gets == 1  # a failing endpoint is not hammered either


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"keys": {}}'])
def test_invalid_documents_rejected(body: bytes) -> None:
    jwks = JwksCache(clock=FakeClock())
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=body))
    with httpx.Client(transport=transport) as client, pytest.raises(RemoteError):
        jwks.get_key_sync(client, URL, None, "RS256")


def test_http_refused_unless_allowed() -> None:
    s = signer("RS256")
    endpoint, jwks, _ = setup(s)
    endpoint.url = "http://127.0.0.1/jwks"
    with sync_client(endpoint) as client:
        with pytest.raises(ConfigurationError):
            jwks.get_key_sync(client, endpoint.url, s.kid, "RS256")
        loopback = JwksCache(clock=FakeClock(), allow_http=True)
        assert loopback.get_key_sync(client, endpoint.url, s.kid, "RS256").key_id == s.kid
    with pytest.raises(ConfigurationError):
        JwksCache(min_ttl=timedelta(hours=2), max_ttl=timedelta(hours=1))


def test_keys_filtered_by_use_kty_alg_and_curve() -> None:
    rsa_key, ec_key = signer("RS256"), signer("ES384")
    enc = {**signer("RS384").public_jwk(), "use": "enc"}
    wrong_alg = {**signer("RS256", 3).public_jwk(), "alg": "RS512"}
    endpoint = JwksEndpoint([rsa_key.public_jwk(), ec_key.public_jwk(), enc, wrong_alg])
    jwks = JwksCache(clock=FakeClock())
    with sync_client(endpoint) as client:
        assert jwks.get_key_sync(client, URL, ec_key.kid, "ES384").key_id == ec_key.kid
        for kid, alg in [
            (enc["kid"], "RS384"),  # use=enc
            (rsa_key.kid, "ES384"),  # kty does not fit
            (ec_key.kid, "ES256"),  # curve does not fit
            (wrong_alg["kid"], "RS256"),  # the key is bound to another alg
        ]:
            with pytest.raises(TokenInvalidError) as info:
                jwks.get_key_sync(client, URL, kid, alg)
            assert info.value.reason == "unknown_kid"
        with pytest.raises(TokenInvalidError) as info:
            jwks.get_key_sync(client, URL, None, "HS256")
        assert info.value.reason == "alg_not_allowed"


def test_duplicate_or_missing_kid_is_ambiguous() -> None:
    a, b = signer("RS256", 1), signer("RS256", 2)
    endpoint = JwksEndpoint([a.public_jwk(), {**b.public_jwk(), "kid": a.kid}])
    jwks = JwksCache(clock=FakeClock())
    with sync_client(endpoint) as client:
        with pytest.raises(TokenInvalidError) as info:
            jwks.get_key_sync(client, URL, a.kid, "RS256")
        assert info.value.reason == "ambiguous_key"
        single = JwksEndpoint([a.public_jwk()], url="https://other.test/jwks")
    with sync_client(single) as client:
        assert jwks.get_key_sync(client, single.url, None, "RS256").key_id == a.kid
