"""The host contract every integration and example app passes (SPEC E2, C3, C4, T08, D1, D3).

``check_host_contract(driver, sandbox)`` drives a host through the clinician's launch (with the
first-time Microsoft sign-in), a repeat launch, the patient's join link, hostile inputs and JWKS;
then Graph's webhook (validation handshake, a notification accepted into the inbox) and the live
roster (SSE for the clinician's session, 403 for another session).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from hosts.drivers import HostDriver, Reply, StarletteDriver
from leaks import assert_no_leak
from teams_ehr.integrations.routes import session_cookie_name
from teams_ehr.testing.sandbox import CLINICIAN_OID, PRACTITIONER, Sandbox

ORG = "sandbox-clinic"


def _secure(reply: Reply) -> None:
    assert reply.headers.get("referrer-policy") == "no-referrer"
    assert reply.headers.get("cache-control") == "no-store"


def _launch(driver: HostDriver, sandbox: Sandbox, appointment: str) -> Reply:
    launch = sandbox.provider_launch(appointment)
    started = driver.get(f"/launch/{ORG}/test", {"iss": sandbox.ehr.base_url, "launch": launch})
    assert started.status == 302, started.body[:200]
    _secure(started)
    callback = sandbox.ehr.authorize_in_browser(started.location)
    reply = driver.get("/callback", callback)
    _secure(reply)
    return reply


def check_host_contract(driver: HostDriver, sandbox: Sandbox) -> None:
    driver.run(sandbox.seed_organization, driver.runtime)
    start, end = sandbox.seed_appointment("appt-c1")

    first = _launch(driver, sandbox, "appt-c1")
    assert first.status == 302
    assert first.location.startswith(sandbox.entra.authorize_endpoint)
    sandbox.entra.sign_in_as(CLINICIAN_OID)
    signin = sandbox.entra.authorize_in_browser(first.location)
    entered = driver.get("/microsoft/callback", signin)
    assert entered.status == 303
    assert urlsplit(entered.location).hostname == "teams.microsoft.com"
    _secure(entered)

    again = _launch(driver, sandbox, "appt-c1")
    assert again.status == 303
    assert again.location == entered.location

    token = driver.run(_issue_link, driver.runtime, "appt-c1", start, end)
    joined = driver.get(f"/j/{token}")
    assert joined.status == 303
    assert joined.location == next(iter(sandbox.graph.meetings.values()))["joinWebUrl"]
    _secure(joined)

    unknown = driver.get("/j/" + "A" * 43)
    tampered = driver.get("/j/" + token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert unknown.status == tampered.status == 404
    assert unknown.body == tampered.body

    hostile = driver.get(f"/launch/{ORG}/test", {"iss": "https://evil.test/fhir", "launch": "L"})
    assert hostile.status == 400
    _secure(hostile)
    assert b"evil" not in hostile.body
    assert b"untrusted" not in hostile.body

    replay = driver.get("/callback", {"state": "x" * 43, "code": "CANARY-CODE"})
    assert replay.status == 400
    assert_no_leak(["CANARY-CODE", token, entered.location], replay.body, unknown.body)

    jwks = driver.get("/.well-known/jwks.json")
    assert jwks.status == 200
    assert b'"d"' not in jwks.body
    assert sandbox.signer.kid.encode() in jwks.body

    check_attendance_contract(driver, sandbox)


def _post(driver: HostDriver, path: str, query: dict[str, str], body: bytes) -> Reply:
    """A raw POST (Graph's webhook) through the driver's framework test client."""
    client: Any = driver._client  # type: ignore[attr-defined]  # both drivers keep one
    headers = {"Content-Type": "application/json"}
    if isinstance(driver, StarletteDriver):
        response = client.post(path, params=query, content=body, headers=headers)
        return Reply(response.status_code, _lower(response.headers), response.content)
    graph = client.application.test_client()  # no cookies; usable from any thread
    response = graph.post(path, query_string=query, data=body, headers=headers)
    return Reply(response.status_code, _lower(response.headers), response.get_data())


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _stream(driver: HostDriver, path: str, chunks: int, cookie: str | None = None) -> Reply:
    """The status and the first ``chunks`` chunks of a streamed GET; then the client leaves."""
    client: Any = driver._client  # type: ignore[attr-defined]
    headers = {"cookie": cookie} if cookie else {}
    if isinstance(driver, StarletteDriver):
        with client.stream("GET", path, headers=headers) as response:
            parts = response.iter_bytes()
            body = b"".join(next(parts) for _ in range(chunks)) if response.is_success else b""
            return Reply(response.status_code, _lower(response.headers), body or response.read())
    if cookie:
        client = client.application.test_client()  # a browser without the clinician's cookie
        name, value = cookie.split("=", 1)
        client.set_cookie(name, value)
    response = client.get(path, buffered=False)
    try:
        parts = iter(response.response)
        if response.status_code == 200:
            body = b"".join(next(parts) for _ in range(chunks))
        else:
            body = b"".join(parts)
        return Reply(response.status_code, _lower(response.headers), body)
    finally:
        response.close()


class _DriverTransport(httpx.AsyncBaseTransport):
    """Graph's webhook POSTs into the host under test (from a worker thread: the driver is
    synchronous and the runtime's loop is busy awaiting the notifier)."""

    def __init__(self, driver: HostDriver) -> None:
        self._driver = driver

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        query = dict(request.url.params)
        reply = await anyio.to_thread.run_sync(_post, self._driver, request.url.path, query, body)
        return httpx.Response(reply.status, content=reply.body)


def check_attendance_contract(driver: HostDriver, sandbox: Sandbox) -> None:
    """After :func:`check_host_contract`: the clinician's visit has a meeting and a session."""
    runtime = driver.runtime
    driver.run(runtime.attendance.settle_subscriptions)  # type: ignore[union-attr]
    [subscription] = sandbox.graph.subscriptions.items.values()
    assert subscription.validated

    handshakes = runtime.attendance.handshakes  # type: ignore[union-attr]
    handle = driver.run(handshakes.open, runtime.clock(), frozenset({"notification"}))
    echoed = _post(driver, "/graph/notifications", {"validationToken": "Validation: 1 2&3"}, b"")
    driver.run(handshakes.close, handle)
    assert echoed.status == 200
    assert echoed.body == b"Validation: 1 2&3"
    assert echoed.headers["content-type"].startswith("text/plain")
    # (refusal outside a window: tests/attendance_runtime, on a clock that can move past it)
    lifecycle = _post(driver, "/graph/lifecycle", {}, b"not json")
    assert lifecycle.status == 400

    meeting_id = next(iter(sandbox.graph.meetings))
    sandbox.connect_webhooks(httpx.AsyncClient(transport=_DriverTransport(driver)))
    sandbox.graph.room(meeting_id).join("leg-doc", identity="organizer")
    sent = driver.run(sandbox.notifier.flush)
    assert [s.status for s in sent] == [202, 202]  # call started, organizer connected
    meeting = driver.run(runtime.store.find_meeting_by_id, meeting_id)
    report = driver.run(runtime.attendance.processor.run_once)  # type: ignore[union-attr]
    assert (report.claimed, report.completed) == (2, 2)

    path = f"/visits/{ORG}/{meeting.external_id}/roster"
    roster = _stream(driver, path, 2)
    assert roster.status == 200
    assert roster.headers["content-type"].startswith("text/event-stream")
    assert roster.headers.get("cache-control") == "no-store"
    assert roster.body.startswith(b"retry: 3000\n\nevent: snapshot\ndata: ")
    assert b'"call":{"kind":"call_started"' in roster.body
    assert b'"role":"provider","kind":"connected"' in roster.body
    assert_no_leak([CLINICIAN_OID, "leg-doc", meeting.join_url], roster.body)

    stranger = f"{session_cookie_name(secure=True)}={'s' * 43}"
    denied = _stream(driver, path, 1, cookie=stranger)
    assert denied.status == 403
    assert b"snapshot" not in denied.body


async def _issue_link(runtime, appointment, start, end):  # type: ignore[no-untyped-def]
    return await runtime.visits.meetings.prepare_visit(
        ORG,
        environment="test",
        visit_key=f"Appointment/{appointment}",
        ehr_user_id=PRACTITIONER,  # signed in with Microsoft at the launch above
        start=start,
        end=end,
    )
