"""Typed Microsoft Graph wire models for online meetings, attendance and subscriptions (requirements B2–B5).

Sources: the onlineMeeting / onlineMeetingBase resources, lobbyBypassSettings, meetingAttendanceReport,
attendanceRecord, attendanceInterval and subscription pages of Graph v1.0
(learn.microsoft.com/graph/api/resources/onlinemeeting,
learn.microsoft.com/graph/api/resources/lobbybypasssettings,
learn.microsoft.com/graph/api/virtualappointment-getvirtualappointmentjoinweburl,
learn.microsoft.com/graph/api/resources/meetingattendancereport,
learn.microsoft.com/graph/changenotifications-for-onlinemeeting).

Rules (design rule 6):

* inbound models are frozen and keep unknown properties (``extra="allow"``);
* remote enums are *open*: a known value becomes the :class:`~enum.StrEnum` member, anything else
  (``unknownFutureValue``, a member Graph adds next year) is kept as the raw string, never ``None``;
* ``joinWebUrl`` and a subscription's ``resource`` (which embeds the join URL) are
  :class:`~pydantic.SecretStr`, so they never show in ``repr``, logs or validation errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Annotated, Any, TypeAlias, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
)

__all__ = [
    "AllowedLobbyAdmitterRoles",
    "AttendanceInterval",
    "AttendanceRecord",
    "AttendanceReport",
    "EVOLVABLE_MEMBERS",
    "GraphModel",
    "JoinMeetingIdSettings",
    "LobbyBypassScope",
    "LobbyBypassSettings",
    "MeetingChatMode",
    "OnlineMeeting",
    "OnlineMeetingPresenters",
    "Subscription",
]

E = TypeVar("E", bound=StrEnum)


class LobbyBypassScope(StrEnum):
    """lobbyBypassSettings.scope; ``invited`` and ``organizationExcludingGuests`` are evolvable."""

    ORGANIZER = "organizer"
    ORGANIZATION = "organization"
    ORGANIZATION_AND_FEDERATED = "organizationAndFederated"
    EVERYONE = "everyone"
    UNKNOWN_FUTURE_VALUE = "unknownFutureValue"
    INVITED = "invited"
    ORGANIZATION_EXCLUDING_GUESTS = "organizationExcludingGuests"


class OnlineMeetingPresenters(StrEnum):
    """onlineMeeting.allowedPresenters."""

    EVERYONE = "everyone"
    ORGANIZATION = "organization"
    ROLE_IS_PRESENTER = "roleIsPresenter"
    ORGANIZER = "organizer"
    UNKNOWN_FUTURE_VALUE = "unknownFutureValue"


class AllowedLobbyAdmitterRoles(StrEnum):
    """onlineMeeting.allowedLobbyAdmitters."""

    ORGANIZER_AND_CO_ORGANIZERS_AND_PRESENTERS = "organizerAndCoOrganizersAndPresenters"
    ORGANIZER_AND_CO_ORGANIZERS = "organizerAndCoOrganizers"
    UNKNOWN_FUTURE_VALUE = "unknownFutureValue"


class MeetingChatMode(StrEnum):
    """onlineMeeting.allowMeetingChat (``limited``: chat only while the meeting runs)."""

    ENABLED = "enabled"
    DISABLED = "disabled"
    LIMITED = "limited"
    UNKNOWN_FUTURE_VALUE = "unknownFutureValue"


EVOLVABLE_MEMBERS: frozenset[str] = frozenset(
    {LobbyBypassScope.INVITED, LobbyBypassScope.ORGANIZATION_EXCLUDING_GUESTS}
)
"""Members listed after ``unknownFutureValue``: Graph returns (and accepts) them only with the
``Prefer: include-unknown-enum-members`` header
(learn.microsoft.com/graph/api/resources/lobbybypasssettings)."""


def _open(enum_cls: type[E]) -> Callable[[object], E | str]:
    """A validator keeping unknown strings as-is and known ones as members of ``enum_cls``."""

    def validate(value: object) -> E | str:
        if isinstance(value, enum_cls):
            return value
        if not isinstance(value, str):
            raise ValueError(f"{enum_cls.__name__} must be a string")
        try:
            return enum_cls(value)
        except ValueError:
            return value

    return validate


_AS_STR = PlainSerializer(str, return_type=str)
OpenLobbyBypassScope: TypeAlias = Annotated[
    LobbyBypassScope | str, PlainValidator(_open(LobbyBypassScope)), _AS_STR
]
OpenPresenters: TypeAlias = Annotated[
    OnlineMeetingPresenters | str, PlainValidator(_open(OnlineMeetingPresenters)), _AS_STR
]
OpenLobbyAdmitters: TypeAlias = Annotated[
    AllowedLobbyAdmitterRoles | str, PlainValidator(_open(AllowedLobbyAdmitterRoles)), _AS_STR
]
OpenChatMode: TypeAlias = Annotated[
    MeetingChatMode | str, PlainValidator(_open(MeetingChatMode)), _AS_STR
]


class GraphModel(BaseModel):
    """Base of every inbound Graph model: frozen, keeps vendor extras, hides input in errors."""

    model_config = ConfigDict(
        frozen=True,
        extra="allow",
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Vendor extras stay reachable (``model_extra``) but never reach repr/str: Graph puts the
        # join URL in ``joinInformation`` and UPNs in ``participants``.
        fields = type(self).model_fields
        return ((k, v) for k, v in super().__repr_args__() if k in fields)


class LobbyBypassSettings(GraphModel):
    scope: OpenLobbyBypassScope | None = None
    is_dial_in_bypass_enabled: bool | None = Field(None, alias="isDialInBypassEnabled")


class JoinMeetingIdSettings(GraphModel):
    join_meeting_id: str | None = Field(None, alias="joinMeetingId")
    is_passcode_required: bool | None = Field(None, alias="isPasscodeRequired")
    passcode: SecretStr | None = None


class OnlineMeeting(GraphModel):
    """An onlineMeeting as Graph returns it. ``join_web_url`` is secret: use ``get_secret_value``."""

    id: str
    join_web_url: SecretStr | None = Field(None, alias="joinWebUrl")
    external_id: str | None = Field(None, alias="externalId")
    subject: str | None = None
    start_date_time: AwareDatetime | None = Field(None, alias="startDateTime")
    end_date_time: AwareDatetime | None = Field(None, alias="endDateTime")
    join_meeting_id_settings: JoinMeetingIdSettings | None = Field(
        None, alias="joinMeetingIdSettings"
    )
    lobby_bypass_settings: LobbyBypassSettings | None = Field(None, alias="lobbyBypassSettings")
    allowed_presenters: OpenPresenters | None = Field(None, alias="allowedPresenters")
    allowed_lobby_admitters: OpenLobbyAdmitters | None = Field(None, alias="allowedLobbyAdmitters")
    allow_meeting_chat: OpenChatMode | None = Field(None, alias="allowMeetingChat")
    allow_recording: bool | None = Field(None, alias="allowRecording")
    record_automatically: bool | None = Field(None, alias="recordAutomatically")
    allow_transcription: bool | None = Field(None, alias="allowTranscription")
    allow_attendee_to_enable_camera: bool | None = Field(None, alias="allowAttendeeToEnableCamera")
    allow_attendee_to_enable_mic: bool | None = Field(None, alias="allowAttendeeToEnableMic")
    allow_participants_to_change_name: bool | None = Field(
        None, alias="allowParticipantsToChangeName"
    )
    allow_teamwork_reactions: bool | None = Field(None, alias="allowTeamworkReactions")
    is_entry_exit_announced: bool | None = Field(None, alias="isEntryExitAnnounced")
    meeting_options_web_url: SecretStr | None = Field(None, alias="meetingOptionsWebUrl")
    creation_date_time: AwareDatetime | None = Field(None, alias="creationDateTime")


class AttendanceInterval(GraphModel):
    """One join→leave span; Graph sends ``null`` times and duration 0 when data is lacking."""

    join_date_time: AwareDatetime | None = Field(None, alias="joinDateTime")
    leave_date_time: AwareDatetime | None = Field(None, alias="leaveDateTime")
    duration_in_seconds: int | None = Field(None, alias="durationInSeconds")


class AttendanceIdentity(GraphModel):
    """The record's identity: ids and kind only. ``displayName`` (free text an anonymous patient
    typed) and every other property are dropped at parse time (threat T26)."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    tenant_id: str | None = Field(None, alias="tenantId")
    odata_type: str | None = Field(None, alias="@odata.type")


class AttendanceRecord(GraphModel):
    id: str | None = None
    identity: AttendanceIdentity | None = None
    role: str | None = None
    total_attendance_in_seconds: int | None = Field(None, alias="totalAttendanceInSeconds")
    attendance_intervals: tuple[AttendanceInterval, ...] = Field((), alias="attendanceIntervals")
    email_address: SecretStr | None = Field(None, alias="emailAddress")


class AttendanceReport(GraphModel):
    id: str
    meeting_start_date_time: AwareDatetime | None = Field(None, alias="meetingStartDateTime")
    meeting_end_date_time: AwareDatetime | None = Field(None, alias="meetingEndDateTime")
    total_participant_count: int | None = Field(None, alias="totalParticipantCount")


class Subscription(GraphModel):
    """A change-notification subscription; ``resource`` embeds the join URL, so it is secret."""

    id: str
    resource: SecretStr | None = None
    change_type: str | None = Field(None, alias="changeType")
    notification_url: str | None = Field(None, alias="notificationUrl")
    lifecycle_notification_url: str | None = Field(None, alias="lifecycleNotificationUrl")
    expiration_date_time: AwareDatetime = Field(alias="expirationDateTime")
    client_state: SecretStr | None = Field(None, alias="clientState")
    include_resource_data: bool | None = Field(None, alias="includeResourceData")
