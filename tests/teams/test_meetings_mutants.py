"""T17–T19 meeting identity and reschedule edges that ``nox -s mutants -- teams/meetings.py`` found
unpinned: the externalId known answer (stable across versions, or a retry creates a second
meeting), key-length edges, the exact PATCH bodies of create and reschedule, each time changed
alone, the meeting identity check and the errors callers read (reason, message, Graph request id).

``OperationsSpy`` is an in-memory Graph (:class:`MeetingOperations`) that stores one meeting per
organizer and externalId, applies PATCHes unless told to drop a property, and records requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from teams_ehr.errors import ConfigurationError, GraphError, LobbyPolicyViolationError
from teams_ehr.teams.lobby import LobbyPolicy
from teams_ehr.teams.meetings import (
    MEETING_SUBJECT,
    GraphMeetingFactory,
    MeetingRequest,
    external_id_for,
)
from teams_ehr.teams.models import OnlineMeeting

pytestmark = pytest.mark.anyio

KEY = b"k" * 32
START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
END = START + timedelta(minutes=30)
JOIN = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0"


class OperationsSpy:
    """Graph's onlineMeeting behaviour, reduced to what the factory relies on."""

    def __init__(self) -> None:
        self.meetings: dict[str, dict[str, Any]] = {}
        self.patches: list[dict[str, Any]] = []
        self.drop: set[str] = set()  # properties this "Graph" ignores in a PATCH
        self.fail_get: GraphError | None = None
        self.override: dict[str, Any] = {}  # applied to every read-back

    async def create_or_get_meeting(
        self, organizer_oid: str, *, external_id: str, subject: str, start: datetime, end: datetime
    ) -> OnlineMeeting:
        assert subject == MEETING_SUBJECT
        data = self.meetings.setdefault(
            external_id,
            {
                "id": f"m-{len(self.meetings) + 1}",
                "externalId": external_id,
                "joinWebUrl": JOIN,
                "startDateTime": start.isoformat(),
                "endDateTime": end.isoformat(),
                "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": True},
                "allowedPresenters": "everyone",
            },
        )
        return OnlineMeeting.model_validate(data)

    def _by_id(self, meeting_id: str) -> dict[str, Any]:
        return next(m for m in self.meetings.values() if m["id"] == meeting_id)

    async def patch_meeting(
        self, organizer_oid: str, meeting_id: str, patch: Mapping[str, Any]
    ) -> OnlineMeeting:
        self.patches.append(dict(patch))
        data = self._by_id(meeting_id)
        for key, value in patch.items():
            if key in self.drop:
                continue
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
        return OnlineMeeting.model_validate(data)

    async def get_meeting(self, organizer_oid: str, meeting_id: str) -> OnlineMeeting:
        if self.fail_get is not None:
            raise self.fail_get
        return OnlineMeeting.model_validate({**self._by_id(meeting_id), **self.override})

    async def delete_meeting(self, organizer_oid: str, meeting_id: str) -> bool:
        return True


def _request(start: datetime = START, end: datetime = END) -> MeetingRequest:
    return MeetingRequest(
        org_id="org-a",
        appointment_id="appt-1",
        organizer_oid="oid-1",
        start=start,
        end=end,
        policy=LobbyPolicy.preset("patient_visit"),
    )


def _graph_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- externalId ----------------------------------------------------------------------------------


def test_external_id_known_answer() -> None:
    message = b"teams-ehr/externalId/v1\x00org-a\x00appt-1"
    digest = hmac.new(KEY, message, hashlib.sha256).digest()
    expected = "tehr1-" + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
    assert external_id_for(KEY, "org-a", "appt-1") == expected
    assert len(expected) == 49
    assert "=" not in expected
    # The separator keeps ("org-a", "bappt") and ("org-ab", "appt") apart.
    assert external_id_for(KEY, "org-a", "bappt") != external_id_for(KEY, "org-ab", "appt")


@pytest.mark.parametrize("build", ["function", "factory"])
def test_external_id_key_edge_32_bytes(build: str) -> None:
    def make(key: bytes) -> object:
        if build == "function":
            return external_id_for(key, "org-a", "appt-1")
        return GraphMeetingFactory(OperationsSpy(), external_id_key=key)

    make(b"k" * 32)
    with pytest.raises(ConfigurationError) as info:
        make(b"k" * 31)
    assert (info.value.reason, str(info.value)) == (
        "weak_key",
        "externalId key needs at least 32 bytes",
    )


@pytest.mark.parametrize(("org", "appt"), [("", "appt-1"), ("org-a", ""), ("", "")])
def test_external_id_needs_both_ids(org: str, appt: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        external_id_for(KEY, org, appt)
    assert (info.value.reason, str(info.value)) == (
        "missing_id",
        "org_id and appointment_id are required",
    )


def test_factory_repr_names_the_class_only() -> None:
    assert repr(GraphMeetingFactory(OperationsSpy(), external_id_key=KEY)) == (
        "<GraphMeetingFactory>"
    )


# -- PATCH bodies --------------------------------------------------------------------------------


async def test_ensure_meeting_patches_exactly_the_policy() -> None:
    graph = OperationsSpy()
    request = _request()
    meeting = await GraphMeetingFactory(graph, external_id_key=KEY).ensure_meeting(request)
    assert graph.patches == [request.policy.to_patch()]  # no times: not a reschedule
    assert (meeting.start, meeting.end, meeting.policy) == (START, END, "patient_visit")


async def test_ensure_meeting_keeps_the_times_graph_holds() -> None:
    graph = OperationsSpy()
    factory = GraphMeetingFactory(graph, external_id_key=KEY)
    await factory.ensure_meeting(_request())
    # createOrGet returned the existing meeting: its times are Graph's, not the new request's.
    later = await factory.ensure_meeting(
        _request(START + timedelta(hours=1), END + timedelta(hours=1))
    )
    assert (later.start, later.end) == (START, END)


async def test_reschedule_patches_the_policy_and_both_times() -> None:
    graph = OperationsSpy()
    factory = GraphMeetingFactory(graph, external_id_key=KEY)
    await factory.ensure_meeting(_request())
    new_start, new_end = START + timedelta(days=1), END + timedelta(days=1)
    request = _request(new_start, new_end)
    meeting = await factory.reschedule(request)
    assert graph.patches[-1] == {
        **request.policy.to_patch(),
        "startDateTime": _graph_time(new_start),
        "endDateTime": _graph_time(new_end),
    }
    assert (meeting.start, meeting.end) == (new_start, new_end)


@pytest.mark.parametrize("ignored", ["startDateTime", "endDateTime"])
async def test_reschedule_with_one_time_not_applied_is_refused(ignored: str) -> None:
    graph = OperationsSpy()
    factory = GraphMeetingFactory(graph, external_id_key=KEY)
    await factory.ensure_meeting(_request())
    graph.drop = {ignored}
    with pytest.raises(GraphError) as info:
        await factory.reschedule(_request(START + timedelta(days=1), END + timedelta(days=1)))
    assert (info.value.reason, str(info.value)) == (
        "reschedule_not_applied",
        "meeting times did not change",
    )


# -- identity and join URL ------------------------------------------------------------------------


async def test_another_meeting_read_back_is_refused() -> None:
    graph = OperationsSpy()
    graph.override = {"externalId": "tehr1-someone-else"}
    with pytest.raises(LobbyPolicyViolationError) as info:
        await GraphMeetingFactory(graph, external_id_key=KEY).ensure_meeting(_request())
    assert (info.value.reason, str(info.value)) == (
        "meeting_identity_mismatch",
        "Graph returned another meeting than requested",
    )


async def test_meeting_without_join_url_is_refused() -> None:
    graph = OperationsSpy()
    graph.override = {"joinWebUrl": None}
    with pytest.raises(LobbyPolicyViolationError) as info:
        await GraphMeetingFactory(graph, external_id_key=KEY).ensure_meeting(_request())
    assert (info.value.reason, str(info.value)) == ("join_url_missing", "meeting has no join URL")


@pytest.mark.parametrize(("code", "shown"), [("Forbidden", "Forbidden"), (None, "graph_forbidden")])
async def test_failed_read_back_keeps_graph_details(code: str | None, shown: str) -> None:
    graph = OperationsSpy()
    graph.fail_get = GraphError(
        "denied", status_code=403, code=code, request_id="req-42", reason="graph_forbidden"
    )
    with pytest.raises(LobbyPolicyViolationError) as info:
        await GraphMeetingFactory(graph, external_id_key=KEY).ensure_meeting(_request())
    error = info.value
    assert (error.reason, error.status_code, error.code, error.request_id) == (
        "lobby_policy_not_applied",
        403,
        code,
        "req-42",
    )
    assert str(error) == (
        f"lobby policy 'patient_visit' could not be applied and verified (HTTP 403 {shown})"
    )
    assert isinstance(error.__cause__, GraphError)
