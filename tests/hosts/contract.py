"""The host contract every integration and example app passes (SPEC E2, C3, C4, T08).

``check_host_contract(driver, sandbox)`` drives a host through the clinician's launch (with the
first-time Microsoft sign-in), a repeat launch, the patient's join link, hostile inputs and JWKS.
"""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import urlsplit

from hosts.drivers import HostDriver, Reply
from leaks import assert_no_leak
from teams_ehr.testing.sandbox import CLINICIAN_OID, Sandbox

ORG = "sandbox-clinic"


def _secure(reply: Reply) -> None:
    assert reply.headers.get("referrer-policy") == "no-referrer"
    assert reply.headers.get("cache-control") == "no-store"


def _launch(driver: HostDriver, sandbox: Sandbox, appointment: str) -> Reply:
    launch = sandbox.provider_launch(appointment)
    started = driver.get(f"/launch/{ORG}/test", {"iss": sandbox.ehr.base_url, "launch": launch})
    assert started.status == 302, started.body[:200]
    _secure(started)
    callback = sandbox.ehr.authorize_in_browser(
        SimpleNamespace(method="GET", url=started.location, fields=())
    )
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


async def _issue_link(runtime, appointment, start, end):  # type: ignore[no-untyped-def]
    return await runtime.visits.prepare_visit(
        ORG,
        visit_key=f"Appointment/{appointment}",
        organizer_oid=CLINICIAN_OID,
        start=start,
        end=end,
    )
