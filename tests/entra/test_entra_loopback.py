"""FakeEntra served as an ASGI app on 127.0.0.1 with real sockets (SPEC E1)."""

from __future__ import annotations

import httpx
import pytest
from entra_helpers import CLIENT_ID, CLIENT_SECRET, CLINICIAN_OID, REDIRECT_URI, TENANT, FakeClock
from pydantic import SecretStr

from teams_ehr.smart.jwks import JwksCache
from teams_ehr.teams.signin import (
    EntraAppConfig,
    begin_microsoft_signin,
    complete_microsoft_signin_async,
)
from teams_ehr.testing.fake_entra import FakeEntra
from teams_ehr.testing.loopback import serve_on_loopback


def test_client_credentials_over_loopback(fake: FakeEntra) -> None:
    with serve_on_loopback(fake.asgi_app()) as base, httpx.Client(base_url=base) as client:
        keys = client.get(f"/{TENANT}/discovery/v2.0/keys").json()
        response = client.post(
            f"/{TENANT}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "scope": "https://graph.microsoft.com/.default",
            },
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
    assert [k["kid"] for k in keys["keys"]] == [fake.current_kid]
    assert response.status_code == 200
    assert fake.validate_access_token(response.json()["access_token"]) is not None


@pytest.mark.anyio
async def test_sign_in_over_loopback(fake: FakeEntra, clock: FakeClock) -> None:
    # The server runs in its own thread; the synchronous context manager only starts/stops it
    # (anyio.to_thread with the installed trio 0.22 is broken, so the async variant is not used).
    with serve_on_loopback(fake.asgi_app()) as base:
        fake.authority_host = base  # issuer and token URL as the client sees them
        config = EntraAppConfig(
            tenant_id=TENANT,
            client_id=CLIENT_ID,
            redirect_uri=REDIRECT_URI,
            client_secret=SecretStr(CLIENT_SECRET),
            authority_host=base,
            allowed_authority_hosts=frozenset({"127.0.0.1"}),
        )
        url, pending = begin_microsoft_signin(
            config, purpose="approval", bound_launch=None, session_id="s", now=clock()
        )
        params = fake.authorize_in_browser(url)
        async with httpx.AsyncClient() as client:
            identity = await complete_microsoft_signin_async(
                config,
                params,
                pending,
                session_id="s",
                jwks=JwksCache(clock=clock, allow_http=True),
                client=client,
                now=clock(),
            )
    assert identity.object_id == CLINICIAN_OID
