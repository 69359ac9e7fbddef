"""T18 / T19 lobby policy edges ``nox -s mutants -- teams/lobby.py`` found unpinned.

An unmanaged (``None``) field in the middle of the property table must skip only itself, in the
PATCH body and in the read-back; the errors an integrator reads name every problem, exactly;
the preset table refuses an unsafe row when it is built.
"""

from __future__ import annotations

from typing import Any

import pytest

from teams_ehr.errors import ConfigurationError, LobbyPolicyViolationError
from teams_ehr.teams import lobby
from teams_ehr.teams.lobby import (
    PRESETS,
    LobbyPolicy,
    mismatched_properties,
    validate_custom,
    verify_readback,
)
from teams_ehr.teams.models import OnlineMeeting

# allow_meeting_chat (5th of the 10 managed properties) unmanaged; later ones managed.
PARTLY_MANAGED = PRESETS["patient_visit"].model_copy(
    update={"name": "partly", "allow_meeting_chat": None}
)


def _policy(**changes: Any) -> LobbyPolicy:
    return LobbyPolicy.model_validate(
        {**PRESETS["patient_visit"].model_dump(), "name": "custom", **changes}
    )


def test_an_unmanaged_field_skips_only_itself_in_the_patch() -> None:
    assert PARTLY_MANAGED.to_patch() == {
        "lobbyBypassSettings": {"scope": "organizer", "isDialInBypassEnabled": False},
        "allowedPresenters": "organizer",
        "allowedLobbyAdmitters": "organizerAndCoOrganizers",
        "allowRecording": False,
        "recordAutomatically": False,
        "allowTranscription": False,
        "allowParticipantsToChangeName": False,
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("allowRecording", True),
        ("recordAutomatically", True),
        ("allowTranscription", True),
        ("allowParticipantsToChangeName", True),
    ],
)
def test_an_unmanaged_field_skips_only_itself_in_the_readback(key: str, value: Any) -> None:
    data = {"id": "m1", **PARTLY_MANAGED.to_patch(), "allowMeetingChat": "enabled", key: value}
    meeting = OnlineMeeting.model_validate(data)
    assert mismatched_properties(PARTLY_MANAGED, meeting) == (key,)
    with pytest.raises(LobbyPolicyViolationError) as info:
        verify_readback(PARTLY_MANAGED, meeting)
    assert info.value.reason == "lobby_readback_mismatch"


def test_readback_error_names_every_property_exactly() -> None:
    policy = PRESETS["patient_visit"]
    meeting = OnlineMeeting.model_validate(
        {**policy.to_patch(), "id": "m1", "allowRecording": True, "allowTranscription": True}
    )
    with pytest.raises(LobbyPolicyViolationError) as info:
        verify_readback(policy, meeting)
    assert str(info.value) == (
        "meeting settings do not match lobby policy 'patient_visit': "
        "allowRecording, allowTranscription"
    )


def test_unknown_preset_message_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        LobbyPolicy.preset("open_house")
    assert str(info.value) == (
        "unknown lobby preset 'open_house'; known presets: "
        "clinician_consult, group_visit, patient_visit"
    )


@pytest.mark.parametrize(
    ("changes", "problems"),
    [
        ({"scope": "organization"}, "patient-facing lobby bypass must be organizer or invited"),
        ({"dial_in_bypass": True}, "patient-facing policies keep dial-in callers in the lobby"),
        ({"allowed_presenters": "everyone"}, "patient-facing presenters cannot be everyone"),
        ({"record_automatically": True}, "record_automatically needs allow_recording"),
        (
            {"scope": "everyone", "allowed_presenters": "everyone"},
            "patient-facing lobby bypass must be organizer or invited; "
            "patient-facing presenters cannot be everyone",
        ),
    ],
)
def test_unsafe_policy_message_names_each_problem(changes: dict[str, Any], problems: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        validate_custom(_policy(**changes))
    assert info.value.reason == "unsafe_lobby_policy"
    assert str(info.value) == f"unsafe lobby policy 'custom': {problems}"


def test_preset_table_is_keyed_by_name_and_refuses_an_unsafe_row() -> None:
    consult = PRESETS["clinician_consult"]
    assert dict(lobby._table(consult, PARTLY_MANAGED)) == {
        "clinician_consult": consult,
        "partly": PARTLY_MANAGED,
    }
    with pytest.raises(ConfigurationError) as info:
        lobby._table(consult, _policy(dial_in_bypass=True))
    assert info.value.reason == "unsafe_lobby_policy"
