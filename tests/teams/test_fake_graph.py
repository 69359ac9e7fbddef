"""FakeGraph itself: createOrGet semantics, PATCH rules, Prefer, faults, meeting room, attendance,
subscriptions with the validation handshake, ASGI mode, import purity (SPEC E1)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from graph_test_support import ORGANIZER, TENANT, FakeTime

from teams_ehr.testing.fake_graph import FakeGraph
from teams_ehr.testing.meeting_room import RosterChange, needs_lobby

BASE = "https://graph.microsoft.com/v1.0"
MEETINGS = f"{BASE}/users/{ORGANIZER}/onlineMeetings"
AUTH = {"Authorization": "Bearer t"}
PREFER = {"Prefer": "include-unknown-enum-members"}


def client(
    fake: FakeGraph, *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport or httpx.MockTransport(fake.handler), headers=AUTH)


def new_fake(**kwargs: Any) -> tuple[FakeGraph, FakeTime]:
    time = FakeTime()
    return FakeGraph(tenant_id=TENANT, clock=time.clock, seed=3, **kwargs), time


async def create(
    http: httpx.AsyncClient, external_id: str = "ext-1", organizer: str = ORGANIZER
) -> httpx.Response:
    return await http.post(
        f"{BASE}/users/{organizer}/onlineMeetings/createOrGet",
        json={"externalId": external_id, "startDateTime": "2030-05-01T15:00:00Z"},
    )


@pytest.mark.anyio
async def test_create_or_get_201_then_200_with_real_defaults() -> None:
    fake, _ = new_fake()
    http = client(fake)
    first, second = await create(http), await create(http)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json() == second.json()
    body = first.json()
    assert body["lobbyBypassSettings"]["scope"] == "organization"
    assert body["allowedPresenters"] == "everyone"
    assert body["endDateTime"] == "2030-05-01T16:00:00Z"  # start + 1 h
    other = await create(http, organizer="another-organizer")
    assert other.status_code == 201
    assert other.json()["id"] != body["id"]
    assert len(fake.meetings) == 2


@pytest.mark.anyio
async def test_bearer_token_required_and_checked() -> None:
    fake, _ = new_fake(token_checker=lambda token: TENANT if token == "good" else None)
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))
    assert (await http.post(f"{MEETINGS}/createOrGet", json={"externalId": "x"})).status_code == 401
    bad = await http.post(f"{MEETINGS}/createOrGet", json={"externalId": "x"}, headers=AUTH)
    assert bad.json()["error"]["code"] == "InvalidAuthenticationToken"
    ok = await http.post(
        f"{MEETINGS}/createOrGet",
        json={"externalId": "x"},
        headers={"Authorization": "Bearer good"},
    )
    assert ok.status_code == 201


@pytest.mark.anyio
async def test_plain_post_recorded_and_refused() -> None:
    fake, _ = new_fake()
    response = await client(fake).post(MEETINGS, json={"subject": "x"})
    assert response.status_code == 400
    assert len(fake.plain_create_calls) == 1
    assert fake.meetings == {}


@pytest.mark.anyio
async def test_evolvable_members_need_prefer_header() -> None:
    fake, _ = new_fake()
    http = client(fake)
    meeting_id = (await create(http)).json()["id"]
    url = f"{MEETINGS}/{meeting_id}"
    invited = {"lobbyBypassSettings": {"scope": "invited"}}
    assert (await http.patch(url, json=invited)).status_code == 400
    assert (await http.patch(url, json=invited, headers=PREFER)).status_code == 200
    plain = (await http.get(url)).json()
    assert plain["lobbyBypassSettings"]["scope"] == "unknownFutureValue"
    preferred = (await http.get(url, headers=PREFER)).json()
    assert preferred["lobbyBypassSettings"]["scope"] == "invited"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "patch",
    [
        {"joinMeetingIdSettings": {"isPasscodeRequired": False}},
        {"startDateTime": "2030-05-01T15:00:00Z"},
        {"allowedPresenters": "anyone"},
        {"allowRecording": "no"},
        {"lobbyBypassSettings": {"scope": "organizer", "isDialInBypassEnabled": "yes"}},
        {},
    ],
)
async def test_patch_rules(patch: dict[str, Any]) -> None:
    fake, _ = new_fake()
    http = client(fake)
    meeting_id = (await create(http)).json()["id"]
    response = await http.patch(f"{MEETINGS}/{meeting_id}", json=patch, headers=PREFER)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


@pytest.mark.anyio
async def test_scripted_faults() -> None:
    fake, _ = new_fake()
    http = client(fake)
    fake.fail_next("createOrGet", 403)
    denied = await create(http)
    assert denied.status_code == 403
    error = denied.json()["error"]
    assert error["code"] == "Forbidden"
    assert "application access policy" in error["message"]
    assert error["innerError"]["request-id"] == denied.headers["request-id"]
    fake.fail_next("createOrGet", 429, retry_after=5, times=2)
    assert [(await create(http)).headers.get("Retry-After") for _ in range(2)] == ["5", "5"]
    fake.lose_next_response("createOrGet")
    with pytest.raises(httpx.ReadTimeout):
        await create(http)
    assert len(fake.meetings) == 1  # the server acted before the response was lost
    meeting_id = next(iter(fake.meetings))
    fake.tamper_next_readback({"lobbyBypassSettings": {"isDialInBypassEnabled": True}})
    tampered = (await http.get(f"{MEETINGS}/{meeting_id}")).json()
    assert tampered["lobbyBypassSettings"]["isDialInBypassEnabled"] is True
    assert fake.meetings[meeting_id]["lobbyBypassSettings"]["isDialInBypassEnabled"] is False
    again = (await http.get(f"{MEETINGS}/{meeting_id}")).json()
    assert again["lobbyBypassSettings"]["isDialInBypassEnabled"] is False


@pytest.mark.parametrize(
    ("kind", "scope", "dial_in", "lobby"),
    [
        ("organizer", "organizer", False, False),
        ("tenant_user", "organizer", False, True),
        ("tenant_user", "invited", False, True),
        ("tenant_user", "organization", False, False),
        ("tenant_user", "organizationExcludingGuests", False, False),
        ("guest", "organization", False, True),
        ("guest", "organizationAndFederated", False, True),
        ("guest", "everyone", False, False),
        ("guest", "unknownFutureValue", False, True),
        ("phone", "organizer", False, True),
        ("phone", "organizer", True, False),
        ("phone", "everyone", False, False),
        ("tenant_user", "somethingNew", False, True),
    ],
)
def test_who_waits_in_the_lobby(kind: Any, scope: str, dial_in: bool, lobby: bool) -> None:
    assert needs_lobby(kind, scope, dial_in) is lobby


@pytest.mark.anyio
async def test_meeting_room_lobby_admit_leave_and_attendance() -> None:
    fake, time = new_fake()
    http = client(fake)
    meeting_id = (await create(http)).json()["id"]
    await http.patch(
        f"{MEETINGS}/{meeting_id}", json={"lobbyBypassSettings": {"scope": "organizer"}}
    )
    changes: list[RosterChange] = []
    fake.on_roster_change(changes.append)
    room = fake.room(meeting_id)
    room.join("patient", display_name="Jane Doe")
    assert room.in_lobby() == ["patient"]
    assert not room.call_active
    time.now += timedelta(minutes=1)
    room.join("doctor", identity="organizer")
    assert room.call_active
    time.now += timedelta(minutes=2)
    room.admit("patient")
    time.now += timedelta(minutes=10)
    room.leave("patient")
    time.now += timedelta(minutes=1)
    room.join("patient", display_name="Jane Doe")  # back to the lobby
    room.admit("patient")
    time.now += timedelta(minutes=5)
    room.end_call()
    kinds = [(c.kind, c.participant_id, c.in_lobby, c.removed) for c in changes]
    assert kinds[:5] == [
        ("joined", "patient", True, False),
        ("call_started", None, False, False),
        ("joined", "doctor", False, False),
        ("admitted", "patient", False, False),
        ("left", "patient", False, True),
    ]
    assert kinds[-1] == ("call_ended", None, False, False)
    assert room.history == changes
    doctor = next(c for c in changes if c.participant_id == "doctor")
    assert (doctor.identity_kind, doctor.user_id, doctor.tenant_id) == (
        "organizer",
        ORGANIZER,
        TENANT,
    )
    assert "Jane" not in repr(changes)
    reports = (await http.get(f"{MEETINGS}/{meeting_id}/attendanceReports")).json()["value"]
    assert len(reports) == 1
    records = (
        await http.get(
            f"{MEETINGS}/{meeting_id}/attendanceReports/{reports[0]['id']}/attendanceRecords"
        )
    ).json()["value"]
    by_id = {r["id"]: r for r in records}
    assert by_id[ORGANIZER]["role"] == "Organizer"
    assert by_id[ORGANIZER]["totalAttendanceInSeconds"] == 18 * 60
    patient = by_id["patient"]
    assert patient["totalAttendanceInSeconds"] == 15 * 60
    assert len(patient["attendanceIntervals"]) == 2


def echo_webhook(
    *, status: int = 200, content_type: str = "text/plain", wrong: bool = False
) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        token = parse_qs(urlsplit(str(request.url)).query)["validationToken"][0]
        body = token + ("x" if wrong else "")
        return httpx.Response(status, content=body.encode(), headers={"Content-Type": content_type})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def subscription(time: FakeTime, **overrides: Any) -> dict[str, Any]:
    body = {
        "changeType": "updated",
        "notificationUrl": "https://app.example/graph/webhook",
        "lifecycleNotificationUrl": "https://app.example/graph/lifecycle",
        "resource": "communications/onlineMeetings(joinWebUrl='u')/meetingCallEvents",
        "expirationDateTime": (time.now + timedelta(days=2)).isoformat(),
        "clientState": "secret-state",
    }
    return body | overrides


@pytest.mark.anyio
async def test_subscription_handshake_and_lifecycle() -> None:
    fake, time = new_fake(webhook_client=echo_webhook())
    http = client(fake)
    created = await http.post(f"{BASE}/subscriptions", json=subscription(time))
    assert created.status_code == 201
    sub = fake.subscriptions.items[created.json()["id"]]
    assert sub.validated
    assert len(fake.subscriptions.validation_tokens) == 2  # notification + lifecycle URLs
    duplicate = await http.post(f"{BASE}/subscriptions", json=subscription(time))
    assert duplicate.status_code == 409
    renewed = await http.patch(
        f"{BASE}/subscriptions/{sub.id}",
        json={"expirationDateTime": (time.now + timedelta(days=3)).isoformat()},
    )
    assert renewed.status_code == 200
    too_long = await http.patch(
        f"{BASE}/subscriptions/{sub.id}",
        json={"expirationDateTime": (time.now + timedelta(days=4)).isoformat()},
    )
    assert too_long.status_code == 400
    assert (await http.delete(f"{BASE}/subscriptions/{sub.id}")).status_code == 204
    assert (await http.delete(f"{BASE}/subscriptions/{sub.id}")).status_code == 404


@pytest.mark.anyio
@pytest.mark.parametrize(
    "webhook",
    [
        {"status": 202},
        {"content_type": "text/html"},
        {"wrong": True},
    ],
)
async def test_subscription_handshake_failures(webhook: dict[str, Any]) -> None:
    fake, time = new_fake(webhook_client=echo_webhook(**webhook))
    response = await client(fake).post(f"{BASE}/subscriptions", json=subscription(time))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ValidationError"
    assert fake.subscriptions.items == {}


@pytest.mark.anyio
async def test_subscription_handshake_must_answer_in_time() -> None:
    async def silent(request: httpx.Request) -> httpx.Response:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    fake, time = new_fake(webhook_client=httpx.AsyncClient(transport=httpx.MockTransport(silent)))
    fake.subscriptions.handshake_timeout = 0.01  # Graph's limit is 10 s
    response = await client(fake).post(f"{BASE}/subscriptions", json=subscription(time))
    assert response.status_code == 400
    assert fake.subscriptions.items == {}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "overrides",
    [
        {"lifecycleNotificationUrl": None},
        {"notificationUrl": "http://app.example/webhook"},
        {"clientState": "x" * 256},
        {"includeResourceData": True},
    ],
)
async def test_subscription_request_rules(overrides: dict[str, Any]) -> None:
    fake, time = new_fake()
    body = {k: v for k, v in subscription(time, **overrides).items() if v is not None}
    response = await client(fake).post(f"{BASE}/subscriptions", json=body)
    assert response.status_code == 400


@pytest.mark.anyio
async def test_asgi_mode_serves_the_same_fake() -> None:
    fake, _ = new_fake()
    transport = httpx.ASGITransport(app=fake.asgi_app())
    http = client(fake, transport=transport)
    assert (await create(http)).status_code == 201
    fake.lose_next_response("createOrGet")
    assert (await create(http, "ext-2")).status_code == 504
    assert len(fake.meetings) == 2


def test_fakes_and_teams_import_no_msgraph_or_pytest() -> None:
    code = (
        "import sys, json;"
        "import teams_ehr.teams.graph_client, teams_ehr.teams.meetings, teams_ehr.teams.join_urls;"
        "import teams_ehr.teams.msgraph_adapter, teams_ehr.testing.fake_graph;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not loaded & {"msgraph", "kiota_abstractions", "kiota_http", "pytest", "azure"}
