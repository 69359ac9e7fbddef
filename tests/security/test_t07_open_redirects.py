"""T07 open redirects, through the mounted Starlette routes (security.md T07; SMART app-launch
"SHALL NOT forward values passed back to its redirect URL to any … user-provided URL"; RFC 9700
§4.11.1; ASVS 3.7.2).

Hostile ``next=`` / ``redirect_uri=`` / ``url=`` / ``return_to=`` values are appended to every
browser-facing route (provider and patient launch, EHR callback, Microsoft callback, join link).
Whatever the route answers, a ``Location`` header only ever points at the EHR's authorization
server, the tenant's Entra sign-in or a Teams host, and never carries the hostile value. The join
redirect comes from the stored, host-checked meeting URL only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hosts.drivers import HostDriver, Reply, starlette_app, starlette_host
from teams_ehr.app import TeamsEhr
from teams_ehr.errors import LobbyPolicyViolationError
from teams_ehr.testing.sandbox import CLINICIAN_OID, PRACTITIONER, Sandbox

ORG = "sandbox-clinic"
REDIRECT_PARAMS = ("next", "redirect_uri", "url", "return_to", "redirect", "continue")
HOSTILE_TARGETS = (
    "//evil.test",
    "https:evil.test",
    "/\\evil.test",
    "\\\\evil.test",
    "https://evil.test/",
    "http://evil.test",
    "javascript:alert(document.domain)//evil.test",
    "data:text/html,<script>alert(1)</script>evil.test",
    "https://teams.microsoft.com.evil.test/l/x",
    "https://teams.microsoft.com@evil.test/",
    "%2F%2Fevil.test",
    "%2f%5cevil.test",
    "https%3A%2F%2Fevil.test",
    "/%09/evil.test",
    "\r\nLocation: https://evil.test",
)


class _Clock:
    """A settable clock: the join examples step past the per-minute rate limit."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


hostile_values = st.one_of(
    st.sampled_from(HOSTILE_TARGETS),
    st.sampled_from(HOSTILE_TARGETS).map(lambda v: quote(v, safe="")),
    st.sampled_from(HOSTILE_TARGETS).map(lambda v: v.upper()),
)
hostile_params = st.dictionaries(
    st.sampled_from(REDIRECT_PARAMS), hostile_values, min_size=1, max_size=3
)


def _allowed_hosts(sandbox: Sandbox) -> set[str]:
    return {
        urlsplit(sandbox.ehr.base_url).hostname or "",
        urlsplit(sandbox.entra.authorize_endpoint).hostname or "",
        "teams.microsoft.com",
        "visit.teams.microsoft.com",
    }


def _assert_location_safe(reply: Reply, sandbox: Sandbox) -> None:
    """No Location, or an https Location on an allowed host with nothing hostile in it."""
    location = reply.location
    if not location:
        assert not 300 <= reply.status < 400, reply.status
        return
    parts = urlsplit(location)
    assert parts.scheme == "https", location
    assert parts.username is None
    assert parts.password is None
    assert parts.hostname in _allowed_hosts(sandbox), parts.hostname
    assert "evil" not in location.lower()
    # an authorization request keeps our registered redirect URI, never the caller's
    for uri in parse_qs(parts.query).get("redirect_uri", []):
        assert uri in {sandbox.redirect_uri, sandbox.app_base_url + "/microsoft/callback"}, uri


@pytest.fixture
def world() -> Iterator[tuple[Sandbox, HostDriver, _Clock]]:
    clock = _Clock()
    sandbox = Sandbox(clock=clock)
    with starlette_host(sandbox.app(), starlette_app) as driver:
        driver.run(sandbox.seed_organization, driver.runtime)
        yield sandbox, driver, clock


def _enter_meeting_once(sandbox: Sandbox, driver: HostDriver, appointment: str) -> str:
    """Bind the clinician (first launch + Microsoft sign-in); the meeting's Teams URL."""
    launch = sandbox.provider_launch(appointment)
    started = driver.get(f"/launch/{ORG}/test", {"iss": sandbox.ehr.base_url, "launch": launch})
    callback = sandbox.ehr.authorize_in_browser(
        SimpleNamespace(method="GET", url=started.location, fields=())
    )
    first = driver.get("/callback", callback)
    sandbox.entra.sign_in_as(CLINICIAN_OID)
    signin = sandbox.entra.authorize_in_browser(first.location)
    entered = driver.get("/microsoft/callback", signin)
    assert entered.status == 303
    return entered.location


def test_launch_and_callback_never_redirect_off_the_allow_list(
    world: tuple[Sandbox, HostDriver, _Clock],
) -> None:
    sandbox, driver, _ = world
    sandbox.seed_appointment("appt-r1")
    teams_url = _enter_meeting_once(sandbox, driver, "appt-r1")

    @settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(extra=hostile_params, patient=st.booleans())
    def check(extra: dict[str, str], patient: bool) -> None:
        route = "patient" if patient else "launch"
        launch = sandbox.provider_launch("appt-r1")
        params = {"iss": sandbox.ehr.base_url, "launch": launch, **extra}
        started = driver.get(f"/{route}/{ORG}/test", params)
        _assert_location_safe(started, sandbox)
        if patient or started.status != 302:
            return
        callback = sandbox.ehr.authorize_in_browser(
            SimpleNamespace(method="GET", url=started.location, fields=())
        )
        entered = driver.get("/callback", {**callback, **extra})
        _assert_location_safe(entered, sandbox)
        assert entered.status == 303
        assert entered.location == teams_url  # from server-side state only

    check()


@pytest.mark.parametrize("route", ["/callback", "/microsoft/callback"])
def test_callbacks_without_valid_state_never_redirect(
    world: tuple[Sandbox, HostDriver, _Clock], route: str
) -> None:
    sandbox, driver, _ = world
    for name in REDIRECT_PARAMS:
        for target in HOSTILE_TARGETS:
            reply = driver.get(route, {"state": "s" * 43, "code": "c", name: target})
            assert reply.status == 400
            _assert_location_safe(reply, sandbox)
            assert b"evil" not in reply.body


def test_join_redirects_only_to_the_stored_meeting_url(
    world: tuple[Sandbox, HostDriver, _Clock],
) -> None:
    sandbox, driver, clock = world
    start, end = sandbox.seed_appointment("appt-r2")
    token = driver.run(_issue_link, sandbox, driver.runtime, "appt-r2", start, end)
    (meeting,) = sandbox.graph.meetings.values()
    clock.now = start - timedelta(minutes=10)

    @settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(extra=hostile_params)
    def check(extra: dict[str, str]) -> None:
        clock.now += timedelta(seconds=61)  # a fresh rate-limit minute for every example
        joined = driver.get(f"/j/{token}", extra)
        assert joined.status == 303
        assert joined.location == meeting["joinWebUrl"]
        _assert_location_safe(joined, sandbox)
        unknown = driver.get("/j/" + "A" * 43, extra)
        assert unknown.status == 404
        _assert_location_safe(unknown, sandbox)

    check()


@pytest.mark.parametrize(
    "tampered",
    [
        "https://evil.test/l/meetup-join/x",
        "https://teams.microsoft.com.evil.test/l/meetup-join/x",
        "https://teams.microsoft.com@evil.test/l/meetup-join/x",
        "http://teams.microsoft.com/l/meetup-join/x",
        "https://teams.microsoft.com:8443/l/meetup-join/x",
        "javascript:alert(1)",
    ],
)
def test_join_redirect_target_from_store_only(
    world: tuple[Sandbox, HostDriver, _Clock], tampered: str
) -> None:
    """Tampering with the stored URL's host → LobbyPolicyViolation; no redirect at all."""
    sandbox, driver, clock = world
    start, end = sandbox.seed_appointment("appt-r3")
    token = driver.run(_issue_link, sandbox, driver.runtime, "appt-r3", start, end)
    clock.now = start - timedelta(minutes=10)
    store = driver.runtime.store
    (meeting_id,) = sandbox.graph.meetings
    row = driver.run(store.find_meeting_by_id, meeting_id)
    assert row is not None
    driver.run(store.put_meeting, dataclasses.replace(row, join_url=tampered))

    reply = driver.get(f"/j/{token}")
    assert reply.location == ""
    assert reply.status >= 400
    assert b"evil" not in reply.body

    async def direct() -> None:
        await driver.runtime.visits.patient.join(token, client_key="203.0.113.7")

    with pytest.raises(LobbyPolicyViolationError) as caught:
        driver.run(direct)
    assert caught.value.reason == "join_host_not_allowed"
    assert "evil" not in str(caught.value)


async def _issue_link(
    sandbox: Sandbox, runtime: TeamsEhr, appointment: str, start: datetime, end: datetime
) -> str:
    await sandbox.seed_clinician(runtime)
    return await runtime.visits.meetings.prepare_visit(
        ORG,
        environment="test",
        visit_key=f"Appointment/{appointment}",
        ehr_user_id=PRACTITIONER,
        start=start,
        end=end,
    )
