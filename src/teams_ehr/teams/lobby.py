"""Lobby policies: named presets as one data table, PATCH bodies, fail-closed read-back (requirement B3).

Graph sources: onlineMeeting meeting options and lobbyBypassSettings
(learn.microsoft.com/graph/api/resources/onlinemeeting,
learn.microsoft.com/graph/api/resources/lobbybypasssettings); threats T18/T19 in docs/security.md. A
new createOrGet meeting starts with ``scope="organization"`` and ``allowedPresenters="everyone"``,
so the policy is always PATCHed and then read back with ``Prefer: include-unknown-enum-members``;
any difference blocks the join link.

Rules :func:`validate_custom` enforces (a policy is *patient-facing* when patients join it):

1. Every enum value is a known, settable member (never ``unknownFutureValue`` or an unknown string).
2. Patient-facing: lobby bypass only for the organizer (``organizer``) or people the organizer
   invited (``invited``: anonymous patients are never invited, so they still wait); dial-in bypass
   off (a forwarded phone number would skip the lobby); presenters never ``everyone``.
3. ``recordAutomatically`` needs ``allowRecording``.

``None`` in a policy field means "not managed": neither patched nor verified. Enum fields take
the Graph enum members or their wire strings (``"organizer"``); anything else is a
:class:`~teams_ehr.errors.UsageError` at construction. :meth:`LobbyPolicy.preset` returns a named
preset (docs/primitives/meetings.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from teams_ehr._types import CallerModel
from teams_ehr.errors import ConfigurationError, LobbyPolicyViolationError
from teams_ehr.teams.models import (
    AllowedLobbyAdmitterRoles,
    LobbyBypassScope,
    MeetingChatMode,
    OnlineMeeting,
    OnlineMeetingPresenters,
)

__all__ = [
    "PATIENT_SAFE_SCOPES",
    "PRESETS",
    "LobbyPolicy",
    "mismatched_properties",
    "validate_custom",
    "verify_readback",
]

PATIENT_SAFE_SCOPES = frozenset({LobbyBypassScope.ORGANIZER, LobbyBypassScope.INVITED})

_SETTABLE: Mapping[str, frozenset[str]] = {
    "scope": frozenset(LobbyBypassScope) - {LobbyBypassScope.UNKNOWN_FUTURE_VALUE},
    "allowed_presenters": frozenset(OnlineMeetingPresenters)
    - {OnlineMeetingPresenters.UNKNOWN_FUTURE_VALUE},
    "allowed_lobby_admitters": frozenset(AllowedLobbyAdmitterRoles)
    - {AllowedLobbyAdmitterRoles.UNKNOWN_FUTURE_VALUE},
    "allow_meeting_chat": frozenset(MeetingChatMode) - {MeetingChatMode.UNKNOWN_FUTURE_VALUE},
}

# policy field -> (Graph property path, top-level PATCH key, nested key or None)
_PROPERTIES: tuple[tuple[str, str, str, str | None], ...] = (
    ("scope", "lobbyBypassSettings.scope", "lobbyBypassSettings", "scope"),
    (
        "dial_in_bypass",
        "lobbyBypassSettings.isDialInBypassEnabled",
        "lobbyBypassSettings",
        "isDialInBypassEnabled",
    ),
    ("allowed_presenters", "allowedPresenters", "allowedPresenters", None),
    ("allowed_lobby_admitters", "allowedLobbyAdmitters", "allowedLobbyAdmitters", None),
    ("allow_meeting_chat", "allowMeetingChat", "allowMeetingChat", None),
    ("allow_recording", "allowRecording", "allowRecording", None),
    ("record_automatically", "recordAutomatically", "recordAutomatically", None),
    ("allow_transcription", "allowTranscription", "allowTranscription", None),
    (
        "allow_participants_to_change_name",
        "allowParticipantsToChangeName",
        "allowParticipantsToChangeName",
        None,
    ),
    ("is_entry_exit_announced", "isEntryExitAnnounced", "isEntryExitAnnounced", None),
)


class LobbyPolicy(CallerModel):
    """Meeting options teams-ehr applies and verifies. Our own config: frozen, no extras.

    Start from a preset — ``LobbyPolicy.preset("patient_visit")`` — or build a custom policy;
    factories refuse an unsafe one with :func:`validate_custom` before anything reaches Graph.
    """

    name: str
    patient_facing: bool
    scope: LobbyBypassScope
    dial_in_bypass: bool
    allowed_presenters: OnlineMeetingPresenters
    allowed_lobby_admitters: AllowedLobbyAdmitterRoles
    allow_meeting_chat: MeetingChatMode | None = None
    allow_recording: bool | None = False
    record_automatically: bool | None = False
    allow_transcription: bool | None = False
    allow_participants_to_change_name: bool | None = False
    is_entry_exit_announced: bool | None = None

    @classmethod
    def preset(cls, name: str) -> LobbyPolicy:
        """The preset called ``name`` (:data:`PRESETS`: ``patient_visit``, ``clinician_consult``,
        ``group_visit``); :class:`~teams_ehr.errors.ConfigurationError` for an unknown name."""
        policy = PRESETS.get(name)
        if policy is None:
            known = ", ".join(sorted(PRESETS))
            raise ConfigurationError(f"unknown lobby preset {name!r}; known presets: {known}")
        return policy

    def to_patch(self) -> dict[str, Any]:
        """The ``PATCH /onlineMeetings/{id}`` body for the managed properties."""
        body: dict[str, Any] = {}
        for field, _path, key, nested in _PROPERTIES:
            value = getattr(self, field)
            if value is None:
                continue
            value = str(value) if isinstance(value, str) else value
            if nested is None:
                body[key] = value
            else:
                body.setdefault(key, {})[nested] = value
        return body


def validate_custom(policy: LobbyPolicy) -> LobbyPolicy:
    """Return ``policy`` if it follows the module rules, else raise ConfigurationError."""
    problems: list[str] = []
    for field, allowed in _SETTABLE.items():
        value = getattr(policy, field)
        if value is not None and value not in allowed:
            problems.append(f"{field} is not a settable value")
    if policy.patient_facing:
        if policy.scope not in PATIENT_SAFE_SCOPES:
            problems.append("patient-facing lobby bypass must be organizer or invited")
        if policy.dial_in_bypass:
            problems.append("patient-facing policies keep dial-in callers in the lobby")
        if policy.allowed_presenters == OnlineMeetingPresenters.EVERYONE:
            problems.append("patient-facing presenters cannot be everyone")
    if policy.record_automatically and not policy.allow_recording:
        problems.append("record_automatically needs allow_recording")
    if problems:
        raise ConfigurationError(
            f"unsafe lobby policy {policy.name!r}: " + "; ".join(problems),
            reason="unsafe_lobby_policy",
        )
    return policy


def _read(meeting: OnlineMeeting, path: str) -> object:
    lobby = meeting.lobby_bypass_settings
    if path == "lobbyBypassSettings.scope":
        return None if lobby is None else lobby.scope
    if path == "lobbyBypassSettings.isDialInBypassEnabled":
        return None if lobby is None else lobby.is_dial_in_bypass_enabled
    for name, info in OnlineMeeting.model_fields.items():
        if info.alias == path:
            return getattr(meeting, name)
    return None  # pragma: no cover - every path above is a declared field


def mismatched_properties(policy: LobbyPolicy, meeting: OnlineMeeting) -> tuple[str, ...]:
    """Graph property names whose read-back value differs from the policy (names only)."""
    wrong: list[str] = []
    for field, path, _key, _nested in _PROPERTIES:
        expected = getattr(policy, field)
        if expected is None:
            continue
        actual = _read(meeting, path)
        same = (
            type(actual) is bool and actual is expected
            if isinstance(expected, bool)
            else isinstance(actual, str) and str(actual) == str(expected)
        )
        if not same:
            wrong.append(path)
    return tuple(wrong)


def verify_readback(policy: LobbyPolicy, meeting: OnlineMeeting) -> None:
    """Raise :class:`LobbyPolicyViolationError` naming every property that differs (fail closed)."""
    wrong = mismatched_properties(policy, meeting)
    if wrong:
        raise LobbyPolicyViolationError(
            f"meeting settings do not match lobby policy {policy.name!r}: " + ", ".join(wrong),
            reason="lobby_readback_mismatch",
        )


def _table(*rows: LobbyPolicy) -> Mapping[str, LobbyPolicy]:
    return MappingProxyType({validate_custom(row).name: row for row in rows})


_S, _P, _A, _C = (
    LobbyBypassScope,
    OnlineMeetingPresenters,
    AllowedLobbyAdmitterRoles,
    MeetingChatMode,
)

PRESETS: Mapping[str, LobbyPolicy] = _table(
    # One row per preset. patient_visit: patients wait in the lobby until the clinician admits
    # them; only the organizer presents and admits (with co-organizers); nothing is recorded or
    # transcribed; chat only during the meeting; a patient cannot rename themselves.
    LobbyPolicy(
        name="patient_visit",
        patient_facing=True,
        scope=_S.ORGANIZER,
        dial_in_bypass=False,
        allowed_presenters=_P.ORGANIZER,
        allowed_lobby_admitters=_A.ORGANIZER_AND_CO_ORGANIZERS,
        allow_meeting_chat=_C.LIMITED,
        allow_recording=False,
        record_automatically=False,
        allow_transcription=False,
        allow_participants_to_change_name=False,
    ),
    # clinician_consult: colleagues of the organization skip the lobby (Graph's `organization`
    # also admits the tenant's B2B guests; anonymous joiners and callers still wait).
    LobbyPolicy(
        name="clinician_consult",
        patient_facing=False,
        scope=_S.ORGANIZATION,
        dial_in_bypass=False,
        allowed_presenters=_P.ORGANIZATION,
        allowed_lobby_admitters=_A.ORGANIZER_AND_CO_ORGANIZERS_AND_PRESENTERS,
        allow_meeting_chat=_C.ENABLED,
        allow_recording=False,
        record_automatically=False,
        allow_transcription=False,
        allow_participants_to_change_name=False,
    ),
    # group_visit: several patients, each admitted one by one from the lobby; chat disabled so
    # patients cannot share health details with each other in a persisted thread; entry/exit not
    # announced (announcements speak patients' typed names to the group).
    LobbyPolicy(
        name="group_visit",
        patient_facing=True,
        scope=_S.ORGANIZER,
        dial_in_bypass=False,
        allowed_presenters=_P.ORGANIZER,
        allowed_lobby_admitters=_A.ORGANIZER_AND_CO_ORGANIZERS,
        allow_meeting_chat=_C.DISABLED,
        allow_recording=False,
        record_automatically=False,
        allow_transcription=False,
        allow_participants_to_change_name=False,
        is_entry_exit_announced=False,
    ),
)
