"""GraphClient: retries, throttling, errors, paging, subscriptions (SPEC B1, B4; security.md R01–R04)."""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from email.utils import format_datetime

import anyio
import httpx
import pytest
from graph_test_support import (
    ORGANIZER,
    START,
    TENANT,
    TOKEN_CANARY,
    FakeTime,
    StaticTokens,
    make_graph_client,
)
from pydantic import SecretStr

from leaks import assert_no_leak
from teams_ehr.errors import GraphError, GraphThrottledError, TransportError, UsageError
from teams_ehr.teams.graph_client import GraphClient, graph_error_from_response
from teams_ehr.teams.retry import RetryPolicy, parse_retry_after
from teams_ehr.testing.fake_graph import FakeGraph

EXTERNAL_ID = "tehr1-abc"


def setup(**policy: object) -> tuple[FakeGraph, GraphClient, FakeTime]:
    time = FakeTime()
    fake = FakeGraph(tenant_id=TENANT, clock=time.clock, seed=1)
    retry = RetryPolicy(rng=random.Random(0), **policy)  # type: ignore[arg-type]
    client, _ = make_graph_client(fake, time, retry=retry)
    return fake, client, time


async def create(client: GraphClient) -> str:
    meeting = await client.create_or_get_meeting(
        ORGANIZER,
        external_id=EXTERNAL_ID,
        subject="Virtual visit",
        start=START,
        end=START + timedelta(minutes=30),
    )
    return meeting.id


@pytest.mark.anyio
async def test_r01_throttle_then_success_honours_retry_after() -> None:
    fake, client, time = setup()
    fake.fail_next("createOrGet", 429, retry_after=7)
    await create(client)
    calls = [c for c in fake.requests if c.path.endswith("createOrGet")]
    assert len(calls) == 2
    assert time.waits == [7.0]
    assert calls[0].body["externalId"] == calls[1].body["externalId"] == EXTERNAL_ID


@pytest.mark.anyio
async def test_r02_retry_after_over_cap_raises_at_once() -> None:
    fake, client, time = setup(max_wait=30.0)
    fake.fail_next("createOrGet", 429, retry_after=400)
    with pytest.raises(GraphThrottledError) as caught:
        await create(client)
    assert caught.value.retry_after == 400
    assert caught.value.status_code == 429
    assert len(fake.requests) == 1
    assert time.waits == []
    assert fake.meetings == {}


@pytest.mark.anyio
async def test_throttled_past_deadline_is_bounded() -> None:
    fake, client, time = setup(deadline=20.0, max_attempts=50)
    fake.fail_next("createOrGet", 503, retry_after=6, times=1000)
    with pytest.raises(GraphThrottledError) as caught:
        await create(client)
    assert len(fake.requests) == 4  # waits 6+6+6 = 18 s; a fourth 6 s wait would pass 20 s
    assert time.waits == [6.0, 6.0, 6.0]
    assert caught.value.retry_after == 6


@pytest.mark.anyio
async def test_backoff_without_retry_after_is_exponential_and_capped() -> None:
    fake, client, time = setup(base_delay=1.0, jitter=0.0, max_wait=5.0, max_attempts=6)
    fake.fail_next("createOrGet", 504, times=1000)
    with pytest.raises(GraphThrottledError):
        await create(client)
    assert time.waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert len(fake.requests) == 6


@pytest.mark.anyio
async def test_retry_after_http_date() -> None:
    fake, client, time = setup()
    when = format_datetime(time.now + timedelta(seconds=9), usegmt=True)
    fake.fail_next("createOrGet", 503, retry_after=when)
    await create(client)
    assert time.waits == [9.0]


def test_parse_retry_after_forms() -> None:
    now = START
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after("30,120", now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now) == 0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None


@pytest.mark.anyio
async def test_lost_response_is_retried_for_create_or_get() -> None:
    fake, client, _ = setup()
    fake.lose_next_response("createOrGet")
    meeting_id = await create(client)
    assert list(fake.meetings) == [meeting_id]
    assert fake.plain_create_calls == []


@pytest.mark.anyio
async def test_prefer_header_on_read_and_write() -> None:
    fake, client, _ = setup()
    meeting_id = await create(client)
    await client.patch_meeting(ORGANIZER, meeting_id, {"lobbyBypassSettings": {"scope": "invited"}})
    meeting = await client.get_meeting(ORGANIZER, meeting_id)
    assert meeting.lobby_bypass_settings is not None
    assert meeting.lobby_bypass_settings.scope == "invited"
    for call in fake.requests:
        assert call.headers["Prefer"] == "include-unknown-enum-members"
        assert call.headers["Authorization"] == f"Bearer {TOKEN_CANARY}"


@pytest.mark.anyio
async def test_error_json_becomes_graph_error() -> None:
    _fake, client, _ = setup()
    with pytest.raises(GraphError) as caught:
        await client.get_meeting(ORGANIZER, "missing")
    exc = caught.value
    assert (exc.status_code, exc.code, exc.reason) == (404, "NotFound", "graph_not_found")
    assert exc.request_id


def test_access_policy_error_shapes() -> None:
    request = httpx.Request("POST", "https://graph.microsoft.com/v1.0/users/x/onlineMeetings")
    for status, code, message in [
        (403, "Forbidden", "No application access policy found for this app"),
        (403, "General", "No Application Access Policy found for this app."),
        (401, "Unauthorized", "App 1 is not authorized to Create meeting on behalf of user 2"),
    ]:
        body = {"error": {"code": code, "message": message, "innerError": {"request-id": "r-1"}}}
        exc = graph_error_from_response(httpx.Response(status, json=body, request=request), "x")
        assert exc.reason == "graph_application_access_policy_missing"
        assert exc.request_id == "r-1"
        assert "learn.microsoft.com" in str(exc)
        assert message not in str(exc)


@pytest.mark.anyio
async def test_401_invalidates_cached_token_once() -> None:
    time = FakeTime()
    fake = FakeGraph(tenant_id=TENANT, clock=time.clock, token_checker=lambda t: None)
    tokens = StaticTokens()
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))
    client = GraphClient(http, tokens, clock=time.clock, sleep=time.sleep)
    with pytest.raises(GraphError) as caught:
        await client.get_meeting(ORGANIZER, "m")
    assert caught.value.reason == "graph_unauthorized"
    assert tokens.invalidated == 1
    assert len(fake.requests) == 2


@pytest.mark.anyio
async def test_attendance_paging_follows_same_host_only() -> None:
    fake, client, time = setup()
    fake.page_size = 2
    meeting_id = await create(client)
    room = fake.room(meeting_id)
    room.join("organizer", identity="organizer")
    for i in range(5):
        room.join(f"guest-{i}", display_name=f"Patient {i}")
        room.admit(f"guest-{i}")
    time.now += timedelta(minutes=10)
    room.end_call()
    reports = await client.list_attendance_reports(ORGANIZER, meeting_id)
    assert len(reports) == 1
    records = await client.list_attendance_records(ORGANIZER, meeting_id, reports[0].id)
    assert len(records) == 6
    pages = [c for c in fake.requests if c.path.endswith("/attendanceRecords")]
    assert len(pages) == 3
    assert all("Patient" not in repr(r) for r in records)
    assert {r.total_attendance_in_seconds for r in records} == {600}


@pytest.mark.anyio
async def test_next_link_to_foreign_host_refused() -> None:
    time = FakeTime()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"value": [], "@odata.nextLink": "https://evil.example/v1.0/x?$skiptoken=1"}
        )

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = GraphClient(http, StaticTokens(), clock=time.clock, sleep=time.sleep)
    with pytest.raises(GraphError) as caught:
        await client.list_attendance_reports(ORGANIZER, "m")
    assert caught.value.reason == "graph_next_link_foreign_host"


@pytest.mark.anyio
async def test_subscription_post_not_retried_after_it_may_have_arrived() -> None:
    fake, client, time = setup()
    args = {
        "resource": SecretStr("communications/onlineMeetings(joinWebUrl='x')/meetingCallEvents"),
        "change_type": "updated",
        "notification_url": "https://app.example/webhook",
        "lifecycle_notification_url": "https://app.example/lifecycle",
        "expiration": time.now + timedelta(days=2),
        "client_state": SecretStr("state-CANARY"),
        "api_version": "beta",
    }
    fake.fail_next("/subscriptions", 504)
    with pytest.raises(GraphError) as caught:
        await client.create_subscription(**args)  # type: ignore[arg-type]
    assert caught.value.status_code == 504
    fake.lose_next_response("/subscriptions")
    with pytest.raises(TransportError):
        await client.create_subscription(**args)  # type: ignore[arg-type]
    assert len(fake.subscriptions.items) == 1  # created once; never resent
    fake.subscriptions.items.clear()
    fake.fail_next("/subscriptions", 429, retry_after=2)
    sub = await client.create_subscription(**args)  # type: ignore[arg-type]
    assert time.waits == [2.0]
    assert "state-CANARY" not in repr(sub)
    assert "joinWebUrl" not in repr(sub)
    assert fake.requests[-1].path == "/beta/subscriptions"
    renewed = await client.renew_subscription(
        sub.id, time.now + timedelta(days=3), api_version="beta"
    )
    assert renewed.expiration_date_time == time.now + timedelta(days=3)
    assert await client.delete_subscription(sub.id, api_version="beta") is True
    assert await client.delete_subscription(sub.id, api_version="beta") is False


@pytest.mark.anyio
async def test_naive_datetimes_refused() -> None:
    _, client, _ = setup()
    with pytest.raises(UsageError):
        await client.create_or_get_meeting(
            ORGANIZER,
            external_id="x",
            subject="s",
            start=START.replace(tzinfo=None),
            end=START.replace(tzinfo=None),
        )


@pytest.mark.anyio
async def test_no_token_or_join_url_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake, client, _ = setup()
    fake.fail_next("createOrGet", 429, retry_after=1)
    meeting_id = await create(client)
    meeting = await client.get_meeting(ORGANIZER, meeting_id)
    join_url = fake.meetings[meeting_id]["joinWebUrl"]
    assert "HTTP Request" in caplog.text  # httpx logged every request at INFO
    assert_no_leak([TOKEN_CANARY, join_url], caplog.text, meeting, client)


@pytest.mark.anyio
async def test_requests_in_flight_are_bounded() -> None:
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0)
        await anyio.sleep(0)
        in_flight -= 1
        return httpx.Response(200, json={"id": "m"})

    time = FakeTime()
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = GraphClient(
        http, StaticTokens(), clock=time.clock, sleep=time.sleep, max_concurrent_requests=4
    )
    async with anyio.create_task_group() as tg:
        for _ in range(40):
            tg.start_soon(client.get_meeting, ORGANIZER, "m")
    assert peak == 4


def test_r04_static_guard_no_plain_create_in_sources() -> None:
    """R04: no code path can POST the non-idempotent /onlineMeetings collection."""
    import re
    from pathlib import Path

    import teams_ehr

    root = Path(teams_ehr.__file__).parent
    for path in [*root.joinpath("teams").glob("*.py"), *root.glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        assert re.search(r"/onlineMeetings[\"']", text) is None, path
        assert ".online_meetings.post(" not in text, path


@pytest.mark.anyio
async def test_virtual_appointment_join_url() -> None:
    from teams_ehr.teams.join_urls import checked_join_url

    _fake, client, _ = setup()
    meeting_id = await create(client)
    url = await client.get_virtual_appointment_join_url(ORGANIZER, meeting_id)
    assert "visit.teams.microsoft.com" not in repr(url)
    assert checked_join_url(url).startswith("https://visit.teams.microsoft.com/")
