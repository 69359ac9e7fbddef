"""The MeetingFactory contract (SPEC B2, B3, B5; security.md T18, T19, R03–R05).

Every backend (the lean GraphClient and the msgraph-sdk adapter) must pass these tests against
FakeGraph. A test module provides the ``env`` fixture (:class:`FactoryEnv`) and imports the tests.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import anyio
import pytest
from graph_test_support import ORGANIZER, START, TOKEN_CANARY

from leaks import assert_no_leak
from teams_ehr.errors import (
    ConfigurationError,
    GraphError,
    LobbyPolicyViolationError,
    TransportError,
)
from teams_ehr.teams.join_urls import clinician_join_url, patient_join_url
from teams_ehr.teams.lobby import PRESETS, verify_readback
from teams_ehr.teams.meetings import MEETING_SUBJECT, Meeting, MeetingFactory, MeetingRequest
from teams_ehr.teams.models import OnlineMeeting
from teams_ehr.testing.fake_graph import FakeGraph

T = TypeVar("T")


@dataclass
class FactoryEnv:
    name: str
    factory: MeetingFactory
    fake: FakeGraph


def request(appointment: str = "CSN-123456789", policy: str = "patient_visit") -> MeetingRequest:
    return MeetingRequest(
        org_id="org-1",
        appointment_id=appointment,
        organizer_oid=ORGANIZER,
        start=START,
        end=START + timedelta(minutes=30),
        policy=PRESETS[policy],
    )


async def until_ok(
    call: Callable[[], Awaitable[T]], *, tries: int = 6
) -> tuple[T, list[Exception]]:
    """Call until it succeeds, as a caller would; return the result and the errors seen."""
    errors: list[Exception] = []
    for _ in range(tries):
        try:
            return await call(), errors
        except (GraphError, TransportError) as exc:
            errors.append(exc)
    raise AssertionError(f"never succeeded: {errors!r}")


def stored(env: FactoryEnv, meeting: Meeting) -> dict[str, Any]:
    return env.fake.meetings[meeting.meeting_id]


def assert_never_plain_post(env: FactoryEnv) -> None:
    assert env.fake.plain_create_calls == []  # R04


@pytest.mark.anyio
async def test_ensure_meeting_creates_verified_meeting(env: FactoryEnv) -> None:
    meeting = await env.factory.ensure_meeting(request())
    data = stored(env, meeting)
    assert meeting.policy == "patient_visit"
    assert meeting.join_url.get_secret_value() == data["joinWebUrl"]
    assert data["lobbyBypassSettings"] == {"scope": "organizer", "isDialInBypassEnabled": False}
    assert data["allowedPresenters"] == "organizer"
    assert data["allowedLobbyAdmitters"] == "organizerAndCoOrganizers"
    assert data["allowRecording"] is False
    assert data["allowTranscription"] is False
    assert data["allowParticipantsToChangeName"] is False
    verify_readback(PRESETS["patient_visit"], OnlineMeeting.model_validate(data))
    methods = [(c.method, c.path.rsplit("/", 1)[-1]) for c in env.fake.requests]
    assert methods[0] == ("POST", "createOrGet")
    assert [m for m, _ in methods] == ["POST", "PATCH", "GET"]
    get = env.fake.requests[-1]
    assert get.headers["Prefer"] == "include-unknown-enum-members"
    assert_never_plain_post(env)
    assert patient_join_url(meeting).startswith("https://teams.microsoft.com/l/meetup-join/")
    assert clinician_join_url(meeting, "desktop").startswith("msteams:/l/meetup-join/")


@pytest.mark.anyio
async def test_twice_for_one_appointment_is_one_meeting(env: FactoryEnv) -> None:
    first = await env.factory.ensure_meeting(request())
    second = await env.factory.ensure_meeting(request())
    assert first == second
    assert len(env.fake.meetings) == 1


@pytest.mark.anyio
async def test_concurrent_calls_for_one_appointment_make_one_meeting(env: FactoryEnv) -> None:
    results: list[Meeting] = []

    async def one() -> None:
        results.append(await env.factory.ensure_meeting(request()))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(one)
    assert len({m.meeting_id for m in results}) == 1
    assert len(env.fake.meetings) == 1


@pytest.mark.anyio
async def test_distinct_appointments_distinct_meetings_and_no_phi(env: FactoryEnv) -> None:
    a = await env.factory.ensure_meeting(request("CSN-111"))
    b = await env.factory.ensure_meeting(request("CSN-222"))
    assert a.meeting_id != b.meeting_id
    assert a.external_id != b.external_id
    bodies = " ".join(repr(c.body) for c in env.fake.requests)
    assert "CSN-111" not in bodies
    assert "CSN-222" not in bodies
    creates = [c for c in env.fake.requests if c.path.endswith("createOrGet")]
    assert {c.body["subject"] for c in creates} == {MEETING_SUBJECT}


@pytest.mark.anyio
async def test_existing_meeting_changed_in_teams_is_repatched(env: FactoryEnv) -> None:
    meeting = await env.factory.ensure_meeting(request())
    data = stored(env, meeting)
    data["lobbyBypassSettings"]["scope"] = "everyone"
    data["allowedPresenters"] = "everyone"
    again = await env.factory.ensure_meeting(request())
    assert again.meeting_id == meeting.meeting_id
    assert stored(env, meeting)["lobbyBypassSettings"]["scope"] == "organizer"


TAMPERS: dict[str, dict[str, Any]] = {
    "scope_organization": {"lobbyBypassSettings": {"scope": "organization"}},
    "scope_everyone": {"lobbyBypassSettings": {"scope": "everyone"}},
    "scope_federated": {"lobbyBypassSettings": {"scope": "organizationAndFederated"}},
    "scope_unknown_future": {"lobbyBypassSettings": {"scope": "unknownFutureValue"}},
    "scope_brand_new": {"lobbyBypassSettings": {"scope": "anyoneWithTheLink"}},
    "dial_in_bypass": {"lobbyBypassSettings": {"isDialInBypassEnabled": True}},
    "presenters_everyone": {"allowedPresenters": "everyone"},
    "recording_on": {"allowRecording": True},
}


@pytest.mark.anyio
@pytest.mark.parametrize("tamper", sorted(TAMPERS))
async def test_readback_mismatch_issues_no_meeting(env: FactoryEnv, tamper: str) -> None:
    env.fake.tamper_next_readback(TAMPERS[tamper])
    with pytest.raises(LobbyPolicyViolationError) as caught:
        await env.factory.ensure_meeting(request())
    assert caught.value.reason == "lobby_readback_mismatch"
    join_url = next(iter(env.fake.meetings.values()))["joinWebUrl"]
    assert_no_leak([join_url, TOKEN_CANARY], caught.value)
    # The next attempt reads back the real (patched) settings and succeeds.
    meeting = await env.factory.ensure_meeting(request())
    assert meeting.meeting_id in env.fake.meetings


@pytest.mark.anyio
async def test_patch_failure_blocks_until_recovered(env: FactoryEnv) -> None:
    """R05: PATCH 503 ×3 then 200 → a meeting only after a verified read-back."""
    env.fake.fail_next("/onlineMeetings/", 503, retry_after=0, times=3, method="PATCH")
    meeting, errors = await until_ok(lambda: env.factory.ensure_meeting(request()))
    assert all(isinstance(e, LobbyPolicyViolationError) for e in errors)
    assert all(e.reason == "lobby_policy_not_applied" for e in errors)  # type: ignore[attr-defined]
    patches = [c for c in env.fake.requests if c.method == "PATCH"]
    assert len(patches) == 4
    assert env.fake.requests[-1].method == "GET"
    assert meeting.meeting_id in env.fake.meetings


@pytest.mark.anyio
async def test_patch_rejected_fails_closed(env: FactoryEnv) -> None:
    env.fake.fail_next("/onlineMeetings/", 403, times=1, method="PATCH")
    with pytest.raises(LobbyPolicyViolationError) as caught:
        await env.factory.ensure_meeting(request())
    assert caught.value.reason == "lobby_policy_not_applied"
    assert caught.value.status_code == 403


@pytest.mark.anyio
async def test_lost_create_response_yields_one_meeting(env: FactoryEnv) -> None:
    """R03: createOrGet reached Graph but the response was lost; the retry gets the same one."""
    env.fake.lose_next_response("createOrGet")
    meeting, _errors = await until_ok(lambda: env.factory.ensure_meeting(request()))
    assert len(env.fake.meetings) == 1
    assert meeting.meeting_id in env.fake.meetings
    assert_never_plain_post(env)


@pytest.mark.anyio
async def test_missing_application_access_policy(env: FactoryEnv) -> None:
    env.fake.fail_next("createOrGet", 403)
    with pytest.raises(GraphError) as caught:
        await env.factory.ensure_meeting(request())
    exc = caught.value
    assert exc.reason == "graph_application_access_policy_missing"
    assert exc.status_code == 403
    assert exc.code == "Forbidden"
    assert exc.request_id
    assert "Grant-CsApplicationAccessPolicy" in str(exc)


@pytest.mark.anyio
async def test_reschedule_patches_both_times(env: FactoryEnv) -> None:
    await env.factory.ensure_meeting(request())
    moved = request().model_copy(
        update={"start": START + timedelta(hours=2), "end": START + timedelta(hours=3)}
    )
    meeting = await env.factory.reschedule(moved)
    assert meeting.start == START + timedelta(hours=2)
    assert meeting.end == START + timedelta(hours=3)
    patch = [c for c in env.fake.requests if c.method == "PATCH"][-1].body
    assert {"startDateTime", "endDateTime"} <= set(patch)
    assert len(env.fake.meetings) == 1


@pytest.mark.anyio
async def test_cancel_deletes_and_asks_to_revoke(env: FactoryEnv) -> None:
    meeting = await env.factory.ensure_meeting(request())
    ref = {
        "org_id": meeting.org_id,
        "external_id": meeting.external_id,
        "organizer_oid": meeting.organizer_oid,
        "meeting_id": meeting.meeting_id,
    }
    result = await env.factory.cancel(**ref)
    assert result.deleted
    assert result.revoke_join_links
    assert meeting.meeting_id not in env.fake.meetings
    assert (await env.factory.cancel(**ref)).deleted is False


@pytest.mark.anyio
async def test_unsafe_custom_policy_never_reaches_graph(env: FactoryEnv) -> None:
    unsafe = PRESETS["patient_visit"].model_copy(update={"name": "custom", "dial_in_bypass": True})
    with pytest.raises(ConfigurationError) as caught:
        await env.factory.ensure_meeting(request().model_copy(update={"policy": unsafe}))
    assert caught.value.reason == "unsafe_lobby_policy"
    assert env.fake.requests == []


@pytest.mark.anyio
async def test_other_organizer_cannot_cancel(env: FactoryEnv) -> None:
    meeting = await env.factory.ensure_meeting(request())
    result = await env.factory.cancel(
        org_id="org-1",
        external_id=meeting.external_id,
        organizer_oid="ffffffff-0000-0000-0000-000000000000",
        meeting_id=meeting.meeting_id,
    )
    assert result.deleted is False
    assert meeting.meeting_id in env.fake.meetings


@pytest.mark.anyio
async def test_no_join_url_or_token_in_logs_errors_or_reprs(
    env: FactoryEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    meeting = await env.factory.ensure_meeting(request())
    join_url = meeting.join_url.get_secret_value()
    env.fake.tamper_next_readback(TAMPERS["scope_everyone"])
    with pytest.raises(LobbyPolicyViolationError) as caught:
        await env.factory.ensure_meeting(request())
    env.fake.fail_next("createOrGet", 429, retry_after=1000)
    with pytest.raises(GraphError) as throttled:
        await env.factory.ensure_meeting(request())
    canaries = [join_url, join_url.split("/")[-2], TOKEN_CANARY, "CSN-123456789"]
    assert_no_leak(canaries, caplog.text, meeting, caught.value, throttled.value, env.factory)
