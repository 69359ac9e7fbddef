"""Lobby policy presets, custom validation and read-back verification (SPEC B3; security.md T18, T19)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teams_ehr.errors import ConfigurationError, LobbyPolicyViolationError, UsageError
from teams_ehr.teams.lobby import (
    PRESETS,
    LobbyPolicy,
    mismatched_properties,
    validate_custom,
    verify_readback,
)
from teams_ehr.teams.models import (
    AllowedLobbyAdmitterRoles,
    LobbyBypassScope,
    MeetingChatMode,
    OnlineMeeting,
    OnlineMeetingPresenters,
)

PATIENT = PRESETS["patient_visit"]

GOLDEN_PATIENT_PATCH = {
    "lobbyBypassSettings": {"scope": "organizer", "isDialInBypassEnabled": False},
    "allowedPresenters": "organizer",
    "allowedLobbyAdmitters": "organizerAndCoOrganizers",
    "allowMeetingChat": "limited",
    "allowRecording": False,
    "recordAutomatically": False,
    "allowTranscription": False,
    "allowParticipantsToChangeName": False,
}


def readback(policy: LobbyPolicy, **changes: Any) -> OnlineMeeting:
    """The meeting Graph would return after a successful PATCH, with ``changes`` applied."""
    data: dict[str, Any] = {"id": "m1", **policy.to_patch()}
    for key, value in changes.items():
        if key in ("scope", "isDialInBypassEnabled"):
            data["lobbyBypassSettings"] = {**data["lobbyBypassSettings"], key: value}
        else:
            data[key] = value
    return OnlineMeeting.model_validate(data)


def test_patch_body_policy_snapshot() -> None:
    """T19: the golden PATCH body of the patient visit preset."""
    assert PATIENT.to_patch() == GOLDEN_PATIENT_PATCH


def test_presets_table() -> None:
    assert set(PRESETS) == {"patient_visit", "clinician_consult", "group_visit"}
    consult = PRESETS["clinician_consult"]
    assert consult.scope == "organization"
    assert consult.dial_in_bypass is False
    group = PRESETS["group_visit"]
    assert group.scope == "organizer"
    assert group.allow_meeting_chat == "disabled"
    for policy in PRESETS.values():
        assert validate_custom(policy) is policy
        assert policy.allow_recording is False
        assert policy.allow_transcription is False
    with pytest.raises(TypeError):
        PRESETS["x"] = PATIENT  # type: ignore[index]


def test_exact_readback_passes() -> None:
    for policy in PRESETS.values():
        verify_readback(policy, readback(policy))


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"scope": "organization"}, ["lobbyBypassSettings.scope"]),
        ({"scope": "everyone"}, ["lobbyBypassSettings.scope"]),
        ({"scope": "unknownFutureValue"}, ["lobbyBypassSettings.scope"]),
        ({"isDialInBypassEnabled": True}, ["lobbyBypassSettings.isDialInBypassEnabled"]),
        (
            {"allowedPresenters": "everyone", "allowRecording": True},
            ["allowedPresenters", "allowRecording"],
        ),
        ({"allowTranscription": None}, ["allowTranscription"]),
    ],
)
def test_readback_mismatch_names_properties(changes: dict[str, Any], names: list[str]) -> None:
    meeting = readback(PATIENT, **changes)
    assert list(mismatched_properties(PATIENT, meeting)) == names
    with pytest.raises(LobbyPolicyViolationError) as caught:
        verify_readback(PATIENT, meeting)
    for name in names:
        assert name in str(caught.value)


def test_missing_lobby_settings_fail_closed() -> None:
    meeting = OnlineMeeting.model_validate({"id": "m1"})
    assert "lobbyBypassSettings.scope" in mismatched_properties(PATIENT, meeting)


SCOPES = [str(s) for s in LobbyBypassScope]
PRESENTERS = [str(p) for p in OnlineMeetingPresenters]
ADMITTERS = [str(a) for a in AllowedLobbyAdmitterRoles]
CHAT = [str(c) for c in MeetingChatMode]
UNKNOWN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC", min_size=1, max_size=12)


@given(
    scope=st.sampled_from(SCOPES) | UNKNOWN,
    dial_in=st.booleans() | st.none(),
    presenters=st.sampled_from(PRESENTERS) | UNKNOWN | st.none(),
    admitters=st.sampled_from(ADMITTERS) | UNKNOWN | st.none(),
    chat=st.sampled_from(CHAT) | UNKNOWN | st.none(),
    recording=st.booleans() | st.none(),
    policy_name=st.sampled_from(sorted(PRESETS)),
)
def test_readback_passes_iff_identical(
    scope: str,
    dial_in: bool | None,
    presenters: str | None,
    admitters: str | None,
    chat: str | None,
    recording: bool | None,
    policy_name: str,
) -> None:
    """Every enum value (incl. invited, organizationExcludingGuests, unknownFutureValue and random
    unknown strings): a read-back that differs from the policy never passes."""
    policy = PRESETS[policy_name]
    meeting = readback(
        policy,
        scope=scope,
        isDialInBypassEnabled=dial_in,
        allowedPresenters=presenters,
        allowedLobbyAdmitters=admitters,
        allowMeetingChat=chat,
        allowRecording=recording,
    )
    identical = (
        scope == policy.scope
        and dial_in is policy.dial_in_bypass
        and presenters == policy.allowed_presenters
        and admitters == policy.allowed_lobby_admitters
        and chat == policy.allow_meeting_chat
        and recording is policy.allow_recording
    )
    passed = not mismatched_properties(policy, meeting)
    assert passed == identical
    if policy.patient_facing and (dial_in or scope not in ("organizer", "invited")):
        assert not passed
    if scope not in SCOPES:
        assert meeting.lobby_bypass_settings is not None
        assert meeting.lobby_bypass_settings.scope == scope  # unknown kept, never None


@given(
    scope=st.sampled_from(SCOPES) | UNKNOWN,
    dial_in=st.booleans(),
    presenters=st.sampled_from(PRESENTERS) | UNKNOWN,
    patient_facing=st.booleans(),
)
def test_custom_policy_rules(
    scope: str, dial_in: bool, presenters: str, patient_facing: bool
) -> None:
    fields: dict[str, Any] = {
        "name": "custom",
        "patient_facing": patient_facing,
        "scope": scope,
        "dial_in_bypass": dial_in,
        "allowed_presenters": presenters,
        "allowed_lobby_admitters": "organizerAndCoOrganizers",
    }
    if scope not in SCOPES or presenters not in PRESENTERS:  # not a Graph enum member at all
        with pytest.raises(UsageError) as refused:
            LobbyPolicy(**fields)
        assert refused.value.reason == "usage"
        return
    policy = LobbyPolicy(**fields)
    safe = (
        scope in SCOPES
        and scope != "unknownFutureValue"
        and presenters in PRESENTERS
        and presenters != "unknownFutureValue"
        and (
            not patient_facing
            or (scope in ("organizer", "invited") and not dial_in and presenters != "everyone")
        )
    )
    if safe:
        assert validate_custom(policy) is policy
    else:
        with pytest.raises(ConfigurationError) as caught:
            validate_custom(policy)
        assert caught.value.reason == "unsafe_lobby_policy"


def test_record_automatically_needs_recording() -> None:
    policy = PRESETS["clinician_consult"].model_copy(
        update={"record_automatically": True, "allow_recording": False}
    )
    with pytest.raises(ConfigurationError):
        validate_custom(policy)


def test_policy_is_frozen_and_strict() -> None:
    with pytest.raises(UsageError, match="surprise"):
        LobbyPolicy.model_validate({**PATIENT.model_dump(), "surprise": 1})
    with pytest.raises(ValueError, match="frozen"):
        PATIENT.scope = "everyone"  # type: ignore[misc]


def test_fields_are_the_graph_enums_and_accept_their_wire_strings() -> None:
    policy = LobbyPolicy(
        name="custom",
        patient_facing=True,
        scope="invited",
        dial_in_bypass=False,
        allowed_presenters=OnlineMeetingPresenters.ORGANIZER,
        allowed_lobby_admitters="organizerAndCoOrganizers",
        allow_meeting_chat="disabled",
    )
    assert policy.scope is LobbyBypassScope.INVITED
    assert policy.allowed_presenters is OnlineMeetingPresenters.ORGANIZER
    assert policy.allowed_lobby_admitters is AllowedLobbyAdmitterRoles.ORGANIZER_AND_CO_ORGANIZERS
    assert policy.allow_meeting_chat is MeetingChatMode.DISABLED
    assert validate_custom(policy) is policy
    with pytest.raises(UsageError, match="scope"):
        LobbyPolicy.model_validate({**policy.model_dump(), "scope": "anyoneAtAll"})


@pytest.mark.parametrize("name", ["patient_visit", "clinician_consult", "group_visit"])
def test_preset_by_name(name: str) -> None:
    assert LobbyPolicy.preset(name) is PRESETS[name]
    assert LobbyPolicy.preset(name).name == name


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        LobbyPolicy.preset("open_house")
    assert "patient_visit" in str(caught.value)
    assert "clinician_consult" in str(caught.value)
