"""Exact behaviour of SMART and OpenID discovery (smart/discovery.py; threats T03, T05, T29).

SMART App Launch "Conformance" (``.well-known/smart-configuration``, the CapabilityStatement's
``oauth-uris`` extension) and OpenID Connect Discovery 1.0 §4: each request, each refusal
``reason`` and message, and the cache's keying are pinned exactly.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest

from teams_ehr.errors import (
    DiscoveryError,
    LaunchParameterError,
    MetadataMismatchError,
    PkceUnsupportedError,
)
from teams_ehr.sansio import max_bytes_of, run_sync
from teams_ehr.smart.discovery import (
    DISCOVERY_MAX_BYTES,
    DiscoveryCache,
    DiscoverySnapshot,
    SmartConfiguration,
    compare_snapshot,
    discovery_flow,
    openid_configuration_flow,
    require_pkce_s256,
)

BASE = "https://ehr.test/fhir/r4"
CONFIG: dict[str, Any] = {
    "issuer": "https://ehr.test/oauth2",
    "jwks_uri": "https://ehr.test/oauth2/jwks",
    "authorization_endpoint": "https://ehr.test/oauth2/authorize",
    "token_endpoint": "https://ehr.test/oauth2/token",
    "code_challenge_methods_supported": ["S256"],
}
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
OPENID = {"issuer": "https://ehr.test/oauth2", "jwks_uri": "https://ehr.test/oauth2/jwks"}


def openid(response: httpx.Response, **kwargs: Any) -> Any:
    flow = openid_configuration_flow(BASE, **kwargs)
    request = next(flow)
    with pytest.raises(StopIteration) as done:
        flow.send(response)
    return request, done.value.value


def openid_refusal(response: httpx.Response) -> DiscoveryError:
    flow = openid_configuration_flow(BASE)
    next(flow)
    with pytest.raises(DiscoveryError) as info:
        flow.send(response)
    return info.value


# -- OpenID configuration -------------------------------------------------------------------


def test_openid_request_exact() -> None:
    request, result = openid(httpx.Response(200, json=OPENID), epic_client_id="epic-1")
    assert request.method == "GET"
    assert str(request.url) == BASE + "/.well-known/openid-configuration"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Epic-Client-ID"] == "epic-1"
    assert max_bytes_of(request) == DISCOVERY_MAX_BYTES == 65_536
    assert (result.issuer, result.jwks_uri) == (OPENID["issuer"], OPENID["jwks_uri"])
    request, _ = openid(httpx.Response(200, json=OPENID))
    assert "Epic-Client-ID" not in request.headers


def test_openid_base_is_canonicalized_and_http_needs_opt_in() -> None:
    flow = openid_configuration_flow("https://EHR.test:443/fhir/r4/")
    assert str(next(flow).url) == BASE + "/.well-known/openid-configuration"
    with pytest.raises(LaunchParameterError, match="FHIR base URL refused"):
        next(openid_configuration_flow("http://ehr.test/fhir"))
    flow = openid_configuration_flow("http://ehr.test/fhir", allow_http=True)
    next(flow)
    with pytest.raises(StopIteration) as done:
        flow.send(httpx.Response(200, json={"issuer": "x", "jwks_uri": "http://ehr.test/k"}))
    assert done.value.value.jwks_uri == "http://ehr.test/k"


def test_openid_relative_jwks_uri_resolved() -> None:
    _, result = openid(httpx.Response(200, json={"issuer": "i", "jwks_uri": "keys"}))
    assert result.jwks_uri == BASE + "/keys"


@pytest.mark.parametrize(
    ("response", "reason", "message"),
    [
        (httpx.Response(404), "discovery_status", "openid-configuration answered 404"),
        (
            httpx.Response(302, headers={"Location": "https://x.test"}),
            "discovery_redirect",
            "openid-configuration answered with a redirect (not followed)",
        ),
        (
            httpx.Response(200, content=b"{"),
            "invalid_configuration",
            "openid-configuration is not JSON",
        ),
        (
            httpx.Response(200, json=[1]),
            "invalid_configuration",
            "openid-configuration is not a JSON object",
        ),
        (
            httpx.Response(200, json={"issuer": "i"}),
            "no_jwks_uri",
            "openid-configuration has no jwks_uri",
        ),
        (
            httpx.Response(200, json={"issuer": "i", "jwks_uri": 5}),
            "no_jwks_uri",
            "openid-configuration has no jwks_uri",
        ),
        (
            httpx.Response(200, json={"jwks_uri": "https://ehr.test/k"}),
            "invalid_openid",
            "openid-configuration is invalid",
        ),
        (
            httpx.Response(200, json={"issuer": "i", "jwks_uri": "http://ehr.test/k"}),
            "insecure_endpoint",
            "jwks_uri is not an https URL",
        ),
    ],
)
def test_openid_refusals(response: httpx.Response, reason: str, message: str) -> None:
    error = openid_refusal(response)
    assert error.reason == reason
    assert str(error) == message
    assert error.__cause__ is None


# -- snapshots ------------------------------------------------------------------------------


def test_snapshot_of_and_compare() -> None:
    configuration = SmartConfiguration.model_validate(CONFIG)
    snapshot = DiscoverySnapshot.of(configuration)
    assert snapshot == DiscoverySnapshot(
        issuer=CONFIG["issuer"],
        authorization_endpoint=CONFIG["authorization_endpoint"],
        token_endpoint=CONFIG["token_endpoint"],
        jwks_uri=CONFIG["jwks_uri"],
    )
    compare_snapshot(configuration, snapshot)
    compare_snapshot(snapshot, snapshot)
    for name in ("issuer", "authorization_endpoint", "jwks_uri", "token_endpoint"):
        changed = snapshot.model_copy(update={name: "https://evil.test/x"})
        for current in (changed, SmartConfiguration.model_validate(changed.model_dump())):
            with pytest.raises(MetadataMismatchError) as info:
                compare_snapshot(current, snapshot)
            assert str(info.value) == f"discovered metadata differs from the approval: [{name!r}]"


# -- CapabilityStatement fallback -----------------------------------------------------------


def _capability(*rests: Any) -> dict[str, Any]:
    return {"resourceType": "CapabilityStatement", "rest": list(rests)}


def _security(*extensions: Any) -> dict[str, Any]:
    return {"security": {"extension": list(extensions)}}


def _uris(**names: Any) -> dict[str, Any]:
    return {
        "url": OAUTH_URIS,
        "extension": [{"url": name, "valueUri": value} for name, value in names.items()],
    }


def _fallback(capability: Any) -> SmartConfiguration:
    flow = discovery_flow(BASE, require_pkce=False)
    next(flow)
    request = flow.send(httpx.Response(404))
    assert str(request.url) == BASE + "/metadata"
    assert request.headers["Accept"] == "application/fhir+json"
    with pytest.raises(StopIteration) as done:
        flow.send(httpx.Response(200, json=capability))
    configuration: SmartConfiguration = done.value.value
    return configuration


def test_oauth_uris_found_past_junk() -> None:
    token = "https://ehr.test/oauth2/token"
    capability = _capability(
        "junk",
        {"security": "junk"},
        _security("junk", {"url": "other"}, _uris(token=token)),
    )
    assert _fallback(capability).token_endpoint == token


def test_oauth_uris_inner_junk_skipped() -> None:
    token = "https://ehr.test/oauth2/token"
    extension = _uris(token=token)
    extension["extension"] = [
        "junk",
        {"url": "unknown", "valueUri": "https://ehr.test/u"},
        {"url": "authorize", "valueUri": 5},
        *extension["extension"],
    ]
    configuration = _fallback(_capability(_security(extension)))
    assert configuration.token_endpoint == token
    assert configuration.authorization_endpoint is None


def test_oauth_uris_in_a_later_rest_entry() -> None:
    token = "https://ehr.test/oauth2/token"
    capability = _capability({"mode": "client"}, _security(_uris(token=token)))
    assert _fallback(capability).token_endpoint == token


@pytest.mark.parametrize("rest", [None, "x", {"rest": 1}])
def test_capability_without_endpoints(rest: Any) -> None:
    flow = discovery_flow(BASE, require_pkce=False)
    next(flow)
    flow.send(httpx.Response(410))
    with pytest.raises(DiscoveryError) as info:
        flow.send(httpx.Response(200, json={"rest": rest}))
    assert info.value.reason == "no_smart_endpoints"
    assert str(info.value) == "no SMART endpoints advertised"


# -- the cache ------------------------------------------------------------------------------


class Server:
    def __init__(self) -> None:
        self.gets: list[tuple[str, str | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.gets.append((str(request.url), request.headers.get("Epic-Client-ID")))
        return httpx.Response(200, json=CONFIG)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_cache_keys_by_client_id_and_invalidates_one_key() -> None:
    server, clock = Server(), Clock()
    cache = DiscoveryCache(clock=clock)
    with httpx.Client(transport=httpx.MockTransport(server)) as client:
        cache.get_sync(client, BASE, epic_client_id="a")
        cache.get_sync(client, BASE, epic_client_id="b")
        cache.get_sync(client, BASE + "/", epic_client_id="a")
        assert len(server.gets) == 2
        cache.invalidate(BASE, epic_client_id="b")
        cache.get_sync(client, BASE, epic_client_id="a")
        assert len(server.gets) == 2
        cache.get_sync(client, BASE, epic_client_id="b")
        assert len(server.gets) == 3
        cache.invalidate("https://never.test/fhir")
    assert [client_id for _, client_id in server.gets] == ["a", "b", "b"]


def test_cache_ttl_edge() -> None:
    server, clock = Server(), Clock()
    cache = DiscoveryCache(clock=clock, ttl=timedelta(seconds=10))
    start = clock.now
    with httpx.Client(transport=httpx.MockTransport(server)) as client:
        cache.get_sync(client, BASE)
        clock.now = start + timedelta(seconds=10) - timedelta(microseconds=1)
        cache.get_sync(client, BASE)
        assert len(server.gets) == 1
        clock.now = start + timedelta(seconds=10)
        cache.get_sync(client, BASE)
        assert len(server.gets) == 2


@pytest.mark.anyio
async def test_async_cache_hit_and_key() -> None:
    server, clock = Server(), Clock()
    cache = DiscoveryCache(clock=clock)
    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as client:
        first = await cache.get(client, BASE, epic_client_id="a")
        assert await cache.get(client, BASE + "/", epic_client_id="a") is first
        await cache.get(client, BASE, epic_client_id="b")
    assert [client_id for _, client_id in server.gets] == ["a", "b"]


@pytest.mark.anyio
async def test_async_bases_do_not_block_each_other() -> None:
    other = "https://other.test/fhir"
    other_fetched = anyio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "ehr.test":
            await other_fetched.wait()
        else:
            other_fetched.set()
        return httpx.Response(200, json=CONFIG)

    cache = DiscoveryCache(clock=Clock())
    with anyio.fail_after(5):
        async with (
            httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(cache.get, client, BASE)
            await anyio.sleep(0.01)
            tg.start_soon(cache.get, client, other)


def test_sync_bases_do_not_block_each_other() -> None:
    other = "https://other.test/fhir"
    other_fetched, first_started = threading.Event(), threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "ehr.test":
            first_started.set()
            assert other_fetched.wait(5), "the other base's fetch was blocked"
        else:
            other_fetched.set()
        return httpx.Response(200, json=CONFIG)

    cache = DiscoveryCache(clock=Clock())
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        first = threading.Thread(target=cache.get_sync, args=(client, BASE))
        first.start()
        assert first_started.wait(5)
        second = threading.Thread(target=cache.get_sync, args=(client, other))
        second.start()
        second.join(6)
        first.join(6)
    assert other_fetched.is_set()


def test_run_sync_drives_the_openid_flow() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=OPENID))
    with httpx.Client(transport=transport) as client:
        assert run_sync(openid_configuration_flow(BASE), client).issuer == OPENID["issuer"]


# -- the SMART configuration's own checks ---------------------------------------------------


def smart(document: Any, **kwargs: Any) -> SmartConfiguration:
    flow = discovery_flow(BASE, **kwargs)
    request = next(flow)
    assert str(request.url) == BASE + "/.well-known/smart-configuration"
    with pytest.raises(StopIteration) as done:
        flow.send(httpx.Response(200, json=document))
    configuration: SmartConfiguration = done.value.value
    return configuration


def smart_refusal(document: Any, error: type[Exception] = DiscoveryError, **kwargs: Any) -> Any:
    flow = discovery_flow(BASE, **kwargs)
    next(flow)
    with pytest.raises(error) as info:
        flow.send(httpx.Response(200, json=document))
    assert info.value.__cause__ is None
    return info.value


@pytest.mark.parametrize(
    ("update", "reason", "message"),
    [
        ({"jwks_uri": 5}, "bad_endpoint", "jwks_uri is not a string"),
        ({"jwks_uri": "http://ehr.test/k"}, "insecure_endpoint", "jwks_uri is not an https URL"),
        ({"jwks_uri": "ftp://ehr.test/k"}, "insecure_endpoint", "jwks_uri is not an https URL"),
        ({"jwks_uri": "https://[x"}, "bad_endpoint", "jwks_uri is not a usable absolute URL"),
        (
            {"jwks_uri": "https://u@ehr.test/k"},
            "bad_endpoint",
            "jwks_uri is not a usable absolute URL",
        ),
        (
            {"jwks_uri": "https://u:p@ehr.test/k"},
            "bad_endpoint",
            "jwks_uri is not a usable absolute URL",
        ),
        (
            {"jwks_uri": "https://:p@ehr.test/k"},
            "bad_endpoint",
            "jwks_uri is not a usable absolute URL",
        ),
        (
            {"jwks_uri": "https://ehr.test/k#f"},
            "bad_endpoint",
            "jwks_uri is not a usable absolute URL",
        ),
        (
            {"jwks_uri": "https://127.0.0.1/k"},
            "internal_endpoint",
            "jwks_uri is on an internal host",
        ),
        (
            {"token_endpoint": "https://localhost/t"},
            "internal_endpoint",
            "token_endpoint is on an internal host",
        ),
        ({"issuer": 5}, "bad_endpoint", "issuer is not an absolute URL"),
        ({"issuer": "ehr.test/oauth2"}, "bad_endpoint", "issuer is not an absolute URL"),
        ({"issuer": "https://[x"}, "bad_endpoint", "issuer is not an absolute URL"),
        (
            {"token_endpoint": None},
            "no_token_endpoint",
            "SMART configuration has no token_endpoint",
        ),
        ({"token_endpoint": ""}, "no_token_endpoint", "SMART configuration has no token_endpoint"),
        ({"capabilities": 5}, "invalid_configuration", "SMART configuration is invalid"),
    ],
)
def test_configuration_refusals(update: dict[str, Any], reason: str, message: str) -> None:
    error = smart_refusal({**CONFIG, **update})
    assert error.reason == reason
    assert str(error) == message


def test_http_endpoints_only_with_allow_http() -> None:
    flow = discovery_flow("http://ehr.test/fhir", allow_http=True, require_pkce=False)
    next(flow)
    with pytest.raises(StopIteration) as done:
        flow.send(httpx.Response(200, json={**CONFIG, "jwks_uri": "http://ehr.test/k"}))
    assert done.value.value.jwks_uri == "http://ehr.test/k"
    flow = discovery_flow("http://ehr.test/fhir", allow_http=True, require_pkce=False)
    next(flow)
    with pytest.raises(DiscoveryError) as info:
        flow.send(httpx.Response(200, json={**CONFIG, "jwks_uri": "ftp://ehr.test/k"}))
    assert info.value.reason == "insecure_endpoint"


def test_empty_endpoints_are_absent_not_the_fhir_base() -> None:
    """An empty string would resolve to the FHIR base itself (RFC 3986 §5.2): it means absent."""
    configuration = smart({**CONFIG, "jwks_uri": "", "authorization_endpoint": ""})
    assert configuration.jwks_uri is None
    assert configuration.authorization_endpoint is None


def test_issuer_kept_and_optional() -> None:
    assert smart(CONFIG).issuer == CONFIG["issuer"]
    without = {k: v for k, v in CONFIG.items() if k != "issuer"}
    assert smart(without).issuer is None


def test_pkce_rules() -> None:
    missing = {k: v for k, v in CONFIG.items() if k != "code_challenge_methods_supported"}
    error = smart_refusal(missing, PkceUnsupportedError)
    assert error.reason == "pkce_unadvertised"
    assert str(error) == "server does not advertise code_challenge_methods_supported"
    assert smart(missing, allow_missing_pkce_metadata=True).code_challenge_methods_supported is None
    plain = {**CONFIG, "code_challenge_methods_supported": ["plain"]}
    error = smart_refusal(plain, PkceUnsupportedError)
    assert error.reason == "pkce_unsupported"
    assert str(error) == "server does not offer PKCE S256"
    assert smart(plain, require_pkce=False).token_endpoint == CONFIG["token_endpoint"]


# -- requests, status handling and safe defaults --------------------------------------------


def test_smart_request_exact() -> None:
    flow = discovery_flow(BASE, epic_client_id="epic-1")
    request = next(flow)
    assert request.method == "GET"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Epic-Client-ID"] == "epic-1"
    fallback = flow.send(httpx.Response(404))
    assert fallback.method == "GET"
    assert fallback.headers["Epic-Client-ID"] == "epic-1"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (300, "discovery_redirect"),
        (399, "discovery_redirect"),
        (400, "discovery_status"),
        (500, "discovery_status"),
        (201, "discovery_status"),
    ],
)
def test_status_edges(status: int, reason: str) -> None:
    for fallback in (False, True):
        flow = discovery_flow(BASE)
        next(flow)
        if fallback:
            flow.send(httpx.Response(404))
        with pytest.raises(DiscoveryError) as info:
            flow.send(httpx.Response(status))
        what = "CapabilityStatement" if fallback else "smart-configuration"
        assert info.value.reason == reason
        assert info.value.status_code == status
        if reason == "discovery_status":
            assert str(info.value) == f"{what} answered {status}"
        else:
            assert str(info.value) == f"{what} answered with a redirect (not followed)"


@pytest.mark.parametrize("fallback", [False, True])
def test_not_json_names_the_document(fallback: bool) -> None:
    flow = discovery_flow(BASE)
    next(flow)
    if fallback:
        flow.send(httpx.Response(404))
    with pytest.raises(DiscoveryError) as info:
        flow.send(httpx.Response(200, content=b"{"))
    what = "CapabilityStatement" if fallback else "smart-configuration"
    assert str(info.value) == f"{what} is not JSON"


def test_pkce_metadata_required_by_default() -> None:
    missing = SmartConfiguration.model_validate(
        {k: v for k, v in CONFIG.items() if k != "code_challenge_methods_supported"}
    )
    with pytest.raises(PkceUnsupportedError):
        require_pkce_s256(missing)


def test_cache_defaults_are_strict() -> None:
    cache = DiscoveryCache(clock=Clock())
    with httpx.Client() as client, pytest.raises(LaunchParameterError):
        cache.get_sync(client, "http://ehr.test/fhir")
    missing = {k: v for k, v in CONFIG.items() if k != "code_challenge_methods_supported"}
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=missing))
    with httpx.Client(transport=transport) as client, pytest.raises(PkceUnsupportedError):
        cache.get_sync(client, BASE)


def test_sync_cache_single_flight() -> None:
    """Threads asking for one base at once share one fetch (the locked re-check)."""
    calls: list[int] = []
    gate = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        gate.wait(5)
        return httpx.Response(200, json=CONFIG)

    cache = DiscoveryCache(clock=Clock())
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        threads = [threading.Thread(target=cache.get_sync, args=(client, BASE)) for _ in range(4)]
        for thread in threads:
            thread.start()
        while not calls:
            threading.Event().wait(0.01)
        threading.Event().wait(0.1)
        gate.set()
        for thread in threads:
            thread.join(6)
    assert len(calls) == 1
