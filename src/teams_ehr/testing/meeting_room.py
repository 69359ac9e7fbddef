"""A simulated Teams meeting room for :class:`~teams_ehr.testing.fake_graph.FakeGraph` (requirements E1, E3).

Participants join, wait in the lobby when the meeting's lobby settings say so, are admitted, leave;
calls start and end. Every change is appended to :attr:`MeetingRoom.history` and handed to the
observers as a :class:`RosterChange`, which the attendance webhook fake turns into Graph
``meetingCallEvents`` notifications (``callStarted``, ``rosterUpdated`` with ``isInLobby`` /
``removedState``, ``callEnded``; learn.microsoft.com/graph/changenotifications-for-onlinemeeting).
Ended calls become attendance reports (one per call session, intervals from admission to leave;
learn.microsoft.com/graph/api/resources/meetingattendancereport).

Who is the organizer is decided by identity, as in Teams: only the meeting's organizer (its
``organizer_oid`` in its tenant) joins as organizer. A person who signed in to Microsoft joins
with :meth:`MeetingRoom.join_signed_in`, which makes them the organizer only when their object id
is the organizer's; scripted joins with ``identity="organizer"`` stand for that same user, and
naming any other user as organizer is refused. Only the organizer admits from the lobby when a
participant is named as admitting (``by``) and may end the meeting for everyone
(:meth:`MeetingRoom.end_for_everyone`); a refusal is :class:`UsageError` ``not_organizer``.

Who waits in the lobby (lobbyBypassSettings,
learn.microsoft.com/graph/api/resources/lobbybypasssettings): the organizer never; a tenant user
unless the scope admits the organization (``organization``, ``organizationAndFederated``,
``organizationExcludingGuests``, ``everyone``); an anonymous guest unless ``everyone``; a phone
caller unless ``everyone`` or dial-in bypass is on. Unknown scopes keep everyone but the organizer
in the lobby.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from teams_ehr._types import Clock
from teams_ehr.errors import UsageError

__all__ = ["ChangeKind", "IdentityKind", "MeetingRoom", "RosterChange", "needs_lobby"]

IdentityKind = Literal["organizer", "tenant_user", "guest", "phone"]
ChangeKind = Literal["joined", "admitted", "left", "call_started", "call_ended"]

_ORG_SCOPES = frozenset(
    {"organization", "organizationAndFederated", "organizationExcludingGuests", "everyone"}
)
_IDENTITY_TYPES = {
    "organizer": "#microsoft.graph.communicationsUserIdentity",
    "tenant_user": "#microsoft.graph.communicationsUserIdentity",
    "guest": "#microsoft.graph.communicationsAnonymousGuestIdentity",
    "phone": "#microsoft.graph.communicationsPhoneIdentity",
}


def needs_lobby(kind: IdentityKind, scope: str | None, dial_in_bypass: bool | None) -> bool:
    """Whether a participant of ``kind`` waits in the lobby under these settings."""
    if kind == "organizer":
        return False
    if scope == "everyone":
        return False
    if kind == "tenant_user":
        return scope not in _ORG_SCOPES
    if kind == "phone":
        return not dial_in_bypass
    return True


@dataclass(frozen=True, slots=True)
class RosterChange:
    """One roster change. ``display_name`` is what the participant typed (PHI for patients):
    consumers must drop it (threat T26)."""

    meeting_id: str
    kind: ChangeKind
    at: datetime
    participant_id: str | None = None
    identity_kind: IdentityKind | None = None
    user_id: str | None = None
    tenant_id: str | None = None
    in_lobby: bool = False
    removed: bool = False
    call_id: str | None = None
    display_name: str | None = field(default=None, repr=False)


@dataclass
class _Participant:
    id: str
    kind: IdentityKind
    user_id: str | None
    tenant_id: str | None
    display_name: str | None
    in_lobby: bool = False
    present: bool = False
    intervals: list[tuple[str, datetime, datetime | None]] = field(default_factory=list)


@dataclass
class _Call:
    id: str
    start: datetime
    end: datetime | None = None


class MeetingRoom:
    """The live state of one meeting. Times default to the fake's clock."""

    def __init__(
        self,
        meeting_id: str,
        *,
        organizer_oid: str,
        tenant_id: str,
        lobby_settings: Callable[[], tuple[str | None, bool | None]],
        clock: Clock,
        notify: Callable[[RosterChange], None],
    ) -> None:
        self.meeting_id = meeting_id
        self.organizer_oid = organizer_oid
        self.tenant_id = tenant_id
        self._lobby_settings = lobby_settings
        self._clock = clock
        self._notify = notify
        self._people: dict[str, _Participant] = {}
        self._calls: list[_Call] = []
        self.history: list[RosterChange] = []

    @property
    def call_active(self) -> bool:
        return bool(self._calls) and self._calls[-1].end is None

    def in_lobby(self) -> list[str]:
        return [p.id for p in self._people.values() if p.present and p.in_lobby]

    def in_meeting(self) -> list[str]:
        return [p.id for p in self._people.values() if p.present and not p.in_lobby]

    def is_organizer(self, object_id: str | None, tenant_id: str | None) -> bool:
        """Whether a signed-in Microsoft user (object id, tenant) is this meeting's organizer."""
        return (
            object_id is not None
            and tenant_id is not None
            and object_id.lower() == self.organizer_oid.lower()
            and tenant_id.lower() == self.tenant_id.lower()
        )

    def organizer_present(self, participant_id: str) -> bool:
        """Whether ``participant_id`` is the organizer and in the meeting (not the lobby)."""
        person = self._people.get(participant_id)
        return (
            person is not None
            and person.kind == "organizer"
            and person.present
            and not person.in_lobby
        )

    def _require_organizer(self, participant_id: str) -> None:
        if not self.organizer_present(participant_id):
            raise UsageError("only the meeting's organizer may do this", reason="not_organizer")

    def _emit(
        self, kind: ChangeKind, at: datetime, person: _Participant | None = None
    ) -> RosterChange:
        call_id = self._calls[-1].id if self._calls else None
        if person is None:
            change = RosterChange(meeting_id=self.meeting_id, kind=kind, at=at, call_id=call_id)
        else:
            change = RosterChange(
                meeting_id=self.meeting_id,
                kind=kind,
                at=at,
                call_id=call_id,
                participant_id=person.id,
                identity_kind=person.kind,
                user_id=person.user_id,
                tenant_id=person.tenant_id,
                in_lobby=person.in_lobby,
                removed=not person.present,
                display_name=person.display_name,
            )
        self.history.append(change)
        self._notify(change)
        return change

    def start_call(self, *, at: datetime | None = None) -> RosterChange:
        if self.call_active:
            raise UsageError("a call is already active", reason="call_active")
        at = at or self._clock()
        self._calls.append(_Call(id=f"{self.meeting_id[:8]}-call-{len(self._calls) + 1}", start=at))
        return self._emit("call_started", at)

    def end_for_everyone(self, participant_id: str, *, at: datetime | None = None) -> RosterChange:
        """*End meeting* by ``participant_id``: only the organizer, in the meeting, may."""
        self._require_organizer(participant_id)
        return self.end_call(at=at)

    def end_call(self, *, at: datetime | None = None) -> RosterChange:
        if not self.call_active:
            raise UsageError("no active call", reason="no_call")
        at = at or self._clock()
        for person in list(self._people.values()):
            if person.present:
                self.leave(person.id, at=at)
        self._calls[-1].end = at
        return self._emit("call_ended", at)

    def join(
        self,
        participant_id: str,
        *,
        identity: IdentityKind = "guest",
        user_id: str | None = None,
        tenant_id: str | None = None,
        display_name: str | None = None,
        at: datetime | None = None,
    ) -> RosterChange:
        at = at or self._clock()
        person = self._people.get(participant_id)
        if person is not None and person.present:
            raise UsageError("participant already in the meeting", reason="already_joined")
        if identity == "organizer":
            if user_id is not None and not self.is_organizer(user_id, tenant_id or self.tenant_id):
                raise UsageError(
                    "only the meeting's organizer joins as organizer", reason="not_organizer"
                )
            user_id, tenant_id = self.organizer_oid, self.tenant_id
        elif identity == "tenant_user":
            tenant_id = tenant_id or self.tenant_id
        else:
            user_id = tenant_id = None
        scope, dial_in = self._lobby_settings()
        person = _Participant(participant_id, identity, user_id, tenant_id, display_name)
        person.present = True
        person.in_lobby = needs_lobby(identity, scope, dial_in)
        if person.in_lobby is False and not self.call_active:
            self.start_call(at=at)
        if not person.in_lobby:
            person.intervals.append((self._calls[-1].id, at, None))
        previous = self._people.get(participant_id)
        if previous is not None:
            person.intervals = previous.intervals + person.intervals
        self._people[participant_id] = person
        return self._emit("joined", at, person)

    def join_signed_in(
        self,
        participant_id: str,
        *,
        object_id: str,
        tenant_id: str,
        display_name: str | None = None,
        at: datetime | None = None,
    ) -> RosterChange:
        """A person signed in to Microsoft joins: as organizer if they are the organizer, as a
        user of the tenant otherwise (who waits per the lobby settings). Another tenant's user
        is refused (``foreign_tenant``): this simulated Teams knows one tenant."""
        if tenant_id.lower() != self.tenant_id.lower():
            raise UsageError("the account belongs to another tenant", reason="foreign_tenant")
        kind: IdentityKind = (
            "organizer" if self.is_organizer(object_id, tenant_id) else "tenant_user"
        )
        return self.join(
            participant_id,
            identity=kind,
            user_id=object_id.lower(),
            tenant_id=tenant_id.lower(),
            display_name=display_name,
            at=at,
        )

    def admit(
        self, participant_id: str, *, by: str | None = None, at: datetime | None = None
    ) -> RosterChange:
        """Let ``participant_id`` in from the lobby; ``by`` (if named) must be the organizer."""
        if by is not None:
            self._require_organizer(by)
        at = at or self._clock()
        person = self._people.get(participant_id)
        if person is None or not person.present or not person.in_lobby:
            raise UsageError("participant is not waiting in the lobby", reason="not_in_lobby")
        if not self.call_active:
            self.start_call(at=at)
        person.in_lobby = False
        person.intervals.append((self._calls[-1].id, at, None))
        return self._emit("admitted", at, person)

    def leave(self, participant_id: str, *, at: datetime | None = None) -> RosterChange:
        at = at or self._clock()
        person = self._people.get(participant_id)
        if person is None or not person.present:
            raise UsageError("participant is not in the meeting", reason="not_joined")
        person.present = False
        if person.intervals and person.intervals[-1][2] is None:
            call_id, start, _ = person.intervals[-1]
            person.intervals[-1] = (call_id, start, at)
        return self._emit("left", at, person)

    # -- attendance reports (learn.microsoft.com/graph/api/resources/meetingattendancereport) ------

    def attendance_reports(self) -> list[dict[str, Any]]:
        """One report per ended call, with its attendance records (Graph JSON)."""
        reports = []
        for call in self._calls:
            if call.end is None:
                continue
            records = self._records(call)
            reports.append(
                {
                    "id": f"report-{call.id}",
                    "meetingStartDateTime": _iso(call.start),
                    "meetingEndDateTime": _iso(call.end),
                    "totalParticipantCount": len(records),
                    "attendanceRecords": records,
                }
            )
        return reports

    def _records(self, call: _Call) -> list[dict[str, Any]]:
        records = []
        for person in self._people.values():
            spans = [(s, e) for cid, s, e in person.intervals if cid == call.id and e is not None]
            if not spans:
                continue
            intervals: list[dict[str, Any]] = [
                {
                    "joinDateTime": _iso(s),
                    "leaveDateTime": _iso(e),
                    "durationInSeconds": int((e - s).total_seconds()),
                }
                for s, e in spans
            ]
            records.append(
                {
                    "id": person.user_id or person.id,
                    "emailAddress": None,
                    "role": "Organizer" if person.kind == "organizer" else "Attendee",
                    "totalAttendanceInSeconds": sum(int((e - s).total_seconds()) for s, e in spans),
                    "identity": {
                        "@odata.type": _IDENTITY_TYPES[person.kind],
                        "id": person.user_id or person.id,
                        "displayName": person.display_name,
                        "tenantId": person.tenant_id,
                    },
                    "attendanceIntervals": intervals,
                }
            )
        return records


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
