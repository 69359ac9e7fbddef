"""Redaction of URLs and logs, and the sans-IO drivers (security.md T08, DESIGN.md rule 3)."""

from __future__ import annotations

import logging

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teams_ehr import install_redaction
from teams_ehr._redact import redact_text, redact_url
from teams_ehr._types import Flow
from teams_ehr.errors import TransportError
from teams_ehr.sansio import ResponseTooLargeError, run_async, run_sync, with_max_bytes

install_redaction()  # as a host does at start-up (the runtime and the mount do it too)


def test_redact_url_strips_query_userinfo_fragment() -> None:
    url = "https://user:pw@ehr.example.org:8443/fhir/Patient?family=CANARY#frag"
    assert redact_url(url) == "https://ehr.example.org:8443/fhir/Patient"


def test_redact_text() -> None:
    text = "GET https://x.test/cb?code=CANARY1&state=CANARY2 Bearer CANARY3 code=CANARY4"
    out = redact_text(text)
    for canary in ("CANARY1", "CANARY2", "CANARY3", "CANARY4"):
        assert canary not in out


def _echo_flow(path: str) -> Flow[int]:
    response = yield httpx.Request("GET", f"https://fhir.test{path}?patient=CANARY")
    second = yield httpx.Request("GET", f"https://fhir.test{path}/2")
    return response.status_code + second.status_code


def _handler(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/big"):
        return httpx.Response(200, content=b"x" * 2048)
    return httpx.Response(200, json={"ok": True})


def test_run_sync_and_httpx_log_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with httpx.Client(transport=httpx.MockTransport(_handler)) as client:
        assert run_sync(_echo_flow("/a"), client) == 400
    assert "HTTP Request" in caplog.text
    assert "CANARY" not in caplog.text


@pytest.mark.anyio
async def test_run_async() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(_handler)) as client:
        assert await run_async(_echo_flow("/a"), client) == 400


def test_size_cap_and_transport_error() -> None:
    def flow() -> Flow[None]:
        yield with_max_bytes(httpx.Request("GET", "https://fhir.test/big"), 1024)

    with (
        httpx.Client(transport=httpx.MockTransport(_handler)) as client,
        pytest.raises(ResponseTooLargeError),
    ):
        run_sync(flow(), client)

    def failing(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def flow2() -> Flow[None]:
        yield httpx.Request("GET", "https://fhir.test/x?token=CANARY")

    with (
        httpx.Client(transport=httpx.MockTransport(failing)) as client,
        pytest.raises(TransportError) as info,
    ):
        run_sync(flow2(), client)
    assert "CANARY" not in str(info.value)


def test_transport_failure_is_thrown_into_the_flow_and_delays_are_honoured() -> None:
    from teams_ehr.sansio import with_delay

    attempts: list[str] = []

    def failing_once(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        if len(attempts) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(204)

    def retrying() -> Flow[int]:
        try:
            yield httpx.Request("GET", "https://fhir.test/a")
        except TransportError:
            response = yield with_delay(httpx.Request("GET", "https://fhir.test/b"), 2.5)
            return response.status_code
        return 0

    slept: list[float] = []
    with httpx.Client(transport=httpx.MockTransport(failing_once)) as client:
        assert run_sync(retrying(), client, sleep=slept.append) == 204
    assert attempts == ["/a", "/b"]
    assert slept == [2.5]


_URLISH = st.text(alphabet=":/?#[]@!$&'()*+,;=%-._~aZ09 \t\"<>\\", max_size=60)


@given(prefix=st.text(max_size=20), body=_URLISH, scheme=st.sampled_from(["http", "https"]))
@settings(max_examples=500, deadline=None)
def test_redaction_is_total(prefix: str, body: str, scheme: str) -> None:
    """Redaction reads attacker-chosen text (request lines, URLs): it returns, never raises."""
    text = f"{prefix} {scheme}://{body}"
    assert isinstance(redact_text(text), str)
    assert isinstance(redact_url(f"{scheme}://{body}"), str)


@given(host=_URLISH, secret=st.from_regex(r"[A-Za-z0-9]{12}", fullmatch=True))
@settings(max_examples=300, deadline=None)
def test_unparseable_urls_lose_their_query(host: str, secret: str) -> None:
    text = redact_text(f"GET https://{host}?code={secret}&x=[z]")
    assert f"code={secret}" not in text


@pytest.mark.parametrize(
    "url",
    ["https://host&a=[redacted]", "https://h:99999/x?q=CANARY", "http://u:CANARY@[z]/?a=1"],
)
def test_unparseable_url_keeps_scheme_only(url: str) -> None:
    assert redact_url(url) == f"{url.partition(':')[0]}://[redacted]"
