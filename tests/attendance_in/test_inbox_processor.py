"""Inbox → events, facts, roster messages and the outbox sink (D1–D3; R06, R22)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta

import pytest
from attendance_in_support import (
    EXTERNAL_ID,
    KEYER,
    ORG,
    ORGANIZER_OID,
    TENANT,
    Harness,
    delta_guest,
    delta_user,
    make_harness,
    roster_event,
)

from teams_ehr.attendance.events import AttendanceEvent
from teams_ehr.attendance.inbox_processor import InboxProcessor
from teams_ehr.attendance.notifications import LifecycleEnvelope
from teams_ehr.attendance.roster import roster_channel
from teams_ehr.attendance.webhook import handle_notifications
from teams_ehr.store.protocol import InboxItem

pytestmark = pytest.mark.anyio


async def _deliver(h: Harness, content: dict[str, object]) -> None:
    result = await handle_notifications(
        h.body(h.item(content)),
        security=h.security,
        inbox=h.store,
        subscriptions=h.store,
        now=h.clock(),
    )
    assert (result.status, result.accepted) == (202, 1), result


def _processor(h: Harness, **kw: object) -> InboxProcessor:
    return InboxProcessor(
        inbox=h.store,
        facts=h.store,
        meetings=h.store,
        bus=h.store,
        keyer=KEYER,
        worker="w1",
        clock=h.clock,
        **kw,  # type: ignore[arg-type]
    )


def _at(h: Harness, minutes: int) -> str:
    return (h.clock() + timedelta(minutes=minutes - 30)).isoformat().replace("+00:00", "Z")


async def test_visit_becomes_events_facts_bus_messages_and_sink_calls() -> None:
    h = await make_harness()
    sunk: list[AttendanceEvent] = []

    async def sink(events: Sequence[AttendanceEvent]) -> None:
        sunk.extend(events)

    await _deliver(h, {"eventType": "callStarted", "eventDateTime": _at(h, 0)})
    await _deliver(h, roster_event(delta_user(ORGANIZER_OID), at=_at(h, 0)))
    await _deliver(h, roster_event(delta_guest("patient-1", lobby=True), at=_at(h, 1)))
    await _deliver(h, roster_event(delta_guest("patient-1"), at=_at(h, 3)))
    await _deliver(h, roster_event(delta_guest("patient-1", left=True), at=_at(h, 20)))
    await _deliver(h, {"eventType": "callEnded", "eventDateTime": _at(h, 21)})
    report = await _processor(h, sink=sink).run_once()
    assert (report.claimed, report.completed, report.failed) == (6, 6, 0)
    kinds = [(e.kind, e.role) for e in sunk]
    assert kinds == [
        ("call_started", "other"),
        ("connected", "provider"),
        ("lobby_entered", "patient"),
        ("connected", "patient"),
        ("admitted", "patient"),
        ("disconnected", "patient"),
        ("call_ended", "other"),
    ]
    assert report.new_facts == 7
    assert len(h.store.facts) == 7
    assert {f.department for f in h.store.facts.values()} == {"cardiology"}
    assert all(f.external_id == EXTERNAL_ID for f in h.store.facts.values())
    channel = roster_channel(ORG, EXTERNAL_ID)
    assert [c for c, _ in h.store.published] == [channel] * 7
    assert {tuple(sorted(json.loads(m))) for _, m in h.store.published} == {
        ("at", "id", "kind", "participant", "role")
    }
    # everything completed: a second run finds nothing
    assert (await _processor(h, sink=sink).run_once()).claimed == 0


async def test_out_of_order_delivery_gives_the_same_facts() -> None:
    h1, h2 = await make_harness(), None
    contents = [
        roster_event(delta_guest("p"), at=_at(h1, 2)),
        roster_event(delta_guest("p", left=True), at=_at(h1, 9)),
    ]
    for content in contents:
        await _deliver(h1, content)
    await _processor(h1).run_once()
    h2 = await make_harness()
    for content in reversed(contents):
        await _deliver(h2, content)
    await _processor(h2).run_once()
    assert set(h1.store.facts) == set(h2.store.facts)


async def test_sink_failure_leaves_item_for_retry_without_duplicates() -> None:
    h = await make_harness()
    calls = 0

    async def flaky(events: Sequence[AttendanceEvent]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("outbox down")

    await _deliver(h, roster_event(delta_guest("p"), at=_at(h, 1)))
    first = await _processor(h, sink=flaky).run_once()
    assert (first.failed, first.completed) == (1, 0)
    h.clock.advance(minutes=5)  # the lease expires
    second = await _processor(h, sink=flaky).run_once()
    assert (second.completed, second.new_facts) == (1, 0)  # facts were already recorded
    assert len(h.store.facts) == 1
    assert calls == 2


async def test_bus_failure_is_best_effort() -> None:
    h = await make_harness()

    async def broken(channel: str, message: str) -> None:
        raise RuntimeError("bus down")

    h.store.publish = broken  # type: ignore[method-assign]
    await _deliver(h, roster_event(delta_guest("p"), at=_at(h, 1)))
    report = await _processor(h).run_once()
    assert (report.completed, len(h.store.facts)) == (1, 1)


async def test_lifecycle_envelopes_reach_the_handler() -> None:
    h = await make_harness()
    seen: list[LifecycleEnvelope] = []

    async def handler(envelope: LifecycleEnvelope) -> None:
        seen.append(envelope)

    envelope = LifecycleEnvelope(
        subscription_id="sub-0001",
        org_id=ORG,
        external_id=EXTERNAL_ID,
        lifecycle_event="missed",
        received_at=h.clock(),
    )
    await h.store.append_inbox(
        [InboxItem(ORG, "k", envelope.model_dump_json().encode(), h.clock())]
    )
    assert (await _processor(h, lifecycle=handler).run_once()).completed == 1
    assert seen == [envelope]


async def test_undecodable_or_misrouted_items_are_dropped() -> None:
    h = await make_harness()
    envelope = LifecycleEnvelope(
        subscription_id="s",
        org_id="org-b",
        external_id="x",
        lifecycle_event="missed",
        received_at=h.clock(),
    )
    await h.store.append_inbox(
        [
            InboxItem(ORG, "a", b"garbage", h.clock()),
            InboxItem(ORG, "b", envelope.model_dump_json().encode(), h.clock()),
        ]
    )
    called: list[object] = []

    async def handler(e: LifecycleEnvelope) -> None:
        called.append(e)

    report = await _processor(h, lifecycle=handler).run_once()
    assert report.completed == 2
    assert called == []


async def test_unknown_meeting_maps_tenant_users_only() -> None:
    h = await make_harness()
    h.store.meetings.clear()
    await _deliver(
        h, roster_event(delta_user(ORGANIZER_OID), delta_user("other", tenant=None), at=_at(h, 1))
    )
    await _processor(h).run_once()
    roles = sorted(f.role for f in h.store.facts.values())
    assert roles == ["other", "provider"]
    assert {f.department for f in h.store.facts.values()} == {None}
    assert TENANT  # the organization's tenant decides


async def test_resource_filter_mismatch_dropped(caplog: pytest.LogCaptureFixture) -> None:
    h = await make_harness()
    other = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_OTHER%40thread.v2/0"
    item = h.item(
        roster_event(delta_guest("p"), at=_at(h, 1)),
        resource=f"communications/onlineMeetings(joinWebUrl='{other}')/meetingCallEvents",
    )
    result = await handle_notifications(
        h.body(item), security=h.security, inbox=h.store, subscriptions=h.store, now=h.clock()
    )
    assert result.accepted == 1  # authenticated, but about another meeting
    report = await _processor(h).run_once()
    assert (report.completed, report.events) == (1, 0)
    assert h.store.facts == {}
    ours = [r for r in caplog.records if r.name.startswith("teams_ehr")]  # not httpx's lines
    assert [getattr(r, "security_event", None) for r in ours] == ["resource_mismatch"]


def test_join_url_fingerprint_ignores_encoding_levels() -> None:
    from urllib.parse import quote

    from teams_ehr.attendance.notifications import join_url_fingerprint, resource_fingerprint
    from teams_ehr.attendance.subscriptions import meeting_call_events_resource

    url = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_X%40thread.v2/0?context=%7b%22Tid%22%7d"
    expected = join_url_fingerprint(url)
    assert resource_fingerprint(meeting_call_events_resource(url)) == expected
    assert (
        resource_fingerprint(f"communications/onlineMeetings(joinWebUrl='{url}')/meetingCallEvents")
        == expected
    )
    assert (
        resource_fingerprint(f"communications/onlineMeetings/?$filter=JoinWebUrl eq '{url}'")
        == expected
    )
    assert (
        resource_fingerprint(
            f"communications/onlineMeetings?$filter=joinWebUrl+eq+'{quote(url, safe='')}'"
        )
        == expected
    )
    assert resource_fingerprint("communications/onlineMeetings/abc") is None
    assert join_url_fingerprint(url.replace("X", "Y")) != expected


async def test_run_loop_processes_until_stopped() -> None:
    import anyio

    h = await make_harness()
    processor = _processor(h)
    stop = anyio.Event()
    await _deliver(h, roster_event(delta_guest("p"), at=_at(h, 1)))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: processor.run(stop=stop, poll_seconds=0.01))
        with anyio.fail_after(30):
            while not h.store.facts:
                await anyio.sleep(0.005)
        await _deliver(h, roster_event(delta_guest("p", left=True), at=_at(h, 5)))
        with anyio.fail_after(30):
            while len(h.store.facts) < 2:
                await anyio.sleep(0.005)
        stop.set()
    assert len(h.store.done) == 2
