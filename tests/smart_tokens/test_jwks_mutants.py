"""Exact behaviour of the JWKS cache at its edges (smart/jwks.py, threat T12).

Each test pins one rule of the module docstring with the exact ``reason``, message and number
of fetches, so a weakened comparison, a dropped argument or a changed default is noticed.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from functools import cache
from typing import Any

import anyio
import httpx
import pytest
from smart_tokens_fakes import T0, FakeClock, JwksEndpoint

from teams_ehr.errors import ConfigurationError, RemoteError, TokenInvalidError
from teams_ehr.keys import LocalSigner
from teams_ehr.sansio import max_bytes_of
from teams_ehr.smart.jwks import JWKS_UNAVAILABLE, JwksCache, kty_for_alg

URL = "https://ehr.test/oauth2/jwks"


@cache
def signer(alg: str, n: int = 0) -> LocalSigner:
    return LocalSigner.generate(alg)


def client_for(endpoint: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(endpoint))


# -- kty_for_alg ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "kty"),
    [
        ("RS256", "RSA"),
        ("RS384", "RSA"),
        ("RS512", "RSA"),
        ("PS256", "RSA"),
        ("PS512", "RSA"),
        ("ES256", "EC"),
        ("ES384", "EC"),
        ("ES512", "EC"),
        ("EdDSA", "OKP"),
        ("HS256", None),
        ("none", None),
        ("RS1024", None),
        ("RS25", None),
        ("RS", None),
        ("eddsa", None),
        ("", None),
        ("XS256", None),
        ("RS256 ", None),
    ],
)
def test_kty_for_alg(alg: str, kty: str | None) -> None:
    assert kty_for_alg(alg) == kty


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_ttl", "max_ttl"),
    [(timedelta(0), timedelta(hours=1)), (timedelta(seconds=-1), timedelta(hours=1))],
)
def test_bad_ttl_bounds(min_ttl: timedelta, max_ttl: timedelta) -> None:
    with pytest.raises(ConfigurationError) as info:
        JwksCache(min_ttl=min_ttl, max_ttl=max_ttl)
    assert info.value.reason == "bad_jwks_ttl"
    assert str(info.value) == "need 0 < min_ttl ≤ max_ttl"


def test_equal_ttl_bounds_accepted_and_used() -> None:
    s = signer("RS256")
    endpoint = JwksEndpoint([s.public_jwk()], cache_control="max-age=99999")
    clock = FakeClock()
    jwks = JwksCache(clock=clock, min_ttl=timedelta(seconds=120), max_ttl=timedelta(seconds=120))
    with client_for(endpoint) as client:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        clock.advance(119)
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert endpoint.gets == 1
        clock.advance(1)
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert endpoint.gets == 2


def test_uri_scheme_message() -> None:
    with pytest.raises(ConfigurationError) as info:
        next(JwksCache().key_flow("http://ehr.test/jwks", None, "RS256"))
    assert info.value.reason == "jwks_uri_not_https"
    assert str(info.value) == "jwks_uri must use https"
    with pytest.raises(ConfigurationError):
        next(JwksCache(allow_http=True).key_flow("ftp://ehr.test/jwks", None, "RS256"))


def test_default_clock_is_utc_now() -> None:
    s = signer("RS256")
    endpoint = JwksEndpoint([s.public_jwk()])
    with client_for(endpoint) as client:
        assert JwksCache().get_key_sync(client, URL, s.kid, "RS256").key_id == s.kid


def test_alg_refused_before_any_fetch() -> None:
    flow = JwksCache().key_flow(URL, None, "HS256")
    with pytest.raises(TokenInvalidError) as info:
        next(flow)
    assert info.value.reason == "alg_not_allowed"
    assert str(info.value) == "algorithm not allowed"


# -- the request ----------------------------------------------------------------------------


def test_request_shape_and_size_cap() -> None:
    flow = JwksCache(max_bytes=1234).key_flow(URL, None, "RS256")
    request = next(flow)
    assert request.method == "GET"
    assert str(request.url) == URL
    assert request.headers["Accept"] == "application/json"
    assert max_bytes_of(request) == 1234
    assert max_bytes_of(next(JwksCache().key_flow(URL, None, "RS256"))) == 65_536


@pytest.mark.parametrize(("size", "ok"), [(65_536, True), (65_537, False)])
def test_default_body_cap_edge(size: int, ok: bool) -> None:
    s = signer("RS256")
    body = httpx.Response(200, json={"keys": [s.public_jwk()]}).content
    padded = body[:-1] + b" " * (size - len(body)) + b"}"
    assert len(padded) == size
    jwks = JwksCache(clock=FakeClock())
    with client_for(lambda r: httpx.Response(200, content=padded)) as client:
        if ok:
            assert jwks.get_key_sync(client, URL, s.kid, "RS256").key_id == s.kid
        else:
            with pytest.raises(RemoteError) as info:
                jwks.get_key_sync(client, URL, s.kid, "RS256")
            assert info.value.reason == JWKS_UNAVAILABLE


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [201, 204, 304, 404, 500])
def test_non_200_is_a_failed_fetch(status: int) -> None:
    s = signer("RS256")
    jwks = JwksCache(clock=FakeClock())
    handler = lambda r: httpx.Response(status, json={"keys": [s.public_jwk()]})  # noqa: E731
    with client_for(handler) as client, pytest.raises(RemoteError) as info:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
    assert info.value.reason == JWKS_UNAVAILABLE
    assert str(info.value) == "JWKS unavailable"


def test_failure_is_logged_with_a_redacted_uri(caplog: pytest.LogCaptureFixture) -> None:
    jwks = JwksCache(clock=FakeClock())
    with (
        caplog.at_level("WARNING", logger="teams_ehr.smart.jwks"),
        client_for(lambda r: httpx.Response(503)) as client,
        pytest.raises(RemoteError),
    ):
        jwks.get_key_sync(client, URL + "?secret=1", None, "RS256")
    messages = [r.getMessage() for r in caplog.records if r.name == "teams_ehr.smart.jwks"]
    assert len(messages) == 1
    assert messages[0].startswith("JWKS fetch from https://ehr.test/oauth2/jwks")
    assert messages[0].endswith("failed: status 503")
    assert "secret=1" not in messages[0]


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1]", b'{"keys": {}}', b'{"nokeys": []}', b'"keys"', b"[" * 100_000],
)
def test_unusable_documents_fail_and_chain_no_pyjwt(body: bytes) -> None:
    jwks = JwksCache(clock=FakeClock(), max_bytes=200_000)
    with (
        client_for(lambda r: httpx.Response(200, content=body)) as client,
        pytest.raises(RemoteError) as info,
    ):
        jwks.get_key_sync(client, URL, None, "RS256")
    assert info.value.reason == JWKS_UNAVAILABLE
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("extra", "found"),
    [
        ({}, True),
        ({"use": "sig"}, True),
        ({"use": "enc"}, False),
        ({"use": "SIG"}, False),
        ({"use": None}, False),
    ],
)
def test_use_filter(extra: dict[str, Any], found: bool) -> None:
    s = signer("RS256")
    jwk = {k: v for k, v in s.public_jwk().items() if k != "use"} | extra
    jwks = JwksCache(clock=FakeClock())
    with client_for(JwksEndpoint([jwk])) as client:
        if found:
            assert jwks.get_key_sync(client, URL, s.kid, "RS256").key_id == s.kid
        else:
            with pytest.raises(TokenInvalidError) as info:
                jwks.get_key_sync(client, URL, s.kid, "RS256")
            assert info.value.reason == "unknown_kid"
            assert str(info.value) == "no key with this kid"


def test_keys_that_are_not_objects_or_have_odd_kids_are_dropped() -> None:
    s = signer("RS256")
    odd_kid = {**signer("RS256", 7).public_jwk(), "kid": 5}
    jwks = JwksCache(clock=FakeClock())
    with client_for(JwksEndpoint(["junk", odd_kid, s.public_jwk()])) as client:  # type: ignore[list-item]
        assert jwks.get_key_sync(client, URL, None, "RS256").key_id == s.kid


def test_kidless_key_matches_only_a_kidless_lookup() -> None:
    s = signer("RS256")
    jwk = {k: v for k, v in s.public_jwk().items() if k != "kid"}
    jwks = JwksCache(clock=FakeClock())
    with client_for(JwksEndpoint([jwk])) as client:
        assert jwks.get_key_sync(client, URL, None, "RS256") is not None
        with pytest.raises(TokenInvalidError):
            jwks.get_key_sync(client, URL, "some-kid", "RS256")


def test_unusable_matching_key() -> None:
    s = signer("RS256")
    broken = {**s.public_jwk(), "n": "!!"}
    jwks = JwksCache(clock=FakeClock())
    with client_for(JwksEndpoint([broken])) as client, pytest.raises(TokenInvalidError) as info:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
    assert info.value.reason == "unusable_key"
    assert str(info.value) == "the matching key is unusable"
    assert info.value.__cause__ is None


def test_ambiguous_message() -> None:
    a = signer("RS256", 1)
    jwks = JwksCache(clock=FakeClock())
    with (
        client_for(
            JwksEndpoint([a.public_jwk(), {**signer("RS256", 2).public_jwk(), "kid": a.kid}])
        ) as client,
        pytest.raises(TokenInvalidError) as info,
    ):
        jwks.get_key_sync(client, URL, a.kid, "RS256")
    assert info.value.reason == "ambiguous_key"
    assert str(info.value) == "several keys match"


def test_key_bound_to_its_alg_and_curve() -> None:
    es = signer("ES384")
    jwk = es.public_jwk()
    jwks = JwksCache(clock=FakeClock())
    with client_for(JwksEndpoint([jwk, {**jwk, "kid": "no-crv", "crv": None}])) as client:
        key = jwks.get_key_sync(client, URL, es.kid, "ES384")
        assert key.key_id == es.kid
        with pytest.raises(TokenInvalidError):
            jwks.get_key_sync(client, URL, "no-crv", "ES384")
    alg_less = {k: v for k, v in signer("RS384").public_jwk().items() if k != "alg"}
    jwks = JwksCache(clock=FakeClock())
    with client_for(JwksEndpoint([alg_less])) as client:
        assert jwks.get_key_sync(client, URL, alg_less["kid"], "RS512").key_id == alg_less["kid"]


def test_parsed_keys_are_cached_per_kid_and_alg() -> None:
    s = signer("RS256")
    jwks = JwksCache(clock=FakeClock())
    with client_for(JwksEndpoint([s.public_jwk()])) as client:
        first = jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert jwks.get_key_sync(client, URL, s.kid, "RS256") is first
        assert jwks.get_key_sync(client, URL, None, "RS256") is not first


# -- TTL --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [
        ("max-age=300", 300),
        ("max-age=301", 301),
        ("max-age=299", 300),
        ("max-age=86400", 86400),
        ("max-age=86401", 86400),
        ("max-age=999999999", 86400),
        ("max-age=1000000000", 86400),
        ("MAX-AGE=600", 600),
        ("max-age = 600", 300),
        ("max-age= 600", 600),
        (" max-age=600 ", 600),
        ("private,max-age=600", 600),
        ("max-age=600, no-cache", 300),
        ("No-Store, max-age=600", 300),
        ("max-age=-5", 300),
        ("s-maxage=600", 300),
        ("max-age", 300),
        ("", 300),
    ],
)
def test_ttl_edges(cache_control: str, ttl: int) -> None:
    s = signer("RS256")
    endpoint = JwksEndpoint([s.public_jwk()], cache_control=cache_control or None)
    clock = FakeClock()
    jwks = JwksCache(clock=clock)
    with client_for(endpoint) as client:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        clock.now = T0 + timedelta(seconds=ttl) - timedelta(microseconds=1)
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert endpoint.gets == 1
        clock.now = T0 + timedelta(seconds=ttl)
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert endpoint.gets == 2


def test_non_ascii_digits_are_not_a_max_age() -> None:
    s = signer("RS256")
    body = {"keys": [s.public_jwk()]}
    headers = [(b"Cache-Control", b"max-age=\xb2")]  # latin-1 SUPERSCRIPT TWO: isdigit() is true
    responses = [httpx.Response(200, json=body, headers=headers) for _ in range(2)]
    clock = FakeClock()
    jwks = JwksCache(clock=clock)
    with client_for(lambda r: responses.pop()) as client:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        clock.now = T0 + timedelta(seconds=300)
        jwks.get_key_sync(client, URL, s.kid, "RS256")
    assert responses == []


# -- unknown kid refetch interval -------------------------------------------------------------


def test_unknown_kid_refetch_interval_edges() -> None:
    s = signer("RS256")
    endpoint = JwksEndpoint([s.public_jwk()])
    clock = FakeClock()
    jwks = JwksCache(clock=clock, unknown_kid_refetch_interval=timedelta(seconds=10))
    with client_for(endpoint) as client:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        clock.now = T0 + timedelta(seconds=10) - timedelta(microseconds=1)
        with pytest.raises(TokenInvalidError) as info:
            jwks.get_key_sync(client, URL, "other", "RS256")
        assert info.value.reason == "unknown_kid"
        assert str(info.value) == "no key with this kid"
        assert endpoint.gets == 1
        clock.now = T0 + timedelta(seconds=10)
        with pytest.raises(TokenInvalidError):
            jwks.get_key_sync(client, URL, "other", "RS256")
        assert endpoint.gets == 2


def test_default_refetch_interval_is_60_seconds() -> None:
    s = signer("RS256")
    endpoint = JwksEndpoint([s.public_jwk()])
    clock = FakeClock()
    jwks = JwksCache(clock=clock)
    with client_for(endpoint) as client:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        clock.now = T0 + timedelta(seconds=60) - timedelta(microseconds=1)
        with pytest.raises(TokenInvalidError):
            jwks.get_key_sync(client, URL, "other", "RS256")
        assert endpoint.gets == 1
        clock.now = T0 + timedelta(seconds=60)
        with pytest.raises(TokenInvalidError):
            jwks.get_key_sync(client, URL, "other", "RS256")
        assert endpoint.gets == 2


def test_refetch_time_is_taken_after_the_response() -> None:
    s = signer("RS256")
    endpoint = JwksEndpoint([s.public_jwk()], cache_control="max-age=300")
    clock = FakeClock()

    def slow(request: httpx.Request) -> httpx.Response:
        clock.advance(100)  # the response arrives 100 s after the request was made
        return endpoint(request)

    jwks = JwksCache(clock=clock)
    with client_for(slow) as client:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        clock.now = T0 + timedelta(seconds=100 + 300) - timedelta(microseconds=1)
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert endpoint.gets == 1
        clock.now = T0 + timedelta(seconds=100 + 60) - timedelta(microseconds=1)
        with pytest.raises(TokenInvalidError):
            jwks.get_key_sync(client, URL, "other", "RS256")
        assert endpoint.gets == 1


# -- stale serving --------------------------------------------------------------------------


def _stale_setup(
    *keys: LocalSigner, serve_stale_for: timedelta = timedelta(hours=24)
) -> tuple[JwksEndpoint, JwksCache, FakeClock]:
    endpoint = JwksEndpoint([k.public_jwk() for k in keys], cache_control="max-age=300")
    clock = FakeClock()
    return endpoint, JwksCache(clock=clock, serve_stale_for=serve_stale_for), clock


def test_stale_set_serves_each_kid_and_refuses_unknown_ones() -> None:
    a, b = signer("RS256", 1), signer("RS256", 2)
    endpoint, jwks, clock = _stale_setup(a, b)
    with client_for(endpoint) as client:
        jwks.get_key_sync(client, URL, a.kid, "RS256")
        endpoint.mode = "down"
        clock.advance(600)
        assert jwks.get_key_sync(client, URL, b.kid, "RS256").key_id == b.kid
        with pytest.raises(TokenInvalidError) as info:
            jwks.get_key_sync(client, URL, "unknown", "RS256")
        assert info.value.reason == "unknown_kid"
        assert str(info.value) == "no key with this kid"
        assert endpoint.gets == 2


def test_stale_window_edges_and_cause() -> None:
    s = signer("RS256")
    endpoint, jwks, clock = _stale_setup(s, serve_stale_for=timedelta(seconds=1000))
    with client_for(endpoint) as client:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        endpoint.mode = "down"
        clock.now = T0 + timedelta(seconds=300 + 1000) - timedelta(microseconds=1)
        assert jwks.get_key_sync(client, URL, s.kid, "RS256").key_id == s.kid
        clock.now = T0 + timedelta(seconds=300 + 1000)
        with pytest.raises(RemoteError) as info:
            jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert info.value.reason == JWKS_UNAVAILABLE
        assert str(info.value) == "JWKS unavailable"
        assert info.value.__cause__ is None  # within the refetch interval: no fetch, no cause
        clock.advance(60)
        with pytest.raises(RemoteError) as info:
            jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert info.value.__cause__ is not None


def test_cold_cache_failure_then_rate_limited() -> None:
    clock = FakeClock()
    jwks = JwksCache(clock=clock)
    endpoint = JwksEndpoint([signer("RS256").public_jwk()], mode="down")
    with client_for(endpoint) as client:
        for _ in range(2):
            with pytest.raises(RemoteError) as info:
                jwks.get_key_sync(client, URL, None, "RS256")
            assert info.value.reason == JWKS_UNAVAILABLE
        assert endpoint.gets == 1


def test_uris_are_cached_separately() -> None:
    a, b = signer("RS256", 1), signer("RS256", 2)
    first = JwksEndpoint([a.public_jwk()], url=URL)
    second = JwksEndpoint([b.public_jwk()], url="https://other.test/jwks")
    jwks = JwksCache(clock=FakeClock())
    with client_for(first) as c1, client_for(second) as c2:
        assert jwks.get_key_sync(c1, URL, None, "RS256").key_id == a.kid
        assert jwks.get_key_sync(c2, second.url, None, "RS256").key_id == b.kid
        assert jwks.get_key_sync(c1, URL, None, "RS256").key_id == a.kid
    assert (first.gets, second.gets) == (1, 1)


@pytest.mark.anyio
async def test_async_cache_hit_makes_no_request_and_miss_passes_kid() -> None:
    a, b = signer("RS256", 1), signer("RS256", 2)
    endpoint = JwksEndpoint([a.public_jwk(), b.public_jwk()])
    jwks = JwksCache(clock=FakeClock())

    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0)
        return endpoint(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        assert (await jwks.get_key(client, URL, b.kid, "RS256")).key_id == b.kid
        assert (await jwks.get_key(client, URL, a.kid, "RS256")).key_id == a.kid
    assert endpoint.gets == 1


# -- max-age far past any TTL and per-URI single-flight ---------------------------------------


@pytest.mark.parametrize("digits", ["9" * 20, "1" + "0" * 300])
def test_max_age_of_any_length_is_capped(digits: str) -> None:
    s = signer("RS256")
    endpoint = JwksEndpoint([s.public_jwk()], cache_control=f"max-age={digits}")
    clock = FakeClock()
    jwks = JwksCache(clock=clock)
    with client_for(endpoint) as client:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        clock.now = T0 + timedelta(hours=24) - timedelta(microseconds=1)
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert endpoint.gets == 1
        clock.now = T0 + timedelta(hours=24)
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        assert endpoint.gets == 2


def test_nine_digit_max_age_below_a_long_max_ttl_is_honoured() -> None:
    s = signer("RS256")
    endpoint = JwksEndpoint([s.public_jwk()], cache_control="max-age=100000000")
    clock = FakeClock()
    jwks = JwksCache(clock=clock, max_ttl=timedelta(days=36_500))
    with client_for(endpoint) as client:
        jwks.get_key_sync(client, URL, s.kid, "RS256")
        clock.now = T0 + timedelta(seconds=100_000_000)
        jwks.get_key_sync(client, URL, s.kid, "RS256")
    assert endpoint.gets == 2


@pytest.mark.anyio
async def test_a_slow_jwks_uri_does_not_block_another() -> None:
    """Single-flight is per ``jwks_uri``: one issuer's slow endpoint never stalls another's."""
    a, b = signer("RS256", 1), signer("RS256", 2)
    other = "https://other.test/jwks"
    b_fetched = anyio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == URL:
            await b_fetched.wait()  # A answers only after B was fetched
            return httpx.Response(200, json={"keys": [a.public_jwk()]})
        b_fetched.set()
        return httpx.Response(200, json={"keys": [b.public_jwk()]})

    jwks = JwksCache(clock=FakeClock())
    kids: list[str | None] = []
    with anyio.fail_after(5):
        async with (
            httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
            anyio.create_task_group() as tg,
        ):

            async def get(uri: str) -> None:
                kids.append((await jwks.get_key(client, uri, None, "RS256")).key_id)

            tg.start_soon(get, URL)
            await anyio.sleep(0.01)
            tg.start_soon(get, other)
    assert sorted(kids) == sorted([a.kid, b.kid])


def test_a_slow_jwks_uri_does_not_block_another_thread() -> None:
    a, b = signer("RS256", 1), signer("RS256", 2)
    other = "https://other.test/jwks"
    b_fetched = threading.Event()
    a_started = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == URL:
            a_started.set()
            assert b_fetched.wait(5), "the other URI's fetch was blocked"
            return httpx.Response(200, json={"keys": [a.public_jwk()]})
        b_fetched.set()
        return httpx.Response(200, json={"keys": [b.public_jwk()]})

    jwks = JwksCache(clock=FakeClock())
    results: dict[str, str | None] = {}
    with client_for(handler) as client:

        def get(uri: str) -> None:
            results[uri] = jwks.get_key_sync(client, uri, None, "RS256").key_id

        first = threading.Thread(target=get, args=(URL,))
        first.start()
        assert a_started.wait(5)
        second = threading.Thread(target=get, args=(other,))
        second.start()
        second.join(6)
        first.join(6)
    assert results == {URL: a.kid, other: b.kid}


def test_key_without_alg_takes_the_tokens_alg() -> None:
    """A JWK without ``alg`` is parsed for the token's algorithm, not a kty default (RS256)."""
    s = signer("RS384")
    jwk = {k: v for k, v in s.public_jwk().items() if k != "alg"}
    jwks = JwksCache(clock=FakeClock())
    with client_for(JwksEndpoint([jwk])) as client:
        assert jwks.get_key_sync(client, URL, s.kid, "RS384").algorithm_name == "RS384"
        assert jwks.get_key_sync(client, URL, s.kid, "RS512").algorithm_name == "RS512"


@pytest.mark.parametrize(
    ("body", "why"),
    [(b"{", "not JSON"), (b"[]", "not a JWK Set"), (b'{"keys": 1}', "not a JWK Set")],
)
def test_unusable_document_reason_is_logged(
    body: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    jwks = JwksCache(clock=FakeClock())
    with (
        caplog.at_level("WARNING", logger="teams_ehr.smart.jwks"),
        client_for(lambda r: httpx.Response(200, content=body)) as client,
        pytest.raises(RemoteError),
    ):
        jwks.get_key_sync(client, URL, None, "RS256")
    messages = [r.getMessage() for r in caplog.records if r.name == "teams_ehr.smart.jwks"]
    assert messages == [f"JWKS fetch from {URL} failed: {why}"]


def test_a_successful_fetch_logs_no_failure(caplog: pytest.LogCaptureFixture) -> None:
    s = signer("RS256")
    jwks = JwksCache(clock=FakeClock())
    with (
        caplog.at_level("DEBUG", logger="teams_ehr.smart.jwks"),
        client_for(JwksEndpoint([s.public_jwk()])) as client,
    ):
        assert jwks.get_key_sync(client, URL, s.kid, "RS256").key_id == s.kid
    assert [r for r in caplog.records if r.name == "teams_ehr.smart.jwks"] == []
