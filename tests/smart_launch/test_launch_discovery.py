"""A2 discovery: well-known, metadata fallback, https/redirect/size rules, PKCE, snapshot, cache."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest

from teams_ehr.errors import (
    DiscoveryError,
    MetadataMismatchError,
    PkceUnsupportedError,
    TransportError,
)
from teams_ehr.sansio import run_sync
from teams_ehr.smart.discovery import (
    DiscoveryCache,
    DiscoverySnapshot,
    compare_snapshot,
    discovery_flow,
    openid_configuration_flow,
)

BASE = "https://ehr.test/fhir/r4"
CONFIG: dict[str, Any] = {
    "issuer": "https://ehr.test/oauth2",
    "jwks_uri": "https://ehr.test/oauth2/jwks",
    "authorization_endpoint": "https://ehr.test/oauth2/authorize",
    "token_endpoint": "https://ehr.test/oauth2/token",
    "capabilities": ["launch-ehr", "authorize-post"],
    "code_challenge_methods_supported": ["S256"],
    "x-vendor": {"kept": True},
}


class Recorder:
    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def json_answer(body: Any, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=body)


def run(recorder: Recorder, **kwargs: Any) -> Any:
    with httpx.Client(transport=httpx.MockTransport(recorder)) as client:
        return run_sync(discovery_flow(BASE, **kwargs), client)


def test_well_known_with_epic_client_id_header() -> None:
    recorder = Recorder(json_answer(CONFIG))
    configuration = run(recorder, epic_client_id="client-123")
    (request,) = recorder.requests
    assert str(request.url) == BASE + "/.well-known/smart-configuration"
    assert request.headers["Epic-Client-ID"] == "client-123"
    assert configuration.token_endpoint == CONFIG["token_endpoint"]
    assert configuration.supports("authorize-post")
    assert configuration.model_extra == {"x-vendor": {"kept": True}}


def test_no_epic_header_when_not_configured() -> None:
    recorder = Recorder(json_answer(CONFIG))
    run(recorder)
    assert "Epic-Client-ID" not in recorder.requests[0].headers


def test_relative_urls_resolved_against_base() -> None:
    relative = {**CONFIG, "token_endpoint": "../../oauth2/token", "jwks_uri": "jwks"}
    configuration = run(Recorder(json_answer(relative)))
    assert configuration.token_endpoint == "https://ehr.test/oauth2/token"
    assert configuration.jwks_uri == BASE + "/jwks"


@pytest.mark.parametrize(
    "endpoint",
    ["http://ehr.test/oauth2/token", "https://user:pw@ehr.test/token", "https://ehr.test/t#f"],
)
def test_insecure_or_odd_endpoints_refused(endpoint: str) -> None:
    with pytest.raises(DiscoveryError):
        run(Recorder(json_answer({**CONFIG, "token_endpoint": endpoint})))


def test_http_endpoints_allowed_only_for_loopback_tests() -> None:
    base = "http://127.0.0.1:9999/fhir"
    body = {**CONFIG, "token_endpoint": "http://127.0.0.1:9999/token"}
    with httpx.Client(transport=httpx.MockTransport(json_answer(body))) as client:
        configuration = run_sync(discovery_flow(base, allow_http=True), client)
    assert configuration.token_endpoint == "http://127.0.0.1:9999/token"


def test_metadata_redirect_not_followed() -> None:
    recorder = Recorder(
        lambda r: httpx.Response(302, headers={"Location": "http://169.254.169.254/"})
    )
    with pytest.raises(DiscoveryError) as info:
        run(recorder)
    assert info.value.reason == "discovery_redirect"
    assert len(recorder.requests) == 1


def test_server_error_is_typed() -> None:
    with pytest.raises(DiscoveryError) as info:
        run(Recorder(json_answer({"error": "x"}, status=500)))
    assert info.value.status_code == 500


def test_oversized_configuration_refused() -> None:
    huge = {**CONFIG, "padding": "x" * 70_000}
    with pytest.raises(TransportError):
        run(Recorder(json_answer(huge)))


@pytest.mark.parametrize("body", [b"<html>", b"[1, 2]", b'{"capabilities": []}'])
def test_invalid_documents_refused(body: bytes) -> None:
    with pytest.raises(DiscoveryError):
        run(Recorder(lambda r: httpx.Response(200, content=body)))


CAPABILITY = {
    "resourceType": "CapabilityStatement",
    "rest": [
        {
            "mode": "server",
            "security": {
                "extension": [
                    {
                        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                        "extension": [
                            {"url": "authorize", "valueUri": "https://ehr.test/oauth2/authorize"},
                            {"url": "token", "valueUri": "https://ehr.test/oauth2/token"},
                        ],
                    }
                ]
            },
        }
    ],
}


def _legacy(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/metadata"):
        return httpx.Response(200, json=CAPABILITY)
    return httpx.Response(404)


def test_metadata_fallback_refused_without_pkce_opt_in() -> None:
    recorder = Recorder(_legacy)
    with pytest.raises(PkceUnsupportedError) as info:
        run(recorder, epic_client_id="c")
    assert info.value.reason == "pkce_unadvertised"
    fallback = recorder.requests[1]
    assert fallback.url.path == "/fhir/r4/metadata"
    assert fallback.headers["Accept"] == "application/fhir+json"
    assert fallback.headers["Epic-Client-ID"] == "c"


def test_metadata_fallback_with_legacy_opt_in() -> None:
    configuration = run(Recorder(_legacy), allow_missing_pkce_metadata=True)
    assert configuration.authorization_endpoint == "https://ehr.test/oauth2/authorize"
    assert configuration.token_endpoint == "https://ehr.test/oauth2/token"


def test_metadata_without_oauth_uris_refused() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metadata"):
            return httpx.Response(200, json={"resourceType": "CapabilityStatement", "rest": []})
        return httpx.Response(404)

    with pytest.raises(DiscoveryError) as info:
        run(Recorder(answer))
    assert info.value.reason == "no_smart_endpoints"


def test_metadata_without_s256_refused() -> None:
    with pytest.raises(PkceUnsupportedError):
        run(Recorder(json_answer({**CONFIG, "code_challenge_methods_supported": []})))


def test_metadata_plain_only_refused() -> None:
    with pytest.raises(PkceUnsupportedError):
        run(Recorder(json_answer({**CONFIG, "code_challenge_methods_supported": ["plain"]})))


def test_missing_pkce_field_refused_by_default() -> None:
    body = {k: v for k, v in CONFIG.items() if k != "code_challenge_methods_supported"}
    with pytest.raises(PkceUnsupportedError):
        run(Recorder(json_answer(body)))
    assert run(Recorder(json_answer(body)), allow_missing_pkce_metadata=True)


def test_snapshot_comparison() -> None:
    configuration = run(Recorder(json_answer(CONFIG)))
    approved = DiscoverySnapshot.of(configuration)
    compare_snapshot(configuration, approved)
    moved = run(Recorder(json_answer({**CONFIG, "token_endpoint": "https://evil.test/token"})))
    with pytest.raises(MetadataMismatchError) as info:
        compare_snapshot(moved, approved)
    assert "token_endpoint" in str(info.value)
    assert "evil.test" not in str(info.value)


def test_openid_configuration_flow() -> None:
    oidc = {"issuer": "https://ehr.test/oauth2", "jwks_uri": "https://ehr.test/oauth2/jwks"}
    recorder = Recorder(json_answer(oidc))
    with httpx.Client(transport=httpx.MockTransport(recorder)) as client:
        result = run_sync(openid_configuration_flow(BASE), client)
    assert result.issuer == "https://ehr.test/oauth2"
    assert str(recorder.requests[0].url) == BASE + "/.well-known/openid-configuration"
    with (
        httpx.Client(transport=httpx.MockTransport(json_answer({"issuer": "x"}))) as client,
        pytest.raises(DiscoveryError),
    ):
        run_sync(openid_configuration_flow(BASE), client)


class SteppingClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.anyio
async def test_cache_single_flight_and_ttl() -> None:
    clock = SteppingClock()
    gate = anyio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return httpx.Response(200, content=json.dumps(CONFIG).encode())

    calls: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return await slow(request)

    cache = DiscoveryCache(ttl=timedelta(minutes=5), clock=clock)
    results = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:

        async def launch() -> None:
            results.append(await cache.get(client, BASE + "/", epic_client_id="c"))

        async with anyio.create_task_group() as group:
            for _ in range(200):
                group.start_soon(launch)
            await anyio.sleep(0)
            gate.set()
        assert len(calls) == 1
        assert len(results) == 200
        clock.now += timedelta(minutes=6)
        await cache.get(client, BASE, epic_client_id="c")
        assert len(calls) == 2
        await cache.get(client, BASE, epic_client_id="other")
        assert len(calls) == 3


def test_cache_sync_threads_fetch_once() -> None:
    calls: list[httpx.Request] = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            calls.append(request)
        return httpx.Response(200, json=CONFIG)

    cache = DiscoveryCache()
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        threads = [threading.Thread(target=cache.get_sync, args=(client, BASE)) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(calls) == 1
        cache.invalidate(BASE)
        cache.get_sync(client, BASE)
    assert len(calls) == 2


def test_cache_does_not_keep_failures() -> None:
    answers = iter([httpx.Response(500), httpx.Response(200, json=CONFIG)])
    cache = DiscoveryCache()
    with httpx.Client(transport=httpx.MockTransport(lambda r: next(answers))) as client:
        with pytest.raises(DiscoveryError):
            cache.get_sync(client, BASE)
        assert cache.get_sync(client, BASE).token_endpoint == CONFIG["token_endpoint"]
