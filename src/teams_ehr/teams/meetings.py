"""The meeting factory: createOrGet → PATCH lobby policy → GET read-back → verify (requirement B2).

Steps for every :meth:`MeetingFactory.ensure_meeting`
(learn.microsoft.com/graph/api/onlinemeeting-createorget,
learn.microsoft.com/graph/api/resources/onlinemeeting,
learn.microsoft.com/graph/api/resources/lobbybypasssettings; threat T18):

1. ``POST /users/{organizer}/onlineMeetings/createOrGet`` with ``externalId`` =
   :func:`external_id_for` (keyed HMAC of organization and appointment: stable across retries and
   instances, unguessable, no PHI) and the constant subject ``"Virtual visit"``. A retry after a
   lost response returns the same meeting (reliability case R03).
2. ``PATCH`` the lobby policy, even when createOrGet returned an existing meeting (200): its
   options may have been changed in Teams since.
3. ``GET`` it back with ``Prefer: include-unknown-enum-members`` and compare property by property.
   Only an exact match yields a :class:`Meeting` (and so a join URL); a failed PATCH or GET, or a
   mismatch, raises :class:`~teams_ehr.errors.LobbyPolicyViolationError` (fail closed).

Reschedule PATCHes both times (Graph needs both) and re-verifies. Cancel deletes the online
meeting (``DELETE /users/{id}/onlineMeetings/{id}``, supported app-only with the access policy), so
the Teams join URL stops working, and tells the caller to revoke our patient join links.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, model_validator

from teams_ehr._redact import get_logger
from teams_ehr._types import CallerModel
from teams_ehr.errors import ConfigurationError, GraphError, LobbyPolicyViolationError, UsageError
from teams_ehr.teams.graph_client import graph_time
from teams_ehr.teams.lobby import LobbyPolicy, validate_custom, verify_readback
from teams_ehr.teams.models import OnlineMeeting

__all__ = [
    "MEETING_SUBJECT",
    "CancelResult",
    "GraphMeetingFactory",
    "Meeting",
    "MeetingFactory",
    "MeetingOperations",
    "MeetingRequest",
    "external_id_for",
]

log = get_logger(__name__)

MEETING_SUBJECT = "Virtual visit"
"""Subject of every meeting: a constant, so no PHI reaches Graph (threat T19)."""

_EXTERNAL_ID_PREFIX = "tehr1-"
_MIN_KEY_BYTES = 32


def external_id_for(key: bytes, org_id: str, appointment_id: str) -> str:
    """``tehr1-`` + base64url(HMAC-SHA256(key, org ‖ appointment)): 49 URL-safe characters."""
    if len(key) < _MIN_KEY_BYTES:
        raise ConfigurationError("externalId key needs at least 32 bytes", reason="weak_key")
    if not org_id or not appointment_id:
        raise ConfigurationError("org_id and appointment_id are required", reason="missing_id")
    message = b"teams-ehr/externalId/v1\x00" + org_id.encode() + b"\x00" + appointment_id.encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return _EXTERNAL_ID_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class MeetingRequest(CallerModel):
    """What to create: one appointment of one organization, organized by one Entra user.

    ``start``/``end`` must be timezone-aware and ordered; invalid input raises
    :class:`~teams_ehr.errors.UsageError` (``reason="naive_datetime"`` for a naive datetime).
    """

    org_id: str = Field(min_length=1)
    appointment_id: str = Field(min_length=1, repr=False)
    organizer_oid: str = Field(min_length=1)
    start: AwareDatetime
    end: AwareDatetime
    policy: LobbyPolicy

    @model_validator(mode="after")
    def _ordered(self) -> MeetingRequest:
        if self.end <= self.start:
            raise UsageError("MeetingRequest: end must be after start")
        return self


class Meeting(_Frozen):
    """A verified meeting: the only object that carries a join URL."""

    org_id: str
    external_id: str
    meeting_id: str
    organizer_oid: str
    join_url: SecretStr
    start: AwareDatetime
    end: AwareDatetime
    policy: str


class CancelResult(_Frozen):
    """``deleted`` is False when Graph no longer had the meeting; revoke join links either way."""

    org_id: str
    external_id: str
    meeting_id: str
    deleted: bool
    revoke_join_links: Literal[True] = True


class MeetingFactory(Protocol):
    """Creates, reschedules and cancels verified meetings (GraphClient or msgraph-sdk backed)."""

    async def ensure_meeting(self, request: MeetingRequest) -> Meeting: ...

    async def reschedule(self, request: MeetingRequest) -> Meeting: ...

    async def cancel(
        self, *, org_id: str, external_id: str, organizer_oid: str, meeting_id: str
    ) -> CancelResult: ...


class MeetingOperations(Protocol):
    """The four Graph operations a factory needs; :class:`GraphClient` provides them."""

    async def create_or_get_meeting(
        self, organizer_oid: str, *, external_id: str, subject: str, start: datetime, end: datetime
    ) -> OnlineMeeting: ...

    async def patch_meeting(
        self, organizer_oid: str, meeting_id: str, patch: Mapping[str, Any]
    ) -> OnlineMeeting: ...

    async def get_meeting(self, organizer_oid: str, meeting_id: str) -> OnlineMeeting: ...

    async def delete_meeting(self, organizer_oid: str, meeting_id: str) -> bool: ...


class GraphMeetingFactory:
    """:class:`MeetingFactory` over any :class:`MeetingOperations` (normally a GraphClient)."""

    def __init__(self, graph: MeetingOperations, *, external_id_key: bytes) -> None:
        if len(external_id_key) < _MIN_KEY_BYTES:
            raise ConfigurationError("externalId key needs at least 32 bytes", reason="weak_key")
        self._graph = graph
        self._key = external_id_key

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    async def ensure_meeting(self, request: MeetingRequest) -> Meeting:
        return await self._apply(request, reschedule=False)

    async def reschedule(self, request: MeetingRequest) -> Meeting:
        return await self._apply(request, reschedule=True)

    async def cancel(
        self, *, org_id: str, external_id: str, organizer_oid: str, meeting_id: str
    ) -> CancelResult:
        deleted = await self._graph.delete_meeting(organizer_oid, meeting_id)
        log.info("meeting cancelled for org %s (deleted=%s)", org_id, deleted)
        return CancelResult(
            org_id=org_id, external_id=external_id, meeting_id=meeting_id, deleted=deleted
        )

    async def _apply(self, request: MeetingRequest, *, reschedule: bool) -> Meeting:
        validate_custom(request.policy)  # an unsafe custom policy never reaches Graph
        external_id = external_id_for(self._key, request.org_id, request.appointment_id)
        created = await self._graph.create_or_get_meeting(
            request.organizer_oid,
            external_id=external_id,
            subject=MEETING_SUBJECT,
            start=request.start,
            end=request.end,
        )
        patch = request.policy.to_patch()
        if reschedule:
            patch |= {"startDateTime": graph_time(request.start)}
            patch |= {"endDateTime": graph_time(request.end)}
        try:
            await self._graph.patch_meeting(request.organizer_oid, created.id, patch)
            current = await self._graph.get_meeting(request.organizer_oid, created.id)
        except GraphError as exc:
            if isinstance(exc, LobbyPolicyViolationError):
                raise
            raise LobbyPolicyViolationError(
                f"lobby policy {request.policy.name!r} could not be applied and verified "
                f"(HTTP {exc.status_code} {exc.code or exc.reason})",
                status_code=exc.status_code,
                code=exc.code,
                request_id=exc.request_id,
                reason="lobby_policy_not_applied",
            ) from exc
        verify_readback(request.policy, current)
        return self._meeting(request, external_id, current, reschedule=reschedule)

    def _meeting(
        self, request: MeetingRequest, external_id: str, current: OnlineMeeting, *, reschedule: bool
    ) -> Meeting:
        if current.external_id not in (None, external_id):
            raise LobbyPolicyViolationError(
                "Graph returned another meeting than requested", reason="meeting_identity_mismatch"
            )
        if current.join_web_url is None:
            raise LobbyPolicyViolationError("meeting has no join URL", reason="join_url_missing")
        if reschedule and (
            current.start_date_time != request.start or current.end_date_time != request.end
        ):
            raise GraphError("meeting times did not change", reason="reschedule_not_applied")
        return Meeting(
            org_id=request.org_id,
            external_id=external_id,
            meeting_id=current.id,
            organizer_oid=request.organizer_oid,
            join_url=current.join_web_url,
            start=current.start_date_time or request.start,
            end=current.end_date_time or request.end,
            policy=request.policy.name,
        )
