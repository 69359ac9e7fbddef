"""Totality of the Microsoft Graph response parsers: online meetings, attendance reports and
records, subscriptions, the Virtual Appointment join URL and Graph's error JSON (Graph REST v1.0
reference, "Microsoft Graph error responses and resource types")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from fuzz_support import JSON_VALUES, NOW, TEXT, assert_total, json_bodies, responses, shaped
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from teams_ehr.teams.graph_client import GraphClient
from teams_ehr.teams.graph_errors import graph_error_from_response
from teams_ehr.teams.retry import RetryPolicy

MEETING_KEYS = [
    "id",
    "joinWebUrl",
    "subject",
    "startDateTime",
    "endDateTime",
    "lobbyBypassSettings",
    "allowedPresenters",
    "allowedLobbyAdmitters",
    "allowMeetingChat",
    "joinMeetingIdSettings",
    "externalId",
    "value",
    "@odata.nextLink",
]
ERROR_DOC = st.builds(
    lambda error: {"error": error},
    st.one_of(JSON_VALUES, shaped(["code", "message", "innerError", "innererror"])),
)
GRAPH_DOC = st.one_of(
    shaped(MEETING_KEYS),
    ERROR_DOC,
    st.builds(
        lambda items, link: {"value": items, **link},
        st.lists(
            shaped(
                [
                    "id",
                    "totalParticipantCount",
                    "meetingStartDateTime",
                    "identity",
                    "attendanceIntervals",
                    "role",
                ]
            ),
            max_size=3,
        )
        | JSON_VALUES,
        shaped(
            ["@odata.nextLink"],
            st.sampled_from(
                ["https://graph.microsoft.com/v1.0/next", "https://evil.example/x", "https://[", ""]
            )
            | TEXT,
        ),
    ),
)
GRAPH_RESPONSES = responses(
    json_bodies(GRAPH_DOC), header_names=("retry-after", "request-id", "content-type")
)


class _Tokens:
    async def get_token(self, *scopes: str) -> Any:
        from teams_ehr.teams.credentials import AccessToken

        return AccessToken("token", 2_000_000_000)


async def _no_sleep(seconds: float) -> None:
    return None


def _client(answers: list[httpx.Response]) -> tuple[GraphClient, httpx.AsyncClient]:
    queue = list(answers)

    def respond(request: httpx.Request) -> httpx.Response:
        template = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(
            template.status_code,
            headers=template.headers.raw,
            content=template.content,
            request=request,
        )

    http = httpx.AsyncClient(transport=httpx.MockTransport(respond))
    client = GraphClient(
        http,
        _Tokens(),
        clock=lambda: NOW,
        sleep=_no_sleep,
        retry=RetryPolicy(max_attempts=2, deadline=5.0),
    )
    return client, http


CALLS = [
    lambda c: c.get_meeting("organizer", "meeting"),
    lambda c: c.create_or_get_meeting(
        "organizer", external_id="ext", subject="s", start=NOW, end=NOW + timedelta(hours=1)
    ),
    lambda c: c.list_attendance_reports("organizer", "meeting"),
    lambda c: c.list_attendance_records("organizer", "meeting", "report"),
    lambda c: c.get_virtual_appointment_join_url("organizer", "meeting"),
    lambda c: c.delete_meeting("organizer", "meeting"),
    lambda c: c.renew_subscription("sub", NOW + timedelta(hours=1)),
]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(GRAPH_RESPONSES, min_size=1, max_size=3), st.sampled_from(range(len(CALLS))))
@example([httpx.Response(200, content=b"[" * 100_000)], 2)
@example([httpx.Response(400, content=b"[" * 100_000)], 0)
@example([httpx.Response(200, headers=[(b"Request-Id", b"\x80")], content=b"{}")], 0)
def test_graph_responses_are_total(answer: list[httpx.Response], call: int) -> None:
    async def run() -> Any:
        client, http = _client(answer)
        async with http:
            return await CALLS[call](client)

    assert_total(run)


@given(GRAPH_RESPONSES, TEXT)
@example(httpx.Response(503, content=b'{"error":' * 50_000), "GET x")
def test_graph_error_bodies_are_total(response: httpx.Response, route: str) -> None:
    assert_total(graph_error_from_response, response, route, retry_after=1.0)
