"""The browser gateway maps redirects to the sandbox fakes onto the demo's pages, nothing else."""

from __future__ import annotations

import httpx
import pytest

from teams_ehr.demo.gateway import BrowserGateway, browser_location

FAKES = {"https://ehr.test": "ehr", "https://teams.microsoft.com": "teams"}


@pytest.mark.parametrize(
    ("location", "mapped"),
    [
        ("https://ehr.test/oauth2/authorize?a=1&b=2", "/sandbox/ehr/oauth2/authorize?a=1&b=2"),
        ("https://EHR.test/oauth2/authorize", "/sandbox/ehr/oauth2/authorize"),
        (
            "https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0?context=%7b%7d",
            "/sandbox/teams/l/meetup-join/19%3ameeting_x%40thread.v2/0?context=%7b%7d",
        ),
        # not a fake's exact origin: untouched
        ("http://ehr.test/oauth2/authorize", "http://ehr.test/oauth2/authorize"),
        ("https://ehr.test:8443/x", "https://ehr.test:8443/x"),
        ("https://evil.test/?next=https://ehr.test/", "https://evil.test/?next=https://ehr.test/"),
        ("/callback?code=1", "/callback?code=1"),
        ("msteams:/l/meetup-join/x", "msteams:/l/meetup-join/x"),
        ("https://[::1", "https://[::1"),  # unparsable: untouched
    ],
)
def test_browser_location(location: str, mapped: str) -> None:
    assert browser_location(location, FAKES) == mapped


@pytest.mark.anyio
async def test_gateway_rewrites_only_the_location_header() -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = [
            (b"location", b"https://ehr.test/oauth2/authorize?state=s"),
            (b"x-other", b"https://ehr.test/kept"),
        ]
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send({"type": "http.response.body", "body": b"https://ehr.test/body"})

    gateway = BrowserGateway(app, {"https://ehr.test/": "ehr"})
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        response = await client.get("/launch")
    assert response.headers["location"] == "/sandbox/ehr/oauth2/authorize?state=s"
    assert response.headers["x-other"] == "https://ehr.test/kept"
    assert response.content == b"https://ehr.test/body"
