"""T12: fetching a JWKS never blocks the event loop (security.md T12; SPEC A7).

PyJWT's ``PyJWKClient`` fetches with blocking ``urllib``; on an async host that freezes every
other request (webhook acks included, which Graph throttles past 2.9 s). The SDK's own cache
fetches through the host's ``httpx.AsyncClient``. The check: while the JWKS GET is in flight, a
concurrent ticker task keeps running — the JWKS endpoint only answers once it has seen the ticker
advance, so a blocking fetch would deadlock (bounded by ``fail_after``, not a timing assertion).
``urllib`` is also booby-trapped.
"""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import jwt
import pytest

from teams_ehr.keys import LocalSigner
from teams_ehr.smart.jwks import JwksCache
from teams_ehr.smart.jwt_verify import JwtProfile, verify_jwt

pytestmark = pytest.mark.anyio

JWKS_URI = "https://ehr.test/oauth2/jwks"
ISSUER = "https://ehr.test/oauth2"
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
SIGNER = LocalSigner.generate("RS256")


class Ticker:
    """A task that counts scheduler turns it gets."""

    def __init__(self) -> None:
        self.ticks = 0
        self.stop = anyio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            self.ticks += 1
            await anyio.sleep(0)


def _endpoint(ticker: Ticker, seen: list[int]) -> httpx.MockTransport:
    async def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == JWKS_URI
        entry = ticker.ticks
        while ticker.ticks < entry + 5:  # the ticker must run while this fetch is pending
            await anyio.sleep(0)
        seen.append(ticker.ticks - entry)
        return httpx.Response(
            200, json={"keys": [SIGNER.public_jwk()]}, headers={"Cache-Control": "max-age=600"}
        )

    return httpx.MockTransport(handler)


def _no_urllib(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("blocking urllib fetch on the event loop")


async def test_jwks_fetch_does_not_block_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _no_urllib)
    ticker, seen = Ticker(), list[int]()
    cache = JwksCache(clock=lambda: NOW)
    async with httpx.AsyncClient(transport=_endpoint(ticker, seen)) as client:
        with anyio.fail_after(60):  # a deadlock guard, not a timing assertion
            async with anyio.create_task_group() as group:
                group.start_soon(ticker.run)
                key = await cache.get_key(client, JWKS_URI, SIGNER.kid, "RS256")
                ticker.stop.set()
    assert key.key_id == SIGNER.kid
    assert seen
    assert seen[0] >= 5


async def test_id_token_verification_with_cold_cache_keeps_loop_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same through ``verify_jwt`` (Epic id_token, Graph validationTokens), with 20
    concurrent verifications sharing the one non-blocking fetch."""
    monkeypatch.setattr(urllib.request, "urlopen", _no_urllib)
    claims = {
        "iss": ISSUER,
        "aud": "client-1",
        "sub": "practitioner-1",
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(minutes=5)).timestamp()),
    }
    token = jwt.encode(claims, SIGNER.private_pem(), algorithm="RS256", headers={"kid": SIGNER.kid})
    profile = JwtProfile(algorithms=("RS256",), issuers=(ISSUER,), audience="client-1")
    ticker, seen = Ticker(), list[int]()
    cache = JwksCache(clock=lambda: NOW)
    results: list[dict[str, Any]] = []

    async def verify() -> None:
        results.append(await verify_jwt(token, profile, cache, JWKS_URI, client, now=NOW))

    async with httpx.AsyncClient(transport=_endpoint(ticker, seen)) as client:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                group.start_soon(ticker.run)
                async with anyio.create_task_group() as verifiers:
                    for _ in range(20):
                        verifiers.start_soon(verify)
                ticker.stop.set()
    assert len(results) == 20
    assert {r["sub"] for r in results} == {"practitioner-1"}
    assert len(seen) == 1  # single-flight: one GET for 20 verifications
