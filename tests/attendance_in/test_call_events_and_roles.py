"""Meeting call events in both doc shapes → typed events with roles (D2; security.md T26)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from attendance_in_support import CANARY_NAME, KEYER, ORG, ORGANIZER_OID, TENANT, delta_user
from pydantic import ValidationError

from teams_ehr.attendance.events import (
    AttendanceEvent,
    RoleMapper,
    events_from_envelope,
    fact_key,
    infer_admissions,
)
from teams_ehr.attendance.notifications import (
    CallEventEnvelope,
    ParticipantChange,
    parse_call_event,
    parse_inbox_envelope,
)
from teams_ehr.errors import WebhookRejectedError

AT = "2022-02-28T18:41:33.0553203Z"
PATIENT = "e8bbbe0e-6e3d-42db-9082-213abbe8ee5c"


def _envelope(document: dict[str, object]) -> CallEventEnvelope:
    event_type, at, changes = parse_call_event(document, org_id=ORG, keyer=KEYER)
    return CallEventEnvelope(
        subscription_id="s",
        org_id=ORG,
        external_id="x",
        tenant_id=TENANT,
        event_type=event_type,
        at=at,
        changes=changes,
    )


def _events(document: dict[str, object]) -> list[tuple[str, str, str]]:
    mapper = RoleMapper(org_tenant_id=TENANT, organizer_key=KEYER.key(ORG, ORGANIZER_OID))
    return [
        (e.kind, e.role, e.participant_key)
        for e in events_from_envelope(_envelope(document), mapper)
    ]


def test_current_shape_roster_update() -> None:
    document = {
        "@odata.type": "#microsoft.graph.callevent",
        "eventType": "rosterUpdated",
        "eventDateTime": AT,
        "participants@delta": [
            delta_user(ORGANIZER_OID),
            {
                "info": {"identity": {"guest": {"id": PATIENT, "displayName": CANARY_NAME}}},
                "isInLobby": True,
                "id": "leg-2",
            },
            delta_user("third-user", left=True),
        ],
    }
    event_type, at, changes = parse_call_event(document, org_id=ORG, keyer=KEYER)
    assert event_type == "rosterUpdated"
    assert at == datetime(2022, 2, 28, 18, 41, 33, 55320, tzinfo=UTC)
    assert [(c.identity_kind, c.in_lobby, c.removed) for c in changes] == [
        ("user", False, False),
        ("guest", True, False),
        ("user", False, True),
    ]
    assert _events(document) == [
        ("connected", "provider", KEYER.key(ORG, ORGANIZER_OID)),
        ("lobby_entered", "patient", KEYER.key(ORG, PATIENT)),
        ("disconnected", "provider", KEYER.key(ORG, "third-user")),
    ]


def test_older_shape_gives_the_same_events_as_the_current_shape() -> None:
    legacy = {
        "@odata.type": "#Microsoft.Graph.onlineMeeting",
        "eventType": "Microsoft.Communication.CallRosterUpdate",
        "eventDateTime": AT,
        "state": "active",
        "activeParticipants@joined": [
            {
                "id": "User",
                "identity": {
                    "User": {"Id": ORGANIZER_OID, "DisplayName": CANARY_NAME, "TenantId": TENANT}
                },
            }
        ],
        "activeParticipants@exited": [
            {
                "id": "ACS user",
                "identity": {
                    "AzureCommunicationServicesUser": {"Id": PATIENT, "DisplayName": CANARY_NAME}
                },
            }
        ],
    }
    current = {
        "eventType": "rosterUpdated",
        "eventDateTime": AT,
        "participants@delta": [
            delta_user(ORGANIZER_OID),
            {
                "info": {"identity": {"acsUser": {"id": PATIENT, "displayName": CANARY_NAME}}},
                "isInLobby": False,
                "removedState": {"reason": "Participant has left the meeting call."},
                "id": "leg",
            },
        ],
    }
    assert _events(legacy) == _events(current)
    assert [k for k, _, _ in _events(legacy)] == ["connected", "disconnected"]


@pytest.mark.parametrize(
    ("legacy", "current", "kind"),
    [
        ("Microsoft.Communication.CallStarted", "callStarted", "call_started"),
        ("Microsoft.Communication.CallEnded", "callEnded", "call_ended"),
    ],
)
def test_call_started_and_ended_in_both_shapes(legacy: str, current: str, kind: str) -> None:
    for event_type in (legacy, current):
        events = _events({"eventType": event_type, "eventDateTime": AT, "state": "active"})
        assert events == [(kind, "other", "meeting")]


def test_older_delta_and_remove_spellings() -> None:
    document = {
        "eventType": "Microsoft.Communication.CallRosterUpdate",
        "eventDateTime": AT,
        "activeParticipants@delta": [{"identity": {"user": {"id": "u1", "tenantId": TENANT}}}],
        "activeParticipants@remove": [{"identity": {"user": {"id": "u2", "tenantId": TENANT}}}],
    }
    assert [k for k, _, _ in _events(document)] == ["connected", "disconnected"]


def test_unknown_event_type_kept_and_ignored() -> None:
    document = {"eventType": "callTransferred", "eventDateTime": AT}
    assert _envelope(document).event_type == "callTransferred"
    assert _events(document) == []


def test_display_names_never_reach_the_envelope() -> None:
    document = {
        "eventType": "rosterUpdated",
        "eventDateTime": AT,
        "participants@delta": [delta_user("u1", name=CANARY_NAME)],
    }
    envelope = _envelope(document)
    stored = envelope.model_dump_json()
    assert CANARY_NAME not in stored
    assert "u1" not in stored.replace(KEYER.key(ORG, "u1"), "")
    assert parse_inbox_envelope(stored.encode()) == envelope


@pytest.mark.parametrize(
    "document",
    [
        {"eventDateTime": AT},
        {"eventType": "rosterUpdated"},
        {"eventType": "rosterUpdated", "eventDateTime": "yesterday"},
        {"eventType": "rosterUpdated", "eventDateTime": "2022-02-28T18:41:33"},
        {"eventType": "rosterUpdated", "eventDateTime": AT, "participants@delta": {"a": 1}},
        {
            "eventType": "rosterUpdated",
            "eventDateTime": AT,
            "participants@delta": [{"isInLobby": True}],
        },
    ],
)
def test_malformed_call_events_rejected(document: dict[str, object]) -> None:
    with pytest.raises(WebhookRejectedError) as caught:
        parse_call_event(document, org_id=ORG, keyer=KEYER)
    assert caught.value.reason == "malformed_call_event"


def _change(kind: str, *, key: str = "p", tenant: str | None = None) -> ParticipantChange:
    return ParticipantChange(participant_key=key, identity_kind=kind, tenant_id=tenant)


@pytest.mark.parametrize(
    ("change", "role"),
    [
        (_change("user", key="organizer-key", tenant="elsewhere"), "provider"),
        (_change("user", tenant=TENANT), "provider"),  # co-organizer / second clinician
        (_change("user", tenant=TENANT.upper().lower()), "provider"),
        (_change("user", tenant="other-tenant"), "other"),  # federated
        (_change("user"), "other"),
        (_change("guest"), "patient"),
        (_change("acsuser"), "patient"),
        (_change("azurecommunicationservicesuser"), "patient"),
        (_change("spooluser"), "patient"),
        (_change("phone"), "other"),
        (_change("application"), "other"),
        (_change("applicationinstance"), "other"),
        (_change("encrypted"), "other"),
        (_change("somethingnew"), "other"),
    ],
)
def test_role_mapping_table(change: ParticipantChange, role: str) -> None:
    mapper = RoleMapper(org_tenant_id=TENANT, organizer_key="organizer-key")
    assert mapper.role(change) == role


def test_role_mapping_options() -> None:
    mapper = RoleMapper(org_tenant_id=TENANT, tenant_user_role="other", phone_role="patient")
    assert mapper.role(_change("user", tenant=TENANT)) == "other"
    assert mapper.role(_change("phone")) == "patient"


def test_anonymous_user_identity_is_a_patient() -> None:
    document = {
        "eventType": "rosterUpdated",
        "eventDateTime": AT,
        "participants@delta": [
            {
                "info": {
                    "identity": {
                        "user": {
                            "id": "anon-1",
                            "identityProvider": "None",
                            "displayName": CANARY_NAME,
                        }
                    }
                }
            }
        ],
    }
    assert _events(document)[0][1] == "patient"


def test_fact_key_is_deterministic_and_time_zone_independent() -> None:
    at = datetime(2026, 3, 2, 15, 1, tzinfo=UTC)
    other_zone = at.astimezone(__import__("datetime").timezone(timedelta(hours=-5)))
    assert fact_key("o", "m", "p", "connected", at) == fact_key(
        "o", "m", "p", "connected", other_zone
    )
    assert fact_key("o", "m", "p", "connected", at) != fact_key("o", "m", "p", "disconnected", at)
    event = AttendanceEvent.create(
        org_id="o",
        external_id="m",
        kind="connected",
        role="patient",
        participant_key="p",
        at=other_zone,
    )
    assert event.at.tzinfo == UTC
    assert event.fact_key == fact_key("o", "m", "p", "connected", at)
    assert set(event.roster_payload()) == {"participant", "role", "kind", "at"}
    row = event.to_fact_row("dept")
    assert (row.kind, row.role, row.department, row.fact_key) == (
        "connected",
        "patient",
        "dept",
        event.fact_key,
    )


def test_naive_event_time_refused() -> None:
    with pytest.raises(ValidationError):
        AttendanceEvent.create(
            org_id="o",
            external_id="m",
            kind="connected",
            role="patient",
            participant_key="p",
            at=datetime(2026, 3, 2, 15, 1),
        )


def test_admitted_inferred_after_lobby() -> None:
    t = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)

    def ev(kind: str, minutes: int, key: str = "p") -> AttendanceEvent:
        return AttendanceEvent.create(
            org_id="o",
            external_id="m",
            kind=kind,
            role="patient",  # type: ignore[arg-type]
            participant_key=key,
            at=t + timedelta(minutes=minutes),
        )

    lobby = ev("lobby_entered", 0)
    connected = ev("connected", 3)
    out = infer_admissions([lobby, connected], [])
    assert [e.kind for e in out] == ["lobby_entered", "connected", "admitted"]
    assert out[2].at == connected.at
    # from stored facts as well
    out = infer_admissions([connected], [lobby.to_fact_row()])
    assert [e.kind for e in out] == ["connected", "admitted"]
    # a direct connect (organizer) is not an admission; nor is another participant's lobby
    assert [e.kind for e in infer_admissions([ev("connected", 1, "q")], [lobby.to_fact_row()])] == [
        "connected"
    ]
    # after a disconnect the lobby no longer counts
    gone = ev("disconnected", 2)
    assert [
        e.kind for e in infer_admissions([connected], [lobby.to_fact_row(), gone.to_fact_row()])
    ] == ["connected"]
