"""Caller-built meeting inputs refuse bad values with a ``TeamsEhrError``, never pydantic's
``ValidationError`` (docs/errors.md): naive datetimes, unordered times, unknown fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from teams_ehr.errors import TeamsEhrError, UsageError
from teams_ehr.teams.credentials import ClientCredentialsProvider
from teams_ehr.teams.lobby import LobbyPolicy
from teams_ehr.teams.meetings import MeetingRequest

START = datetime(2026, 5, 4, 14, 0, tzinfo=UTC)


def request(**changes: Any) -> MeetingRequest:
    fields: dict[str, Any] = {
        "org_id": "org-1",
        "appointment_id": "APPT-CANARY",
        "organizer_oid": "00000000-0000-0000-0000-000000000001",
        "start": START,
        "end": START + timedelta(minutes=30),
        "policy": LobbyPolicy.preset("patient_visit"),
        **changes,
    }
    return MeetingRequest(**fields)


def test_a_valid_request() -> None:
    assert request().policy.name == "patient_visit"


@pytest.mark.parametrize(
    "changes",
    [
        {"start": datetime(2026, 5, 4, 14, 0)},
        {"end": datetime(2026, 5, 4, 15, 0)},
        {"start": "2026-05-04T14:00:00"},
    ],
)
def test_naive_datetimes_are_a_usage_error(changes: dict[str, Any]) -> None:
    with pytest.raises(UsageError) as caught:
        request(**changes)
    assert caught.value.reason == "naive_datetime"
    assert not isinstance(caught.value, ValidationError)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"end": START}, "end must be after start"),
        ({"org_id": ""}, "org_id"),
        ({"policy": {"name": "x"}}, "LobbyPolicy: allowed_lobby_admitters"),
        ({"room": "3"}, "room"),
    ],
)
def test_other_bad_input_is_a_usage_error_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(TeamsEhrError) as caught:
        request(**changes)
    assert caught.value.reason == "usage"
    assert field in str(caught.value)
    assert "APPT-CANARY" not in str(caught.value)


@pytest.mark.anyio
async def test_graph_token_provider_refuses_a_naive_clock() -> None:
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(500))
    ) as http:
        provider = ClientCredentialsProvider(
            "11111111-1111-1111-1111-111111111111",
            "client",
            http=http,
            client_secret=None,
            certificate=(b"k", b"c"),
            clock=lambda: datetime(2026, 5, 4, 14, 0),
        )
        with pytest.raises(UsageError) as caught:
            await provider.get_token("https://graph.microsoft.com/.default")
    assert caught.value.reason == "naive_datetime"
