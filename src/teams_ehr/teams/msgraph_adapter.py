"""The meeting factory over an integrator's own msgraph-sdk ``GraphServiceClient`` (requirements B1, B2, B4).

The only module that imports msgraph (design rule 1), and only when an adapter is constructed:
``import teams_ehr.teams`` or even ``import teams_ehr.teams.msgraph_adapter`` loads no msgraph
(it costs ~0.3 s to import and 2–3 s on the first call, benchmarks/bench_graph.py;
github.com/microsoftgraph/msgraph-sdk-python/issues/904).

:class:`MsGraphMeetingFactory` runs the same createOrGet → PATCH → GET read-back → verify steps as
:class:`~teams_ehr.teams.meetings.GraphMeetingFactory` (it *is* one, over
:class:`MsGraphOperations`), and passes the same contract tests. Differences the integrator owns:

* Retries are msgraph's ``RetryHandler`` (asyncio only; it also retries POST on 429/503/504, which
  is safe here because only createOrGet is POSTed).
* msgraph turns enum values it does not know into ``None`` (the meeting-factory contract tests
  tamper the read-back the same way). The read-back then differs from the policy, so the meeting
  fails closed rather than passing unseen.

``ODataError``/``APIError`` become :class:`~teams_ehr.errors.GraphError` (status, code, request id;
never Graph's message), throttling past msgraph's retries becomes
:class:`~teams_ehr.errors.GraphThrottledError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from types import SimpleNamespace
from typing import Any

import httpx

from teams_ehr._types import utc_now
from teams_ehr.errors import ConfigurationError, GraphError, TransportError
from teams_ehr.teams.graph_client import PREFER_UNKNOWN_ENUMS
from teams_ehr.teams.graph_errors import graph_error
from teams_ehr.teams.meetings import GraphMeetingFactory
from teams_ehr.teams.models import OnlineMeeting
from teams_ehr.teams.retry import parse_retry_after

__all__ = ["MsGraphMeetingFactory", "MsGraphOperations"]

_MODELS = "msgraph.generated.models"
# Graph property -> (msgraph attribute, msgraph enum class name or None)
_FIELDS: Mapping[str, tuple[str, str | None]] = {
    "allowedPresenters": (
        "allowed_presenters",
        "online_meeting_presenters.OnlineMeetingPresenters",
    ),
    "allowedLobbyAdmitters": (
        "allowed_lobby_admitters",
        "allowed_lobby_admitter_roles.AllowedLobbyAdmitterRoles",
    ),
    "allowMeetingChat": ("allow_meeting_chat", "meeting_chat_mode.MeetingChatMode"),
    "allowRecording": ("allow_recording", None),
    "recordAutomatically": ("record_automatically", None),
    "allowTranscription": ("allow_transcription", None),
    "allowParticipantsToChangeName": ("allow_participants_to_change_name", None),
    "isEntryExitAnnounced": ("is_entry_exit_announced", None),
    "allowAttendeeToEnableCamera": ("allow_attendee_to_enable_camera", None),
    "allowAttendeeToEnableMic": ("allow_attendee_to_enable_mic", None),
    "allowTeamworkReactions": ("allow_teamwork_reactions", None),
    "subject": ("subject", None),
    "externalId": ("external_id", None),
    "joinWebUrl": ("join_web_url", None),
}


def _load_sdk() -> SimpleNamespace:
    try:
        api_error = importlib.import_module("kiota_abstractions.api_error")
        config = importlib.import_module("kiota_abstractions.base_request_configuration")
        body = importlib.import_module(
            "msgraph.generated.users.item.online_meetings.create_or_get."
            "create_or_get_post_request_body"
        )
    except ModuleNotFoundError:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "the msgraph adapter needs msgraph-sdk: pip install 'teams-ehr[msgraph]'",
            reason="msgraph_missing",
        ) from None

    def model(path: str) -> Any:
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(f"{_MODELS}.{module}"), name)

    return SimpleNamespace(
        APIError=api_error.APIError,
        RequestConfiguration=config.RequestConfiguration,
        CreateOrGetPostRequestBody=body.CreateOrGetPostRequestBody,
        model=model,
        OnlineMeeting=model("online_meeting.OnlineMeeting"),
        LobbyBypassSettings=model("lobby_bypass_settings.LobbyBypassSettings"),
        LobbyBypassScope=model("lobby_bypass_scope.LobbyBypassScope"),
    )


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _aware(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class MsGraphOperations:
    """The four meeting operations of :class:`~teams_ehr.teams.meetings.MeetingOperations`,
    sent through a ``GraphServiceClient``."""

    def __init__(self, graph_service_client: Any) -> None:
        self._sdk = _load_sdk()
        if not hasattr(graph_service_client, "users"):
            raise ConfigurationError(
                "expected a msgraph GraphServiceClient", reason="msgraph_client"
            )
        self._client = graph_service_client

    def __repr__(self) -> str:
        return "<MsGraphOperations>"

    def _meetings(self, organizer_oid: str) -> Any:
        return self._client.users.by_user_id(organizer_oid).online_meetings

    def _prefer(self) -> Any:
        config = self._sdk.RequestConfiguration()
        config.headers.add("Prefer", PREFER_UNKNOWN_ENUMS)
        return config

    async def _call(self, route: str, awaitable: Any) -> Any:
        try:
            return await awaitable
        except self._sdk.APIError as exc:
            raise self._translate(exc, route) from None
        except httpx.TransportError as exc:
            raise TransportError(f"{type(exc).__name__} on Graph {route}") from exc

    def _translate(self, exc: Any, route: str) -> GraphError:
        headers = {str(k).lower(): str(v) for k, v in (exc.response_headers or {}).items()}
        error = getattr(exc, "error", None)
        inner = getattr(error, "inner_error", None)
        request_id = getattr(inner, "request_id", None) or headers.get("request-id")
        retry_after = parse_retry_after(headers.get("retry-after"), now=utc_now())
        status = int(exc.response_status_code or 0)
        if status in (429, 503, 504) and retry_after is None:
            retry_after = 0.0
        return graph_error(
            status,
            code=getattr(error, "code", None),
            message=getattr(error, "message", None),
            request_id=str(request_id)[:64] if request_id else None,
            route=route,
            retry_after=retry_after,
        )

    def _to_model(self, meeting: Any) -> OnlineMeeting:
        data: dict[str, Any] = {"id": meeting.id}
        for prop, (attr, _enum) in _FIELDS.items():
            data[prop] = _enum_value(getattr(meeting, attr, None))
        lobby = meeting.lobby_bypass_settings
        if lobby is not None:
            data["lobbyBypassSettings"] = {
                "scope": _enum_value(lobby.scope),
                "isDialInBypassEnabled": lobby.is_dial_in_bypass_enabled,
            }
        data["startDateTime"] = _aware(meeting.start_date_time)
        data["endDateTime"] = _aware(meeting.end_date_time)
        return OnlineMeeting.model_validate(data)

    def _to_sdk(self, patch: Mapping[str, Any]) -> Any:
        sdk = self._sdk
        meeting = sdk.OnlineMeeting()
        for prop, value in patch.items():
            if prop == "lobbyBypassSettings":
                meeting.lobby_bypass_settings = sdk.LobbyBypassSettings(
                    scope=sdk.LobbyBypassScope(value["scope"]) if "scope" in value else None,
                    is_dial_in_bypass_enabled=value.get("isDialInBypassEnabled"),
                )
            elif prop in ("startDateTime", "endDateTime"):
                attr = "start_date_time" if prop == "startDateTime" else "end_date_time"
                setattr(meeting, attr, _parse_time(value))
            elif prop in _FIELDS:
                attr, enum_path = _FIELDS[prop]
                setattr(meeting, attr, sdk.model(enum_path)(value) if enum_path else value)
            else:
                raise ConfigurationError("unsupported meeting property", reason="msgraph_property")
        return meeting

    async def create_or_get_meeting(
        self, organizer_oid: str, *, external_id: str, subject: str, start: datetime, end: datetime
    ) -> OnlineMeeting:
        body = self._sdk.CreateOrGetPostRequestBody(
            external_id=external_id, subject=subject, start_date_time=start, end_date_time=end
        )
        builder = self._meetings(organizer_oid).create_or_get
        result = await self._call("POST onlineMeetings/createOrGet", builder.post(body))
        return self._to_model(result)

    async def patch_meeting(
        self, organizer_oid: str, meeting_id: str, patch: Mapping[str, Any]
    ) -> OnlineMeeting:
        builder = self._meetings(organizer_oid).by_online_meeting_id(meeting_id)
        result = await self._call(
            "PATCH onlineMeetings/{id}", builder.patch(self._to_sdk(patch), self._prefer())
        )
        return self._to_model(result)

    async def get_meeting(self, organizer_oid: str, meeting_id: str) -> OnlineMeeting:
        builder = self._meetings(organizer_oid).by_online_meeting_id(meeting_id)
        result = await self._call("GET onlineMeetings/{id}", builder.get(self._prefer()))
        return self._to_model(result)

    async def delete_meeting(self, organizer_oid: str, meeting_id: str) -> bool:
        builder = self._meetings(organizer_oid).by_online_meeting_id(meeting_id)
        try:
            await self._call("DELETE onlineMeetings/{id}", builder.delete())
        except GraphError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True


class MsGraphMeetingFactory(GraphMeetingFactory):
    """:class:`~teams_ehr.teams.meetings.MeetingFactory` over a msgraph ``GraphServiceClient``."""

    def __init__(self, graph_service_client: Any, *, external_id_key: bytes) -> None:
        super().__init__(MsGraphOperations(graph_service_client), external_id_key=external_id_key)
