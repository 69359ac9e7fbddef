"""The live roster SSE stream (D3; security.md T25)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from attendance_in_support import CANARY_NAME, EXTERNAL_ID, ORG, ORGANIZER_OID, MemoryStore

from teams_ehr.attendance.events import AttendanceEvent
from teams_ehr.attendance.roster import (
    LiveRoster,
    encode_sse,
    roster_channel,
    roster_message,
    stream,
)
from teams_ehr.errors import CrossTenantDeniedError

pytestmark = pytest.mark.anyio
T = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _event(
    kind: str, minutes: int, *, key: str = "patient-key-0001", role: str = "patient"
) -> AttendanceEvent:
    return AttendanceEvent.create(
        org_id=ORG,
        external_id=EXTERNAL_ID,
        kind=kind,
        role=role,  # type: ignore[arg-type]
        participant_key=key,
        at=T + timedelta(minutes=minutes),
    )


def _authorizer(allowed: set[tuple[str, str, str]]):  # type: ignore[no-untyped-def]
    async def authorize(org: str, external_id: str, viewer: str) -> bool:
        return (org, external_id, viewer) in allowed

    return authorize


ALLOWED = {(ORG, EXTERNAL_ID, ORGANIZER_OID)}


def _parse(frame: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in frame.decode().strip("\n").split("\n"):
        name, _, value = line.partition(": ")
        fields[name] = value
    return fields


@pytest.mark.parametrize(
    ("org", "external_id", "viewer"),
    [
        ("org-b", EXTERNAL_ID, ORGANIZER_OID),
        (ORG, "another-visit", ORGANIZER_OID),
        (ORG, EXTERNAL_ID, "another-clinician"),
    ],
)
async def test_unauthorized_viewer_refused_before_any_byte(
    org: str, external_id: str, viewer: str
) -> None:
    bus = MemoryStore()
    with pytest.raises(CrossTenantDeniedError) as caught:
        await stream(
            bus,
            org_id=org,
            external_id=external_id,
            viewer_oid=viewer,
            authorize=_authorizer(ALLOWED),
        )
    assert caught.value.http_status_hint == 403
    assert bus.subs == set()  # not even subscribed


async def test_snapshot_then_live_events_then_heartbeat() -> None:
    bus = MemoryStore()
    await bus.record_facts(
        [
            _event("lobby_entered", 1).to_fact_row(),
            _event("call_started", 0, key="meeting", role="other").to_fact_row(),
        ]
    )
    frames = await stream(
        bus,
        org_id=ORG,
        external_id=EXTERNAL_ID,
        viewer_oid=ORGANIZER_OID,
        authorize=_authorizer(ALLOWED),
        facts=bus,
        heartbeat_seconds=0.05,
    )
    assert await frames.__anext__() == b"retry: 3000\n\n"
    snapshot = _parse(await frames.__anext__())
    assert snapshot["event"] == "snapshot"
    data = json.loads(snapshot["data"])
    assert data["call"] == {"kind": "call_started", "at": "2026-03-02T15:00:00Z"}
    assert [(p["role"], p["kind"]) for p in data["participants"]] == [("patient", "lobby_entered")]

    connected = _event("connected", 3)
    await bus.publish(roster_channel(ORG, EXTERNAL_ID), roster_message(connected))
    await bus.publish(
        roster_channel("org-b", EXTERNAL_ID), roster_message(_event("disconnected", 4))
    )
    frame = _parse(await frames.__anext__())
    assert frame["event"] == "attendance"
    assert frame["id"] == connected.fact_key[:16]
    assert json.loads(frame["data"]) == {
        "participant": "patient-key-",
        "role": "patient",
        "kind": "connected",
        "at": "2026-03-02T15:03:00Z",
    }
    assert (
        await frames.__anext__() == b": keep-alive\n\n"
    )  # idle: heartbeat, not the other org's event
    await frames.aclose()  # type: ignore[attr-defined]
    assert bus.subs == set()


async def test_stream_ends_when_authorization_lapses() -> None:
    bus = MemoryStore()
    allowed = set(ALLOWED)
    frames = await stream(
        bus,
        org_id=ORG,
        external_id=EXTERNAL_ID,
        viewer_oid=ORGANIZER_OID,
        authorize=_authorizer(allowed),
        heartbeat_seconds=0.01,
    )
    await frames.__anext__()
    await frames.__anext__()
    allowed.clear()  # the session expired
    assert _parse(await frames.__anext__())["event"] == "closed"
    with pytest.raises(StopAsyncIteration):
        await frames.__anext__()


async def test_payload_schema_has_no_names_or_extra_fields() -> None:
    bus = MemoryStore()
    frames = await stream(
        bus,
        org_id=ORG,
        external_id=EXTERNAL_ID,
        viewer_oid=ORGANIZER_OID,
        authorize=_authorizer(ALLOWED),
        heartbeat_seconds=5,
    )
    await frames.__anext__()
    await frames.__anext__()
    channel = roster_channel(ORG, EXTERNAL_ID)
    injected = {
        "participant": "x",
        "role": "patient",
        "kind": "connected",
        "at": "t",
        "displayName": CANARY_NAME,
    }
    await bus.publish(channel, "not json")
    await bus.publish(channel, json.dumps({"role": "patient"}))
    await bus.publish(channel, json.dumps(injected))
    with anyio.fail_after(30):
        frame = await frames.__anext__()
    assert CANARY_NAME.encode() not in frame
    assert set(json.loads(_parse(frame)["data"])) == {"participant", "role", "kind", "at"}
    await frames.aclose()  # type: ignore[attr-defined]


def test_sse_framing_cannot_be_injected() -> None:
    frame = encode_sse("line1\nevent: evil\ndata: x", event="attendance\nid: 9", event_id="a\rb")
    lines = frame.decode().split("\n")
    assert lines[0] == "id: a b"
    assert lines[1] == "event: attendance id: 9"
    assert all(line.startswith("data: ") for line in lines[2:5])
    assert frame.endswith(b"\n\n")


def test_live_roster_keeps_latest_state_per_participant() -> None:
    roster = LiveRoster()
    for event in [
        _event("connected", 5),
        _event("lobby_entered", 1),
        _event("disconnected", 9, key="other", role="provider"),
    ]:
        roster.apply(event)
    roster.apply(_event("call_ended", 30, key="meeting", role="other"))
    roster.apply(_event("call_started", 0, key="meeting", role="other"))  # late, older: ignored
    snap = roster.snapshot()
    assert snap["call"] == {"kind": "call_ended", "at": "2026-03-02T15:30:00Z"}
    assert [(p["role"], p["kind"]) for p in snap["participants"]] == [
        ("patient", "connected"),
        ("provider", "disconnected"),
    ]  # type: ignore[index]


def test_channel_names_are_hashed_and_postgres_safe() -> None:
    channel = roster_channel(ORG, EXTERNAL_ID)
    assert len(channel) <= 63
    assert channel.replace("_", "").isalnum()
    assert EXTERNAL_ID not in channel
    assert ORG not in channel
    assert channel != roster_channel("org-b", EXTERNAL_ID)
