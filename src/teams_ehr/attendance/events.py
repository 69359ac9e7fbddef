"""Typed attendance events and the role mapping (requirement D2; threats T26, T33).

An :class:`AttendanceEvent` says *who kind of person* (role) did *what* (kind) *when* (Graph's
``eventDateTime``, UTC — never our clock). Identities are a keyed hash (``participant_key``), so
an event carries no Graph id, no display name and no join URL. ``fact_key`` is a deterministic
hash of (organization, meeting, participant, kind, time): redeliveries of one notification — and
the same change seen twice — collapse onto one fact.

Role table (:class:`RoleMapper`, threat T26 ``test_role_mapping_table``):

=========================================================  ===========================
identity                                                   role
=========================================================  ===========================
Entra user whose id is the meeting organizer               ``provider``
Entra user of the organization's tenant (co-organizer,     ``provider`` (a second
second clinician, scribe…)                                 clinician is a provider;
                                                           ``tenant_user_role`` changes it)
guest, anonymous user (``identityProvider: None``),        ``patient`` (external, presumed
ACS user, spool user                                       patient)
Entra user of another tenant (federated)                   ``other``
phone (PSTN), application, application instance, bot,      ``other`` (``phone_role`` can
device, encrypted, unknown kinds                           make dial-in a patient)
=========================================================  ===========================

Kinds: a roster change with ``removedState`` is ``disconnected``; one with ``isInLobby`` is
``lobby_entered``; otherwise ``connected``. ``admitted`` is derived (:func:`infer_admissions`)
when a participant connects whose previous fact is ``lobby_entered``. ``callStarted`` /
``callEnded`` become ``call_started`` / ``call_ended`` with role ``other`` and the meeting as
participant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from teams_ehr.attendance.notifications import CallEventEnvelope, ParticipantChange
from teams_ehr.store.protocol import AttendanceFactRow

__all__ = [
    "MEETING_PARTICIPANT",
    "AttendanceEvent",
    "AttendanceKind",
    "Role",
    "RoleMapper",
    "events_from_envelope",
    "fact_key",
    "infer_admissions",
]

AttendanceKind = Literal[
    "connected", "disconnected", "lobby_entered", "admitted", "call_started", "call_ended"
]
Role = Literal["provider", "patient", "other"]

MEETING_PARTICIPANT = "meeting"
"""``participant_key`` of meeting-level events (``call_started``, ``call_ended``)."""

_PATIENT_KINDS = frozenset({"guest", "acsuser", "azurecommunicationservicesuser", "spooluser"})


def fact_key(org_id: str, external_id: str, participant_key: str, kind: str, at: datetime) -> str:
    """Deterministic SHA-256 of the fact's identity, so every source of one fact agrees."""
    stamp = at.astimezone(UTC).isoformat(timespec="microseconds")
    material = "\x1f".join((org_id, external_id, participant_key, kind, stamp))
    return hashlib.sha256(material.encode()).hexdigest()


class AttendanceEvent(BaseModel):
    """One attendance fact: role, kind and source time; no names or identities."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)
    org_id: str
    external_id: str = Field(description="the meeting reference: our keyed externalId")
    kind: AttendanceKind
    role: Role
    participant_key: str
    at: AwareDatetime
    fact_key: str

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @classmethod
    def create(
        cls,
        *,
        org_id: str,
        external_id: str,
        kind: AttendanceKind,
        role: Role,
        participant_key: str,
        at: datetime,
    ) -> AttendanceEvent:
        """Build an event with its ``fact_key`` computed from the other fields."""
        return cls(
            org_id=org_id,
            external_id=external_id,
            kind=kind,
            role=role,
            participant_key=participant_key,
            at=at,
            fact_key=fact_key(org_id, external_id, participant_key, kind, at),
        )

    def to_fact_row(self, department: str | None = None) -> AttendanceFactRow:
        return AttendanceFactRow(
            org_id=self.org_id,
            external_id=self.external_id,
            fact_key=self.fact_key,
            kind=self.kind,
            role=self.role,
            participant_key=self.participant_key,
            at=self.at,
            department=department,
        )

    def roster_payload(self) -> dict[str, str]:
        """What the live roster shows (requirement D3): participant handle, role, kind, time —
        nothing else."""
        return {
            "participant": self.participant_key[:12],
            "role": self.role,
            "kind": self.kind,
            "at": self.at.isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True)
class RoleMapper:
    """Maps a roster identity to a role (table in the module docstring).

    ``organizer_key`` is the organizer's oid hashed with the same
    :class:`~teams_ehr.attendance.notifications.ParticipantKeyer` as the roster, so the
    comparison never needs the raw id.
    """

    org_tenant_id: str
    organizer_key: str | None = None
    tenant_user_role: Role = "provider"
    phone_role: Role = "other"

    def role(self, change: ParticipantChange) -> Role:
        kind = change.identity_kind
        if kind == "user":
            if self.organizer_key is not None and change.participant_key == self.organizer_key:
                return "provider"
            if change.tenant_id is not None and change.tenant_id == self.org_tenant_id.lower():
                return self.tenant_user_role
            return "other"
        if kind in _PATIENT_KINDS:
            return "patient"
        if kind == "phone":
            return self.phone_role
        return "other"


def _kind(change: ParticipantChange) -> AttendanceKind:
    if change.removed:
        return "disconnected"
    return "lobby_entered" if change.in_lobby else "connected"


def events_from_envelope(envelope: CallEventEnvelope, mapper: RoleMapper) -> list[AttendanceEvent]:
    """The attendance events of one stored call event (unknown event types yield none)."""

    def make(kind: AttendanceKind, role: Role, participant_key: str) -> AttendanceEvent:
        return AttendanceEvent.create(
            org_id=envelope.org_id,
            external_id=envelope.external_id,
            kind=kind,
            role=role,
            participant_key=participant_key,
            at=envelope.at,
        )

    if envelope.event_type == "callStarted":
        return [make("call_started", "other", MEETING_PARTICIPANT)]
    if envelope.event_type == "callEnded":
        return [make("call_ended", "other", MEETING_PARTICIPANT)]
    if envelope.event_type != "rosterUpdated":
        return []
    return [make(_kind(c), mapper.role(c), c.participant_key) for c in envelope.changes]


def infer_admissions(
    events: Sequence[AttendanceEvent], prior: Iterable[AttendanceFactRow]
) -> list[AttendanceEvent]:
    """``events`` plus an ``admitted`` event wherever a participant connects straight after a
    ``lobby_entered`` fact (known facts and earlier events of this batch count)."""
    history: dict[str, list[tuple[datetime, str]]] = {}
    for row in prior:
        history.setdefault(row.participant_key, []).append((row.at, row.kind))
    result: list[AttendanceEvent] = []
    for event in events:
        result.append(event)
        seen = history.setdefault(event.participant_key, [])
        if event.kind == "connected":
            earlier = [item for item in seen if item[0] <= event.at and item[1] != "admitted"]
            if earlier and max(earlier)[1] == "lobby_entered":
                result.append(
                    AttendanceEvent.create(
                        org_id=event.org_id,
                        external_id=event.external_id,
                        kind="admitted",
                        role=event.role,
                        participant_key=event.participant_key,
                        at=event.at,
                    )
                )
        seen.append((event.at, event.kind))
    return result
