"""Lobby read-back (SPEC B3; security.md T18, T19): each managed property changed alone is caught.

A random property test rarely produces a meeting that differs from the policy in exactly one
field, so a comparison that skips one field survived it (mutation testing, docs/security.md).
Here every preset's exact read-back passes and every single-field change is named, alone.
"""

from __future__ import annotations

from typing import Any

import pytest

from teams_ehr.errors import LobbyPolicyViolationError
from teams_ehr.teams.lobby import PRESETS, LobbyPolicy, mismatched_properties, verify_readback
from teams_ehr.teams.models import OnlineMeeting

NESTED = {"scope", "isDialInBypassEnabled"}


def _meeting(policy: LobbyPolicy, key: str | None = None, value: Any = None) -> OnlineMeeting:
    data: dict[str, Any] = {"id": "m1", **policy.to_patch()}
    if key in NESTED:
        data["lobbyBypassSettings"] = {**data["lobbyBypassSettings"], key: value}
    elif key is not None:
        data[key] = value
    return OnlineMeeting.model_validate(data)


def _path(key: str) -> str:
    return f"lobbyBypassSettings.{key}" if key in NESTED else key


def _changes(policy: LobbyPolicy) -> list[tuple[str, Any]]:
    """Every managed key with each wrong value it can take on the wire (one at a time)."""
    patch = policy.to_patch()
    flat = {**patch.pop("lobbyBypassSettings"), **patch}
    changes: list[tuple[str, Any]] = []
    for key, expected in flat.items():
        if isinstance(expected, bool):
            changes += [(key, not expected), (key, None)]
        else:
            changes += [(key, f"{expected}X"), (key, "unknownFutureValue"), (key, None)]
    return changes


CASES = [
    pytest.param(name, key, value, id=f"{name}-{key}-{value!r}")
    for name, policy in PRESETS.items()
    for key, value in _changes(policy)
]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_exact_readback_passes(name: str) -> None:
    policy = PRESETS[name]
    assert mismatched_properties(policy, _meeting(policy)) == ()
    verify_readback(policy, _meeting(policy))


@pytest.mark.parametrize(("name", "key", "value"), CASES)
def test_each_field_changed_alone_is_named_alone(name: str, key: str, value: Any) -> None:
    policy = PRESETS[name]
    meeting = _meeting(policy, key, value)
    assert mismatched_properties(policy, meeting) == (_path(key),)
    with pytest.raises(LobbyPolicyViolationError) as caught:
        verify_readback(policy, meeting)
    assert caught.value.reason == "lobby_readback_mismatch"
    assert str(caught.value).endswith(f"{policy.name!r}: {_path(key)}")


def test_a_missing_lobby_object_names_both_nested_fields() -> None:
    policy = PRESETS["patient_visit"]
    data = {"id": "m1", **policy.to_patch()}
    del data["lobbyBypassSettings"]
    assert mismatched_properties(policy, OnlineMeeting.model_validate(data)) == (
        "lobbyBypassSettings.scope",
        "lobbyBypassSettings.isDialInBypassEnabled",
    )
